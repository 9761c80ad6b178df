"""Export a LLaVA-Phi Hugging Face checkpoint to ONNX: one folder in the transformers.js / onnx-community layout.

  python export/to_onnx.py outputs/tiny --outdir outputs/exports/onnx [--dtypes fp32,fp16]

Writes OUTDIR/ as a model folder (config.json, generation_config.json, processor and preprocessor
configs, tokenizer files, chat template) with the graphs in OUTDIR/onnx/:
  vision_encoder{suffix}.onnx        pixel_values -> image_features (projected, CLS dropped)
  embed_tokens{suffix}.onnx          input_ids -> inputs_embeds
  decoder_model_merged{suffix}.onnx  inputs_embeds, attention_mask, position_ids, past_key_values.N.key/value
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
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from allava.formats import get_format
from allava.variant import Manifest, ManifestError, find_manifests, human_size, writing_variant
from export.checkpoint import ExportError, open_checkpoint

FORMAT = get_format("onnx")
GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
ROLES = {"vision_encoder": "vision_encoder", "embed_tokens": "embed_tokens", "decoder_model_merged": "model"}
SUFFIX = {"FP32": "", "FP16": "_fp16", "INT8": "_quantized", "Q4": "_q4", "Q4F16": "_q4f16"}
MODEL_FOLDER_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                      "chat_template.json", "processor_config.json", "special_tokens_map.json")
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with room for the graph itself
VARIANTS_DIR = "variants"
# Kept in float32 by the fp16 conversion: Phi-2's attention scores and softmax overflow in fp16,
# and layer norms lose the small variances; MatMuls, GELU and the rest run in fp16.
FP16_KEEP_FLOAT32 = ["Softmax", "LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Div", "Exp", "Range", "Where"]


def graph_file(graph: str, precision: str) -> str:
    return f"{graph}{SUFFIX[precision]}.onnx"


def variant_dir(root: Path, precision: str) -> Path:
    return root / VARIANTS_DIR / precision


def check_outdir(outdir: Path, fingerprint: str) -> None:
    """Refuse a folder that holds something else than an ONNX export of this checkpoint."""
    if not outdir.exists():
        return
    if not outdir.is_dir():
        raise ExportError(f"{outdir}: exists and is not a folder")
    if not any(outdir.iterdir()):
        return
    manifests = find_manifests(outdir / VARIANTS_DIR)
    if not manifests:
        raise ExportError(f"{outdir}: exists with other content (no {VARIANTS_DIR}/*/manifest of an ONNX export); "
                          "choose an empty or new --outdir")
    for vdir in manifests:
        try:
            man = Manifest.read(vdir)
        except ManifestError as exc:
            raise ExportError(str(exc)) from exc
        if man.format != FORMAT.name or man.source.get("sha256") != fingerprint:
            raise ExportError(f"{outdir}: holds an export of another checkpoint or format ({vdir}); "
                              "choose another --outdir")


def write_model_folder(ck_path: Path, config: dict, dest: Path, external: dict[str, bool]) -> None:
    """The files that make the export folder a model folder transformers.js and transformers open."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FOLDER_FILES:
        if (ck_path / name).is_file():
            shutil.copyfile(ck_path / name, dest / name)
    cfg = dict(config)
    cfg["image_token_index"] = config.get("image_token_index", config.get("image_token_id"))
    cfg["transformers.js_config"] = {"use_external_data_format": {f"{g}.onnx": True for g, ext in external.items() if ext}}
    (dest / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    proc = json.loads((ck_path / "processor_config.json").read_text()) if (ck_path / "processor_config.json").is_file() else {}
    image = proc.get("image_processor")
    if image:  # older readers (and transformers.js) look for the image processor in its own file
        (dest / "preprocessor_config.json").write_text(json.dumps({**image, "processor_class": "LlavaProcessor"}, indent=2) + "\n")


def validate_graph(path: Path) -> None:
    """onnx.checker on the file (external data included) and an ONNX Runtime session that opens it."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=False)
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - checker and ORT raise many types; the file is unusable either way
        raise ExportError(f"{path}: the written graph does not validate ({type(exc).__name__}: {str(exc)[:300]})") from exc


def convert_fp16(src: Path, dst: Path) -> None:
    """float16 weights and compute, inputs/outputs kept float32 (runtimes feed float32 and get float32
    logits), with the ops that overflow or lose precision in fp16 kept in float32 (FP16_KEEP_FLOAT32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP16_KEEP_FLOAT32)
    OnnxModel(half).topological_sort()  # the converter appends its input casts at the end of the graph
    external = src.with_name(src.name + "_data").exists() or half.ByteSize() > EXTERNAL_DATA_BYTES
    save_graph(half, dst, external)


def save_graph(model, path: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + "_data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def graph_files(root: Path, graph: str, precision: str) -> list[Path]:
    """The graph's .onnx file and, when it has one, its external data file."""
    path = root / "onnx" / graph_file(graph, precision)
    data = path.with_name(path.name + "_data")
    return [path, data] if data.exists() else [path]


def describe_variant(root: Path, precision: str, source: dict, created_by: str, **extra) -> Manifest:
    """Write the manifest of one precision (its files are already in place under root/onnx/)."""
    vdir = variant_dir(root, precision)
    vdir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for graph in GRAPHS:
        for k, f in enumerate(graph_files(root, graph, precision)):
            files[ROLES[graph] + ("_data" if k else "")] = str(f.resolve())
    man = Manifest.for_files(vdir, files, format=FORMAT.name, precision=precision, name=root.name, source=source,
                             created_by=created_by, runtime="onnxruntime", model_folder=os.path.relpath(root, vdir),
                             suffix=SUFFIX[precision], **extra)
    with writing_variant(vdir):
        man.write(vdir)
    return man


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
    check_outdir(outdir, source["sha256"])
    outdir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=outdir.parent))
    try:
        lm_params = sum(_numel(s) for n, s in ck.shapes.items() if n.startswith(("text.", "lm_head.")))
        external = {g: g == "decoder_model_merged" and 4 * lm_params > EXTERNAL_DATA_BYTES for g in GRAPHS}
        write_model_folder(ck.path, ck.config, stage, external)
        (stage / "onnx").mkdir()
        have_fp32 = all((outdir / "onnx" / graph_file(g, "FP32")).is_file() for g in GRAPHS)
        fp32_dir = outdir / "onnx" if have_fp32 else stage / "onnx"
        if not have_fp32:
            from export.onnx_graphs import export_graph, load_for_export

            model = load_for_export(ck.path)
            for graph in GRAPHS:
                print(f"  exporting {graph} ...", flush=True)
                export_graph(graph, model, stage / "onnx" / graph_file(graph, "FP32"), external[graph])
                validate_graph(stage / "onnx" / graph_file(graph, "FP32"))
            del model
        if "FP16" in precisions:
            for graph in GRAPHS:
                dst = stage / "onnx" / graph_file(graph, "FP16")
                convert_fp16(fp32_dir / graph_file(graph, "FP32"), dst)
                validate_graph(dst)
        _move_into_place(stage, outdir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    made = ["FP32"] + [p for p in precisions if p != "FP32"]
    out = []
    for prec in made:
        man = describe_variant(outdir, prec, source, "export/to_onnx.py")
        out.append(variant_dir(outdir, prec))
        print(f"  {prec:<6} {human_size(man.total_bytes):>12}  -> {outdir / 'onnx'} ({', '.join(Path(f).name for f in man.files.values())})")
    print(f"wrote {outdir} in {time.time() - t0:.1f} s")
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _move_into_place(stage: Path, outdir: Path) -> None:
    """A new folder is renamed in one step; into an existing export each file is replaced atomically."""
    if not outdir.exists():
        os.replace(stage, outdir)
        return
    for src in sorted(stage.rglob("*")):
        if src.is_file():
            dst = outdir / src.relative_to(stage)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python export/to_onnx.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="Hugging Face LLaVA-Phi folder (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--outdir", required=True, help="the export folder (new, empty, or an ONNX export of this checkpoint)")
    ap.add_argument("--dtypes", default="fp32", help="comma-separated: fp32 (always written), fp16. "
                    "Lower bits: python quantize/run.py --format onnx")
    a = ap.parse_args(argv)
    try:
        export_onnx(a.checkpoint, a.outdir, [d.strip() for d in a.dtypes.split(",") if d.strip()])
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
