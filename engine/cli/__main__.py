"""``python -m engine.cli``: the CLI without the app launcher."""

import sys

from engine.cli import main

sys.exit(main())
