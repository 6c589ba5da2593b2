"""``python -m ccsam`` (and ``torchrun ... -m ccsam train ...``): the ``ccsam`` command line."""

from ccsam.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
