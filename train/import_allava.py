"""Convert a released ALLaVA checkpoint (LLaVA code-base layout) into a transformers Llava folder.

    python train/import_allava.py path/to/ALLaVA-Phi2-2_7B --output-dir outputs/allava-3b-released

The result loads with plain LlavaForConditionalGeneration.from_pretrained, so export/, quantize/
and bench/ take it like any checkpoint trained here. Download the release yourself first
(e.g. `huggingface-cli download FreedomIntelligence/ALLaVA-Phi2-2_7B --local-dir ...`).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python train/import_allava.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="folder of the released checkpoint (config.json + weights + tokenizer)")
    ap.add_argument("--output-dir", required=True, help="where to write the transformers Llava folder")
    ap.add_argument("--vision-heads", type=int, help="CLIP attention heads (default: hidden size / 64)")
    args = ap.parse_args(argv)
    from allava.released import ImportError_, import_released

    try:
        out = import_released(args.source, args.output_dir, args.vision_heads)
    except (ImportError_, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"imported {args.source} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
