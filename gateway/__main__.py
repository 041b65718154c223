"""``python -m gateway``: the ``gateway`` console script (how the worker supervisor starts its workers)."""

import sys

from gateway.cli import main

sys.exit(main())
