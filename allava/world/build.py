"""Write the built-in world to disk as ALLaVA-4V files: the same layout synth/ produces.

Layout of ``root``::

    images/world_train_00000.png ...      rendered scenes
    ALLaVA-Caption-World.json             stage 1: detailed captions
    ALLaVA-Instruct-World.json            stage 2: complex reasoning questions with detailed answers
    ALLaVA-VQA-World.json                 multi-turn short-answer / multiple-choice questions, one record per image
    ALLaVA-VQA-<qtype>-World.json         the same questions one per record, a file per question type (stage 2
                                          of the default: per-type sampling ratios, see train/configs/tiny.yaml)
    ALLaVA-Text-World.json                text-only instructions (both stages)
    ALLaVA-Heldout-World.json             held-out short-answer questions, one per record, with ``qtype``
    scenes.jsonl                          the scene behind every image (the offline teacher reads it)
    world.json                            counts and the seed, so a rebuild can be skipped
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from allava.chat import multiple_choice_prompt, short_answer_prompt
from allava.fileio import atomic_path, write_json_atomic
from allava.schema import Record, make_record, write_records
from allava.world.language import (
    CAPTION_PROMPTS,
    QUESTION_TYPES,
    as_multiple_choice,
    caption,
    complex_question,
    option_letter,
    short_questions,
    text_instruction,
)
from allava.world.scene import Scene, render, sample_scene

CAPTION_FILE = "ALLaVA-Caption-World.json"
INSTRUCT_FILE = "ALLaVA-Instruct-World.json"
VQA_FILE = "ALLaVA-VQA-World.json"
TEXT_FILE = "ALLaVA-Text-World.json"
HELDOUT_FILE = "ALLaVA-Heldout-World.json"
SCENES_FILE = "scenes.jsonl"
MANIFEST_FILE = "world.json"


@dataclass(frozen=True)
class WorldSpec:
    train_scenes: int = 5000
    heldout_scenes: int = 300
    text_records: int = 3000
    image_size: int = 96
    seed: int = 1234
    multiple_choice_fraction: float = 0.1
    word_fraction: float = 0.35  # scenes with a written word (the OCR-style questions)
    # bump when the generated text changes, so an existing world folder is rebuilt, not reused
    # (2: words in captions without quotes, tokenised as the answers are: " cat", not "cat";
    #  3: single-turn questions in a file per type)
    version: int = 3


def vqa_turns(scene: Scene, rng: random.Random, mc_fraction: float) -> list[tuple[str, str, str]]:
    """One short-answer question per type as (qtype, prompt, answer), some as multiple choice.

    As in LLaVA-1.5's VQA data, every question carries the answer-format instruction.
    """
    turns = []
    for qa in short_questions(scene, rng):
        mc = as_multiple_choice(qa, rng) if rng.random() < mc_fraction else None
        if mc is not None:
            turns.append((qa.qtype, multiple_choice_prompt(mc.question, mc.options), option_letter(mc)))
        else:
            turns.append((qa.qtype, short_answer_prompt(qa.question), qa.answer))
    rng.shuffle(turns)
    return turns


def vqa_by_type_file(qtype: str) -> str:
    """Path (relative to the world root) of the single-turn questions of one type."""
    return f"ALLaVA-VQA-{qtype}-World.json"


def build_world(root: str | Path, spec: WorldSpec = WorldSpec(), progress: bool = True) -> Path:
    """Generate (or reuse, when ``world.json`` matches ``spec``) the built-in world under ``root``."""
    root = Path(root)
    manifest = root / MANIFEST_FILE
    if manifest.is_file() and json.loads(manifest.read_text()).get("spec") == spec.__dict__:
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.seed)
    captions: list[Record] = []
    instructs: list[Record] = []
    vqas: list[Record] = []
    by_type: dict[str, list[Record]] = {t: [] for t in QUESTION_TYPES}
    heldout: list[Record] = []
    scenes_jsonl: list[str] = []
    total = spec.train_scenes + spec.heldout_scenes
    bar = tqdm(total=total, desc="world: rendering scenes", disable=not progress, unit="img")
    for i in range(total):
        split = "train" if i < spec.train_scenes else "heldout"
        sid = f"world_{split}_{i:05d}"
        scene = sample_scene(rng, sid, spec.word_fraction)
        image = f"images/{sid}.png"
        render(scene, spec.image_size).save(root / image, compress_level=1)
        scenes_jsonl.append(json.dumps({"image": image, **scene.to_json()}))
        if split == "train":
            captions.append(make_record(f"{sid}_cap", [(rng.choice(CAPTION_PROMPTS), caption(scene, rng))], image))
            questions, chosen, answer = complex_question(scene, rng)
            instructs.append(make_record(f"{sid}_inst", [(questions[chosen], answer)], image))
            turns = vqa_turns(scene, rng, spec.multiple_choice_fraction)
            vqas.append(make_record(f"{sid}_vqa", [(q, a) for _, q, a in turns], image))
            for qtype, q, a in turns:
                by_type[qtype].append(make_record(f"{sid}_{qtype}", [(q, a)], image))
        else:
            for k, qa in enumerate(short_questions(scene, rng)):
                heldout.append(
                    make_record(f"{sid}_q{k}", [(short_answer_prompt(qa.question), qa.answer)], image, qtype=qa.qtype)
                )
        bar.update()
    bar.close()
    texts = [make_record(f"world_text_{i:05d}", [text_instruction(rng)]) for i in range(spec.text_records)]
    write_records(root / CAPTION_FILE, captions)
    write_records(root / INSTRUCT_FILE, instructs)
    write_records(root / VQA_FILE, vqas)
    for qtype, records in by_type.items():
        write_records(root / vqa_by_type_file(qtype), records)
    write_records(root / TEXT_FILE, texts)
    write_records(root / HELDOUT_FILE, heldout)
    with atomic_path(root / SCENES_FILE) as tmp:
        tmp.write_text("\n".join(scenes_jsonl) + "\n")
    files = [CAPTION_FILE, INSTRUCT_FILE, VQA_FILE, TEXT_FILE, HELDOUT_FILE, *map(vqa_by_type_file, QUESTION_TYPES)]
    write_json_atomic(manifest, {"spec": spec.__dict__, "files": files})
    return root


def corpus(root: str | Path) -> list[str]:
    """All conversation text of the world (for training the tiny tokenizer)."""
    root = Path(root)
    texts: list[str] = []
    for name in (CAPTION_FILE, INSTRUCT_FILE, VQA_FILE, TEXT_FILE):
        for obj in json.loads((root / name).read_text()):
            texts.extend(turn["value"] for turn in obj["conversations"])
    return texts
