"""Offline versions of the report's 12 benchmarks, emitted from the built-in world's held-out scenes.

``emit_world_benchmarks(world_root, out_root)`` writes, under ``out_root/<benchmark>/``, a small set
in each benchmark's *official* distribution format, in exactly the layout its adapter's
``load(data_root)`` reads, so the whole 12-column table runs with no network and no downloads:

==============  ===================================================================================
mme             ``eval_tool/Your_Results/<subtask>.txt`` (image, question, Yes/No; one yes and one no
                question per image) + ``MME_Benchmark_release_version/<subtask>/<image>.png`` and its
                per-image question file; subtasks existence, count, position, color, OCR
mmbench         ``MMBench_DEV_EN.tsv``: base64 PNG, 4 options, circular copies (index = base + k*1e6,
                options rotated, image cell = the base row's index as in VLMEvalKit's TSVs)
seed            ``SEED-Bench.json`` (question_type + questions) + ``SEED-Bench-image/``
mmvet           ``mm-vet.json`` (open questions, answers with <AND>/<OR>) + ``images/``
mmmu            ``mmmu_val.jsonl`` (multiple-choice and open records, ``image_1`` relative) + ``images/``
textvqa         ``TextVQA_0.5.1_val.json`` (10 answers, ``ocr_tokens`` = the scene's word) + ``train_images/``
gqa             ``testdev_balanced_questions.json`` (types.structural etc.) + ``images/``
emt             ``<dataset>/<class>/<image>.png`` + ``classes.txt``: world_shapes (kind of the single or
                only big shape) and world_colours (its colour)
mllm_bench      ``questions.json`` (meta: level, capability, question type) + ``images/`` + ``anchor.json``
                (anchor = world reference, in data/anchor.json's format)
touchstone      ``touchstone_world.tsv`` (base64, human_annotation = world caption, gpt4_ha_answer = the
                world's reference answer)
llava_bench     ``questions.jsonl``, ``context.jsonl``, ``answers_gpt4.jsonl`` (= world answers), ``images/``
vicuna80        ``question.jsonl`` (text-only world instructions) + ``baseline_answers.jsonl`` (FastChat
                model_answer rows holding the world's own answers) + ``reference_answer/gpt-4.jsonl``
                (the same answers for the math questions, which FastChat judges against a reference)
==============  ===================================================================================

Only scenes with ids ``world_heldout_*`` are used (their 96 px images copied byte for byte, or
re-rendered at 96 px when the world was built at another size); training images never appear.
Vicuna-80 has no images: its questions prefer instructions absent from the world's training text
file (the template space is small, so a few may repeat it on big worlds). Every answer is computed
from the scene data, so ground truths are right by construction. ``per_benchmark`` counts scoring
units: images (yes/no pairs) for MME, base questions for MMBench (plus 3 circular copies each),
questions or images elsewhere; fewer are written when the held-out scenes cannot supply that many
(e.g. TextVQA needs scenes with a word). Output is deterministic for a seed; every file is written
atomically, each benchmark folder is built aside and swapped in, and a manifest
(``world_sets.json``) makes a repeated call with the same world, size and seed a no-op.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from allava.fileio import atomic_path, write_json_atomic, write_text_atomic
from allava.world.language import (
    CAPTION_PROMPTS,
    NUMBER_WORDS,
    _object_phrase,
    _where,
    as_multiple_choice,
    caption,
    complex_question,
    short_questions,
    text_instruction,
)
from allava.world.scene import COLOURS, POSITIONS, SHAPES, WORDS, Scene, Shape, render

FORMAT_VERSION = 2  # 2: MLLM-Bench questions.json/anchor.json as published; Vicuna-80 reference answers
MANIFEST = "world_sets.json"
MARKER = ".world_set"  # marks a folder this module wrote (and may replace)
IMAGE_SIZE = 96
HELDOUT_PREFIX = "world_heldout_"
REFERENCE_MODEL = "world-reference"

SEED_DIMENSIONS = {"Scene Understanding": 1, "Instance Identity": 2, "Instance Attributes": 3, "Instance Location": 4,
                   "Instances Counting": 5, "Spatial Relation": 6, "Instance Interaction": 7, "Visual Reasoning": 8,
                   "Text Understanding": 9, "Action Recognition": 10, "Action Prediction": 11,
                   "Procedure Understanding": 12}
RELATIONS = {"left": "To the left of it", "right": "To the right of it", "above": "Above it", "below": "Below it"}


@dataclass(frozen=True)
class Held:
    """A held-out scene and its 96 px PNG bytes."""

    scene: Scene
    png: bytes

    @property
    def name(self) -> str:
        return f"{self.scene.id}.png"


# -- reading the world -------------------------------------------------------------------------------
def _fingerprint(world_root: Path) -> str:
    h = hashlib.sha256()
    for name in ("scenes.jsonl", "ALLaVA-Text-World.json"):
        path = world_root / name
        h.update(name.encode())
        h.update(path.read_bytes() if path.is_file() else b"-")
    return h.hexdigest()


def _png(scene: Scene) -> bytes:
    buf = io.BytesIO()
    render(scene, IMAGE_SIZE).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def load_heldout(world_root: Path) -> list[Held]:
    """The held-out scenes of a built world, with their image bytes (copied when 96 px, else re-rendered)."""
    scenes_file = world_root / "scenes.jsonl"
    if not scenes_file.is_file():
        raise FileNotFoundError(f"{scenes_file} is missing: build the world first (allava.world.build_world)")
    out = []
    for line in scenes_file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        if not str(obj["id"]).startswith(HELDOUT_PREFIX):
            continue
        scene = Scene.from_json(obj)
        path = world_root / str(obj.get("image", ""))
        data = None
        if obj.get("image") and path.is_file():
            with Image.open(path) as img:
                if img.size == (IMAGE_SIZE, IMAGE_SIZE):
                    data = path.read_bytes()
        out.append(Held(scene, data if data is not None else _png(scene)))
    if not out:
        raise ValueError(f"{scenes_file} holds no held-out scenes ({HELDOUT_PREFIX}*)")
    return sorted(out, key=lambda h: h.scene.id)


def _train_texts(world_root: Path) -> set[str]:
    path = world_root / "ALLaVA-Text-World.json"
    if not path.is_file():
        return set()
    return {rec["conversations"][0]["value"] for rec in json.loads(path.read_text(encoding="utf-8"))}


# -- selection -----------------------------------------------------------------------------------------
def _rng(seed: int, *parts: str) -> random.Random:
    return random.Random(":".join(["world_sets", str(seed), *parts]))


def _balanced(cands: list[tuple[str, Any]], n: int, rng: random.Random) -> list[tuple[str, Any]]:
    """Up to ``n`` candidates, round-robin over strata (each stratum's order shuffled)."""
    by: dict[str, list[Any]] = {}
    for stratum, c in cands:
        by.setdefault(stratum, []).append(c)
    for key in sorted(by):
        rng.shuffle(by[key])
    out: list[tuple[str, Any]] = []
    while len(out) < n and any(by.values()):
        for key in sorted(by):
            if by[key] and len(out) < n:
                out.append((key, by[key].pop()))
    return out


# -- facts and questions derived from a scene ------------------------------------------------------------
def _unique_named(scene: Scene) -> list[Shape]:
    names = Counter(s.name for s in scene.shapes)
    return [s for s in scene.shapes_in_reading_order() if names[s.name] == 1]


def _only_big(scene: Scene) -> Shape | None:
    """The single shape, or the only big one; None when the biggest shape is ambiguous."""
    if len(scene.shapes) == 1:
        return scene.shapes[0]
    big = [s for s in scene.shapes if s.size == "big"]
    return big[0] if len(big) == 1 else None


def _relations(scene: Scene) -> list[tuple[Shape, Shape, str]]:
    """(a, b, relation of a to b) for uniquely named shapes sharing a row or a column."""
    out = []
    shapes = _unique_named(scene)
    for a in shapes:
        for b in shapes:
            if a is b:
                continue
            (ra, ca), (rb, cb) = divmod(a.cell, 3), divmod(b.cell, 3)
            if ra == rb:
                out.append((a, b, "left" if ca < cb else "right"))
            elif ca == cb:
                out.append((a, b, "above" if ra < rb else "below"))
    return out


def _listing(scene: Scene) -> str:
    return "; ".join(f"{_object_phrase(s)} {_where(s.position)}" for s in scene.shapes_in_reading_order())


def _absent_name(scene: Scene, rng: random.Random) -> str:
    """A hard negative: shares a colour or a shape with a shape that is there."""
    present = {s.name for s in scene.shapes}
    s = rng.choice(scene.shapes)
    cands = sorted(({f"{s.colour} {k}" for k in SHAPES} | {f"{c} {s.shape}" for c in COLOURS}) - present)
    return rng.choice(cands)


def _a(name: str) -> str:
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _other(pool: Iterable[str], value: str, rng: random.Random) -> str:
    return rng.choice([p for p in pool if p != value])


@dataclass(frozen=True)
class MC:
    qtype: str
    question: str
    options: tuple[str, ...]
    answer: str  # option text

    @property
    def letter(self) -> str:
        return chr(ord("A") + self.options.index(self.answer))


def mc_questions(scene: Scene, rng: random.Random) -> list[MC]:
    """Four-option questions: the world's own (as_multiple_choice), counting, and spatial relations."""
    out = []
    for qa in short_questions(scene, rng):
        mc = as_multiple_choice(qa, rng)
        if mc is not None:
            out.append(MC(qa.qtype, qa.question, mc.options, qa.answer))
    n = str(len(scene.shapes))
    counts = rng.sample([str(k) for k in range(1, 7) if str(k) != n], 3) + [n]
    rng.shuffle(counts)
    out.append(MC("count", "How many shapes are in the image?", tuple(counts), n))
    rels = _relations(scene)
    if rels:
        a, b, rel = rng.choice(rels)
        options = list(RELATIONS.values())
        rng.shuffle(options)
        out.append(MC("relation", f"Where is the {a.name} relative to the {b.name}?", tuple(options), RELATIONS[rel]))
    return out


def conv_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """(qtype, question, full-sentence reference answer) conversation-style questions."""
    shapes = scene.shapes_in_reading_order()
    n = len(shapes)
    out = [("count", "How many shapes are in the image?",
            f"There {'is' if n == 1 else 'are'} {NUMBER_WORDS[n]} {'shape' if n == 1 else 'shapes'} in the image: "
            f"{_listing(scene)}.")]
    kinds = Counter(s.shape for s in shapes)
    unique_kinds = [s for s in shapes if kinds[s.shape] == 1]
    if unique_kinds:
        s = rng.choice(unique_kinds)
        out.append(("colour", f"What colour is the {s.shape}?", f"The {s.shape} is {s.colour}."))
    named = _unique_named(scene)
    if named:
        s = rng.choice(named)
        out.append(("position", f"Where is the {s.name}?", f"The {s.name} is {_where(s.position)} of the image."))
    if rng.random() < 0.5:
        s = rng.choice(shapes)
        out.append(("exist", f"Is there {_a(s.name)} in the image?",
                    f"Yes, there is {_object_phrase(s)} {_where(s.position)}."))
    else:
        name = _absent_name(scene, rng)
        out.append(("exist", f"Is there {_a(name)} in the image?", f"No, there is no {name} in the image."))
    if scene.word:
        w = scene.word
        out.append(("word", "What word is written in the image?",
                    f'The word "{w.text}" is written in black {_where(w.position)}.'))
    return out


def mme_pair(subtask: str, scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    """(yes question, no question) for one MME perception subtask, or None when the scene cannot pose it."""
    shapes = scene.shapes
    if subtask == "existence":
        s = rng.choice(shapes)
        return f"Is there {_a(s.name)} in this image?", f"Is there {_a(_absent_name(scene, rng))} in this image?"
    if subtask == "count":
        n = len(shapes)
        wrong = int(_other([str(k) for k in range(1, 6)], str(n), rng))

        def ask(k: int) -> str:
            return "Is there exactly one shape in this image?" if k == 1 else \
                f"Are there exactly {NUMBER_WORDS[k]} shapes in this image?"
        return ask(n), ask(wrong)
    if subtask == "position":
        named = _unique_named(scene)
        if not named:
            return None
        s = rng.choice(named)
        return f"Is the {s.name} {_where(s.position)} of the image?", \
            f"Is the {s.name} {_where(_other(POSITIONS, s.position, rng))} of the image?"
    if subtask == "color":
        s = rng.choice(shapes)
        where = _where(s.position)
        return f"Is the shape {where} {s.colour}?", f"Is the shape {where} {_other(COLOURS, s.colour, rng)}?"
    if subtask == "OCR":
        if scene.word is None:
            return None
        w = scene.word.text
        return f'Is the word "{w}" written in this image?', f'Is the word "{_other(WORDS, w, rng)}" written in this image?'
    raise ValueError(subtask)


# -- writing -----------------------------------------------------------------------------------------
class _Out:
    """Files of one benchmark folder (each written atomically); counts what was written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.items = 0
        self._written: set[Path] = set()

    def image(self, rel: str, held: Held) -> None:
        path = self.root / rel
        if path not in self._written:
            with atomic_path(path) as tmp:
                tmp.write_bytes(held.png)
            self._written.add(path)

    def text(self, rel: str, text: str) -> None:
        write_text_atomic(self.root / rel, text)

    def json(self, rel: str, obj: Any) -> None:
        write_json_atomic(self.root / rel, obj, indent=1)

    def jsonl(self, rel: str, rows: list[dict[str, Any]]) -> None:
        self.text(rel, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def tsv(self, rel: str, header: list[str], rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[r.get(h, "") for h in header] for r in rows])
        self.text(rel, buf.getvalue())


def _b64(held: Held) -> str:
    return base64.b64encode(held.png).decode("ascii")


Builder = Callable[[_Out, list[Held], int, int, set[str]], None]


def _mme(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    subtasks = ["existence", "count", "position", "color", "OCR"]
    cands = []
    for h in held:
        for task in subtasks:
            pair = mme_pair(task, h.scene, _rng(seed, "mme", task, h.scene.id))
            if pair is not None:
                cands.append((task, (h, pair)))
    per_task: dict[str, list[str]] = {t: [] for t in subtasks}
    for task, (h, (yes_q, no_q)) in _balanced(cands, n, _rng(seed, "mme")):
        yes_q, no_q = f"{yes_q} Please answer yes or no.", f"{no_q} Please answer yes or no."
        out.image(f"MME_Benchmark_release_version/{task}/{h.name}", h)
        out.text(f"MME_Benchmark_release_version/{task}/{h.scene.id}.txt", f"{yes_q}\tYes\n{no_q}\tNo\n")
        per_task[task] += [f"{h.name}\t{yes_q}\tYes", f"{h.name}\t{no_q}\tNo"]
        out.items += 2
    for task, lines in per_task.items():
        if lines:
            out.text(f"eval_tool/Your_Results/{task}.txt", "\n".join(lines) + "\n")


MMBENCH_CATEGORIES = {
    "colour": ("attribute_recognition", "finegrained_perception (instance-level)"),
    "shape": ("attribute_recognition", "finegrained_perception (instance-level)"),
    "position": ("object_localization", "finegrained_perception (instance-level)"),
    "cell_colour": ("object_localization", "finegrained_perception (instance-level)"),
    "cell_shape": ("object_localization", "finegrained_perception (instance-level)"),
    "word": ("ocr", "finegrained_perception (instance-level)"),
    "relation": ("spatial_relationship", "finegrained_perception (cross-instance)"),
}


def _mmbench(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    cands = [(MMBENCH_CATEGORIES[q.qtype][0], (h, q)) for h in held
             for q in mc_questions(h.scene, _rng(seed, "mmbench", h.scene.id)) if q.qtype in MMBENCH_CATEGORIES]
    chosen = _balanced(cands, n, _rng(seed, "mmbench"))
    base_rows, copies = [], []
    for index, (category, (h, q)) in enumerate(chosen):
        l2 = MMBENCH_CATEGORIES[q.qtype][1]
        for k in range(len(q.options)):
            opts = q.options[k:] + q.options[:k]  # circular copy k: options rotated by k
            row = {"index": index + k * 1_000_000, "question": q.question, "hint": "",
                   "answer": chr(ord("A") + opts.index(q.answer)), "category": category, "l2-category": l2,
                   "split": "dev", "image": _b64(h) if k == 0 else str(index)}
            row.update({chr(ord("A") + i): o for i, o in enumerate(opts)})
            (base_rows if k == 0 else copies).append(row)
    rows = base_rows + sorted(copies, key=lambda r: r["index"])
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "split", "image"]
    out.tsv("MMBench_DEV_EN.tsv", header, rows)
    out.items = len(rows)


SEED_OF_QTYPE = {"shape": "Instance Identity", "cell_shape": "Instance Identity", "colour": "Instance Attributes",
                 "cell_colour": "Instance Attributes", "position": "Instance Location", "count": "Instances Counting",
                 "relation": "Spatial Relation", "word": "Text Understanding"}


def _seed(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    cands = [(SEED_OF_QTYPE[q.qtype], (h, q)) for h in held
             for q in mc_questions(h.scene, _rng(seed, "seed", h.scene.id)) if q.qtype in SEED_OF_QTYPE]
    questions = []
    for k, (dim, (h, q)) in enumerate(_balanced(cands, n, _rng(seed, "seed"))):
        out.image(f"SEED-Bench-image/{h.name}", h)
        questions.append({"answer": q.letter, "choice_a": q.options[0], "choice_b": q.options[1],
                          "choice_c": q.options[2], "choice_d": q.options[3], "data_id": h.name, "data_type": "image",
                          "question": q.question, "question_id": f"world_{k}", "question_type_id": SEED_DIMENSIONS[dim]})
    out.json("SEED-Bench.json", {"question_type": SEED_DIMENSIONS, "questions": questions})
    out.items = len(questions)


SHAPE_SYNONYMS = {"circle": "circle<OR>round", "square": "square", "triangle": "triangle", "diamond": "diamond<OR>rhombus"}
POSITION_SYNONYMS = {"center": "center<OR>middle", "top": "top<OR>top middle", "bottom": "bottom<OR>bottom middle",
                     "left": "left<OR>middle left", "right": "right<OR>middle right"}


def mmvet_questions(scene: Scene, rng: random.Random) -> list[tuple[list[str], str, str]]:
    """(capabilities, question, MM-Vet style ground truth) for a scene."""
    shapes = scene.shapes_in_reading_order()
    n = len(shapes)
    out = [(["rec"], "How many shapes are there in the image?", str(n))]
    colours = sorted({s.colour for s in shapes})
    out.append((["rec"], "Which colours do the shapes in the image have?", "<AND>".join(colours)))
    named = _unique_named(scene)
    if named:
        s = rng.choice(named)
        out.append((["rec", "spat"], f"Where in the image is the {s.name}?", POSITION_SYNONYMS.get(s.position, s.position)))
        t = rng.choice(named)
        out.append((["rec", "math"], f"How many shapes would be left if the {t.name} were removed?", str(n - 1)))
    colour_count = Counter(s.colour for s in shapes)
    unique_colour = [s for s in shapes if colour_count[s.colour] == 1]
    if unique_colour:
        s = rng.choice(unique_colour)
        out.append((["rec"], f"What shape is the {s.colour} object?", SHAPE_SYNONYMS[s.shape]))
    if scene.word:
        w = scene.word.text
        out.append((["ocr"], "What is written in the image?", w))
        out.append((["ocr", "math"], "How many letters does the written word have?", f"{len(w)}<OR>{NUMBER_WORDS[len(w)]}"))
    return out


def _mmvet(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    cands = [(",".join(caps), (h, caps, q, a)) for h in held
             for caps, q, a in mmvet_questions(h.scene, _rng(seed, "mmvet", h.scene.id))]
    data = {}
    for k, (_, (h, caps, q, a)) in enumerate(_balanced(cands, n, _rng(seed, "mmvet")), 1):
        out.image(f"images/{h.name}", h)
        data[f"v{k}"] = {"imagename": h.name, "capability": caps, "question": q, "answer": a}
    out.json("mm-vet.json", data)
    out.items = len(data)


MMMU_SUBJECT_OF = {"colour": "Art", "cell_colour": "Art", "shape": "Design", "cell_shape": "Design",
                   "position": "Geography", "relation": "Physics"}


def mmmu_records(scene: Scene, rng: random.Random) -> list[tuple[str, str, str, list[str], str]]:
    """(subject, question_type, question, options, answer) for a scene (answer = letter or open text)."""
    out = [(MMMU_SUBJECT_OF[q.qtype], "multiple-choice", q.question, list(q.options), q.letter)
           for q in mc_questions(scene, rng) if q.qtype in MMMU_SUBJECT_OF]
    n = len(scene.shapes)
    out.append(("Math", "open", "How many shapes are in the image?", [], str(n)))
    named = _unique_named(scene)
    if named:
        s = rng.choice(named)
        out.append(("Math", "open", f"How many shapes would remain if the {s.name} were removed?", [], str(n - 1)))
    if scene.word:
        out.append(("Literature", "open", "What word is written in the image?", [], scene.word.text))
    return out


def _mmmu(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    cands = [(f"{subject}:{qtype}", (h, subject, qtype, q, opts, a)) for h in held
             for subject, qtype, q, opts, a in mmmu_records(h.scene, _rng(seed, "mmmu", h.scene.id))]
    numbers: Counter[str] = Counter()
    rows = []
    for _, (h, subject, qtype, q, opts, a) in _balanced(cands, n, _rng(seed, "mmmu")):
        numbers[subject] += 1
        out.image(f"images/{h.name}", h)
        rows.append({"id": f"validation_{subject}_{numbers[subject]}", "question": f"<image 1> {q}",
                     "options": str(opts), "explanation": "", "image_1": f"images/{h.name}",
                     "img_type": "['Diagrams']", "answer": a, "topic_difficulty": "Easy", "question_type": qtype,
                     "subfield": "world"})
    out.jsonl("mmmu_val.jsonl", rows)
    out.items = len(rows)


def textvqa_questions(scene: Scene) -> list[tuple[str, str, list[str]]]:
    """(kind, question, 10 answers) about the scene's word; none without a word."""
    if scene.word is None:
        return []
    w, where = scene.word.text, _where(scene.word.position)
    words = [w] * 7 + [w.upper()] * 2 + [f"the {w}"]  # all normalise to the word
    n = len(w)
    return [("read", "what word is written in the image?", words),
            ("read_at", f"what word is written {where}?", words),
            ("letters", "how many letters does the written word have?", [str(n)] * 6 + [NUMBER_WORDS[n]] * 4)]


def _textvqa(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    cands = [(kind, (h, q, answers)) for h in held for kind, q, answers in textvqa_questions(h.scene)]
    data = []
    for k, (_, (h, q, answers)) in enumerate(_balanced(cands, n, _rng(seed, "textvqa"))):
        out.image(f"train_images/{h.name}", h)
        data.append({"question": q, "image_id": h.scene.id, "image_classes": ["text"], "flickr_original_url": "",
                     "flickr_300k_url": "", "image_width": IMAGE_SIZE, "image_height": IMAGE_SIZE, "answers": answers,
                     "question_tokens": q.rstrip("?").split(), "question_id": k, "set_name": "val",
                     "ocr_tokens": [h.scene.word.text] if h.scene.word else []})
    out.json("TextVQA_0.5.1_val.json", {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1",
                                        "data": data})
    out.items = len(data)


GQA_TYPES = {"colour": ("query", "attr", "queryAttr"), "cell_colour": ("query", "attr", "queryAttr"),
             "shape": ("query", "cat", "queryObject"), "cell_shape": ("query", "cat", "queryObject"),
             "position": ("query", "rel", "positionQuery"), "exist": ("verify", "obj", "exist"),
             "size": ("choose", "attr", "chooseAttr")}


def gqa_questions(scene: Scene, rng: random.Random) -> list[tuple[tuple[str, str, str], str, str]]:
    """((structural, semantic, detailed), question, answer) for a scene; answers lower-case."""
    out = [(GQA_TYPES[qa.qtype], qa.question, qa.answer) for qa in short_questions(scene, rng) if qa.qtype in GQA_TYPES]
    s = rng.choice(scene.shapes)
    others = sorted({t.name for t in scene.shapes} - {s.name})
    both = bool(others) and rng.random() < 0.5
    second = rng.choice(others) if both else _absent_name(scene, rng)
    out.append((("logical", "obj", "existAnd"), f"Are there both {_a(s.name)} and {_a(second)} in the image?",
                "yes" if both else "no"))
    if len(scene.shapes) >= 2:
        a, b = rng.sample(scene.shapes_in_reading_order(), 2)
        out.append((("compare", "attr", "sameColor"),
                    f"Do the shape {_where(a.position)} and the shape {_where(b.position)} have the same colour?",
                    "yes" if a.colour == b.colour else "no"))
    return out


def _gqa(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    cands = [(types[0], (h, types, q, a)) for h in held
             for types, q, a in gqa_questions(h.scene, _rng(seed, "gqa", h.scene.id))]
    data = {}
    for k, (_, (h, (structural, semantic, detailed), q, a)) in enumerate(_balanced(cands, n, _rng(seed, "gqa"))):
        out.image(f"images/{h.name}", h)
        data[f"w{k:07d}"] = {"imageId": h.scene.id, "question": q, "answer": a, "isBalanced": True,
                             "types": {"structural": structural, "semantic": semantic, "detailed": detailed}}
    out.json("testdev_balanced_questions.json", data)
    out.items = len(data)


def _emt(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    datasets = {"world_shapes": (SHAPES, lambda s: s.shape), "world_colours": (list(COLOURS), lambda s: s.colour)}
    cands = []
    for h in held:
        target = _only_big(h.scene)
        if target is not None:
            cands += [(ds, (h, label(target))) for ds, (_, label) in datasets.items()]
    for ds, (h, label) in _balanced(cands, n, _rng(seed, "emt")):
        out.image(f"{ds}/{label}/{h.name}", h)
        out.items += 1
    for ds, (classes, _) in datasets.items():
        out.text(f"{ds}/classes.txt", "\n".join(classes) + "\n")


def reference_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str, str, str]]:
    """(category, task, question, reference answer) in the three LLaVA-Bench categories."""
    qtype, q, a = rng.choice(conv_questions(scene, rng))
    questions, chosen, answer = complex_question(scene, rng)
    return [("conv", qtype, q, a), ("detail", "description", rng.choice(CAPTION_PROMPTS), caption(scene, rng)),
            ("complex", "reasoning", questions[chosen], answer)]


MLLM_LEVELS = {"conv": "Understanding", "detail": "Perception/Remembering", "complex": "Analyzing"}
MLLM_QUESTION_TYPES = {"conv": "close-ended", "detail": "open-ended", "complex": "compound"}


def _mllm_bench(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    cands = [(cat, (h, task, q, a)) for h in held
             for cat, task, q, a in reference_questions(h.scene, _rng(seed, "mllm_bench", h.scene.id))]
    questions, answers = [], []
    for k, (cat, (h, _task, q, a)) in enumerate(_balanced(cands, n, _rng(seed, "mllm_bench")), 1):
        out.image(f"images/{h.name}", h)
        criteria = (f"The image shows: {_listing(h.scene)}"
                    + (f'; the word "{h.scene.word.text}" {_where(h.scene.word.position)}' if h.scene.word else "")
                    + ". A good answer is correct about these objects, answers the question directly and invents "
                      "nothing that is not there.")
        meta = {"level": MLLM_LEVELS[cat], "capability": criteria, "url": "",
                "question type": MLLM_QUESTION_TYPES[cat]}
        questions.append({"id": k, "image_path": f"images/{h.name}", "question": q, "meta": meta})
        answers.append({"unique_idx": k, "image": f"images/{h.name}", "question": q, "meta": meta,
                        "gen_model_id": REFERENCE_MODEL, "prompt": q, "answer": a})
    out.json("questions.json", questions)
    out.json("anchor.json", answers)
    out.items = len(questions)


TOUCHSTONE_CATEGORIES = {"conv": "Visual Recognition", "detail": "Basic Descriptions", "complex": "Visual Reasoning"}


def _touchstone(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    cands = [(cat, (h, task, q, a)) for h in held
             for cat, task, q, a in reference_questions(h.scene, _rng(seed, "touchstone", h.scene.id))]
    rows = []
    for k, (cat, (h, task, q, a)) in enumerate(_balanced(cands, n, _rng(seed, "touchstone"))):
        human = caption(h.scene, _rng(seed, "touchstone", "caption", h.scene.id))
        rows.append({"index": k, "image": _b64(h), "question": q, "human_annotation": human, "gpt4_ha_answer": a,
                     "category": TOUCHSTONE_CATEGORIES[cat], "task_name": task})
    out.tsv("touchstone_world.tsv", ["index", "image", "question", "human_annotation", "gpt4_ha_answer", "category",
                                     "task_name"], rows)
    out.items = len(rows)


def _llava_bench(out: _Out, held: list[Held], n: int, seed: int, _texts: set[str]) -> None:
    cands = [(cat, (h, q, a)) for h in held
             for cat, _task, q, a in reference_questions(h.scene, _rng(seed, "llava_bench", h.scene.id))]
    questions, answers, contexts = [], [], {}
    for k, (cat, (h, q, a)) in enumerate(_balanced(cands, n, _rng(seed, "llava_bench"))):
        out.image(f"images/{h.name}", h)
        if h.name not in contexts:
            contexts[h.name] = {"id": h.scene.id, "image": h.name,
                                "caption": caption(h.scene, _rng(seed, "llava_bench", "context", h.scene.id))}
        questions.append({"question_id": k, "image": h.name, "text": q, "category": cat})
        answers.append({"question_id": k, "prompt": q, "text": a, "answer_id": f"{REFERENCE_MODEL}-{k}",
                        "model_id": REFERENCE_MODEL, "metadata": {}})
    out.jsonl("questions.jsonl", questions)
    out.jsonl("context.jsonl", sorted(contexts.values(), key=lambda c: c["image"]))
    out.jsonl("answers_gpt4.jsonl", answers)
    out.items = len(questions)


VICUNA_CATEGORIES = {"What is": "math", "Spell": "writing", "Which number": "common-sense", "What colour": "knowledge"}


def _vicuna_category(question: str) -> str:
    return next(cat for prefix, cat in VICUNA_CATEGORIES.items() if question.startswith(prefix))


def _vicuna80(out: _Out, held: list[Held], n: int, seed: int, train_texts: set[str]) -> None:
    rng = _rng(seed, "vicuna80")
    found: dict[str, str] = {}
    for _ in range(4000):  # the template space holds ~200 instructions: 4000 draws see (almost) all
        q, a = text_instruction(rng)
        found.setdefault(q, a)
    # categories balanced; instructions absent from the training text file first
    unseen = [(_vicuna_category(q), q) for q in found if q not in train_texts]
    seen = [(_vicuna_category(q), q) for q in found if q in train_texts]
    chosen = _balanced(unseen, n, rng)
    chosen += _balanced(seen, n - len(chosen), rng)
    questions, answers = [], []
    for k, (cat, q) in enumerate(chosen, 1):
        questions.append({"question_id": k, "category": cat, "turns": [q]})
        answers.append({"question_id": k, "answer_id": f"{REFERENCE_MODEL}-{k}", "model_id": REFERENCE_MODEL,
                        "choices": [{"index": 0, "turns": [found[q]]}]})
    out.jsonl("question.jsonl", questions)
    out.jsonl("baseline_answers.jsonl", answers)
    # FastChat judges math/reasoning/coding questions against reference answers (pair-math-v1);
    # the world's own answers are right by construction
    out.jsonl("reference_answer/gpt-4.jsonl", [a for a, q in zip(answers, questions, strict=True)
                                               if q["category"] in ("math", "reasoning", "coding")])
    out.items = len(questions)


BUILDERS: dict[str, Builder] = {
    "vicuna80": _vicuna80, "mmbench": _mmbench, "seed": _seed, "mmvet": _mmvet, "mmmu": _mmmu, "mme": _mme,
    "textvqa": _textvqa, "gqa": _gqa, "emt": _emt, "mllm_bench": _mllm_bench, "touchstone": _touchstone,
    "llava_bench": _llava_bench,
}


# -- entry point ---------------------------------------------------------------------------------------
def _check_replaceable(final: Path) -> None:
    if final.exists() and not (final / MARKER).is_file() and any(final.iterdir()):
        raise FileExistsError(f"{final} exists and was not written by emit_world_benchmarks; refusing to replace it")


def _swap_in(partial: Path, final: Path) -> None:
    if not final.exists():
        partial.rename(final)
        return
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    final.rename(old)
    partial.rename(final)
    shutil.rmtree(old)


def emit_world_benchmarks(world_root: Path, out_root: Path, per_benchmark: int = 40, seed: int = 0) -> dict[str, Path]:
    """Write the 12 offline benchmark sets from the world's held-out scenes; returns name -> data root.

    Skips all work when ``out_root/world_sets.json`` records the same format, world, size and seed
    and every folder is there.
    """
    if per_benchmark <= 0:
        raise ValueError(f"per_benchmark must be positive, got {per_benchmark}")
    world_root, out_root = Path(world_root), Path(out_root)
    roots = {name: out_root / name for name in BUILDERS}
    key = {"format": FORMAT_VERSION, "per_benchmark": per_benchmark, "seed": seed,
           "world": _fingerprint(world_root)}
    manifest = out_root / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        if all(old.get(k) == v for k, v in key.items()) and all((r / MARKER).is_file() for r in roots.values()):
            return roots
    held = load_heldout(world_root)
    train_texts = _train_texts(world_root)
    for root in roots.values():
        _check_replaceable(root)
    out_root.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, build in BUILDERS.items():
        partial = out_root / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        out = _Out(partial)
        build(out, held, per_benchmark, seed, train_texts)
        out.text(MARKER, f"written by bench.benchmarks.world_sets from {world_root}\n")
        _swap_in(partial, roots[name])
        sizes[name] = out.items
    write_json_atomic(manifest, {**key, "heldout_scenes": len(held), "items": sizes,
                                 "roots": {k: str(v.relative_to(out_root)) for k, v in roots.items()}})
    return roots
