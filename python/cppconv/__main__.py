"""``python -m cppconv``: the same as the ``cppconv`` command."""

import sys

from ._cli import main

sys.exit(main())
