"""The built-in world's offline benchmark sets: every adapter reads its set cleanly, ground truths
score the maximum, judged benchmarks say "no judge", answers follow from the scenes, only held-out
images are used, and emission is deterministic, idempotent and safe for foreign folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from allava.world import WorldSpec, build_world
from allava.world.scene import POSITIONS, Scene
from bench.benchmarks import REPORT_BENCHMARKS, STATUS_NO_JUDGE, get_adapter
from bench.benchmarks.base import Item
from bench.benchmarks.pairwise_adapter import load_baseline
from bench.benchmarks.world_sets import MANIFEST, emit_world_benchmarks

SPEC = WorldSpec(train_scenes=20, heldout_scenes=30, text_records=20)
PER = 24
JUDGED = {"mmvet", "emt", "mllm_bench", "touchstone", "llava_bench", "vicuna80"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return build_world(tmp_path_factory.mktemp("ws_world"), SPEC, progress=False)


@pytest.fixture(scope="module")
def sets(world, tmp_path_factory) -> dict[str, Path]:
    return emit_world_benchmarks(world, tmp_path_factory.mktemp("ws_out") / "sets", per_benchmark=PER, seed=0)


def scenes(world: Path) -> dict[str, Scene]:
    rows = [json.loads(line) for line in (world / "scenes.jsonl").read_text().splitlines() if line.strip()]
    return {r["id"]: Scene.from_json(r) for r in rows}


def load(name: str, root: Path) -> tuple[list[Item], object]:
    ad = get_adapter(name)
    items = ad.load(root)
    return items, ad


def ground_truth(name: str, items: list[Item]) -> dict[str, str]:
    key = {"mme": "gt", "mmbench": "answer", "seed": "answer", "mmmu": "answer", "gqa": "answer"}
    if name == "textvqa":
        return {it.id: it.meta["answers"][0] for it in items}
    return {it.id: str(it.meta[key[name]]) for it in items}


@pytest.mark.parametrize("name", REPORT_BENCHMARKS)
def test_adapter_reads_world_set_cleanly_and_only_heldout_images(name, world, sets) -> None:
    items, ad = load(name, sets[name])
    assert items, name
    assert ad.load_issues == [] and dict(ad.load_counts) == {"loaded": len(items)}
    assert len({it.id for it in items}) == len(items)
    heldout = {p.read_bytes() for p in (world / "images").glob("world_heldout_*.png")}
    for it in items:
        assert ad.prompt(it)
        if name == "vicuna80":
            assert it.image is None
            continue
        if isinstance(it.image, Path):
            assert it.image.name.startswith("world_heldout_")
            data = it.image.read_bytes()
        else:
            data = it.image
        assert data in heldout, f"{name}/{it.id}: image is not a held-out world image"
        assert it.load_image().size == (96, 96)


@pytest.mark.parametrize("name", sorted(set(REPORT_BENCHMARKS) - JUDGED))
def test_ground_truth_predictions_score_the_maximum(name, sets) -> None:
    items, ad = load(name, sets[name])
    res = ad.score(items, ground_truth(name, items))
    assert res.status == "ok" and res.counts["missing_prediction"] == 0
    assert res.headline == pytest.approx(100.0 if name != "mme" else 200.0 * len(res.details["perception_subtasks"]))
    if name == "mme":  # 200 per subtask = 100 * acc + 100 * acc+, so both are 100%
        assert set(res.details["perception_subtasks"]) == {"existence", "count", "position", "color", "OCR"}
        assert all(res.breakdown[t] == pytest.approx(200.0) for t in res.details["perception_subtasks"])
        assert res.counts["other_answers"] == 0
    else:
        assert all(v == pytest.approx(100.0) for v in res.breakdown.values()), res.breakdown
    if name == "mmbench":
        assert res.counts["needed_judge"] == 0 and res.details["vanilla_accuracy"] == pytest.approx(100.0)
        assert len(items) == 4 * len({it.group for it in items})  # every base question has its 3 circular copies
    if name == "mmmu":
        assert res.counts["random_fallback"] == 0
        assert {it.meta["question_type"] for it in items} == {"multiple-choice", "open"}


@pytest.mark.parametrize("name", sorted(JUDGED))
def test_judged_benchmarks_report_no_judge(name, sets) -> None:
    items, ad = load(name, sets[name])
    res = ad.score(items, {it.id: "an answer" for it in items})
    assert res.status == STATUS_NO_JUDGE and res.headline is None


@pytest.mark.parametrize("name", ["vicuna80", "mllm_bench"])
def test_pairwise_sets_ship_baseline_answers(name, sets) -> None:
    items, ad = load(name, sets[name])
    baseline = ad.baseline_answers(items)
    assert baseline is not None and set(baseline) == {it.id for it in items} and all(baseline.values())
    if name == "vicuna80":  # FastChat judges math questions against a reference answer (pair-math-v1)
        math = {it.id for it in items if it.meta["category"] == "math"}
        ref = ad.reference_path(items, None)
        assert math and ref is not None and set(load_baseline(ref, name)) == math


def test_mme_answers_follow_from_the_scenes(world, sets) -> None:
    world_scenes = scenes(world)
    items, _ = load("mme", sets["mme"])
    assert len(items) == 2 * PER
    for pair in (items[k:k + 2] for k in range(0, len(items), 2)):
        assert [it.meta["gt"] for it in pair] == ["yes", "no"] and pair[0].image == pair[1].image
        sc = world_scenes[pair[0].image.stem]
        for it in pair:
            q = it.meta["question"].removesuffix(" Please answer yes or no.")
            names = {s.name for s in sc.shapes}
            if m := re.fullmatch(r"Is there an? (\w+ \w+) in this image\?", q):
                truth = m[1] in names
            elif m := re.fullmatch(r"(?:Is|Are) there exactly (\w+) shapes? in this image\?", q):
                truth = ["zero", "one", "two", "three", "four", "five"].index(m[1]) == len(sc.shapes)
            elif m := re.fullmatch(r"Is the (\w+ \w+) (?:in|on) the (.+) of the image\?", q):
                [shape] = [s for s in sc.shapes if s.name == m[1]]
                truth = shape.position == m[2]
            elif m := re.fullmatch(r"Is the shape (?:in|on) the (.+) (\w+)\?", q):
                [shape] = [s for s in sc.shapes if s.position == m[1]]
                truth = shape.colour == m[2]
            elif m := re.fullmatch(r'Is the word "(\w+)" written in this image\?', q):
                truth = sc.word is not None and sc.word.text == m[1]
            else:
                raise AssertionError(f"unexpected MME question {q!r}")
            assert truth == (it.meta["gt"] == "yes"), (sc.id, q, it.meta["gt"])


def test_gqa_textvqa_emt_answers_follow_from_the_scenes(world, sets) -> None:
    world_scenes = scenes(world)
    data = json.loads((sets["gqa"] / "testdev_balanced_questions.json").read_text())
    for q in data.values():
        sc = world_scenes[q["imageId"]]
        names = {s.name for s in sc.shapes}
        if m := re.fullmatch(r"Are there both an? (\w+ \w+) and an? (\w+ \w+) in the image\?", q["question"]):
            assert q["answer"] == ("yes" if {m[1], m[2]} <= names else "no")
        elif m := re.fullmatch(r"Where is the (\w+ \w+)\?", q["question"]):
            [shape] = [s for s in sc.shapes if s.name == m[1]]
            assert q["answer"] == shape.position and shape.position in POSITIONS
        elif m := re.fullmatch(r"What colour is the (\w+)\?", q["question"]):
            [shape] = [s for s in sc.shapes if s.shape == m[1]]
            assert q["answer"] == shape.colour
        elif m := re.fullmatch(r"Is there an? (\w+ \w+) in the image\?", q["question"]):
            assert q["answer"] == ("yes" if m[1] in names else "no")
    items, _ = load("textvqa", sets["textvqa"])
    for it in items:
        sc = world_scenes[it.image.stem]
        assert sc.word is not None and it.prompt.count(f"Reference OCR token: {sc.word.text}") == 1
        assert it.meta["answers"][0] in (sc.word.text, str(len(sc.word.text)))
    items, _ = load("emt", sets["emt"])
    assert {it.meta["dataset"] for it in items} == {"world_shapes", "world_colours"}
    for it in items:
        sc = world_scenes[it.image.stem]
        target = sc.shapes[0] if len(sc.shapes) == 1 else next(s for s in sc.shapes if s.size == "big")
        assert [s.size for s in sc.shapes].count("big") <= 1 or len(sc.shapes) == 1
        assert it.meta["label"] == (target.shape if it.meta["dataset"] == "world_shapes" else target.colour)


def test_seed_relations_and_counts_follow_from_the_scenes(world, sets) -> None:
    world_scenes = scenes(world)
    data = json.loads((sets["seed"] / "SEED-Bench.json").read_text())
    seen = set()
    for q in data["questions"]:
        sc = world_scenes[Path(q["data_id"]).stem]
        answer = q[f"choice_{q['answer'].lower()}"]
        if q["question"] == "How many shapes are in the image?":
            assert answer == str(len(sc.shapes))
            seen.add("count")
        elif m := re.fullmatch(r"Where is the (\w+ \w+) relative to the (\w+ \w+)\?", q["question"]):
            [a] = [s for s in sc.shapes if s.name == m[1]]
            [b] = [s for s in sc.shapes if s.name == m[2]]
            (ra, ca), (rb, cb) = divmod(a.cell, 3), divmod(b.cell, 3)
            if ra == rb:
                truth = "To the left of it" if ca < cb else "To the right of it"
            else:
                assert ca == cb
                truth = "Above it" if ra < rb else "Below it"
            assert answer == truth
            seen.add("relation")
    assert seen == {"count", "relation"}


def test_worlds_at_other_sizes_are_rerendered_at_96(tmp_path) -> None:
    from allava.world import render

    world = build_world(tmp_path / "w64", WorldSpec(train_scenes=2, heldout_scenes=6, text_records=2, image_size=64),
                        progress=False)
    roots = emit_world_benchmarks(world, tmp_path / "out", per_benchmark=3)
    items, _ = load("gqa", roots["gqa"])
    for it in items:
        assert it.load_image().tobytes() == render(scenes(world)[it.image.stem], 96).tobytes()


def test_deterministic_idempotent_and_replaces_stale_sets(world, sets, tmp_path) -> None:
    out = next(iter(sets.values())).parent
    manifest = out / MANIFEST
    stamp = manifest.stat().st_mtime_ns
    assert emit_world_benchmarks(world, out, per_benchmark=PER, seed=0) == sets
    assert manifest.stat().st_mtime_ns == stamp  # up to date: nothing rewritten

    again = emit_world_benchmarks(world, tmp_path / "again", per_benchmark=PER, seed=0)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != ".world_set"}

    for name in REPORT_BENCHMARKS:
        assert files(again[name]) == files(sets[name]), name
    other = emit_world_benchmarks(world, tmp_path / "again", per_benchmark=6, seed=1)
    assert files(other["mmbench"]) != files(sets["mmbench"])
    assert len(load("mme", other["mme"])[0]) == 12  # old, larger set fully replaced
    assert len(list(other["emt"].rglob("*.png"))) == 6
    assert json.loads((tmp_path / "again" / MANIFEST).read_text())["seed"] == 1


def test_refuses_foreign_folders_and_missing_world(world, tmp_path) -> None:
    (tmp_path / "out" / "mme").mkdir(parents=True)
    (tmp_path / "out" / "mme" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not written by emit_world_benchmarks"):
        emit_world_benchmarks(world, tmp_path / "out", per_benchmark=4)
    assert (tmp_path / "out" / "mme" / "mine.txt").read_text() == "user data"
    with pytest.raises(FileNotFoundError, match="build the world first"):
        emit_world_benchmarks(tmp_path / "no_world", tmp_path / "out2", per_benchmark=4)


class _AnyProtocolJudge:
    """A judge whose reply every judged protocol can read (no network)."""

    model = "world-judge"

    def ask(self, prompt: str, **options) -> str:
        if prompt.startswith("Compare the ground truth"):
            return "1.0"
        if "true class of the image" in prompt:
            return "yes"
        if prompt.startswith(("[Context]", "[Detailed Image Description]")):
            return "8 8"
        if prompt.startswith("### You are an excellent evaluator."):
            return "Answer1"
        return "[[C]]"


@pytest.mark.parametrize("name", sorted(JUDGED))
def test_judged_world_sets_score_with_a_judge(name, sets) -> None:
    items, ad = load(name, sets[name])
    res = ad.score(items, {it.id: "an answer" for it in items}, judge=_AnyProtocolJudge())
    assert res.status == "ok" and res.headline is not None, (name, res.status)
    assert res.counts.get("judge_errors", 0) == 0 and "reasks" in res.counts and res.prompt_version
