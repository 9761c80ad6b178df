"""Entry point: ``python synth/run.py MODE [input] --output-dir DIR ...`` (see ``--help``)."""

import sys

from synth.cli import main

if __name__ == "__main__":
    sys.exit(main())
