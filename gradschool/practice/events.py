"""Reading TensorBoard event files back: the half of logging that needs no framework, shared by
Part 4's debugging notebooks (11_debug), which each write events their own framework's way.
Hand-written, like this package's ``__init__``; the notebooks import it.
"""

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_scalars(logdir, tag):
    """(steps, values) of the scalar series `tag` in the event files of `logdir`: an int64 and a
    float64 NumPy array, in the order they were written. KeyError when no series has that tag."""
    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every event
    accumulator.Reload()
    if tag not in accumulator.Tags()["scalars"]:
        raise KeyError(f"no scalar series {tag!r} in {logdir}; there are {accumulator.Tags()['scalars']}")
    events = accumulator.Scalars(tag)
    return (np.array([e.step for e in events], dtype=np.int64),
            np.array([e.value for e in events], dtype=np.float64))
