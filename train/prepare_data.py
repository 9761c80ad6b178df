"""Get ALLaVA-3B's training data onto a networked machine, in the layout the configs expect.

    python train/prepare_data.py --list                          # what, from where, to where (no network)
    python train/prepare_data.py --download [--only NAME ...]     # fetch hub files and URLs, unzip archives
    python train/prepare_data.py --fixture DIR [--scale 0.001]    # small look-alike files for dry runs/tests

Everything lands under --data-root (default data/allava-3b, the configs' data_root). Annotation
JSONs come from the Hugging Face hub (huggingface_hub, resumable); image archives from the hub or
their hosts' URLs, extracted where the records' paths expect them. Three image sets cannot be
fetched by a script (licence forms, Google Drive): --list and --download print what to do by hand.
Nothing here runs at training time: train/run.py never downloads data. Afterwards,
``python train/run.py --config train/configs/allava-3b.yaml --dry-run`` counts what is there.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

from train.data_catalog import ANNOTATIONS, IMAGES, Fetch

DEFAULT_ROOT = "data/allava-3b"


class PrepareError(RuntimeError):
    """A download or extraction failed; the message names the item and its source."""


def all_fetches() -> list[Fetch]:
    return [a.fetch for a in ANNOTATIONS] + list(IMAGES)


def format_list(root: Path) -> str:
    """The download plan: one line per item (name, size, origin -> destination), then the manual steps."""
    lines = [f"data root: {root}", "", "annotation files (records as published):"]
    for a in ANNOTATIONS:
        count = f"{a.records:,}" + ("" if a.exact else " (approx.)")
        lines.append(f"  {a.fetch.name:<24} {a.format:<10} {count:>19} records  {a.fetch.origin}  ->  {root / a.path}")
    lines += ["", "images:"]
    for f in IMAGES:
        if f.manual:
            continue
        into = f"  (unzip into {root / f.unzip_to})" if f.unzip_to else ""
        lines.append(f"  {f.name:<24} {f.size or '-':>8}  {f.origin}  ->  {root / f.dest}{into}")
    lines += ["", "by hand (no scriptable source):"]
    lines += [f"  {f.name:<24} -> {root}/{f.dest}: {f.manual}" for f in IMAGES if f.manual]
    return "\n".join(lines)


def _download_hub(f: Fetch, root: Path) -> Path:
    from huggingface_hub import hf_hub_download

    assert f.hub_repo and f.hub_file and f.dest.endswith(f.hub_file)
    local_dir = root / f.dest[: -len(f.hub_file)]
    return Path(hf_hub_download(f.hub_repo, f.hub_file, repo_type="dataset", local_dir=local_dir))


def _download_url(f: Fetch, root: Path) -> Path:
    assert f.url
    dest = root / f.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(f.url) as resp, part.open("wb") as out:  # noqa: S310 (fixed https/http hosts)
        shutil.copyfileobj(resp, out, length=1 << 22)
    part.replace(dest)
    return dest


def fetch_one(f: Fetch, root: Path, keep_archives: bool) -> str:
    """Download (and extract) one item unless it is already there; returns what was done."""
    dest = root / f.dest
    done_marker = root / f".done-{f.name}"
    if done_marker.is_file() or (dest.is_file() and not f.unzip_to):
        return "present"
    try:
        path = _download_hub(f, root) if f.hub_repo else _download_url(f, root)
        if f.unzip_to:
            with zipfile.ZipFile(path) as z:
                z.extractall(root / f.unzip_to)
            if not keep_archives:
                path.unlink()
    except (OSError, zipfile.BadZipFile) as exc:
        raise PrepareError(f"{f.name}: {f.origin}: {exc}") from None
    done_marker.write_text(f.origin + "\n")
    return "downloaded"


def download(root: Path, only: list[str] | None, keep_archives: bool) -> int:
    items = [f for f in all_fetches() if not only or f.name in only]
    unknown = sorted(set(only or []) - {f.name for f in all_fetches()})
    if unknown:
        print(f"error: unknown item(s) {unknown}; --list names them", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    manual = []
    for f in items:
        if f.manual:
            manual.append(f)
            continue
        print(f"{f.name}: {fetch_one(f, root, keep_archives)}", flush=True)
    for f in manual:
        print(f"{f.name}: by hand -> {root}/{f.dest}: {f.manual}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python train/prepare_data.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="print what comes from where and lands where (no network)")
    mode.add_argument("--download", action="store_true", help="fetch every scriptable item not yet present")
    mode.add_argument("--fixture", metavar="DIR", help="write small look-alike files of every source into DIR")
    ap.add_argument("--data-root", default=DEFAULT_ROOT, help=f"where the data lands (default {DEFAULT_ROOT})")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="with --download: just these items (names from --list)")
    ap.add_argument("--keep-archives", action="store_true", help="with --download: keep .zip files after extracting")
    ap.add_argument("--scale", type=float, default=1e-3, help="with --fixture: records per published record (default 0.001)")
    ap.add_argument("--damage", nargs="*", default=[], choices=["missing_image", "malformed"],
                    help="with --fixture: add a record with a missing image / a malformed record")
    args = ap.parse_args(argv)
    root = Path(args.data_root)
    if args.list:
        print(format_list(root))
        return 0
    if args.fixture:
        from train.recipe_fixtures import write_recipe_fixture

        counts = write_recipe_fixture(args.fixture, args.scale, damage=args.damage)
        for path, n in counts.items():
            print(f"{n:>7,}  {Path(args.fixture) / path}")
        return 0
    try:
        return download(root, args.only, args.keep_archives)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
