"""python -m bench [notebooks [PATH ...] | engine]: the course's figures, budgets and ratios.

With no argument every benchmark runs: each solution notebook's time and peak memory, then
the engine's training step against PyTorch and NumPy.
"""

import sys

from bench import engine, notebooks

args = sys.argv[1:]
if args[:1] == ["engine"]:
    engine.main()
    raise SystemExit(0)
if args[:1] == ["notebooks"]:
    raise SystemExit(notebooks.main(args[1:]))
status = notebooks.main(args)
print()
engine.main()
raise SystemExit(status)
