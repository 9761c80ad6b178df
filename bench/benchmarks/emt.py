"""EMT (Evaluating MulTimodality, Zhai et al. 2023, "Investigating the Catastrophic Forgetting in
Multimodal Large Language Models", arXiv:2309.10313): image classification (MNIST, CIFAR-10,
CIFAR-100, miniImageNet) answered in free form; a judge decides whether the answer names the true
class; accuracy per dataset, headline = mean over datasets.

What is official and what is assumed (see bench/README.md, "EMT"): the paper and its project page
(yx-s-z.github.io/emt) describe the protocol -- the MLLM is prompted as a classifier with the
dataset's label list and its outputs are checked for correctness by GPT-3.5-turbo, accuracy per
dataset. The paper's evaluation code and its exact classification and checking prompts were not
available to this project (no released repository could be found), so both prompts below are ours,
versioned ``allava-emt-v1``, and so is the re-ask rule (an unreadable yes/no is asked again, up to
3 requests at temperature 0, 0.5, 1.0, then counted wrong). The mean over datasets as headline is
also ours (the paper reports per-dataset accuracies).

Layout (class folders): ``<root>/<dataset>/<class name>/<image>`` with an optional
``<root>/<dataset>/classes.txt`` (one class name per line; default: the folder names).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from bench.benchmarks.base import DataFormatError, Item, JudgedAdapter, JudgeLike, Judgments, ScoreResult, judge_name
from bench.benchmarks.registry import register

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
JUDGE_TEMPLATE = (
    "You are checking the answer of an image classifier.\nThe true class of the image is: {label}\n"
    "The model answered: {answer}\nDoes the model's answer name the true class (synonyms and singular/plural "
    "forms count; naming several different classes does not)? Reply with yes or no only."
)
JUDGE_TRIES = 3
PROMPT_VERSION = "allava-emt-v1 (unofficial: EMT's own prompts are not published with code)"


def emt_prompt(classes: Sequence[str]) -> str:
    return f"What is the object in the image? Please only answer a single object in {', '.join(classes)}."


def parse_yes_no(reply: str) -> bool | None:
    words = reply.strip().lower().lstrip("*\"' ").split()
    if not words:
        return None
    head = words[0].strip(".,!:;*\"'")
    return True if head == "yes" else False if head == "no" else None


@register("emt")
class EMT(JudgedAdapter):
    description = "EMT classification, judge checks the class, accuracy per dataset"
    scorer = "EMT-style judge class check (unofficial prompt), accuracy per dataset"
    prompt_version = PROMPT_VERSION

    def read(self, root: Path) -> list[Item]:
        datasets = sorted(d for d in root.iterdir() if d.is_dir())
        if not datasets:
            raise DataFormatError(f"emt: expected <dataset>/<class>/<image> folders under {root}")
        items = []
        for ds in datasets:
            class_dirs = sorted(d for d in ds.iterdir() if d.is_dir())
            listed = ds / "classes.txt"
            classes = [c.strip() for c in listed.read_text().splitlines() if c.strip()] if listed.is_file() else \
                [d.name for d in class_dirs]
            for cdir in class_dirs:
                if cdir.name not in classes:
                    self.skip("unknown_class", f"{ds.name}/{cdir.name}")
                    continue
                for img in sorted(cdir.iterdir()):
                    if img.suffix.lower() not in IMAGE_EXT:
                        self.skip("not_an_image", str(img.relative_to(root)))
                        continue
                    items.append(Item(id=f"{ds.name}/{cdir.name}/{img.name}", prompt=emt_prompt(classes), image=img,
                                      meta={"dataset": ds.name, "label": cdir.name}, stratum=ds.name))
        return items

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        log = Judgments(self.name, judge, self.prompt_version, {"judge_template": JUDGE_TEMPLATE,
                                                                 "classification_prompt": emt_prompt(["{classes}"])})
        per: dict[str, list[bool]] = defaultdict(list)
        counts = {"items": len(items), "missing_prediction": 0, "unparsable": 0, "reasks": 0}
        for it in items:
            pred = predictions.get(it.id)
            counts["missing_prediction"] += pred is None
            ok = None
            if pred:
                prompt = JUDGE_TEMPLATE.format(label=it.meta["label"], answer=pred)
                for attempt in range(JUDGE_TRIES):
                    reply = log.ask(it.id, prompt, attempt=attempt, temperature=0.5 * attempt, max_tokens=8)
                    if reply is None:
                        break
                    counts["reasks"] += attempt > 0
                    ok = parse_yes_no(reply)
                    log.note(correct=ok)
                    if ok is not None:
                        break
                if ok is None:
                    counts["unparsable"] += 1
            per[it.meta["dataset"]].append(bool(ok))
        counts.update(judge_errors=log.errors, requests=len(log.records))
        breakdown = self.percent_by_key(per)
        vals = [v for v in breakdown.values() if v is not None]
        return self.result(sum(vals) / len(vals) if vals else None, breakdown=breakdown, scorer=self.scorer,
                           judge=judge_name(judge), counts=counts, prompt_version=self.prompt_version,
                           details=log.details())
