"""The runtime contract, checked for every format in the format table (allava/formats.py).

A format joins this test by being in the table: its variant is built by the table's own export
command (or, for a format made from the checkpoint by its quantizer, that command), as the bench
builds it; then every runtime must load it (a format whose engine cannot run here is opened
through its stand-in when it has one, as the bench does: CoreML off macOS), generate greedy tokens with
timings, generate exactly N tokens with ignore_eos, honour the capabilities it claims, and refuse a
broken variant with an error that names it. A format this host cannot run is skipped with the
table's reason.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from allava.formats import REFERENCE, all_formats, get_format
from allava.variant import Manifest, is_variant

FORMATS = [f.name for f in all_formats()]


def _prompt():
    from export.parity import synthetic_prompts

    return synthetic_prompts(1, 96, seed=11)[0]


@pytest.fixture(scope="module")
def built(tiny_ckpt: Path, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """One variant per format, made by the format's export command: (the folder the command wrote,
    the variant folder inside it); for the reference, the checkpoint itself."""
    out: dict[str, tuple[Path, Path]] = {REFERENCE: (tiny_ckpt, tiny_ckpt)}
    root = tmp_path_factory.mktemp("contract")
    for fmt in all_formats():
        if fmt.name == REFERENCE or (fmt.not_runnable_reason() and not fmt.stand_in_available()):
            continue
        outdir = root / fmt.name
        if fmt.export is not None:
            precision = fmt.made_by("export")[0]
            argv = fmt.export.argv(checkpoint=str(tiny_ckpt), outdir=str(outdir), precision=precision.cli,
                                   name=precision.name)
        else:  # a format its quantizer makes straight from the checkpoint (GPTQ)
            assert fmt.quantize is not None and fmt.quantize_source is None, f"{fmt.name}: no command makes it"
            precision = fmt.made_by("quantize")[0]
            argv = fmt.quantize.argv(checkpoint=str(tiny_ckpt), outdir=str(outdir), precision=precision.cli,
                                     name=precision.name, precisions=precision.cli)
        proc = subprocess.run(argv, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        variants = [p.parent for p in outdir.rglob("*") if p.is_file() and is_variant(p.parent)]
        assert variants, f"{fmt.name}: the export command wrote no variant manifest under {outdir}"
        out[fmt.name] = (outdir, sorted(set(variants))[0])
    return out


def _open(name: str, built: dict[str, tuple[Path, Path]]):
    return _load(name, built[name][1])


def _load(name: str, variant: Path):
    from runtimes import load_runtime

    fmt = get_format(name)
    if fmt.stand_in_available():
        return fmt.stand_in_class()().load(variant, threads=1)
    reason = fmt.not_runnable_reason()
    if reason:
        pytest.skip(f"{name}: {reason}")
    return load_runtime(variant, threads=1, fmt=name)


@pytest.mark.parametrize("name", FORMATS)
def test_load_generate_and_timings(name: str, built: dict[str, tuple[Path, Path]]):
    p = _prompt()
    with _open(name, built) as rt:
        assert rt.format == name and rt.load_s > 0, rt
        g = rt.generate(p.image, p.prompt, 8)
        assert isinstance(g.text, str) and 1 <= len(g.token_ids) <= 8 and all(isinstance(t, int) for t in g.token_ids)
        t = g.timings
        assert t.n_generated == len(g.token_ids) and t.n_prompt_tokens > 9  # nine image tokens and the text
        assert t.image_encode_ms > 0 and t.ttft_ms >= t.image_encode_ms and t.prefill_tok_s > 0 and t.peak_rss_mb > 0
        text_only = rt.generate(None, p.prompt.replace("<image>", ""), 4)
        assert 1 <= len(text_only.token_ids) <= 4 and text_only.timings.image_encode_ms == 0


@pytest.mark.parametrize("name", FORMATS)
def test_ignore_eos_generates_exactly_n(name: str, built: dict[str, tuple[Path, Path]]):
    p = _prompt()
    with _open(name, built) as rt:
        normal = rt.generate(p.image, p.prompt, 20).token_ids
        fixed = rt.generate(p.image, p.prompt, 20, ignore_eos=True)
        assert len(fixed.token_ids) == 20 and fixed.timings.n_generated == 20
        assert fixed.token_ids[: len(normal)] == normal  # the normal answer is the prefix
        assert fixed.timings.decode_tok_s > 0


@pytest.mark.parametrize("name", FORMATS)
def test_claimed_capabilities_work(name: str, built: dict[str, tuple[Path, Path]]):
    from runtimes.base import CAPABILITIES, NotSupportedError

    p = _prompt()
    with _open(name, built) as rt:
        g = rt.generate(p.image, p.prompt, 6)
        for cap in CAPABILITIES:
            if not rt.supports(cap):
                with pytest.raises(NotSupportedError, match=cap):
                    getattr(rt, cap)() if cap in ("build_info", "perf_counters") else getattr(rt, cap)(p.image)
        if rt.supports("score"):
            logits = rt.score(p.image, p.prompt, g.token_ids)
            assert logits.ndim == 2 and logits.shape[0] == len(g.token_ids)
            assert logits.argmax(-1).tolist() == g.token_ids  # greedy tokens are the teacher-forced argmax
        if rt.supports("image_embeddings"):
            emb = rt.image_embeddings(p.image)
            assert emb.ndim == 2 and emb.shape[0] == 9 and np.isfinite(emb).all()
        if rt.supports("perf_counters"):
            rt.reset_perf_counters()
            rt.generate(p.image, p.prompt, 6, ignore_eos=True)
            pc = rt.perf_counters()
            assert pc["n_eval"] >= 5 and pc["t_eval_ms"] > 0
        if rt.supports("build_info"):
            assert isinstance(type(rt).build_info(), dict)


@pytest.mark.parametrize("name", FORMATS)
def test_broken_variant_is_refused_by_name(name: str, built: dict[str, tuple[Path, Path]], tmp_path: Path):
    from runtimes.base import VariantError

    fmt = get_format(name)
    if fmt.not_runnable_reason() and not fmt.stand_in_available():
        pytest.skip(fmt.not_runnable_reason())
    root, variant = built[name]
    copy = tmp_path / "broken"
    shutil.copytree(root, copy)  # the whole export: a variant's files may lie outside its folder (ONNX)
    broken = copy / variant.relative_to(root)
    files = Manifest.read(broken).paths(broken) if is_variant(broken) else sorted(broken.glob("*.safetensors"))
    biggest = max(files, key=lambda f: f.stat().st_size)
    data = biggest.read_bytes()
    biggest.unlink()  # the copy may be a hard link shared with the original
    biggest.write_bytes(data[: len(data) // 3])
    with pytest.raises(VariantError) as exc:
        _load(name, broken)
    assert str(broken) in str(exc.value)
