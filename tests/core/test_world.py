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
