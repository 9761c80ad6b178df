"""Entry point: ``python synth/run.py MODE [input] --output-dir DIR ...`` (see ``--help``)."""

import sys, pathlib  # noqa: E401, I001

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # repo root, so `import synth.x` works and synth/ never shadows a library

from synth.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
