"""Paired confidence intervals for accuracy deltas: a seeded bootstrap over items of the official score.

Why: a delta of -5.2 points on 96 items and +0.5 on 200 other items can both be noise; a reader (and
``--max-drop``) needs to know how far a delta could move had other items been drawn. Why a paired
bootstrap, and over the official score function: the variant and the reference answer the same
items, so most of the item-to-item spread cancels in their difference -- resampling the items once
and scoring *both* on the same resample keeps that pairing (an unpaired interval on each score would
be several times wider). And several report benchmarks are not per-item means (MME: the sum over
subtasks of accuracy + accuracy+ over image pairs; MMBench: CircularEval over copies of a question;
Vicuna-80 / MLLM-Bench: win rates over the questions left after dropped games; LLaVA-Bench: a ratio
of two means), so no closed-form interval fits all twelve; recomputing each benchmark's own
``score()`` on every resample gives an interval on that benchmark's own scale.

Method (what bench/README.md and the report state): resample the scoring units (an item, or the
items of one ``group``: MME's two questions on an image, MMBench's circular copies) with replacement,
``DEFAULT_RESAMPLES`` times with a seeded numpy generator, each resample kept in file order; score
variant and reference on the same resample; the interval is the 2.5 and 97.5 percentiles of the
variant-minus-reference differences (percentile bootstrap, 95%). Items a variant did not answer
stay in and are scored as the official rule scores a missing answer. A benchmark whose headline is
a plain mean of per-item values (the built-in world: exact match) takes a vectorised path that
draws the very same resamples (checked against the official headline before it is used).

Known limits: the percentile bootstrap is slightly optimistic when only a handful of items differ
(4 of 400 flipped one way is marked; an exact two-sided sign test needs 6 to reach p < 0.05), and a
judged benchmark reuses each judgment (judges are deterministic at the official temperatures and
cached), so the interval covers the sampling of items, not the judge's own variance.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # export/check.py uses the per-item path without loading the benchmark adapters
    from bench.benchmarks.base import Adapter, Item

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95
METHOD = "paired percentile bootstrap over items (official score recomputed per resample)"
MIN_VALID_SHARE = 0.9  # fewer scorable resamples than this share: no interval (e.g. pairwise games all dropped)
_EPS = 1e-9  # float noise when two scores are computed from identical correctness


def bench_seed(seed: int, benchmark: str) -> int:
    """The resampling seed of one benchmark: the run's ``--seed`` and the benchmark's name, so each
    benchmark draws its own reproducible resamples and every variant of it the same ones."""
    return zlib.crc32(f"{seed}:{benchmark}".encode())


def draw(n_units: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` x ``n_units`` unit indices drawn with replacement, each row sorted (file order kept,
    as the subsample keeps it for order-dependent official rules)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.integers(0, n_units, size=(resamples, n_units)), axis=1)


def excludes_zero(ci: Mapping[str, Any] | None) -> bool | None:
    """True when the interval lies wholly above or below zero; None when there is no interval."""
    if not ci:
        return None
    return bool(ci["lo"] > _EPS or ci["hi"] < -_EPS)


def interval(point: float, deltas: Sequence[float] | np.ndarray, seed: int, level: float = LEVEL,
             method: str = METHOD) -> dict[str, Any]:
    """The percentile interval of bootstrap ``deltas`` around the observed ``point`` delta, as stored in
    results.json (``lo``/``hi`` in the benchmark's own points)."""
    arr = np.asarray(deltas, dtype=float)
    tail = (1.0 - level) / 2.0
    lo, hi = (float(x) for x in np.quantile(arr, [tail, 1.0 - tail]))
    lo, hi = (0.0 if abs(lo) < _EPS else lo), (0.0 if abs(hi) < _EPS else hi)
    ci = {"point": point, "lo": lo, "hi": hi, "level": level, "resamples": int(arr.size), "seed": seed,
          "method": method}
    ci["excludes_zero"] = excludes_zero(ci)
    return ci


def paired_mean_interval(variant: Sequence[float], reference: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES,
                         seed: int = 0, level: float = LEVEL, scale: float = 100.0) -> dict[str, Any]:
    """Interval for ``scale`` x (mean(variant) - mean(reference)) over paired per-item values (1/0 for
    right/wrong: points of accuracy). Used where the score is a plain mean: export/check.py's held-out
    exact match and the world benchmark."""
    v, r = np.asarray(variant, dtype=float), np.asarray(reference, dtype=float)
    if v.shape != r.shape or v.ndim != 1 or v.size == 0:
        raise ValueError(f"paired values need the same non-zero length (got {v.shape} and {r.shape})")
    diff = scale * (v - r)
    idx = draw(diff.size, resamples, seed)
    return interval(float(diff.mean()), diff[idx].mean(axis=1), seed, level,
                    method="paired percentile bootstrap over items (per-item mean)")


class MemoJudge:
    """A judge that asks its inner judge each distinct request once: a resample repeats items, and each
    repeat must get the judgment the item got (the bench judge caches on disk too, but thousands of
    resamples should not mean thousands of cache reads). Failures are remembered and raised again."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model = getattr(inner, "model", "judge")
        self._memo: dict[tuple[Any, ...], str | BaseException] = {}

    @staticmethod
    def _key(prompt: str, options: dict[str, Any]) -> tuple[Any, ...]:
        parts = []
        for k, v in sorted(options.items()):
            if k == "tag":  # names the item copy only; the request is the same
                continue
            if isinstance(v, (bytes, bytearray)):
                v = hashlib.sha256(v).hexdigest()
            elif isinstance(v, list):
                v = tuple(v)
            parts.append((k, str(v) if not isinstance(v, (str, int, float, tuple, type(None))) else v))
        return (prompt, *parts)

    def ask(self, prompt: str, **options: Any) -> str:
        key = self._key(prompt, options)
        if key not in self._memo:
            try:
                self._memo[key] = self.inner.ask(prompt, **options)
            except RuntimeError as exc:  # the judge client's "spent its retries"; the scorers count it
                self._memo[key] = exc
        got = self._memo[key]
        if isinstance(got, BaseException):
            raise got
        return got


def units_of(items: Sequence[Item]) -> list[list[Item]]:
    """Scoring units in file order: the items sharing a ``group`` (MME's image pair, MMBench's circular
    copies) stay together, as the subsample keeps them together."""
    units: dict[str, list[Item]] = {}
    for it in items:
        units.setdefault(it.group or it.id, []).append(it)
    return list(units.values())


def _fast_values(adapter: Adapter, units: list[list[Item]], preds: Mapping[str, str]) -> np.ndarray | None:
    per_item = getattr(adapter, "item_scores", None)
    if per_item is None or any(len(u) != 1 for u in units):
        return None
    items = [u[0] for u in units]
    values = per_item(items, dict(preds))
    if values is None:
        return None
    return np.asarray([values[it.id] for it in items], dtype=float)


def paired_score_intervals(adapter: Adapter, items: Sequence[Item], reference: Mapping[str, str],
                           variants: Mapping[str, Mapping[str, str]], judge: Any = None, *,
                           resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                           level: float = LEVEL) -> dict[str, dict[str, Any] | None]:
    """Per variant name: the paired interval of (variant - reference) on ``adapter``'s official headline,
    or None where the benchmark cannot be scored (no judge, no items, too few scorable resamples).

    ``reference`` / ``variants`` map item id -> prediction. Every variant is scored on the same
    resamples as the reference (drawn from ``seed``), so a variant whose answers equal the
    reference's gets exactly [0, 0]."""
    units = units_of(items)
    if not units or not variants:
        return {name: None for name in variants}
    memo = MemoJudge(judge) if judge is not None else None

    def headline(sample: Sequence[Item], preds: Mapping[str, str]) -> float | None:
        try:
            return adapter.score(sample, dict(preds), memo).headline
        except Exception:  # noqa: BLE001 - a resample the scorer cannot take is left out, never a crash
            return None

    ref_h = headline(items, reference)
    if ref_h is None:
        return {name: None for name in variants}
    observed = {name: headline(items, p) for name, p in variants.items()}
    idx = draw(len(units), resamples, seed)
    out: dict[str, dict[str, Any] | None] = {name: None for name in variants}

    ref_vals = _fast_values(adapter, units, reference)
    if ref_vals is not None and abs(100.0 * ref_vals.mean() - ref_h) < 1e-6:
        fast = {name: _fast_values(adapter, units, p) for name, p in variants.items()}
        for name, vals in fast.items():
            if vals is not None and observed[name] is not None and abs(100.0 * vals.mean() - observed[name]) < 1e-6:
                diff = 100.0 * (vals - ref_vals)
                out[name] = interval(observed[name] - ref_h, diff[idx].mean(axis=1), seed, level)
    slow = [n for n in variants if out[n] is None and observed[n] is not None]
    if not slow:
        return out
    deltas: dict[str, list[float]] = {n: [] for n in slow}
    copy_of = adapter.resample_copy  # the adapter knows which of its keys must stay unique per draw
    for row in idx:
        sample: list[Item] = []
        origin: list[str] = []
        for pos, u in enumerate(row):
            for it in units[u]:
                sample.append(copy_of(it, pos))
                origin.append(it.id)
        pairs = [(c.id, oid) for c, oid in zip(sample, origin, strict=True)]
        r = headline(sample, _remap(reference, pairs))
        if r is None:
            continue
        for n in slow:
            v = headline(sample, _remap(variants[n], pairs))
            if v is not None:
                deltas[n].append(v - r)
    for n in slow:
        if len(deltas[n]) >= MIN_VALID_SHARE * resamples:
            out[n] = interval(observed[n] - ref_h, deltas[n], seed, level)  # type: ignore[operator]
    return out


def _remap(preds: Mapping[str, str], pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Predictions keyed by the resample's copy ids (a missing answer stays missing)."""
    return {cid: preds[oid] for cid, oid in pairs if oid in preds}


__all__ = ["DEFAULT_RESAMPLES", "LEVEL", "METHOD", "MemoJudge", "bench_seed", "draw", "excludes_zero", "interval",
           "paired_mean_interval", "paired_score_intervals", "units_of"]
