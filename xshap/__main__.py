"""``python -m xshap``: the command line (see xshap.cli)."""

from __future__ import annotations

import sys

from xshap.cli import main

if __name__ == "__main__":
    sys.exit(main())
