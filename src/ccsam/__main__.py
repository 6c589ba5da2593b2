"""``python -m ccsam`` (and ``torchrun ... -m ccsam train ...``): the ``ccsam`` command line."""

from ccsam.cli.main import main

raise SystemExit(main())
