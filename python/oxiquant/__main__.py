"""`python -m oxiquant`: the same as the `oxiquant` command (see oxiquant/cli.py)."""

import sys

from oxiquant.cli import main

if __name__ == "__main__":
    sys.exit(main())
