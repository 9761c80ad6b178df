"""Quantize an export: one command for every format, dispatched through the format table.

  python quantize/run.py --format gguf --types q8_0,q5_k_m,q4_k_m,q4_0 --export outputs/exports/gguf
  python quantize/run.py --format gguf --help          # that format's own options

Which formats have a quantizer, and which precisions each makes, is the format table's
(allava/formats.py); the options after --format belong to that format's quantizer.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from allava.formats import all_formats, get_format


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quantizable = {f.name: f for f in all_formats() if f.quantize is not None}
    epilog = "\n".join(f"  {f.name:<8} {', '.join(p.cli for p in f.made_by('quantize'))}" for f in quantizable.values())
    ap = argparse.ArgumentParser(prog="python quantize/run.py", description=__doc__, add_help=False,
                                 epilog=f"formats and their types:\n{epilog}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", choices=sorted(quantizable), help="export format to quantize")
    ap.add_argument("-h", "--help", action="store_true", help="this help, or with --format that format's options")
    a, rest = ap.parse_known_args(argv)
    if a.format is None:
        if a.help:
            ap.print_help()
            return 0
        ap.error("--format is required")
    quantizer = get_format(a.format).quantize
    assert quantizer is not None
    return importlib.import_module(quantizer.module).main(rest + (["--help"] if a.help else []))


if __name__ == "__main__":
    sys.exit(main())
