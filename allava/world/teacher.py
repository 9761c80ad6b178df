"""The offline teacher: answers synthesis requests about world images from the scene that was drawn.

``synth/`` runs the built-in world through the same caption-then-QA pipeline it runs against GPT-4V;
this module stands where the vision model would, so the default job needs no network. It looks the
image up in the ``scenes.jsonl`` next to its ``images/`` folder and answers with the world's own
texts. An image it did not draw, or a question it cannot parse, raises ``KeyError``.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from pathlib import Path

from allava.world.language import caption, complex_question, short_questions
from allava.world.scene import POSITIONS, Scene


@lru_cache(maxsize=8)
def _scenes(scenes_file: str) -> dict[str, Scene]:
    out: dict[str, Scene] = {}
    for line in Path(scenes_file).read_text().splitlines():
        if line.strip():
            obj = json.loads(line)
            out[obj["id"]] = Scene.from_json(obj)
    return out


def scene_for_image(image_path: str | Path) -> Scene:
    """The scene behind a world image (found by file name in the world root's scenes.jsonl)."""
    path = Path(image_path).resolve()
    for root in (path.parent.parent, path.parent):
        scenes_file = root / "scenes.jsonl"
        if scenes_file.is_file():
            scene = _scenes(str(scenes_file)).get(path.stem)
            if scene is not None:
                return scene
    raise KeyError(f"{image_path} is not an image of the built-in world")


def _rng(scene: Scene, salt: str) -> random.Random:
    return random.Random(f"{scene.id}:{salt}")


def describe_image(image_path: str | Path) -> dict:
    """Detailed caption, candidate complex questions, the chosen one (0-based) and its answer."""
    scene = scene_for_image(image_path)
    questions, chosen, answer = complex_question(scene, _rng(scene, "complex"))
    return {"caption": caption(scene, _rng(scene, "caption")), "questions": questions, "chosen": chosen, "answer": answer}


def answer_instruction(image_path: str | Path, instruction: str) -> dict:
    """Caption plus the answer to one of the world's question templates about this image."""
    scene = scene_for_image(image_path)
    wanted = _normalise(instruction)
    rng = _rng(scene, "vflan")
    for _ in range(64):  # question wording depends on random choices: try the scene's variants
        for qa in short_questions(scene, rng):
            if _normalise(qa.question) == wanted:
                return {"caption": caption(scene, _rng(scene, "caption")), "answer": qa.answer}
    answer = _answer_by_pattern(scene, wanted)
    if answer is None:
        raise KeyError(f"the offline teacher cannot answer {instruction!r}")
    return {"caption": caption(scene, _rng(scene, "caption")), "answer": answer}


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.split("\n")[0].replace("<image>", "")).strip().lower()


def _answer_by_pattern(scene: Scene, q: str) -> str | None:
    if q == "how many shapes are in the image?":
        return str(len(scene.shapes))
    if q == "what word is written in the image?":
        return scene.word.text if scene.word else "There is no word in the image."
    if m := re.fullmatch(r"is there an? (\w+) (\w+) in the image\?", q):
        return "yes" if f"{m[1]} {m[2]}" in {s.name for s in scene.shapes} else "no"
    if m := re.fullmatch(r"where is the (\w+) (\w+)\?", q):
        hits = [s for s in scene.shapes if s.name == f"{m[1]} {m[2]}"]
        return hits[0].position if len(hits) == 1 else None
    if m := re.fullmatch(r"what colour is the shape (?:in|on) the (.+)\?", q):
        hits = [s for s in scene.shapes if s.position == m[1]]
        return hits[0].colour if hits else None
    if m := re.fullmatch(r"what colour is the (\w+)\?", q):
        hits = [s for s in scene.shapes if s.shape == m[1]]
        return hits[0].colour if len(hits) == 1 else None
    if (m := re.fullmatch(r"what shape is (?:in|on) the (.+)\?", q)) and m[1] in POSITIONS:
        hits = [s for s in scene.shapes if s.position == m[1]]
        return hits[0].shape if hits else None
    return None


def answer_text(question: str) -> str:
    """Answers to the world's text-only instruction templates."""
    q = question.strip()
    if m := re.fullmatch(r"What is (\d+) plus (\d+)\?", q):
        return f"{m[1]} plus {m[2]} equals {int(m[1]) + int(m[2])}."
    if m := re.fullmatch(r"Spell the word (\w+) backwards\.", q):
        return f"Spelled backwards, {m[1]} is {m[1][::-1]}."
    if m := re.fullmatch(r"Which number is larger, (\d+) or (\d+)\?", q):
        a, b = int(m[1]), int(m[2])
        return f"{max(a, b)} is larger, because {max(a, b)} comes after {min(a, b)} when counting."
    if m := re.fullmatch(r"What colour do you get when you mix (\w+) and (\w+) paint\?", q):
        mixes = {frozenset(("blue", "yellow")): "green", frozenset(("red", "yellow")): "orange", frozenset(("red", "blue")): "purple"}
        result = mixes.get(frozenset((m[1], m[2])))
        if result:
            return f"Mixing {m[1]} and {m[2]} paint gives {result}."
    raise KeyError(f"the offline teacher cannot answer {question!r}")
