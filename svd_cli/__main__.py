"""`python -m svd_cli` is `svd`."""

import sys

from .cli import main

sys.exit(main())
