"""Benchmark: synth throughput at concurrency 1 vs 16 against a server that answers in 200 ms.

Runs the real CLI (``synth/run.py laion``: image encoding, HTTP client, journal fsyncs, writer)
against the scripted server on 127.0.0.1 and reads requests/s from each run's summary.json.
The target is >= 10x at concurrency 16: with a 200 ms server, anything less means the pipeline
(not the server) is the bottleneck.

    python bench/experiments/synth_concurrency.py [--delay 0.2] [--requests-seq 20] [--requests-par 160]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from PIL import Image

from allava.openai_stub import StubServer

RUN = pathlib.Path(__file__).resolve().parents[2] / "synth" / "run.py"


def make_images(folder: pathlib.Path, n: int, offset: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        img = Image.new("RGB", (640, 512), ((i + offset) % 256, (i * 7) % 256, 90))
        img.putpixel(((i + offset) % 640, 1), (255, 255, 255))
        img.save(folder / f"{i:05d}.png")


def throughput(base_url: str, work: pathlib.Path, n: int, concurrency: int) -> float:
    images, out = work / f"imgs_c{concurrency}", work / f"out_c{concurrency}"
    make_images(images, n, offset=concurrency * 1000)
    env = dict(os.environ, OPENAI_API_KEY="sk-bench")
    proc = subprocess.run(
        [sys.executable, str(RUN), "laion", "--images", str(images), "--base-url", base_url, "--model", "stub-model",
         "--output-dir", str(out), "--concurrency", str(concurrency), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stderr.strip()}")
    run = json.loads((out / "summary.json").read_text())["this_run"]
    return run["responses"] / run["elapsed_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay", type=float, default=0.2, help="server latency per request, seconds (0.2)")
    ap.add_argument("--requests-seq", type=int, default=20, help="requests at concurrency 1 (20)")
    ap.add_argument("--requests-par", type=int, default=160, help="requests at concurrency 16 (160)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, StubServer(delay=args.delay, lifetime=900) as server:
        work = pathlib.Path(tmp)
        seq = throughput(server.base_url, work, args.requests_seq, 1)
        par = throughput(server.base_url, work, args.requests_par, 16)
    ratio = par / seq
    print(f"server latency {args.delay * 1000:.0f} ms")
    print(f"concurrency  1: {seq:6.2f} req/s ({args.requests_seq} requests)")
    print(f"concurrency 16: {par:6.2f} req/s ({args.requests_par} requests)")
    print(f"ratio: {ratio:.1f}x (target >= 10x) {'OK' if ratio >= 10 else 'BELOW TARGET'}")
    return 0 if ratio >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
