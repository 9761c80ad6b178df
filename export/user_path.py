"""GGUF parity the way llama.cpp's users run it: llama-cpp-python's MTMDChatHandler and llama-mtmd-cli.

Why apart from the runtime parity: runtimes/llamacpp_runtime.py renders the prompt itself and feeds
libmtmd an RGB bitmap, so it agrees with PyTorch by construction of the prompt. A user instead hands
llama.cpp a question and an image file: the chat template stored in the GGUF renders the prompt
around libmtmd's media marker, and libmtmd decodes and preprocesses the image. This module runs
those two paths on the same questions and images and compares their greedy answers with
transformers' (the PyTorch runtime's greedy tokens, whose prompt is the chat template's rendering).

  * MTMDChatHandler: ``Llama(..., chat_handler=MTMDChatHandler(mmproj)).create_chat_completion``
    with the image as a data URL and the question as a text part, greedy (temperature 0, top-k 1,
    no repeat penalty), the GGUF's own template.
  * llama-mtmd-cli: ``llama-mtmd-cli -m LM --mmproj MMPROJ --image IMG -p QUESTION --temp 0 [--jinja]``
    built with the same patched llama.cpp libraries (scripts/build_llama_cpp.sh); skipped with the
    reason when absent. With and without ``--jinja`` (see CliPath).

Images at sizes other than the model's: llama.cpp pads and resizes with its own code, PIL/HF with
theirs. ``pre_resize`` applies the HF processor's own steps (pad to a square with the mean colour,
resize, centre-crop) in Python first, so libmtmd gets an image of the native size, which it copies
unchanged: what a CLI user does with ``python -m export.user_path --pre-resize IMG OUT``.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from allava.variant import Manifest

DEFAULT_CLI = Path(".cache/llama-cpp-tools/bin/llama-mtmd-cli")


@dataclass
class UserPrompt:
    id: str
    image: Image.Image
    question: str  # the user's text, without the image marker or the chat format


def cli_path() -> Path | None:
    """llama-mtmd-cli: $LLAMA_MTMD_CLI, the project's build (scripts/build_llama_cpp.sh), or PATH."""
    env = os.environ.get("LLAMA_MTMD_CLI")
    if env:
        return Path(env) if Path(env).is_file() else None
    root = Path(__file__).resolve().parents[1]
    if (root / DEFAULT_CLI).is_file():
        return root / DEFAULT_CLI
    found = shutil.which("llama-mtmd-cli")
    return Path(found) if found else None


def variant_files(variant: Path) -> tuple[Path, Path]:
    man = Manifest.read(variant)
    if man.format != "gguf":
        raise ValueError(f"{variant}: a {man.format} variant; the user-path check is for GGUF")
    return variant / man.files["model"], variant / man.files["mmproj"]


def pre_resize(image: Image.Image, processor: Any) -> Image.Image:
    """The HF image processor's geometry (pad to square with the mean colour, resize, centre-crop)
    applied in PIL, without normalisation: an RGB image of the model's native size."""
    ip = processor.image_processor if hasattr(processor, "image_processor") else processor
    size = ip.crop_size["height"] if getattr(ip, "crop_size", None) else ip.size["shortest_edge"]
    img = image.convert("RGB")
    if getattr(ip, "do_pad", False) and img.width != img.height:
        side = max(img.size)
        fill = tuple(int(round(255 * m)) for m in ip.image_mean)
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        img = canvas
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return img


def _data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class ChatHandlerPath:
    """llama-cpp-python's MTMDChatHandler with the GGUF's template, greedy."""

    name = "MTMDChatHandler"

    def __init__(self, variant: Path, threads: int | None = None, n_ctx: int = 2048) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import MTMDChatHandler

        lm, mmproj = variant_files(variant)
        self.llm = Llama(model_path=str(lm), n_ctx=n_ctx, n_threads=threads or os.cpu_count(), verbose=False,
                         chat_handler=MTMDChatHandler(clip_model_path=str(mmproj), verbose=False))

    def answer(self, p: UserPrompt, max_tokens: int) -> str:
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_url(p.image)}},
                                                 {"type": "text", "text": p.question}]}]
        out = self.llm.create_chat_completion(messages=messages, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                              repeat_penalty=1.0, max_tokens=max_tokens, seed=0)
        return out["choices"][0]["message"]["content"] or ""

    def close(self) -> None:
        self.llm.close()


