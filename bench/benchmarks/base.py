"""The benchmark-adapter interface: one small unit per benchmark (load, prompt, score).

Why this shape: the bench runner must treat 12 very different benchmarks alike. Each adapter reads
the benchmark's *official* distribution files into :class:`Item` s, says what prompt the model gets
(LLaVA-1.5 conventions), and scores saved predictions with the *official* rule. Scoring only takes
``{item id: prediction text}``, so predictions saved per variant can be re-scored and re-judged
without regenerating. Judged benchmarks take a judge client; without one they return
``status = "not scored: no judge"`` and never fall back to another scorer.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

STATUS_OK = "ok"
STATUS_NO_JUDGE = "not scored: no judge"
STATUS_NO_ITEMS = "not scored: no items"


class DataFormatError(ValueError):
    """A benchmark file is not in the benchmark's official format (raised before any generation)."""


class JudgeLike(Protocol):
    """What adapters need from a judge (see ``bench/judge.py``): one chat turn in, text out.

    ``attempt`` numbers the re-asks of one and the same request (TouchStone's ``evaluate()`` and
    MLLM-Bench's rounds send identical requests again): a caching judge must keep them apart, so a
    re-ask is a real new request, while a re-run still finds every attempt in its cache.
    ``prompt_version`` names the official prompt set, for the judge's log."""

    model: str

    def ask(
        self,
        prompt: str,
        *,
        system: str | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        image: Path | bytes | None = None,
        tag: str = "",
        attempt: int = 0,
        prompt_version: str = "",
    ) -> str: ...


@dataclass
class Item:
    """One model query. ``image`` is a file path, raw encoded image bytes (e.g. MMBench's base64
    column, decoded), or None for text-only benchmarks (Vicuna-80). ``meta`` holds what scoring
    needs (answers, categories); ``stratum`` drives stratified subsampling and ``group`` keeps
    scoring units together (MME's two questions per image, MMBench's circular copies)."""

    id: str
    prompt: str
    image: Path | bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    stratum: str = ""
    group: str = ""

    def load_image(self):  # -> PIL.Image.Image | None
        """Open the image with PIL (RGB); None for text-only items."""
        if self.image is None:
            return None
        from PIL import Image

        src = io.BytesIO(self.image) if isinstance(self.image, bytes) else self.image
        with Image.open(src) as img:
            return img.convert("RGB")


