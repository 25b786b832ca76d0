"""Gradschool: the course library that every notebook imports.

- :mod:`gradschool.runtime` -- where the notebook runs and which device each framework uses
- :mod:`gradschool.data`    -- offline datasets with fixed, checksummed splits
- :mod:`gradschool.checks`  -- test helpers whose failure messages are written for students
- :mod:`gradschool.plots`   -- loss curves, decision boundaries, image grids
"""

__version__ = "0.1.0"