class CliPath:
    """Upstream llama-mtmd-cli from the same patched source, one process per prompt, greedy.

    ``jinja``: with ``--jinja`` llama.cpp renders the GGUF's own template; without it (this
    llama.cpp's default) it matches the template to one of its built-in formats by its look (ours
    reads as "vicuna") and renders that instead. Both are measured: the flag is what users must know."""

    def __init__(self, variant: Path, cli: Path, threads: int | None = None, jinja: bool = True) -> None:
        self.lm, self.mmproj = variant_files(variant)
        self.cli, self.threads, self.jinja = cli, threads or os.cpu_count(), jinja
        self.name = "llama-mtmd-cli --jinja" if jinja else "llama-mtmd-cli"
        self.reruns = 0  # runs repeated because the CLI printed nothing (see answer)
        self.tmp = Path(tempfile.mkdtemp(prefix="mtmd-cli-"))

    def answer(self, p: UserPrompt, max_tokens: int) -> str:
        img = self.tmp / f"{p.id}.png"
        p.image.save(img)
        cmd = [str(self.cli), "-m", str(self.lm), "--mmproj", str(self.mmproj), "--image", str(img), "-p", p.question,
               "--temp", "0", "--top-k", "1", "--repeat-penalty", "1.0", "-n", str(max_tokens), "-t", str(self.threads),
               "--seed", "0", "-c", "2048", "--no-warmup"] + (["--jinja"] if self.jinja else [])
        for _ in range(4):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"llama-mtmd-cli failed ({r.returncode}): {r.stderr.strip()[-400:]}")
            if r.stdout.strip():
                return r.stdout.strip()
            # this llama-mtmd-cli prints the answer through its asynchronous logger, which sometimes
            # exits before writing it (measured: 1 run in 4-8 prints nothing); greedy decoding is
            # deterministic, so the run is repeated and the repeat counted
            self.reruns += 1
        return ""

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token, None when equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(path: Any, prompts: list[UserPrompt], reference: dict[str, list[int]], tokenizer: Any,
            max_tokens: int, progress: bool = False) -> dict[str, Any]:
    """Agreement of ``path``'s answers with the reference token ids (PyTorch greedy, EOS dropped), per
    prompt the first differing token position; answers are compared as token ids of their text."""
    from tqdm import tqdm

    rows = []
    for p in tqdm(prompts, desc=f"user path: {path.name}", disable=not progress, leave=False):
        text = path.answer(p, max_tokens)
        got = tokenizer(text, add_special_tokens=False)["input_ids"]
        ref = reference[p.id]
        ref_text = tokenizer.decode(ref, skip_special_tokens=True)
        same = text.strip() == ref_text.strip()
        rows.append({"id": p.id, "same": same, "answer": text, "reference": ref_text,
                     "first_diff_token": None if same else first_difference(got, tokenizer(ref_text, add_special_tokens=False)["input_ids"])})
    n_same = sum(r["same"] for r in rows)
    return {"path": path.name, "n": len(rows), "same": n_same, "agreement": n_same / max(1, len(rows)),
            "empty_output_reruns": getattr(path, "reruns", 0), "prompts": rows}


SIZES = {"native": None, "128x128": (128, 128), "160x96": (160, 96)}  # the non-native: larger, and not square


