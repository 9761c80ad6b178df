"""Know whether the installed llama-cpp-python carries our patch set (patches/llama-cpp-python).

Why a marker with a hash: the fix lives in compiled C++ (libmtmd), so it cannot be seen from Python.
`scripts/build_llama_cpp.sh` writes `ALLAVA_PATCHES.json` next to the installed package with the
sha256 of the libmtmd it built and the CMake flags it used; a later stock reinstall replaces the
library, the hash no longer matches and the build counts as stock again; a build made with other
flags (e.g. an old GGML_NATIVE=ON build, see scripts/build_llama_cpp.sh) is rebuilt.

Usage: python -m runtimes.llamacpp_patch {status,check,write} [--site DIR] [--patches a,b]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from allava.fileio import file_sha256

MARKER = "ALLAVA_PATCHES.json"
PATCHES = ["0001-llava-cls-before-patches.patch"]


def package_dir(site: str | None = None) -> Path | None:
    """Directory of the llama_cpp package (in `site` if given), without importing it."""
    if site:
        p = Path(site) / "llama_cpp"
        return p if p.is_dir() else None
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def mtmd_library(pkg: Path) -> Path | None:
    libs = sorted((pkg / "lib").glob("libmtmd*")) if (pkg / "lib").is_dir() else []
    return libs[0] if libs else None


def status(site: str | None = None) -> dict:
    """{'installed': bool, 'patched': bool, 'patches': [...], 'package': str|None, 'version': str|None}."""
    pkg = package_dir(site)
    out: dict = {"installed": pkg is not None, "patched": False, "patches": [], "package": str(pkg) if pkg else None,
                 "version": None}
    if pkg is None:
        return out
    init = pkg / "__init__.py"
    if init.exists():
        for line in init.read_text().splitlines():
            if line.startswith("__version__"):
                out["version"] = line.split("=", 1)[1].strip().strip("\"'")
    marker, lib = pkg / MARKER, mtmd_library(pkg)
    if marker.exists() and lib is not None:
        try:
            data = json.loads(marker.read_text())
        except json.JSONDecodeError:
            return out
        if data.get("libmtmd_sha256") == file_sha256(lib):
            out["patched"] = True
            out["patches"] = list(data.get("patches", []))
            out["build_flags"] = data.get("build_flags")
    return out


def write_marker(site: str | None, patches: list[str], build_flags: str | None = None) -> Path:
    pkg = package_dir(site)
    if pkg is None:
        raise SystemExit("llama_cpp is not installed; nothing to mark")
    lib = mtmd_library(pkg)
    if lib is None:
        raise SystemExit(f"no libmtmd in {pkg}/lib; was llama-cpp-python built with LLAVA_BUILD=ON?")
    path = pkg / MARKER
    data = {"patches": patches, "libmtmd": lib.name, "libmtmd_sha256": file_sha256(lib), "build_flags": build_flags}
    path.write_text(json.dumps(data, indent=2))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["status", "check", "write"],
                    help="status: print JSON; check: exit 0 only if every patch is in the installed build; "
                         "write: record the installed libmtmd as patched")
    ap.add_argument("--site", default=None, help="a `pip install --target` directory instead of the current env")
    ap.add_argument("--patches", default=",".join(PATCHES), help="comma-separated patch names")
    ap.add_argument("--build", default=None, help="CMake flags of the build (write: recorded; check: must match)")
    a = ap.parse_args(argv)
    wanted = [p for p in a.patches.split(",") if p]
    if a.command == "write":
        print(write_marker(a.site, wanted, a.build))
        return 0
    st = status(a.site)
    if a.command == "status":
        print(json.dumps(st, indent=2))
        return 0
    same_build = a.build is None or st.get("build_flags") == a.build
    return 0 if st["patched"] and set(wanted) <= set(st["patches"]) and same_build else 1


if __name__ == "__main__":
    sys.exit(main())
