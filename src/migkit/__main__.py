import sys

from migkit.cli import main

sys.exit(main())