@dataclass
class ScoreResult:
    """A benchmark's score: the headline number (None when not scored), the official breakdown,
    which scorer produced it (and which judge), a status, and counts of everything unusual."""

    benchmark: str
    headline: float | None
    breakdown: dict[str, float | None] = field(default_factory=dict)
    scorer: str = ""
    status: str = STATUS_OK
    judge: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    prompt_version: str | None = None  # judged scorers: which official prompt set the judge was given

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Adapter:
    """Base class. Subclasses set ``name``/``judged`` and implement ``read`` and ``score``."""

    name: ClassVar[str] = ""
    judged: ClassVar[bool] = False  # True when the official rule needs a judge model
    description: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.load_counts: Counter[str] = Counter()
        self.load_issues: list[str] = []

    # -- loading -----------------------------------------------------------------------------
    def load(self, data_root: str | Path, limit: int | None = None, seed: int = 0) -> list[Item]:
        """Read the official files under ``data_root`` and optionally subsample (stratified, seeded)."""
        self.load_counts = Counter()
        self.load_issues = []
        root = Path(data_root)
        if not root.exists():
            raise FileNotFoundError(f"{self.name}: data root {root} does not exist")
        items = self.read(root)
        self.load_counts["loaded"] = len(items)
        return stratified_subsample(items, limit, seed)

    def read(self, root: Path) -> list[Item]:
        raise NotImplementedError

    def prompt(self, item: Item) -> str:
        """The text the model is asked (the runtime adds the chat template and image marker)."""
        return item.prompt

    # -- scoring -----------------------------------------------------------------------------
    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        raise NotImplementedError

    def resample_copy(self, item: Item, draw: int) -> Item:
        """``item`` as the ``draw``-th unit of a bootstrap resample (bench/harness/confidence.py): a unit
        drawn twice must count twice, so its id and group get the draw number; everything the official
        rule reads stays. Adapters whose scoring keys items by something else (MMBench's question index,
        the pairwise benchmarks' baseline answers by id) override it."""
        return replace(item, id=f"{item.id}#{draw}", group=f"{item.group}#{draw}" if item.group else "")

    # -- official submission files ----------------------------------------------------------
    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """Write ``predictions`` under the folder ``out`` in the exact format the benchmark's official
        scorer or server takes (see ``bench/README.md``); the paths written. ``judged`` (a judged
        result's ``details``: judge, prompt version, judgments) adds the judge's replies in the
        official review format, so the official summary script can be run on them. Default: nothing
        (no official tool outside this project)."""
        return []

    # -- helpers for subclasses --------------------------------------------------------------
    def skip(self, reason: str, detail: str) -> None:
        """Count and remember a row that cannot be used (bad row, missing image)."""
        self.load_counts[reason] += 1
        if len(self.load_issues) < 50:
            self.load_issues.append(f"{reason}: {detail}")

    def result(self, headline: float | None, **kwargs: Any) -> ScoreResult:
        counts = dict(kwargs.pop("counts", {}))
        for key, value in self.load_counts.items():
            counts.setdefault(f"load_{key}", value)
        details = dict(kwargs.pop("details", {}))
        if self.load_issues:
            details.setdefault("load_issues", self.load_issues[:20])
        return ScoreResult(self.name, headline, counts=counts, details=details, **kwargs)

    def no_judge(self, items: Sequence[Item], **kwargs: Any) -> ScoreResult:
        return self.result(None, status=STATUS_NO_JUDGE, counts={"items": len(items)}, **kwargs)

    # -- scoring helpers for subclasses ------------------------------------------------------
    @staticmethod
    def tally(items: Sequence[Item], predictions: dict[str, str],
              check: Callable[[Item, str], tuple[str, bool]]) -> tuple[dict[str, list[bool]], int]:
        """Right/wrong per breakdown key, in item order: ``check(item, prediction)`` gives (key, right),
        a missing prediction checked as ""; also how many predictions were missing."""
        per: dict[str, list[bool]] = defaultdict(list)
        missing = 0
        for it in items:
            pred = predictions.get(it.id)
            missing += pred is None
            key, ok = check(it, pred or "")
            per[key].append(ok)
        return per, missing

    @staticmethod
    def percent_by_key(per: Mapping[str, Sequence[float]]) -> dict[str, float | None]:
        """100 x the mean per key (accuracy when the values are right/wrong), keys sorted."""
        return {k: pct(sum(v), len(v)) for k, v in sorted(per.items())}

    def accuracy_result(self, per: dict[str, list[bool]], scorer: str, counts: dict[str, int],
                        extra: dict[str, float | None] | None = None) -> ScoreResult:
        """Headline = accuracy (%) over every answer; breakdown = accuracy per key (sorted), then ``extra``."""
        total = [ok for v in per.values() for ok in v]
        return self.result(pct(sum(total), len(total)), breakdown={**self.percent_by_key(per), **(extra or {})},
                           scorer=scorer, counts=counts)

    # -- reading helpers for subclasses ------------------------------------------------------
    def complete_rows(self, rows: Iterable[tuple[Any, Any]], required: Sequence[str],
                      label: str = "{key!r}") -> Iterator[tuple[Any, dict[str, Any]]]:
        """The (key, row) pairs whose row is an object holding every ``required`` field; each other
        row is counted and remembered as a ``bad_row``: "<label> lacks a/b/c", with ``label``
        formatted from ``key`` and ``row``."""
        for key, row in rows:
            if isinstance(row, dict) and set(required) <= row.keys():
                yield key, row
            else:
                self.skip("bad_row", f"{label.format(key=key, row=row)} lacks {'/'.join(required)}")

    def find_image(self, candidates: Sequence[Path], detail: str) -> Path | None:
        """The first existing file among ``candidates``; None, counted and remembered as a
        ``missing_image`` (see :meth:`skip`), when there is none."""
        image = find_file(candidates)
        if image is None:
            self.skip("missing_image", detail)
        return image

    @staticmethod
    def data_file(root: Path, *names: str, glob: str | None = None) -> Path:
        """The benchmark's data file: ``root`` itself when it is a file; else the first file under it
        matching ``glob`` (sorted); else the first of ``names`` that exists there; else
        ``root / names[0]`` (whose absence the readers report as an expected file missing)."""
        if root.is_file():
            return root
        found = sorted(root.glob(glob)) if glob else []
        if found:
            return found[0]
        return next((root / n for n in names if (root / n).exists()), root / names[0])

    def check_format(self, path: Path, ok: bool, expected: str) -> None:
        """Raise ``DataFormatError("<benchmark>: <path> <expected>")`` unless ``ok``."""
        if not ok:
            raise DataFormatError(f"{self.name}: {path} {expected}")

    def read_json_file(self, root: Path, name: str, expected: str = "", shape: type = dict,
                       list_key: str | None = None) -> tuple[Path, Any]:
        """Read the JSON data file (see :meth:`data_file`) and check that it holds a ``shape`` (with a
        list under ``list_key`` when given), else DataFormatError naming the file and ``expected``
        (by default "must be an object with a '<list_key>' list"). Returns the folder holding the
        file (images are found relative to it) and the content."""
        path = self.data_file(root, name)
        data = read_json(path, self.name)
        if list_key is None:
            self.check_format(path, isinstance(data, shape), expected)
        else:
            self.check_format(path, isinstance(data, shape) and isinstance(data.get(list_key), list),
                              expected or f"must be an object with a {list_key!r} list")
        return path.parent, data


