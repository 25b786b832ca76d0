from autograder import course  # noqa: F401 -- first: it skips a slow optional import (SKIPPED_IMPORTS)
from autograder.cli import main

raise SystemExit(main())
