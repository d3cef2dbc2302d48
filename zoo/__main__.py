"""``python -m zoo`` (and ``torchrun -m zoo``) run the CLI."""

import sys

from zoo.cli import main

sys.exit(main())
