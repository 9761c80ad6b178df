"""Export a LLaVA-Phi Hugging Face checkpoint to CoreML: ML program packages for iOS 18 / macOS 15.

  python export/to_coreml.py outputs/tiny --outdir outputs/exports/coreml/FP16
  python export/to_coreml.py outputs/tiny --outdir outputs/exports/coreml/INT4 --precision int4

Writes OUTDIR/ as one variant folder (allava/coreml_layout.py):
  vision.mlpackage                 pixel_values -> image_features (CLIP tower + projector, CLS dropped)
  embed_tokens.mlpackage           input_ids -> inputs_embeds
  language_model.mlpackage         inputs_embeds + causal_mask -> logits, key/value cache as states
                                   (language_model_00.mlpackage, _01, ... when chunked: large models)
  config.json, tokenizer and processor files, chat template, manifest.json

Precisions: fp16 (compute in fp16, attention scores and softmax in fp32), int8 (per channel), int4
(blocks of 32), palette4 (4-bit k-means lookup tables per 16 output channels; needs scikit-learn).
--source FP16_DIR compresses an existing FP16 export of the same checkpoint instead of converting
again (the programs are identical; only the weights change).

Verification on Linux, where CoreML cannot run a package (recorded in the manifest, see README):
(1) the PyTorch programs the packages were converted from equal the Hugging Face model's greedy
tokens; (2) the saved packages, executed by the reference MIL evaluator (runtimes/coreml_mil.py),
equal them too, with the first-token logit error; (3) the spec check (export/coreml_spec.py):
inputs, outputs, states, iOS 18 target, op counts, weight precisions. export/check.py measures
held-out parity through the same evaluator. On a Mac the runtime runs the packages themselves.

Everything is written to a temporary folder beside OUTDIR and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import gc
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from allava.checkpoint import CheckpointError, open_checkpoint
from allava.cli import exit_code
from allava.coreml_layout import DEFAULT_MAX_CONTEXT, EMBED_PACKAGE, FORMAT, VISION_PACKAGE
from allava.fileio import staging_folder
from allava.formats import get_format
from allava.variant import Manifest, ManifestError, human_size, is_variant
from export.errors import ExportError
from export.staging import move_into_place

MODEL_FOLDER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                      "chat_template.jinja", "chat_template.json", "processor_config.json", "preprocessor_config.json",
                      "special_tokens_map.json")
CHUNK_ABOVE_PARAMS = 1_000_000_000  # language models larger than this are converted in chunks of layers
DEFAULT_CHUNK_LAYERS = 8  # Phi-2: four chunks of ~630M parameters, each converted in a few GB
VERIFY_MAX_PARAMS = 1_000_000_000  # (1) and (2) at export time only for small models (full size: bench script)


def check_outdir(outdir: Path) -> bool:
    """True when ``outdir`` holds a CoreML variant to replace; False when absent or empty. Anything
    else is refused, so an export never overwrites a folder it did not write."""
    if not outdir.exists():
        return False
    if not outdir.is_dir():
        raise ExportError(f"{outdir}: exists and is not a folder")
    if not any(outdir.iterdir()):
        return False
    if not is_variant(outdir):
        raise ExportError(f"{outdir}: exists with other content (no CoreML manifest.json); choose an empty or new --outdir")
    try:
        man = Manifest.read(outdir)
    except ManifestError as exc:
        raise ExportError(str(exc)) from exc
    if man.format != FORMAT:
        raise ExportError(f"{outdir}: holds a {man.format} variant, not a CoreML export; choose another --outdir")
    return True


def _precision(name: str) -> str:
    fmt = get_format(FORMAT)
    known = [p.name for p in fmt.made_by("export")]
    if name.upper() not in known:
        raise ExportError(f"unknown --precision {name!r}; choose from {', '.join(k.lower() for k in known)}")
    return name.upper()


def _check_phi(ck: Any) -> None:
    got = ck.text.get("model_type")
    if got != "phi":
        raise ExportError(f"{ck.path}/config.json: text_config.model_type is {got!r}; export/to_coreml.py converts "
                          "LLaVA-Phi checkpoints (text model 'phi') only")


def _load_model(ck: Any) -> Any:
    import torch
    from transformers import LlavaForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    first = next(iter(ck.keys))
    stored = ck.tensor(first).dtype
    dtype = stored if stored in (torch.float32, torch.bfloat16, torch.float16) else torch.float32
    return LlavaForConditionalGeneration.from_pretrained(ck.path, dtype=dtype, attn_implementation="eager").eval()


def _lm_params(ck: Any) -> int:
    n = 0
    for name, shape in ck.shapes.items():
        if name.startswith(("text.", "lm_head.")):
            k = 1
            for d in shape:
                k *= d
            n += k
    return n


def _write_model_folder(ck_path: Path, dest: Path) -> None:
    for name in MODEL_FOLDER_FILES:
        if (ck_path / name).is_file():
            shutil.copyfile(ck_path / name, dest / name)


def _manifest(stage: Path, precision: str, packages: list[str], source: dict[str, str], extra: dict[str, Any]) -> Manifest:
    lm = [p for p in packages if p not in (VISION_PACKAGE, EMBED_PACKAGE)]
    files: dict[str, str | Path] = {"vision": stage / VISION_PACKAGE, "embed_tokens": stage / EMBED_PACKAGE}
    files.update({("model" if i == 0 else f"model_{i:02d}"): stage / p for i, p in enumerate(lm)})
    fmt = get_format(FORMAT)
    man = Manifest.for_files(stage, files, format=FORMAT, precision=precision, source=source,
                             created_by="export/to_coreml.py", runtime=fmt.runtime, lm_packages=lm, **extra)
    man.extra["lm_bytes"] = sum(man.sizes[r] for r in man.files if r.startswith("model"))
    return man


def export_coreml(checkpoint: str | Path, outdir: str | Path, precision: str = "fp16", max_context: int | None = None,
                  chunk_layers: int | None = None, source_variant: str | Path | None = None, verify: int | None = None,
                  log: Any = print) -> Path:
    """Write one CoreML variant folder; returns it. See the module docstring."""
    t0 = time.time()
    prec = _precision(precision)
    ck = open_checkpoint(checkpoint)
    _check_phi(ck)
    outdir = Path(outdir)
    replace = check_outdir(outdir)
    source = {"checkpoint": str(ck.path.resolve()), "sha256": ck.fingerprint()}
    tc = ck.text
    max_context = int(max_context or min(int(tc.get("max_position_embeddings") or DEFAULT_MAX_CONTEXT), DEFAULT_MAX_CONTEXT))
    lm_params = _lm_params(ck)
    n_layers = int(tc["num_hidden_layers"])
    chunk_layers = int(chunk_layers or (DEFAULT_CHUNK_LAYERS if lm_params > CHUNK_ABOVE_PARAMS else n_layers))
    if max_context < 2 or chunk_layers < 1:
        raise ExportError(f"--max-context must be >= 2 and --chunk-layers >= 1 (got {max_context}, {chunk_layers})")
    src_man = _source_variant(Path(source_variant), source, max_context) if source_variant else None
    verify = (4 if lm_params <= VERIFY_MAX_PARAMS else 0) if verify is None else verify
    meta = {"source_sha256": source["sha256"], "max_context": str(max_context), "toolkit": "allava-edge"}
    numel = sum(int(math.prod(s)) for s in ck.shapes.values())
    needed = int(numel * get_format(FORMAT).precision(prec).bits_per_weight / 8)  # a full disk's "needed ~"
    with staging_folder(outdir, needed) as stage:
        _write_model_folder(ck.path, stage)
        model = None
        if src_man is not None:
            from export.coreml_convert import compress_existing

            packages = [src_man.files["vision"], src_man.files["embed_tokens"], *src_man.extra["lm_packages"]]
            for name in packages:
                t1 = time.perf_counter()
                compress_existing(Path(source_variant), stage, name, prec, meta)
                log(f"  {name:<28} {prec} from {source_variant} {time.perf_counter() - t1:6.1f} s")
            chunk_layers = int(src_man.extra.get("chunk_layers", chunk_layers))
        else:
            from export.coreml_convert import convert_all

            log(f"converting {ck.path} ({lm_params / 1e6:.1f}M LM parameters, {n_layers} layers in chunks of "
                f"{chunk_layers}, context {max_context}) to CoreML {prec}")
            model = _load_model(ck)
            packages = convert_all(model, stage, prec, max_context, chunk_layers, dict(meta), log)
        from export.coreml_spec import check_variant

        spec = check_variant(stage, prec, packages)
        verification: dict[str, Any] = {"spec": {name: {k: v for k, v in info.items() if k != "metadata"}
                                                 for name, info in spec.items()}}
        if verify:
            from export.coreml_verify import verify_variant

            model = model if model is not None else _load_model(ck)
            verification.update(verify_variant(model, stage, packages, chunk_layers, max_context, verify, log))
        del model
        gc.collect()
        man = _manifest(stage, prec, packages, source, {"max_context": max_context, "chunk_layers": chunk_layers,
                                                          "verification": verification,
                                                          "latency": "needs macOS (CoreML predict)"})
        man.write(stage)
        for p in stage.iterdir():  # mkdtemp made the folder 0700; exports are meant to be shared
            if p.is_file():
                p.chmod(0o644)
        stage.chmod(0o755)
        move_into_place(stage, outdir, replace)
    from allava.memory import peak_rss_mb

    log(f"peak RSS {peak_rss_mb() / 1024:.2f} GiB")
    log(f"wrote {outdir} ({prec}, {human_size(man.total_bytes)}: " +
        ", ".join(f"{Path(n).name} {human_size(man.sizes[r])}" for r, n in man.files.items()) + f") in {time.time() - t0:.1f} s")
    return outdir


def _source_variant(path: Path, source: dict[str, str], max_context: int) -> Manifest:
    """An FP16 CoreML export of the same checkpoint, to compress instead of converting again."""
    try:
        man = Manifest.read(path)
    except (FileNotFoundError, ManifestError) as exc:
        raise ExportError(f"--source {path}: {exc}") from exc
    if man.format != FORMAT or man.precision != "FP16":
        raise ExportError(f"--source {path}: a {man.format} {man.precision} variant; expected a CoreML FP16 export")
    if man.source.get("sha256") != source["sha256"]:
        raise ExportError(f"--source {path}: exported from another checkpoint ({man.source.get('checkpoint')})")
    if int(man.extra.get("max_context", max_context)) != max_context:
        raise ExportError(f"--source {path}: context {man.extra.get('max_context')}, asked for {max_context}")
    return man


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python export/to_coreml.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="Hugging Face LLaVA-Phi folder (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--outdir", required=True, help="the variant folder to write (new, empty, or a CoreML export to replace)")
    ap.add_argument("--precision", default="fp16", help="fp16 (default), int8, int4 or palette4")
    ap.add_argument("--max-context", type=int, default=None, help="tokens the key/value cache holds (default: the "
                    f"model's max_position_embeddings, at most {DEFAULT_MAX_CONTEXT})")
    ap.add_argument("--chunk-layers", type=int, default=None, help="decoder layers per language-model package (default: "
                    f"all when the LM has at most {CHUNK_ABOVE_PARAMS / 1e9:.0f}B parameters, else {DEFAULT_CHUNK_LAYERS})")
    ap.add_argument("--source", default=None, metavar="FP16_DIR", help="compress this FP16 CoreML export of the same "
                    "checkpoint instead of converting again")
    ap.add_argument("--verify", type=int, default=None, metavar="N", help="checks (1) and (2) on N synthetic prompts "
                    f"(default 4 for language models up to {VERIFY_MAX_PARAMS / 1e9:.0f}B parameters, else 0)")
    a = ap.parse_args(argv)
    return exit_code(lambda: export_coreml(a.checkpoint, a.outdir, a.precision, a.max_context, a.chunk_layers,
                                           a.source, a.verify), ExportError, CheckpointError, *_spec_errors())


def _spec_errors() -> tuple[type[BaseException], ...]:
    from export.coreml_spec import SpecError

    return (SpecError,)


if __name__ == "__main__":
    sys.exit(main())
