"""Export a LLaVA-Phi Hugging Face checkpoint to ONNX: one folder in the transformers.js / onnx-community layout.

  python export/to_onnx.py outputs/tiny --outdir outputs/exports/onnx [--dtypes fp32,fp16]

Writes OUTDIR/ as a model folder (config.json, generation_config.json, processor and preprocessor
configs, tokenizer files, chat template) with the graphs in OUTDIR/onnx/:
  vision_encoder{suffix}.onnx        pixel_values -> image_features (projected, CLS dropped)
  embed_tokens{suffix}.onnx          input_ids -> inputs_embeds
  decoder_model_merged{suffix}.onnx  inputs_embeds, attention_mask, position_ids, past_key_values.N.key/value,
                                     num_logits_to_keep (0: every position; transformers.js feeds 1 when generating)
                                     -> logits, present.N.key/value (prefill and decode alike)
suffix: none for fp32, _fp16; quantize/run.py --format onnx adds _quantized (int8), _q4, _q4f16.
Graphs over 2 GB keep their weights in {file}.onnx_data. Each precision is one variant described by
OUTDIR/variants/<PRECISION>/manifest.json (export/README.md says why there): its files point into
onnx/, so the folder stays exactly what transformers.js and ONNX Runtime users expect.

Every graph is checked with onnx.checker and opened in an ONNX Runtime session before it is moved into
place; on any error nothing of the run is left behind.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path

from allava.checkpoint import CheckpointError, open_checkpoint
from allava.cli import exit_code
from allava.fileio import DiskFullError, missing_folders, remove_empty, staging_folder
from allava.formats import get_format
from allava.onnx_layout import (
    EXTERNAL_DATA_BYTES,
    GRAPHS,
    VARIANTS_DIR,
    GraphError,
    describe_variant,
    graph_file,
    save_graph,
    to_fp16,
    validate_graph,
    variant_dir,
)
from allava.onnx_layout import FORMAT as FORMAT_NAME
from allava.variant import Manifest, ManifestError, find_manifests, human_size
from export.errors import ExportError
from export.staging import move_into_place

FORMAT = get_format(FORMAT_NAME)
MODEL_FOLDER_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                      "chat_template.json", "processor_config.json", "special_tokens_map.json")


def check_outdir(outdir: Path, fingerprint: str) -> str:
    """What ``outdir`` holds: "new" (absent or empty), "same" (an ONNX export of this checkpoint: add to
    it), "other" (an ONNX export of another checkpoint: replaced whole, its stale variants with it).
    Anything else is refused, so an export never overwrites a folder it did not write."""
    if not outdir.exists():
        return "new"
    if not outdir.is_dir():
        raise ExportError(f"{outdir}: exists and is not a folder")
    if not any(outdir.iterdir()):
        return "new"
    manifests = find_manifests(outdir / VARIANTS_DIR)
    if not manifests:
        raise ExportError(f"{outdir}: exists with other content (no {VARIANTS_DIR}/*/manifest of an ONNX export); "
                          "choose an empty or new --outdir")
    state = "same"
    for vdir in manifests:
        try:
            man = Manifest.read(vdir)
        except ManifestError as exc:
            raise ExportError(str(exc)) from exc
        if man.format != FORMAT.name:
            raise ExportError(f"{outdir}: holds a {man.format} variant ({vdir}), not an ONNX export; choose another --outdir")
        if man.source.get("sha256") != fingerprint:
            state = "other"
    return state


def write_model_folder(ck_path: Path, config: dict, dest: Path, external: dict[str, bool]) -> None:
    """The files that make the export folder a model folder transformers.js and transformers open."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FOLDER_FILES:
        if (ck_path / name).is_file():
            shutil.copyfile(ck_path / name, dest / name)
    _embed_chat_template(ck_path, dest)
    cfg = dict(config)
    cfg["image_token_index"] = config.get("image_token_index", config.get("image_token_id"))
    cfg["transformers.js_config"] = {"use_external_data_format": {f"{g}.onnx": True for g, ext in external.items() if ext}}
    (dest / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    proc = json.loads((ck_path / "processor_config.json").read_text()) if (ck_path / "processor_config.json").is_file() else {}
    if proc:
        # One image-token count for every reader. transformers.js' LlavaProcessor repeats the marker
        # (H/p)*(W/p) + num_additional_image_tokens times and ignores vision_feature_select_strategy;
        # transformers' (and allava/preprocess.py) subtract one more for "default" (the CLS the model
        # drops). The vision graph has already dropped it (it outputs exactly the features to splice in),
        # so the folder describes the graph: nothing selected away ("full") and the extra tokens less the
        # dropped one. Same count as the checkpoint's processor in Python, and now in transformers.js too.
        extra = int(proc.get("num_additional_image_tokens", 0))
        if proc.get("vision_feature_select_strategy", config.get("vision_feature_select_strategy")) == "default":
            extra -= 1
        proc = {**proc, "num_additional_image_tokens": extra, "vision_feature_select_strategy": "full"}
        (dest / "processor_config.json").write_text(json.dumps(proc, indent=2) + "\n")
    image = proc.get("image_processor")
    if image:  # older readers (and transformers.js) look for the image processor in its own file
        (dest / "preprocessor_config.json").write_text(json.dumps({**image, "processor_class": "LlavaProcessor"}, indent=2) + "\n")


def _embed_chat_template(ck_path: Path, dest: Path) -> None:
    """Copy the chat template into the folder's tokenizer_config.json as well as chat_template.jinja.

    Why both: transformers (>= 4.43) reads chat_template.jinja, but transformers.js 4.3.2 reads a
    LLaVA model's template only from tokenizer_config.json's ``chat_template`` (its LlavaProcessor
    does not open chat_template.jinja), so without this ``processor.apply_chat_template(messages)``
    throws "tokenizer.chat_template is not set". Same text in both places, so every reader renders
    the same prompt (tests/export/test_onnx_transformersjs.py compares the ids)."""
    tok_cfg = dest / "tokenizer_config.json"
    if not tok_cfg.is_file():
        return
    cfg = json.loads(tok_cfg.read_text(encoding="utf-8"))
    jinja = ck_path / "chat_template.jinja"
    template = jinja.read_text(encoding="utf-8") if jinja.is_file() else cfg.get("chat_template")
    if not template:
        return
    cfg["chat_template"] = template
    tok_cfg.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert_fp16(src: Path, dst: Path) -> None:
    import onnx

    save_graph(to_fp16(onnx.load(str(src))), dst, external=src.with_name(src.name + "_data").exists() or None)


def export_onnx(checkpoint: str | Path, outdir: str | Path, dtypes: list[str]) -> list[Path]:
    """Export the fp32 graphs (and fp16 when asked) into ``outdir``; returns the variant folders."""
    precisions = [d.upper() for d in dtypes]
    known = [p.name for p in FORMAT.made_by("export")]
    bad = [d for d in precisions if d not in known]
    if bad:
        raise ExportError(f"unknown --dtypes {', '.join(d.lower() for d in bad)}; choose from {', '.join(k.lower() for k in known)}")
    t0 = time.time()
    ck = open_checkpoint(checkpoint)
    outdir = Path(outdir)
    source = {"checkpoint": str(ck.path.resolve()), "sha256": ck.fingerprint()}
    state = check_outdir(outdir, source["sha256"])
    created = missing_folders(outdir.parent)
    numel = sum(_numel(s) for s in ck.shapes.values())
    needed = (0 if state == "same" else 4 * numel) + (2 * numel if "FP16" in precisions else 0)  # ~ the weights
    with staging_folder(outdir, needed) as stage:
        lm_params = sum(_numel(s) for n, s in ck.shapes.items() if n.startswith(("text.", "lm_head.")))
        external = {g: g == "decoder_model_merged" and 4 * lm_params > EXTERNAL_DATA_BYTES for g in GRAPHS}
        write_model_folder(ck.path, ck.config, stage, external)
        (stage / "onnx").mkdir()
        have_fp32 = state == "same" and all((outdir / "onnx" / graph_file(g, "FP32")).is_file() for g in GRAPHS)
        fp32_dir = outdir / "onnx" if have_fp32 else stage / "onnx"
        if not have_fp32:
            from export.onnx_graphs import export_graph, load_for_export

            model = load_for_export(ck.path)
            for graph in GRAPHS:
                print(f"  exporting {graph} ...", flush=True)
                export_graph(graph, model, stage / "onnx" / graph_file(graph, "FP32"), external[graph])
            del model  # before validating: a full-size decoder opened in ONNX Runtime needs the memory
            gc.collect()
            for graph in GRAPHS:
                validate_graph(stage / "onnx" / graph_file(graph, "FP32"))
        if "FP16" in precisions:
            for graph in GRAPHS:
                dst = stage / "onnx" / graph_file(graph, "FP16")
                convert_fp16(fp32_dir / graph_file(graph, "FP32"), dst)
                validate_graph(dst)
        move_into_place(stage, outdir, replace=state == "other")
    made = ["FP32"] + [p for p in precisions if p != "FP32"]
    out = []
    for prec in made:
        try:
            man = describe_variant(outdir, prec, source, "export/to_onnx.py")
        except DiskFullError:
            if state == "new":  # graphs without their manifests are not an export: nothing of this run stays
                shutil.rmtree(outdir, ignore_errors=True)
                remove_empty(created)
            raise
        out.append(variant_dir(outdir, prec))
        print(f"  {prec:<6} {human_size(man.total_bytes):>12}  -> {outdir / 'onnx'} ({', '.join(Path(f).name for f in man.files.values())})")
    print(f"wrote {outdir} in {time.time() - t0:.1f} s")
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python export/to_onnx.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="Hugging Face LLaVA-Phi folder (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--outdir", required=True, help="the export folder (new, empty, or an ONNX export of this checkpoint)")
    ap.add_argument("--dtypes", default="fp32", help="comma-separated: fp32 (always written), fp16. "
                    "Lower bits: python quantize/run.py --format onnx")
    a = ap.parse_args(argv)
    return exit_code(lambda: export_onnx(a.checkpoint, a.outdir, [d.strip() for d in a.dtypes.split(",") if d.strip()]),
                     ExportError, CheckpointError, GraphError)


if __name__ == "__main__":
    sys.exit(main())
