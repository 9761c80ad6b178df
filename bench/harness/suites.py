"""Which benchmarks a run uses, where their data comes from, and how long answers may be.

Why a separate unit: the runner only deals in (adapter, items) pairs. Name resolution gives clear
errors for unknown names; data resolution follows one rule per benchmark: an official copy under
--bench-data/<name> when given, else the built-in world's offline version (bench/benchmarks/
world_sets.py, when that module exists), else the benchmark is reported as "not run: no data".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench.harness.world_adapter  # noqa: F401  (registers "world")
from bench.benchmarks import REPORT_BENCHMARKS, Adapter, DataFormatError, Item, get_adapter, known_benchmarks
from bench.benchmarks.registry import UnknownBenchmarkError

# World: stratified by question type. 400 is the smallest size at which a 1-point loss made of one-way flips
# (4 items) gets a paired 95% interval below zero ([-2.0, -0.25]); at 96 one flipped item reads [-3.1, 0.0].
# Cost over 96: ~300 more items per variant (~2 min for the mobile profile's 12 variants; README, bench/README.md).
DEFAULT_LIMITS = {"world": 400}
DEFAULT_REPORT_LIMIT = 8  # per report benchmark when emitted offline from the world
MAX_NEW_TOKENS = {"world": 8}  # the held-out answers are one word (training's eval uses 8)
SHORT_TOKENS = 16  # short-answer / choice benchmarks
LONG_TOKENS = 64  # free-form (judged) benchmarks
SPECIAL = {"none": "no accuracy (latency only)", "all": "world + the 12 report benchmarks",
           "report": "the 12 report benchmarks"}


def parse_benchmarks(spec: str) -> list[str]:
    """'world,mme' / 'all' / 'report' / 'none' -> canonical names; unknown names raise with the known list."""
    names: list[str] = []
    for raw in (s.strip() for s in spec.split(",")):
        if not raw or raw == "none":
            continue
        if raw == "all":
            names += ["world", *REPORT_BENCHMARKS]
        elif raw == "report":
            names += list(REPORT_BENCHMARKS)
        else:
            try:
                names.append(get_adapter(raw).name)
            except UnknownBenchmarkError as exc:
                special = ", ".join(f"{k} ({v})" for k, v in SPECIAL.items())
                raise UnknownBenchmarkError(f"{exc}; or one of: {special}") from None
    return list(dict.fromkeys(names))


def max_new_tokens(adapter: Adapter) -> int:
    return MAX_NEW_TOKENS.get(adapter.name, LONG_TOKENS if adapter.judged else SHORT_TOKENS)


@dataclass
class Suite:
    name: str
    adapter: Adapter | None
    items: list[Item] = field(default_factory=list)
    data_root: str | None = None
    limit: int | None = None
    status: str = "ok"  # or "not run: <reason>"
    max_new_tokens: int = SHORT_TOKENS

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data_root": self.data_root, "limit": self.limit, "n_items": len(self.items),
                "status": self.status, "max_new_tokens": self.max_new_tokens,
                "judged": bool(self.adapter and self.adapter.judged)}


def emit_world_sets(world_root: Path, out_root: Path, per_benchmark: int) -> dict[str, Path] | None:
    """The 12 benchmarks in official format from the built-in world; None when that module is absent."""
    try:
        mod = importlib.import_module("bench.benchmarks.world_sets")
    except ImportError:
        return None
    paths = mod.emit_world_benchmarks(world_root, out_root, per_benchmark)
    return {k: Path(v) for k, v in paths.items()}


def load_suites(names: list[str], world_root: Path, bench_data: Path | None, offline_root: Path,
                limit: int | None, seed: int, log: list[str]) -> list[Suite]:
    suites: list[Suite] = []
    emitted: dict[str, Path] | None = None
    for name in names:
        adapter = get_adapter(name)
        lim = limit if limit is not None else DEFAULT_LIMITS.get(name, DEFAULT_REPORT_LIMIT)
        suite = Suite(name, adapter, limit=lim, max_new_tokens=max_new_tokens(adapter))
        if name == "world":
            root: Path | None = world_root
        elif bench_data is not None and (bench_data / name).exists():
            root = bench_data / name
        else:
            if emitted is None:
                try:
                    emitted = emit_world_sets(world_root, offline_root, max(lim, DEFAULT_REPORT_LIMIT)) or {}
                except Exception as exc:  # noqa: BLE001 - another stage's failure must not end the run
                    log.append(f"offline benchmark sets could not be emitted: {type(exc).__name__}: {exc}")
                    emitted = {}
            root = emitted.get(name)
            if root is None:
                suite.status = "not run: no data (give --bench-data DIR with DIR/<name>/ official files, or build " \
                               "bench/benchmarks/world_sets.py for the offline set)"
        if root is not None:
            suite.data_root = str(root)
            try:
                suite.items = adapter.load(root, limit=lim, seed=seed)
            except (DataFormatError, FileNotFoundError) as exc:
                suite.status = f"not run: {exc}"
        suites.append(suite)
    return suites


__all__ = ["Suite", "UnknownBenchmarkError", "known_benchmarks", "load_suites", "parse_benchmarks"]
