"""python -m bench [notebooks [PATH ...] | engine | grading [STUDENTS] [WORKERS] | gpu [--cpu]]:
the course's figures, budgets and ratios.

With no argument every benchmark runs: each solution notebook's time and peak memory, the
engine's training step against PyTorch and NumPy, and the grader against nbgrader's serial
autograde on a class of 20. ``gpu`` (``make gpu-smoke``) is apart: one step per stack on the
GPU against the CPU, skipped where there is no GPU.
"""

import sys

from bench import engine, gpu, grading, notebooks

args = sys.argv[1:]
if args[:1] == ["gpu"]:
    raise SystemExit(gpu.main(args[1:]))
if args[:1] == ["engine"]:
    engine.main()
    raise SystemExit(0)
if args[:1] == ["notebooks"]:
    raise SystemExit(notebooks.main(args[1:]))
if args[:1] == ["grading"]:
    grading.main(*(int(a) for a in args[1:3]))
    raise SystemExit(0)
status = notebooks.main(args)
print()
engine.main()
print()
grading.main()
raise SystemExit(status)
