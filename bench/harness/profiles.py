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
    targets: dict[str, float] = field(default_factory=dict)  # latency targets for --recommend: ttft_s, decode_tok_s
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
    validate(data, path)
    known = {f for f in DeviceProfile.__dataclass_fields__ if f not in ("extra", "name")}
    return DeviceProfile(name=data.get("name", path.stem), **{k: v for k, v in data.items() if k in known},
                         extra={k: v for k, v in data.items() if k not in known and k != "name"})


TARGET_KEYS = {"ttft_s": "seconds to the first token, at most", "decode_tok_s": "decode tokens/s, at least"}


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def validate(data: dict[str, Any], path: Path) -> None:
    """Every field's type and range; the first bad one raises ProfileError naming the file, the field and what
    was expected (one line, so ``bench/run.py`` exits 2 with it). Unknown keys are refused unless they start
    with ``x-`` or ``_`` (notes), so a typo such as ``memory_budget_gb`` cannot silently drop a limit."""
    def bad(fld: str, expected: str) -> ProfileError:
        return ProfileError(f"{path}: field {fld!r} = {json.dumps(data.get(fld))[:80]}: expected {expected}")

    missing = [k for k in ("threads", "memory_budget_gib", "allowed_variants") if k not in data]
    if missing:
        raise ProfileError(f"{path}: missing keys {missing} (a profile needs threads, memory_budget_gib, allowed_variants)")
    fields = set(DeviceProfile.__dataclass_fields__) - {"extra"}
    unknown = sorted(k for k in data if k not in fields and not k.startswith(("x-", "_")))
    if unknown:
        raise ProfileError(f"{path}: unknown field(s) {unknown}; known: {sorted(fields)} (prefix notes with x- or _)")
    if not (isinstance(data["threads"], int) and not isinstance(data["threads"], bool) and data["threads"] > 0):
        raise bad("threads", "a positive integer")
    if not _positive(data["memory_budget_gib"]):
        raise bad("memory_budget_gib", "a positive number of GiB")
    av = data["allowed_variants"]
    if not (isinstance(av, list) and av and all(isinstance(x, str) and ":" in x for x in av)):
        raise bad("allowed_variants", "a non-empty list of \"format:PRECISION\" patterns, e.g. \"gguf:Q4_*\"")
    for fld in ("name", "description"):
        if fld in data and not isinstance(data[fld], str):
            raise bad(fld, "a string")
    if "reference" in data and not (isinstance(data["reference"], str) and ":" in data["reference"]):
        raise bad("reference", "\"format:PRECISION\", e.g. \"pytorch:FP32\"")
    aff = data.get("affinity")
    if not (aff is None or aff == "first-n" or (isinstance(aff, list) and all(isinstance(c, int) and c >= 0 for c in aff))):
        raise bad("affinity", "null, \"first-n\" or a list of CPU ids")
    bw = data.get("bandwidth", "measure")
    if not (bw == "measure" or _positive(bw)):
        raise bad("bandwidth", "\"measure\" or a positive number of GB/s")
    if data.get("nominal_bandwidth_gbs") is not None and not _positive(data["nominal_bandwidth_gbs"]):
        raise bad("nominal_bandwidth_gbs", "null or a positive number of GB/s")
    engine = data.get("engine", {})
    if not isinstance(engine, dict) or not all(isinstance(v, dict) for v in engine.values()):
        raise ProfileError(f"{path}: engine must be an object of objects, e.g. {{\"gguf\": {{\"n_ubatch\": 1024}}}}")
    targets = data.get("targets", {})
    if not isinstance(targets, dict):
        raise bad("targets", "an object such as {\"ttft_s\": 15, \"decode_tok_s\": 5}")
    for k, v in targets.items():
        if k not in TARGET_KEYS:
            raise ProfileError(f"{path}: field 'targets.{k}': unknown target; known: "
                               + ", ".join(f"{n} ({w})" for n, w in TARGET_KEYS.items()))
        if not _positive(v):
            raise ProfileError(f"{path}: field 'targets.{k}' = {json.dumps(v)[:40]}: expected a positive number "
                               f"({TARGET_KEYS[k]})")