class JudgedAdapter(Adapter):
    """An adapter whose official rule needs a judge: without one, :meth:`score` returns the "no judge"
    result naming :meth:`scorer_name` (never another scorer); with one, :meth:`score_judged`."""

    judged: ClassVar[bool] = True
    scorer: ClassVar[str] = ""  # the official rule, as reported in ScoreResult.scorer
    prompt_version: ClassVar[str] = ""  # the official prompt set (source file @ commit), as reported

    def scorer_name(self) -> str:
        return self.scorer

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        if judge is None:
            return self.no_judge(items, scorer=self.scorer_name(), prompt_version=self.prompt_version)
        return self.score_judged(items, predictions, judge)

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        raise NotImplementedError


def judge_name(judge: JudgeLike | None) -> str | None:
    return None if judge is None else str(getattr(judge, "model", "judge"))


class Judgments:
    """Every judge request of one scoring run, in order: what was asked (the full user prompt; the
    system prompt is the version's, in ``prompts``), the reply, how it was read. Kept as
    ``ScoreResult.details["judgments"]`` so each judgment carries the prompt it was given and the
    official review files can be written from it (``Adapter.submission_files``)."""

    def __init__(self, bench: str, judge: JudgeLike, version: str, prompts: dict[str, str]) -> None:
        self.bench, self.judge, self.version, self.prompts = bench, judge, version, prompts
        self.records: list[dict[str, Any]] = []
        self.errors = 0

    def ask(self, item_id: str, prompt: str, *, order: str = "", attempt: int = 0, **options: Any) -> str | None:
        """The judge's reply, or None (recorded, counted in ``errors``) when the judge failed."""
        record: dict[str, Any] = {"id": item_id, "order": order, "attempt": attempt, "prompt": prompt}
        self.records.append(record)
        try:
            reply = self.judge.ask(prompt, tag=":".join(x for x in (self.bench, item_id, order, str(attempt)) if x),
                                   attempt=attempt, prompt_version=self.version, **options)
        except RuntimeError as exc:  # JudgeError: the client's bounded retries are spent
            self.errors += 1
            record.update(reply=None, error=str(exc))
            return None
        record["reply"] = reply
        return reply

    def note(self, **fields: Any) -> None:
        """Add how the last reply was read (e.g. ``parsed=[8.0, 6.0]``) to its record."""
        self.records[-1].update(fields)

    def details(self) -> dict[str, Any]:
        return {"judge": judge_name(self.judge), "prompt_version": self.version, "prompts": self.prompts,
                "judgments": self.records}


