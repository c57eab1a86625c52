#!/usr/bin/env python3
"""kei launcher: run ``python3 kei.py`` in a work directory holding keiconf.py.

All the logic is in keilib/daemon.py; ``kei`` (the installed console script)
is the same program.
"""

import sys

from keilib.daemon import main

if __name__ == "__main__":
    sys.exit(main())
