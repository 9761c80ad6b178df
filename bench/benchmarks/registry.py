"""Benchmarks registered by name, so the runner and ``--benchmarks a,b,c`` only deal in names."""

from __future__ import annotations

from typing import Any, TypeVar

from bench.benchmarks.base import Adapter

_REGISTRY: dict[str, type[Adapter]] = {}
A = TypeVar("A", bound=type[Adapter])


class UnknownBenchmarkError(KeyError):
    """Raised for a name nobody registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a readable sentence
        return str(self.args[0])


def register(name: str):
    """Class decorator: ``@register("mme")`` makes the adapter available as ``get_adapter("mme")``."""

    def deco(cls: A) -> A:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"benchmark {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def known_benchmarks() -> list[str]:
    return sorted(_REGISTRY)


def get_adapter(name: str, **options: Any) -> Adapter:
    """A fresh adapter for ``name``; options go to its constructor (e.g. ``baseline=path``)."""
    key = name.strip().lower().replace("-", "_")
    aliases = {"mm_vet": "mmvet", "seed_bench": "seed", "llava_bench_in_the_wild": "llava_bench", "vicuna_80": "vicuna80"}
    key = aliases.get(key, key)
    if key not in _REGISTRY:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(known_benchmarks())}")
    return _REGISTRY[key](**options)
