"""Part 4, frameworks at work: one module per notebook, ``<topic>_<framework>.py``, exported from
``solutions/<nn>_<topic>/<topic>_<framework>.ipynb`` (compile, parallel, deploy, compress, debug;
the showdown compares them all). Hand-written: this file, and ``events.py`` (reading
TensorBoard event files back, which the debugging notebooks share).

The modules build on Part 3's (``gradschool.projects``): the models and data are the projects',
imported, never copied; what is new here is what a framework does with a model once it trains.
"""
