import sys

from texas.cli import main

sys.exit(main())
