"""`python -m unisim.cli …` is `unisim …`."""

import sys

from unisim.cli import main

sys.exit(main())
