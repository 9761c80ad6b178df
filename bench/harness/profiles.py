"""Device profiles: data files (bench/profiles/<name>.json), not code.

Why data: adding a device (or a format to a device) is one JSON edit, never a code change. A profile
says how many threads the device has (capped at the host's cores, since we emulate the device on
this host), which CPUs to pin to, how much memory the app may use, which variants the device can
ship (``format:PRECISION`` patterns, ``*`` wildcard), where the roofline's bandwidth comes from, and
the engines' load-time settings per format (``engine``: e.g. llama.cpp's batch size and flash attention,
runtimes/llamacpp_settings.py), which results.json records beside the figures they produced.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"


class ProfileError(ValueError):
    """A device profile that cannot be used; the message names the file and what is wrong."""


class UnknownDeviceError(ProfileError):
    """A device name with no profile file; the message lists the known ones."""


@dataclass
class DeviceProfile:
    name: str
    threads: int  # as the profile asks
    memory_budget_gib: float
    allowed_variants: list[str]
    reference: str = "pytorch:FP32"
    affinity: str | list[int] | None = None
    bandwidth: str | float = "measure"
    nominal_bandwidth_gbs: float | None = None
    description: str = ""
    engine: dict[str, dict[str, Any]] = field(default_factory=dict)  # format -> the engine's load settings
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def host_threads(self) -> int:
        """Threads actually used: the profile's, capped at the CPUs this process may run on."""
        return max(1, min(self.threads, len(available_cpus())))

    def cpus(self) -> list[int] | None:
        """CPU ids to pin workers to (None = leave affinity alone)."""
        cpus = available_cpus()
        if self.affinity is None:
            return None
        if self.affinity == "first-n":
            return cpus[: self.host_threads]
        if isinstance(self.affinity, list):
            picked = [c for c in self.affinity if c in cpus]
            return picked or cpus[: self.host_threads]
        raise ValueError(f"profile {self.name}: affinity must be null, 'first-n' or a list of CPU ids")

    def allows(self, fmt: str, precision: str) -> bool:
        key = f"{fmt}:{precision}".lower()
        return any(fnmatch.fnmatch(key, pat.lower()) for pat in self.allowed_variants)

    def is_reference(self, fmt: str, precision: str) -> bool:
        return f"{fmt}:{precision}".lower() == self.reference.lower()

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_gib * 2**30)


def available_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def known_devices(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in profiles_dir.glob("*.json"))


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> DeviceProfile:
    """Read ``<profiles_dir>/<name>.json``, or a profile file given by path (``--device my/phone.json``);
    unknown names raise with the list of known devices."""
    path = Path(name) if name.endswith(".json") else profiles_dir / f"{name}.json"
    if not path.is_file():
        raise UnknownDeviceError(f"unknown device {name!r}; known devices: {', '.join(known_devices(profiles_dir))} "
                                 f"(profiles are JSON files in {profiles_dir}, or pass a profile file's path)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ProfileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a JSON object with threads, memory_budget_gib, allowed_variants")
    known = {f for f in DeviceProfile.__dataclass_fields__ if f not in ("extra", "name")}
    missing = [k for k in ("threads", "memory_budget_gib", "allowed_variants") if k not in data]
    if missing:
        raise ProfileError(f"{path}: missing keys {missing}")
    engine = data.get("engine", {})
    if not isinstance(engine, dict) or not all(isinstance(v, dict) for v in engine.values()):
        raise ProfileError(f"{path}: engine must be an object of objects, e.g. {{\"gguf\": {{\"n_ubatch\": 1024}}}}")
    return DeviceProfile(name=data.get("name", path.stem), **{k: v for k, v in data.items() if k in known},
                         extra={k: v for k, v in data.items() if k not in known and k != "name"})
