import sys

from starx.cli import main

sys.exit(main())
