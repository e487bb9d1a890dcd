"""``python -m xdt`` is the ``xdt`` command."""

import sys

from .cli import main

sys.exit(main())
