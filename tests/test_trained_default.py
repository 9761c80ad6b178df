"""The trained default's held-out score: a floor under the README's measured figure, per machine kind.

Every other trained-model test compares a variant with PyTorch, so training could fall to near chance
and they would all pass. This gate reads the score training itself wrote, ``outputs/tiny/eval_results.json``
(``train/pipeline.py evaluate_heldout``: greedy exact match of the final model on every question of the
built-in world's held-out file, whose scenes are disjoint from the training scenes), after checking the
file is that score: it names the held-out file, counts all of its questions, and its total equals its
per-type counts. A slow companion re-scores 400 held-out questions from the saved folder, so a stale
eval_results.json next to another model cannot pass for it.

Floors (README "Headline figures"; docs/experiments.md): 84.7% measured with bf16 autocast (CPUs with
AVX512-BF16/AMX, ``precision: auto`` picks bf16), 86.6% in fp32 (AVX2-only CPUs). Training is deterministic
per machine kind, but another machine of the kind, or another thread count, behaves like another seed,
and seeds have differed by 5-7 points; so the floor is the measured figure less 7 points (77.7% / 79.6%).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HELDOUT, REPO, TRAINED, needs_trained

MEASURED = {"bf16": 84.7, "fp32": 86.6}  # README: held-out exact match of `python train/run.py`, by precision
MARGIN = 7.0  # points: the seed spread the README and the experiment log state (5-7)


def training_precision(train_config: dict[str, Any]) -> str:
    """The precision the default trained in: the config's, with ``auto`` resolved as training resolves it
    on this CPU (scripts/test.sh trains outputs/tiny on the machine that then runs the tests)."""
    import torch

    from train.trainer import resolve_precision

    return resolve_precision(str(train_config.get("precision", "auto")), torch.device("cpu"))


def score_problems(results: dict[str, Any], heldout_file: Path, heldout_n: int, precision: str) -> list[str]:
    """Why ``results`` (an eval_results.json) fails the gate; empty when it passes. Pure: unit-tested below."""
    held = results.get("heldout")
    if not held:
        return [f"no held-out score in eval_results.json ({results.get('note', 'heldout is empty')})"]
    problems = []
    eval_file = Path(str(results.get("eval_file", "")))
    eval_file = eval_file if eval_file.is_absolute() else REPO / eval_file
    if eval_file.resolve() != heldout_file.resolve():
        problems.append(f"scored on {eval_file}, not the held-out file {heldout_file}")
    per_type = held.get("per_type", {})
    if not held["n"] == heldout_n == sum(t["n"] for t in per_type.values()):
        problems.append(f"scored {held['n']} questions (per type {sum(t['n'] for t in per_type.values())}); "
                        f"the held-out file has {heldout_n}")
    hits = sum(t["exact_match"] * t["n"] / 100 for t in per_type.values())
    if abs(100 * hits / max(1, held["n"]) - held["exact_match"]) > 1e-6:
        problems.append(f"exact_match {held['exact_match']} is not its per-type scores' total")
    if precision not in MEASURED:
        return [*problems, f"no measured figure for precision {precision!r} (README: {MEASURED})"]
    floor = MEASURED[precision] - MARGIN
    if held["exact_match"] < floor:
        problems.append(f"held-out exact match {held['exact_match']:.1f}% < floor {floor:.1f}% "
                        f"(README {MEASURED[precision]}% in {precision}, less {MARGIN} points of seed spread)")
    return problems


@needs_trained
def test_trained_default_heldout_score_above_floor():
    from allava.evaluate import load_heldout

    path = TRAINED / "eval_results.json"
    assert path.is_file(), f"{path} is missing: training did not finish (python train/run.py writes it last)"
    results = json.loads(path.read_text())
    precision = training_precision(json.loads((TRAINED / "train_config.json").read_text()))
    print(f"trained default: {results['heldout']['exact_match']:.1f}% on {results['heldout']['n']} held-out "
          f"questions ({precision}; floor {MEASURED[precision] - MARGIN:.1f}%)")
    assert not score_problems(results, HELDOUT, len(load_heldout(HELDOUT)), precision)


@needs_trained
@pytest.mark.slow
def test_saved_checkpoint_scores_above_floor_on_400_heldout_questions():
    """The saved folder (what every export test reads), fp32, the first 400 held-out questions: above the
    same floor. The first 400 are no harder than the rest (PyTorch 90.25% on them, docs/experiments.md)."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from allava.evaluate import load_heldout, predict_torch, score

    items = load_heldout(HELDOUT, limit=400)
    model = LlavaForConditionalGeneration.from_pretrained(TRAINED, dtype=torch.float32).eval()
    preds = predict_torch(model, AutoProcessor.from_pretrained(TRAINED), items, max_new_tokens=8, progress=False)
    got = score(items, preds)["exact_match"]
    floor = min(MEASURED.values()) - MARGIN
    print(f"saved checkpoint, first {len(items)} held-out questions: {got:.1f}% (floor {floor:.1f}%)")
    assert got >= floor


def _results(em: float, n: int = 100, eval_file: str = "outputs/world/ALLaVA-Heldout-World.json") -> dict[str, Any]:
    a = round(n * 0.6)
    per = {"a": {"exact_match": em, "n": a}, "b": {"exact_match": em, "n": n - a}}
    return {"heldout": {"exact_match": em, "n": n, "per_type": per}, "eval_file": eval_file}


def test_gate_logic_on_made_up_results():
    """The floor and the honesty checks, on made-up eval_results: at the README's figures it passes, a few
    points under still passes, near chance fails, and a partial / foreign / inconsistent score fails."""
    heldout = REPO / "outputs/world/ALLaVA-Heldout-World.json"
    assert score_problems(_results(84.7), heldout, 100, "bf16") == []
    assert score_problems(_results(86.6), heldout, 100, "fp32") == []
    assert score_problems(_results(78.0), heldout, 100, "bf16") == []  # within the seed spread
    assert any("floor 77.7%" in p for p in score_problems(_results(77.0), heldout, 100, "bf16"))
    assert any("floor 79.6%" in p for p in score_problems(_results(79.0), heldout, 100, "fp32"))
    assert score_problems(_results(35.0), heldout, 100, "fp32")
    assert any("the held-out file has 2441" in p for p in score_problems(_results(90.0, n=16), heldout, 2441, "fp32"))
    assert any("not the held-out file" in p
               for p in score_problems(_results(90.0, eval_file="/x/train.json"), heldout, 100, "fp32"))
    bad = _results(90.0)
    bad["heldout"]["exact_match"] = 99.0
    assert any("per-type" in p for p in score_problems(bad, heldout, 100, "fp32"))
    assert score_problems({"heldout": None, "note": "no eval.file configured"}, heldout, 100, "fp32")
