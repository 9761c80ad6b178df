"""Each adapter reads its small official-format file; non-judged ones score; judged ones say
"not scored: no judge"; bad input is counted or refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.benchmarks import (
    REPORT_BENCHMARKS,
    STATUS_NO_JUDGE,
    DataFormatError,
    Item,
    UnknownBenchmarkError,
    get_adapter,
    known_benchmarks,
    stratified_subsample,
)

DATA = Path(__file__).parent / "data"
EXPECTED_ITEMS = {"mme": 6, "mmbench": 4, "seed": 2, "mmvet": 2, "mmmu": 3, "textvqa": 2, "gqa": 2, "emt": 3,
                  "mllm_bench": 2, "touchstone": 2, "llava_bench": 2, "vicuna80": 2}


def test_registry_has_the_twelve() -> None:
    # the bench harness registers its own "world" adapter through the same registry when imported
    assert sorted(REPORT_BENCHMARKS) == [b for b in known_benchmarks() if b != "world"]
    assert len(REPORT_BENCHMARKS) == 12
    with pytest.raises(UnknownBenchmarkError, match="known benchmarks: emt, gqa"):
        get_adapter("nope")


@pytest.mark.parametrize("name", REPORT_BENCHMARKS)
def test_adapter_reads_official_format(name: str) -> None:
    ad = get_adapter(name)
    items = ad.load(DATA / name)
    assert len(items) == EXPECTED_ITEMS[name]
    for it in items:
        assert ad.prompt(it)
        if name != "vicuna80":
            assert it.load_image().size == (8, 8)
        else:
            assert it.image is None
    res = ad.score(items, {})
    assert res.benchmark == name
    if ad.judged or name == "mmbench":  # empty answers all need MMBench's judge matcher
        assert res.status.startswith(STATUS_NO_JUDGE) and res.headline is None
    else:
        assert res.headline is not None


def test_prompts_follow_llava_conventions() -> None:
    mme = get_adapter("mme").load(DATA / "mme")
    assert mme[0].prompt.endswith("Please answer yes or no.\nAnswer the question using a single word or phrase.")
    mmb = get_adapter("mmbench").load(DATA / "mmbench")
    assert mmb[2].prompt == ("A hint.\nWhat shape?\nA. square\nB. circle\n"
                             "Answer with the option's letter from the given choices directly.")
    tv = get_adapter("textvqa").load(DATA / "textvqa")
    assert "\nReference OCR token: nokia, phone\n" in tv[0].prompt


def test_bad_rows_and_missing_images_are_counted() -> None:
    cases = {"mme": "load_missing_image", "mmbench": "load_missing_image", "seed": "load_video_question",
             "mmvet": "load_missing_image", "textvqa": "load_bad_row"}
    for name, key in cases.items():
        ad = get_adapter(name)
        res = ad.score(ad.load(DATA / name), {})
        assert res.counts[key] == 1, (name, res.counts)


def test_wrong_format_file_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "SEED-Bench.json").write_text("[1, 2, 3]")
    with pytest.raises(DataFormatError, match="seed: .* 'questions' list"):
        get_adapter("seed").load(tmp_path)
    (tmp_path / "MMBench_DEV_EN.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(DataFormatError, match="lacks columns"):
        get_adapter("mmbench").load(tmp_path)
    (tmp_path / "mm-vet.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        get_adapter("mmvet").load(tmp_path)
    with pytest.raises(DataFormatError, match="mme: no <subtask>.txt"):
        get_adapter("mme").load(tmp_path)


def test_mme_scores_like_calculation_py() -> None:
    ad = get_adapter("mme")
    items = ad.load(DATA / "mme")
    preds = {it.id: "Yes" if it.meta["gt"] == "yes" else "No" for it in items}
    wrong = next(it.id for it in items if it.meta["subtask"] == "existence")
    preds[wrong] = "not sure"  # parsed as "no"; gt is yes -> image a loses acc+
    res = ad.score(items, preds)
    assert res.breakdown["existence"] == pytest.approx(100 * 3 / 4 + 100 * 1 / 2)
    assert res.breakdown["code_reasoning"] == pytest.approx(200)
    assert res.headline == res.breakdown["perception"] == pytest.approx(125)
    assert res.breakdown["cognition"] == pytest.approx(200)


def test_mmbench_circular_and_no_judge_fallback() -> None:
    ad = get_adapter("mmbench")
    items = ad.load(DATA / "mmbench")
    res = ad.score(items, {"0": "A", "1000000": "D", "1": "A", "1000001": "A"})
    assert res.headline == pytest.approx(50.0)          # base 0 both right; base 1 second copy wrong
    assert res.details["vanilla_accuracy"] == pytest.approx(100.0)
    assert res.breakdown == {"attribute": 100.0, "shape": 0.0}
    res = ad.score(items, {"0": "red", "1000000": "something", "1": "A", "1000001": "B"})
    assert res.headline is None and res.status.startswith("not scored: no judge")
    assert res.counts["needed_judge"] == 1


def test_other_exact_scorers() -> None:
    seed = get_adapter("seed")
    r = seed.score(seed.load(DATA / "seed"), {"101": "A", "102": " B"})
    assert r.headline == 50.0 and r.breakdown == {"Instance Identity": 0.0, "Scene Understanding": 100.0}
    gqa = get_adapter("gqa")
    assert gqa.score(gqa.load(DATA / "gqa"), {"q1": "Red.", "q2": "yes"}).breakdown == {"query": 100.0, "verify": 0.0}
    tv = get_adapter("textvqa")
    assert tv.score(tv.load(DATA / "textvqa"), {"1": "Nokia", "2": "3"}).headline == pytest.approx(95.0)
    mmmu = get_adapter("mmmu")
    r = mmmu.score(mmmu.load(DATA / "mmmu"), {"validation_Art_1": "(A)", "validation_Math_1": "The answer is 4",
                                              "validation_Math_2": "hmm"})
    assert r.counts["random_fallback"] == 1
    assert r.breakdown["Art"] == 100.0


def test_stratified_subsample_keeps_groups_and_is_seeded() -> None:
    items = [Item(id=f"{s}{g}{k}", prompt="p", stratum=s, group=f"{s}{g}") for s in "ab" for g in range(5)
             for k in range(2)]
    a = stratified_subsample(items, 4, seed=1)
    assert a == stratified_subsample(items, 4, seed=1)
    groups = {it.group for it in a}
    assert len(groups) == 4 and len(a) == 8
    assert {it.stratum for it in a} == {"a", "b"}
    assert stratified_subsample(items, None) == items
    mme = get_adapter("mme").load(DATA / "mme", limit=2, seed=0)
    assert len(mme) == 4 and {it.meta["subtask"] for it in mme} == {"existence", "code_reasoning"}
