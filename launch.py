#!/usr/bin/env python3
"""Start Easel: `python launch.py [serve flags]` sets up .venv if needed and runs `easel serve`.

`python launch.py --tests [pytest args]` sets up the test extras and runs the whole test suite."""

import sys

from webui.bootstrap import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
