"""Do the memory cuts keep PyTorch's answers? Parity of each cut on the trained tiny default (docs/memory.md).

Each cut is an engine setting (runtimes/llamacpp_settings.py) or a variant (a Q8_0 projector,
quantize/run.py --types q8_0-vq8_0 ...): the same parity measurement export/check.py makes (greedy
agreement on the parity prompts, teacher-forced top-1, held-out exact-match delta), once per cut,
against one PyTorch reference run.

  python bench/experiments/memory_cuts_parity.py outputs/tiny outputs/exports/gguf/F16 [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CUTS: dict[str, dict] = {
    "fixed n_ctx (model's training context, the old default)": {"n_ctx": 0},  # 0: replaced by n_ctx_train
    "n_ctx sized to the need of the run (new default)": {},
    "KV cache K q8_0 + V q8_0 (flash attention)": {"type_k": "q8_0", "type_v": "q8_0"},
    "KV cache K q8_0, V f16, flash attention off": {"type_k": "q8_0", "flash_attn": "off"},
}


def main(argv: list[str] | None = None) -> int:
    from export.check import ReferenceRun, measure

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("variants", type=Path, nargs="+", help="GGUF variant folders; each runs every cut")
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--accuracy", type=int, default=200, help="held-out questions scored per cut")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    heldout = str(ROOT / "outputs/world/ALLaVA-Heldout-World.json")
    ref = ReferenceRun(args.checkpoint, args.n, args.tokens, heldout, 0, args.threads, False, args.accuracy)
    n_ctx_train = json.loads((args.checkpoint / "config.json").read_text())["text_config"].get("max_position_embeddings")
    rows = []
    for variant in args.variants:
        for name, settings in CUTS.items():
            s = {**settings, "n_ctx": n_ctx_train} if settings.get("n_ctx") == 0 else settings
            res = measure(ref, variant, 5e-3, args.threads, progress=False, settings=s)
            summ = res["summary"]
            row = {"variant": variant.name, "cut": name, "settings": s,
                   **{k: summ.get(k) for k in ("greedy_exact_rate", "greedy_exact_or_tie_rate", "tf_top1_agreement",
                                               "heldout_exact_match", "heldout_delta", "heldout_same_count", "heldout_n")}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
