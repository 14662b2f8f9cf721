#!/usr/bin/env python3
"""hyops decision dispatcher: the entry point (`dispatcher.py --help`).

The code is the package `hyops_dispatcher` beside this file (one release folder holds
both); this file only puts that folder first on sys.path, so the release it belongs to is
the one that runs, whatever else is installed.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from hyops_dispatcher.cli import main

if __name__ == "__main__":
    sys.exit(main())