def heldout_user_prompts(heldout: str | Path, n: int, size: tuple[int, int] | None) -> list[UserPrompt]:
    """The first ``n`` held-out questions with their images, resized (bicubic) to ``size`` when given:
    images of other sizes than the model's, as users bring them."""
    from allava.evaluate import load_heldout

    out = []
    for it in load_heldout(heldout, limit=n):
        img = Image.open(it.image).convert("RGB")
        out.append(UserPrompt(it.id, img.resize(size, Image.Resampling.BICUBIC) if size else img, it.question))
    return out


def reference_answers(ref: Any, prompts: list[UserPrompt], max_tokens: int) -> dict[str, list[int]]:
    """PyTorch's greedy answer ids (end of sequence dropped): the chat template's prompt, the image
    through the HF processor, as transformers users get them."""
    from allava.chat import prompt_text

    return {p.id: [t for t in ref.generate(p.image, prompt_text(p.question), max_tokens).token_ids if t != ref.eos_id]
            for p in prompts}


def measure_user_paths(ref: Any, variant: Path, heldout: str | Path, n: int, max_tokens: int = 16,
                       threads: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Agreement with PyTorch per user path and image size; for the non-native sizes also with the
    HF-style pre-resize applied first. The CLI is measured when the binary exists, else named absent."""
    tok = ref.tokenizer
    paths: list[Any] = [ChatHandlerPath(variant, threads)]
    cli = cli_path()
    if cli is not None:
        paths += [CliPath(variant, cli, threads, jinja=True), CliPath(variant, cli, threads, jinja=False)]
    out: dict[str, Any] = {"n": n, "max_tokens": max_tokens, "paths": {}, "cli": str(cli) if cli else None}
    try:
        for size_name, size in SIZES.items():
            prompts = heldout_user_prompts(heldout, n, size)
            refs = reference_answers(ref, prompts, max_tokens)
            for path in paths:
                res = compare(path, prompts, refs, tok, max_tokens, progress)
                out["paths"].setdefault(path.name, {})[size_name] = res
                if size is not None:
                    pre = [UserPrompt(p.id, pre_resize(p.image, ref.processor), p.question) for p in prompts]
                    out["paths"][path.name][f"{size_name}+pre-resize"] = compare(path, pre, refs, tok, max_tokens, progress)
    finally:
        for path in paths:
            path.close()
    if cli is None:
        out["paths"]["llama-mtmd-cli --jinja"] = {"absent": "not built (scripts/build_llama_cpp.sh; needs cmake and a C++ compiler)"}
    return out


def summarize(user: dict[str, Any]) -> dict[str, Any]:
    """Agreement rates per path and size, without the per-prompt rows (for the manifest summary)."""
    return {name: ({size: round(r["agreement"], 4) for size, r in sizes.items()} if "absent" not in sizes else sizes)
            for name, sizes in user["paths"].items()}


def format_user_path(user: dict[str, Any]) -> str:
    """One line per path and image size: agreement with PyTorch and the first differing token positions."""
    lines = [f"user paths ({user['n']} held-out questions, {user['max_tokens']} tokens, greedy) vs PyTorch:"]
    for name, sizes in user["paths"].items():
        if "absent" in sizes:
            lines.append(f"  {name:<16} {sizes['absent']}")
            continue
        for size, r in sizes.items():
            diffs = [row["first_diff_token"] for row in r["prompts"] if not row["same"]]
            lines.append(f"  {name:<16} {size:<20} {r['same']}/{r['n']} identical"
                         + (f"; first differing token at {diffs[:8]}" if diffs else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.user_path", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pre-resize", nargs=2, metavar=("IMAGE", "OUT"), required=True,
                    help="write IMAGE resized the way the HF processor does (pad, resize, crop) to OUT")
    ap.add_argument("--checkpoint", default="outputs/tiny", help="the model folder whose processor to follow")
    a = ap.parse_args(argv)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(a.checkpoint)
    pre_resize(Image.open(a.pre_resize[0]), processor).save(a.pre_resize[1])
    print(f"wrote {a.pre_resize[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
