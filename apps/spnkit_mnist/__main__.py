import sys

from spnkit.cli import main

sys.exit(main())
