"""``python -m robusteval …``: the ``robusteval`` command."""
from __future__ import annotations

import sys

from robusteval.cli import main

sys.exit(main())
