"""``python -m qdo.cli``, as before the command line became a package."""

import sys

from . import main

sys.exit(main())
