"""``python -m spnkit_mnist fit mnist ...``: the ``spnkit`` command line with this application's subcommands."""

import sys

from spnkit.cli import main

sys.exit(main())