# -- subsampling -------------------------------------------------------------------------------
def stratified_subsample(items: list[Item], limit: int | None, seed: int = 0) -> list[Item]:
    """Keep ``limit`` scoring units (groups), spread over strata in proportion to their size
    (largest remainder, every stratum at least one unit while the limit allows), chosen with a
    seeded RNG; the kept items stay in file order so order-dependent official rules still hold."""
    if limit is None or limit <= 0:
        return items
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.group or it.id, []).append(it)
    if limit >= len(groups):
        return items
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for key, members in groups.items():
        by_stratum[members[0].stratum].append(key)
    strata = sorted(by_stratum)
    total = len(groups)
    quota = {s: min(1, len(by_stratum[s])) for s in strata} if limit >= len(strata) else {s: 0 for s in strata}
    remaining = limit - sum(quota.values())
    if remaining > 0:
        shares = {s: remaining * len(by_stratum[s]) / total for s in strata}
        for s in strata:
            quota[s] += min(int(shares[s]), len(by_stratum[s]) - quota[s])
        leftover = limit - sum(quota.values())
        order = sorted(strata, key=lambda s: (-(shares[s] - int(shares[s])), s))
        while leftover > 0:
            progressed = False
            for s in order:
                if leftover and quota[s] < len(by_stratum[s]):
                    quota[s] += 1
                    leftover -= 1
                    progressed = True
            if not progressed:
                break
    rng = random.Random(seed)
    if limit < len(strata):  # fewer units than strata: pick which strata get one
        for s in rng.sample(strata, limit):
            quota[s] = 1
    keep: set[str] = set()
    for s in strata:
        keep.update(rng.sample(sorted(by_stratum[s]), quota[s]))
    return [it for it in items if (it.group or it.id) in keep]


# -- file helpers --------------------------------------------------------------------------------
def read_json(path: Path, bench: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataFormatError(f"{bench}: expected file {path} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{bench}: {path} is not valid JSON ({exc})") from exc


def read_jsonl(path: Path, bench: str) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DataFormatError(f"{bench}: expected file {path} is missing") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{bench}: {path} line {n} is not a JSON object ({exc})") from exc
        if not isinstance(row, dict):
            raise DataFormatError(f"{bench}: {path} line {n} is not a JSON object")
        rows.append(row)
    return rows


def read_tsv(path: Path, bench: str, required: Iterable[str]) -> list[dict[str, str]]:
    """Read a VLMEvalKit/TouchStone-style TSV (header row, tab separated, base64 image column)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            rows = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError as exc:
        raise DataFormatError(f"{bench}: expected file {path} is missing") from exc
    missing = [c for c in required if c not in header]
    if missing:
        raise DataFormatError(f"{bench}: {path} lacks columns {missing} (has {header})")
    return rows


def decode_b64_image(text: str) -> bytes | None:
    """Decode a base64 image column; None when it is not valid base64."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data or None


def find_file(candidates: Sequence[Path]) -> Path | None:
    for c in candidates:
        if c.is_file():
            return c
    return None


def is_missing(value: Any) -> bool:
    """pandas-style NaN check for TSV cells (empty or 'nan')."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "none"))


def pct(num: float, den: float) -> float | None:
    return None if den == 0 else 100.0 * num / den


def hub_unavailable(bench: str, hub_id: str) -> DataFormatError:
    return DataFormatError(
        f"{bench}: loading from the hub ({hub_id}) needs the `datasets` package and network access; "
        f"install it (pip install datasets) or point data_root at a local copy of the official files"
    )


def write_json_file(path: Path, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept), creating the folder; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=indent) + ("\n" if indent is None else ""),
                    encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """One JSON object per line (UTF-8, non-ASCII kept), creating the folder; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def stable_id(*parts: Any) -> str:
    """A deterministic 22-character id (where official answer files carry a shortuuid ``answer_id``)."""
    import hashlib

    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:22]


def blank_missing(items: Sequence[Item], predictions: Mapping[str, str]) -> dict[str, str]:
    """Every item's prediction, "" where there is none: submission files list every item, and an
    empty answer scores there as a missing one scores here (wrong / judged as empty)."""
    return {it.id: predictions.get(it.id, "") for it in items}
