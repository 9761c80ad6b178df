"""What the built-in world says about a scene: captions, questions and answers.

Every text is derived from the scene data alone, so answers are always right. Question types map
onto the report's benchmark formats: short answers (GQA/TextVQA style, incl. reading words),
yes/no (MME), multiple choice (MMBench/SEED), classification (EMT), open description (MM-Vet,
LLaVA-Bench) and text-only instructions (Vicuna-80).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from allava.world.scene import COLOURS, POSITIONS, SHAPES, WORDS, Scene, Shape

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
CAPTION_PROMPTS = [
    "Describe the image in detail.",
    "Please depict the image in words.",
    "What do you see in this picture? Give a detailed description.",
    "Write a detailed caption for this image.",
]
QUESTION_TYPES = ["count", "colour", "shape", "position", "exist", "size", "cell_colour", "cell_shape", "word"]


@dataclass(frozen=True)
class QA:
    qtype: str
    question: str
    answer: str
    options: tuple[str, ...] = ()  # set for multiple-choice variants; answer is then the option text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(s: Shape) -> str:
    return f"{_article(s.size)} {s.size} {s.colour} {s.shape}"


def _where(position: str) -> str:
    return "in the center" if position == "center" else f"on the {position}" if " " not in position else f"in the {position}"


def caption(scene: Scene, rng: random.Random) -> str:
    """A detailed caption naming every object with its colour, size and position."""
    shapes = scene.shapes_in_reading_order()
    n = len(shapes)
    noun = "shape" if n == 1 else "shapes"
    head = f"The image shows {NUMBER_WORDS[n]} {noun} on a light grey background"
    head += " and a written word." if scene.word else "."
    parts = [head]
    for s in shapes:
        template = rng.choice(
            ["{Where} there is {obj}.", "There is {obj} {where}.", "{Obj} sits {where}."]
        )
        obj = _object_phrase(s)
        where = _where(s.position)
        parts.append(template.format(obj=obj, Obj=obj[0].upper() + obj[1:], where=where, Where=where[0].upper() + where[1:]))
    if scene.word:
        parts.append(f"The word {scene.word.text} is written in black {_where(scene.word.position)}.")
    colours = Counter(s.colour for s in shapes)
    if n > 1:
        common, k = colours.most_common(1)[0]
        parts.append(
            f"{k} of the shapes are {common}." if k > 1 else "Every shape has a different colour."
        )
    return " ".join(parts)


def _unique(items: list[str]) -> set[str]:
    counts = Counter(items)
    return {k for k, v in counts.items() if v == 1}


def short_questions(scene: Scene, rng: random.Random) -> list[QA]:
    """Every short-answer question the scene can answer unambiguously, one per type at most."""
    shapes = scene.shapes
    out: list[QA] = [QA("count", "How many shapes are in the image?", str(len(shapes)))]
    unique_shapes = sorted(_unique([s.shape for s in shapes]))
    if unique_shapes:
        kind = rng.choice(unique_shapes)
        target = next(s for s in shapes if s.shape == kind)
        out.append(QA("colour", f"What colour is the {kind}?", target.colour))
    unique_colours = sorted(_unique([s.colour for s in shapes]))
    if unique_colours:
        colour = rng.choice(unique_colours)
        target = next(s for s in shapes if s.colour == colour)
        out.append(QA("shape", f"What shape is the {colour} object?", target.shape))
    unique_names = sorted(_unique([s.name for s in shapes]))
    if unique_names:
        name = rng.choice(unique_names)
        target = next(s for s in shapes if s.name == name)
        out.append(QA("position", f"Where is the {name}?", target.position))
        name = rng.choice(unique_names)
        target = next(s for s in shapes if s.name == name)
        out.append(QA("size", f"Is the {name} big or small?", target.size))
    present = {s.name for s in shapes}
    if rng.random() < 0.5:
        name = rng.choice(sorted(present))
        out.append(QA("exist", f"Is there {_article(name)} {name} in the image?", "yes"))
    else:
        # hard negatives share a colour or a shape with something that is there
        s = rng.choice(shapes)
        candidates = [f"{s.colour} {k}" for k in SHAPES] + [f"{c} {s.shape}" for c in COLOURS]
        candidates = sorted(set(candidates) - present)
        name = rng.choice(candidates)
        out.append(QA("exist", f"Is there {_article(name)} {name} in the image?", "no"))
    s = rng.choice(shapes)
    out.append(QA("cell_colour", f"What colour is the shape {_where(s.position)}?", s.colour))
    s = rng.choice(shapes)
    out.append(QA("cell_shape", f"What shape is {_where(s.position)}?", s.shape))
    if scene.word:
        out.append(QA("word", "What word is written in the image?", scene.word.text))
    return out


def as_multiple_choice(qa: QA, rng: random.Random) -> QA | None:
    """Turn a colour/shape/word/position question into a 4-option multiple-choice question."""
    pools = {
        "colour": list(COLOURS),
        "cell_colour": list(COLOURS),
        "shape": SHAPES,
        "cell_shape": SHAPES,
        "word": WORDS,
        "position": POSITIONS,
    }
    pool = pools.get(qa.qtype)
    if pool is None:
        return None
    distractors = rng.sample([p for p in pool if p != qa.answer], 3)
    options = distractors + [qa.answer]
    rng.shuffle(options)
    return QA(qa.qtype, qa.question, qa.answer, tuple(options))


def option_letter(qa: QA) -> str:
    return chr(ord("A") + qa.options.index(qa.answer))


def complex_question(scene: Scene, rng: random.Random) -> tuple[list[str], int, str]:
    """Candidate complex-reasoning questions, the chosen index and a detailed, reasoned answer."""
    shapes = scene.shapes_in_reading_order()
    n = len(shapes)
    listing = "; ".join(f"{_object_phrase(s)} {_where(s.position)}" for s in shapes)
    candidates: list[tuple[str, str]] = []
    s = rng.choice(shapes)
    candidates.append(
        (
            f"If the {s.name} were removed, how many shapes would remain? Explain your reasoning.",
            f"Looking closely, the image contains {NUMBER_WORDS[n]} shapes: {listing}. "
            f"Removing the {s.name} {_where(s.position)} leaves {NUMBER_WORDS[n - 1]} "
            f"{'shape' if n - 1 == 1 else 'shapes'}, so the answer is {n - 1}.",
        )
    )
    colours = Counter(x.colour for x in shapes)
    common, k = colours.most_common(1)[0]
    candidates.append(
        (
            "Which colour appears most often among the shapes, and how can you tell?",
            f"Going through the shapes one by one: {listing}. "
            + (
                f"{common.capitalize()} appears {NUMBER_WORDS[k]} times, more than any other colour, so the answer is {common}."
                if k > 1 and list(colours.values()).count(k) == 1
                else "No colour appears more often than the others, so there is no single most common colour."
            ),
        )
    )
    if n >= 2:
        a, b = rng.sample(shapes, 2)
        ca, cb = a.cell % 3, b.cell % 3
        relation = "to the left of" if ca < cb else "to the right of" if ca > cb else "in the same column as"
        candidates.append(
            (
                f"Is the {a.name} to the left of the {b.name}? Explain.",
                f"The {a.name} is {_where(a.position)} and the {b.name} is {_where(b.position)}. "
                f"So the {a.name} is {relation} the {b.name}; the answer is {'yes' if ca < cb else 'no'}.",
            )
        )
    if scene.word:
        w = scene.word
        candidates.append(
            (
                "What is written in the image, and how many letters does it have?",
                f"The word {w.text} is written in black {_where(w.position)}. "
                f"It has {NUMBER_WORDS[len(w.text)]} letters: {', '.join(w.text)}.",
            )
        )
    chosen = rng.randrange(len(candidates))
    return [q for q, _ in candidates], chosen, candidates[chosen][1]


def text_instruction(rng: random.Random) -> tuple[str, str]:
    """A text-only instruction with a worked answer (the Evol-Instruct part, in miniature)."""
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"What is {a} plus {b}?", f"{a} plus {b} equals {a + b}."
    if kind == 1:
        w = rng.choice(WORDS)
        return f"Spell the word {w} backwards.", f"Spelled backwards, {w} is {w[::-1]}."
    if kind == 2:
        a, b = rng.sample(range(10), 2)
        big = max(a, b)
        return f"Which number is larger, {a} or {b}?", f"{big} is larger, because {big} comes after {min(a, b)} when counting."
    mixes = {("blue", "yellow"): "green", ("red", "yellow"): "orange", ("red", "blue"): "purple"}
    (x, y), z = rng.choice(sorted(mixes.items()))
    return f"What colour do you get when you mix {x} and {y} paint?", f"Mixing {x} and {y} paint gives {z}."
