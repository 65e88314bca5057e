"""``python -m migkit.simulator``: create, show, reset and inspect simulated nodes."""

import sys

from migkit.simulator import main

sys.exit(main())
