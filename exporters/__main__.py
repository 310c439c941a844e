"""`python -m exporters ARGS` = `affectstream export ARGS` (for environments without the console script)."""

from __future__ import annotations

import sys

from agent.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "export", *sys.argv[1:]]
    main()
