"""`python -m drsn_asr ...` is the `drsn-asr` command."""

import sys

from .cli import main

sys.exit(main())
