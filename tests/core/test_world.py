import json
import random

from allava.schema import load_records
from allava.world import WorldSpec, build_world, render, sample_scene
from allava.world.language import QUESTION_TYPES, short_questions


def test_world_is_deterministic(tmp_path, world_root):
    from tests.conftest import SMALL_WORLD

    again = build_world(tmp_path / "w", WorldSpec(**SMALL_WORLD), progress=False)
    for name in ("ALLaVA-Caption-World.json", "ALLaVA-Instruct-World.json", "ALLaVA-Heldout-World.json", "scenes.jsonl"):
        assert (again / name).read_bytes() == (world_root / name).read_bytes()
    assert (again / "images/world_train_00007.png").read_bytes() == (world_root / "images/world_train_00007.png").read_bytes()


def test_world_files_are_valid_allava_records(world_root):
    for name in ("ALLaVA-Caption-World.json", "ALLaVA-Instruct-World.json", "ALLaVA-VQA-World.json", "ALLaVA-Text-World.json", "ALLaVA-Heldout-World.json"):
        records, skipped = load_records(world_root / name)
        assert records and not skipped
        for r in records:
            if r.image:
                assert (world_root / r.image).is_file()
    held, _ = load_records(world_root / "ALLaVA-Heldout-World.json")
    train_images = {r.image for r in load_records(world_root / "ALLaVA-Caption-World.json")[0]}
    assert not train_images & {r.image for r in held}, "held-out images leak into training"
    assert {r.extra["qtype"] for r in held} <= set(QUESTION_TYPES)


def test_answers_follow_from_the_scene():
    rng = random.Random(0)
    for i in range(200):
        scene = sample_scene(rng, f"s{i}")
        for qa in short_questions(scene, rng):
            if qa.qtype == "count":
                assert qa.answer == str(len(scene.shapes))
            if qa.qtype == "word":
                assert scene.word is not None and qa.answer == scene.word.text
            if qa.qtype == "exist":
                name = qa.question.removeprefix("Is there ").split(" ", 1)[1].removesuffix(" in the image?")
                assert (qa.answer == "yes") == (name in {s.name for s in scene.shapes})


def test_render_size_and_scene_json(world_root):
    line = (world_root / "scenes.jsonl").read_text().splitlines()[0]
    scene = json.loads(line)
    from allava.world.scene import Scene

    img = render(Scene.from_json(scene), 96)
    assert img.size == (96, 96)


def test_word_fraction_and_caption_words_tokenise_like_answers():
    """Captions name the word as answers do (no quotes), so both train the same ' cat' token."""
    from allava.world.language import caption

    rng = random.Random(1)
    scenes = [sample_scene(rng, f"s{i}", word_fraction=0.8) for i in range(300)]
    share = sum(s.word is not None for s in scenes) / len(scenes)
    assert 0.7 < share < 0.9
    s = next(s for s in scenes if s.word)
    assert f"The word {s.word.text} is written" in caption(s, rng)


def test_stage0_name_targets_join_colour_and_shape():
    from allava.world.scene import COLOURS, SHAPES
    from train.vision_pretrain import NAME_HEAD, patch_targets

    scene = {"shapes": [{"cell": 0, "colour": "blue", "shape": "diamond", "size": "big"}], "word": None}
    t = patch_targets([scene], 96, 16)
    blue_diamond = list(COLOURS).index("blue") * len(SHAPES) + SHAPES.index("diamond")
    assert t["name"][0, 0] == blue_diamond  # patch 0 lies in cell 0
    assert t["name"][0, 35] == NAME_HEAD["name"] - 1  # bottom-right patch: empty cell


def test_single_turn_files_per_type_hold_the_multi_turn_questions(world_root):
    """vqa_by_type_file(t) holds type t's questions one per record: the same (image, question, answer)."""
    from allava.world.build import vqa_by_type_file

    multi, _ = load_records(world_root / "ALLaVA-VQA-World.json")
    expected = {(r.image, r.conversations[i].value.replace("<image>\n", ""), r.conversations[i + 1].value)
                for r in multi for i in range(0, len(r.conversations), 2)}
    found = set()
    for qtype in QUESTION_TYPES:
        records, skipped = load_records(world_root / vqa_by_type_file(qtype))
        assert not skipped and all(len(r.conversations) == 2 and r.image for r in records)
        assert all(r.id.endswith(f"_{qtype}") for r in records)
        found |= {(r.image, r.conversations[0].value.replace("<image>\n", ""), r.conversations[1].value) for r in records}
    assert found == expected
    manifest = json.loads((world_root / "world.json").read_text())
    assert {vqa_by_type_file(t) for t in QUESTION_TYPES} <= set(manifest["files"])
