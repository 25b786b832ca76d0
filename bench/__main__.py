"""python -m bench [notebook ...]: every benchmark of the course, figures and ratios printed."""

import sys

from bench import notebooks

raise SystemExit(notebooks.main(sys.argv[1:]))
