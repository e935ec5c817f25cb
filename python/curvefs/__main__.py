"""``python -m curvefs`` is the ``curvefs`` command."""

import sys

from curvefs.cli import main

sys.exit(main())
