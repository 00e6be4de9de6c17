"""``python -m tablekit`` → the ``tablekit`` command."""

import sys

from .cli import main

sys.exit(main())
