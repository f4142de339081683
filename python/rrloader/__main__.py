"""`python -m rrloader ...` runs the command line (see rrloader.cli)."""

import sys

from rrloader.cli import main

if __name__ == "__main__":
    sys.exit(main())
