"""Command line: argument checks, then inputs -> journal -> requests -> final files -> summary.

Exit codes: 0 done; 1 error (one line on stderr, nothing half-written); 2 bad arguments;
3 stopped at --max-cost (rerun with a larger budget to continue); 130 interrupted (rerun the same
command to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

from allava.cli import EXIT_DISK_FULL, disk_full_line
from allava.fileio import is_disk_full, write_json_atomic
from allava.openai_client import NO_KEY, RetryPolicy, api_key_from_env
from synth.client import ChatRequest, FatalError, Stats
from synth.images import data_url, fitted_size, vision_tokens
from synth.inputs import MODES, InputError, Item, Row, rows_from_dataset, rows_from_folder, rows_from_manifest, scan
from synth.journal import Journal, JournalLocked, JournalState
from synth.pricing import DEFAULT_PRICES, PriceError, load_price
from synth.prompts import DEFAULT_PROMPTS, Prompt, PromptError, load_prompt
from synth.redact import RedactingFilter, redact, register_secret
from synth.writer import DEFAULT_NAMES, WriteResult, write_outputs

JOURNAL_FILE = "journal.jsonl"
SUMMARY_FILE = "summary.json"
LOG_FILE = "synth.log"
EST_OUTPUT_TOKENS = {"laion": 700, "vflan": 500, "text": 600}
SYNTH_KEY_ENV = ("OPENAI_API_KEY",)

EPILOG = """\
modes:
  laion  one request per image -> detailed caption, 3 complex questions, one chosen, a reasoned
         answer -> one Caption record and one Instruct record (ALLaVA-4V "LAION" part)
  vflan  one request per (image, instruction) -> caption + detailed answer to that instruction
         (needs an 'instruction' column in --manifest / --dataset)
  text   one request per text instruction -> regenerated detailed answer (no image)

outputs (in --output-dir):
  ALLaVA-Caption-<NAME>.json, ALLaVA-Instruct-<NAME>.json or ALLaVA-Text-<NAME>.json  (train/ reads these)
  images/            the images the records point at (relative paths)
  rejects.jsonl      every input that did not make it, with the reason
  journal.jsonl      every response, fsync'd: rerun the same command after a crash to resume
  summary.json, synth.log

examples:
  OPENAI_API_KEY=... python synth/run.py laion --images photos/ --base-url https://api.openai.com/v1 \\
      --model gpt-4o --output-dir out/laion --concurrency 16 --max-cost 20
  python synth/run.py vflan --manifest vflan.jsonl --base-url http://localhost:8000/v1 --model Qwen2-VL-7B \\
      --output-dir out/vflan
  python synth/run.py laion --images world/images --teacher offline --output-dir out/world

The API key is read from OPENAI_API_KEY only, never from a flag, and is never logged or written.
Exit codes: 0 done, 1 error, 2 bad arguments, 3 stopped at --max-cost, 130 interrupted.
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage + error; we print one line that says what to fix."""

    def error(self, message: str) -> NoReturn:
        if "invalid choice" in message and "mode" in message:
            bad = message.split("invalid choice: ", 1)[1].split(" ", 1)[0]
            message = f"unknown mode {bad} (choose {', '.join(MODES)})"
        self.exit(2, f"synth: error: {message}; see --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python synth/run.py",
        description="Synthesise ALLaVA-style training data (caption-then-QA) with any OpenAI-compatible "
        "vision model, or the offline teacher of the built-in world.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("mode", choices=MODES, help="laion | vflan | text (see below)")
    src = p.add_argument_group("input (exactly one)")
    g = src.add_mutually_exclusive_group(required=True)
    g.add_argument("--images", type=Path, metavar="DIR", help="folder of images (recursive; img2dataset .txt/.json sidecars read)")
    g.add_argument("--manifest", type=Path, metavar="FILE",
                   help="JSONL/JSON/CSV/TSV/parquet with path or url (+ caption, instruction); LAION's URL/TEXT work")
    g.add_argument("--dataset", metavar="ID", help="Hugging Face dataset id or local dataset folder (needs `datasets`)")
    src.add_argument("--split", default="train", help="dataset split (default: train)")
    src.add_argument("--limit", type=int, help="use only the first N inputs")
    src.add_argument("--min-short-side", type=int, metavar="PX",
                     help="drop images whose short side is below PX (default 512; 0 with --teacher offline)")
    out = p.add_argument_group("output")
    out.add_argument("--output-dir", type=Path, required=True, metavar="DIR")
    out.add_argument("--name", help="file name part: ALLaVA-Caption-<NAME>.json (default LAION / VFLAN / Evol)")
    m = p.add_argument_group("model")
    m.add_argument("--teacher", choices=("http", "offline"), default="http",
                   help="http: an OpenAI-compatible server (default); offline: the built-in world's teacher, no network")
    m.add_argument("--base-url", help="e.g. https://api.openai.com/v1 or http://localhost:8000/v1 (vLLM)")
    m.add_argument("--model", help="model name on that server, e.g. gpt-4o")
    m.add_argument("--prompt", help="prompt version or file (default laion_v1 / vflan_v1 / text_v1 in synth/prompts/)")
    m.add_argument("--max-side", type=int, default=1024, metavar="PX", help="resize images to fit PX before sending (1024)")
    m.add_argument("--max-tokens", type=int, default=2048, help="completion token limit per request (2048)")
    m.add_argument("--temperature", type=float, default=0.2)
    r = p.add_argument_group("throughput and retries")
    r.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    r.add_argument("--timeout", type=float, default=120.0, help="seconds per request attempt (120)")
    r.add_argument("--max-attempts", type=int, default=7, help="attempts per request, first included (7)")
    r.add_argument("--backoff-base", type=float, default=1.0, help="backoff base seconds; doubles per retry, full jitter (1.0)")
    r.add_argument("--backoff-max", type=float, default=60.0, help="longest backoff, and the cap on Retry-After x2 (60)")
    c = p.add_argument_group("cost")
    c.add_argument("--prices", type=Path, default=DEFAULT_PRICES, help="price table JSON (synth/prices.json)")
    c.add_argument("--price-in", type=float, metavar="USD", help="override: USD per 1M input tokens")
    c.add_argument("--price-out", type=float, metavar="USD", help="override: USD per 1M output tokens")
    c.add_argument("--max-cost", type=float, metavar="USD",
                   help="stop sending before the output folder's total spend (all runs) would pass USD; exit 3")
    c.add_argument("--dry-run", action="store_true", help="print counts and a cost estimate; no calls, nothing written")
    b = p.add_argument_group("batch API (OpenAI)")
    b.add_argument("--batch", action="store_true",
                   help="submit through the Batch API (half price, up to 24 h); rerun the same command to poll and collect")
    b.add_argument("--batch-size", type=int, default=1000, help="requests per batch job (1000)")
    b.add_argument("--wait", action="store_true", help="with --batch: poll until every job is collected")
    b.add_argument("--poll-interval", type=float, default=60.0, help="seconds between polls with --wait (60)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class CliError(Exception):
    pass


def _rows(args: argparse.Namespace) -> list[Row]:
    if args.images is not None:
        if args.mode != "laion":
            raise CliError(f"mode {args.mode} needs instructions: use --manifest or --dataset, not --images")
        return list(rows_from_folder(args.images))
    if args.manifest is not None:
        return rows_from_manifest(args.manifest)
    return rows_from_dataset(args.dataset, args.split, args.limit)


def _setup_logging(out_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(out_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("synth")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    return handler


def _request_builder(mode: str, prompt: Prompt, args: argparse.Namespace, offline: bool):
    def build(item: Item) -> ChatRequest:
        url = None
        if mode != "text":
            # The offline teacher reads the scene, not pixels: skip encoding, keep a marker part.
            url = "data:image/jpeg;base64," if offline else data_url(item.image_path, args.max_side)
        return ChatRequest(item.key, mode, prompt.messages(item.instruction, url), item, args.max_tokens, args.temperature)

    return build


def _estimate(mode: str, items: list[Item], prompt: Prompt, max_side: int) -> tuple[int, int]:
    """Rough prompt and completion tokens for ``items``: 4 characters a token plus OpenAI's image tiles."""
    base = len(prompt.system) + len(prompt.user)
    pt = ct = 0
    for it in items:
        pt += (base + len(it.instruction or "")) // 4 + 10
        if mode != "text":
            pt += vision_tokens(*fitted_size(it.width, it.height, max_side))
        ct += EST_OUTPUT_TOKENS[mode]
    return pt, ct


def _print_counts(counts: dict[str, int], done: int, todo: int) -> None:
    print(
        f"inputs {counts['inputs']}: kept {counts['kept']}, too small {counts['too_small']}, "
        f"undecodable {counts['undecodable']}, duplicates {counts['duplicates']}, missing {counts['missing']}; "
        f"already done {done}, to request {todo}"
    )


def _summary(args, model: str, prompt: Prompt, counts, state: JournalState, wr: WriteResult, run: dict[str, Any],
             price_known: bool) -> dict[str, Any]:
    return {
        "mode": args.mode, "model": model, "base_url": args.base_url if args.teacher == "http" else None,
        "prompt_id": prompt.id, "inputs": counts, "accepted": wr.accepted, "rejected": wr.rejected,
        "pending": wr.pending, "reject_reasons": wr.reject_reasons, "files": wr.files,
        "prompt_tokens": state.prompt_tokens, "completion_tokens": state.completion_tokens,
        "cost_usd": round(state.cost, 6), "price_known": price_known, "this_run": run,
    }


def _cleanup(out_dir: Path, existed: bool, had: set[str]) -> None:
    """After a fatal error with nothing paid for: remove what this run created, leave the rest."""
    journal = out_dir / JOURNAL_FILE
    if journal.exists() and journal.stat().st_size > 0:
        return
    if not existed:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for p in out_dir.iterdir():
        if p.name not in had:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def synth_api_key() -> str | None:
    """The only place synth reads the key: ``OPENAI_API_KEY``, never a flag (flags end up in shell history).

    Registered with :mod:`synth.redact` so anything a server echoes back is hidden from our logs and files.
    """
    key = api_key_from_env(SYNTH_KEY_ENV)
    register_secret(key)
    return key


def run(args: argparse.Namespace) -> int:
    api_key = synth_api_key()
    offline = args.teacher == "offline"
    if not offline and (not args.base_url or not args.model):
        raise CliError("--base-url and --model are required (or use --teacher offline)")
    if args.concurrency < 1 or args.max_attempts < 1 or args.max_side < 32:
        raise CliError("--concurrency and --max-attempts must be >= 1, --max-side >= 32")
    min_side = args.min_short_side if args.min_short_side is not None else (0 if offline else 512)
    model = "offline-teacher" if offline else args.model
    try:
        prompt = load_prompt(args.prompt or DEFAULT_PROMPTS[args.mode])
        price = load_price(model, args.prices, args.price_in, args.price_out)
    except (PromptError, PriceError) as exc:
        raise CliError(str(exc)) from None
    rows = _rows(args)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise CliError(f"--output-dir {args.output_dir} is a file")
    limit = None if args.dataset else args.limit

    if args.dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            res = scan(args.mode, rows, Path(tmp), min_side, limit)
            state = JournalState()
            jpath = args.output_dir / JOURNAL_FILE
            if jpath.is_file():
                from synth.journal import read_journal

                state = read_journal(jpath)
            todo = [i for i in res.items if i.key not in state.responses]
            pt, ct = _estimate(args.mode, todo, prompt, args.max_side)
        _print_counts(res.counts, len(res.items) - len(todo), len(todo))
        est = price.cost(pt, ct, batch=args.batch)
        note = "" if price.known else f" (no price for {model!r} in {args.prices}: pass --price-in/--price-out)"
        print(f"estimate: ~{pt:,} prompt + ~{ct:,} completion tokens, ~${est:.2f} with {model}{note}; dry run, no calls made")
        return 0

    out_dir: Path = args.output_dir
    existed = out_dir.exists()
    had = {p.name for p in out_dir.iterdir()} if existed else set()
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(out_dir / JOURNAL_FILE)
    handler = None
    try:
        try:
            state = journal.open()
        except JournalLocked as exc:
            raise CliError(str(exc)) from None
        handler = _setup_logging(out_dir)
        logging.getLogger("synth").info("start %s model=%s prompt=%s resume=%d", args.mode, model, prompt.id, len(state.responses))
        res = scan(args.mode, rows, out_dir / "images", min_side, limit)
        todo = [i for i in res.items if i.key not in state.responses]
        if not args.quiet:
            _print_counts(res.counts, len(res.items) - len(todo), len(todo))
        build = _request_builder(args.mode, prompt, args, offline)
        stats = Stats()
        run_info: dict[str, Any] = {}
        stopped = None
        try:
            if args.batch:
                if offline:
                    raise CliError("--batch needs an HTTP server, not --teacher offline")
                run_info = asyncio.run(_batch(args, todo, build, model, prompt, journal, price, state, out_dir))
                state = journal_state_after(journal)
            elif todo:
                backend = _backend(args, model, api_key, stats, offline)
                pt, ct = _estimate(args.mode, todo[:1], prompt, args.max_side)
                from synth.runner import run_requests

                async def go():
                    try:
                        return await run_requests(
                            todo, build, backend, journal, price, prompt.id, args.concurrency, stats,
                            spent_before=state.cost, max_cost=args.max_cost, est_cost=price.cost(pt, ct),
                            progress=not args.quiet,
                        )
                    finally:
                        await backend.aclose()

                totals = asyncio.run(go())
                stopped = totals.stopped
                run_info = {"responses": totals.done, "failed": totals.failed, "prompt_tokens": totals.prompt_tokens,
                            "completion_tokens": totals.completion_tokens, "cost_usd": round(totals.cost, 6),
                            "elapsed_s": round(totals.elapsed, 2), "retries": totals.retries,
                            "requests_per_s": round((totals.done + totals.failed) / max(totals.elapsed, 1e-9), 3)}
                state = journal_state_after(journal)
        except FatalError as exc:
            journal.close()
            if handler:
                logging.getLogger("synth").error("fatal: %s", exc)
            _close_log(handler)
            handler = None
            _cleanup(out_dir, existed, had)
            raise CliError(str(exc)) from None
        wr = write_outputs(args.mode, args.name or DEFAULT_NAMES[args.mode], out_dir, res.items, res.rejects, state)
        summary = _summary(args, model, prompt, res.counts, state, wr, run_info, price.known)
        summary["stopped"] = stopped
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
        _print_summary(summary, out_dir)
        if stopped:
            print(f"stopped: the next request would pass --max-cost ${args.max_cost:g}; "
                  f"{wr.pending} inputs pending; rerun with a larger budget to continue", file=sys.stderr)
            return 3
        return 0
    finally:
        journal.close()
        _close_log(handler)


def journal_state_after(journal: Journal) -> JournalState:
    from synth.journal import read_journal

    return read_journal(journal.path)


def _close_log(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger("synth").removeHandler(handler)
        handler.close()


def _backend(args, model: str, api_key: str | None, stats: Stats, offline: bool):
    if offline:
        from synth.teacher import OfflineTeacher

        return OfflineTeacher()
    from synth.client import HTTPBackend

    policy = RetryPolicy(args.max_attempts, args.backoff_base, args.backoff_max, 2 * args.backoff_max)
    return HTTPBackend(args.base_url, model, api_key, args.timeout, policy, stats)


async def _batch(args, todo, build, model, prompt, journal, price, state, out_dir) -> dict[str, Any]:
    """Poll and collect submitted jobs; submit the rest when none is running; with --wait, loop until done."""
    import openai

    from synth import batch

    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=synth_api_key() or NO_KEY, max_retries=3,
                                timeout=args.timeout)
    jobs = batch.load_jobs(out_dir)
    done = set(state.responses)
    collected_now: set[str] = set()  # keys answered or failed by jobs collected in this run

    async def poll() -> None:
        for job in [j for j in jobs if not j["collected"]]:
            ok, failed = await batch.collect(client, job, journal, price, done)
            if job["collected"]:
                collected_now.update(job["keys"])
                done.update(job["keys"])
                print(f"batch {job['id']}: {job['status']}, {ok} responses, {failed} failed")
        batch.save_jobs(out_dir, jobs)

    try:
        await poll()
        if all(j["collected"] for j in jobs):
            fresh = [i for i in todo if i.key not in done and i.key not in collected_now]
            if fresh and not collected_now:  # failures of a job collected now wait for the next run
                if args.max_cost is not None:
                    pt, ct = _estimate(args.mode, fresh, prompt, args.max_side)
                    if state.cost + price.cost(pt, ct, batch=True) > args.max_cost:
                        raise CliError(f"estimated batch cost passes --max-cost ${args.max_cost:g}; raise it or use --limit")
                n_before = len(jobs)
                jobs[:] = await batch.submit(client, fresh, build, model, prompt.id, out_dir, args.batch_size, jobs)
                print(f"submitted {len(jobs) - n_before} batch job(s) for {len(fresh)} requests: "
                      + ", ".join(j["id"] for j in jobs[n_before:]))
        while args.wait and not all(j["collected"] for j in jobs):
            await asyncio.sleep(args.poll_interval)
            await poll()
        running = [j for j in jobs if not j["collected"]]
        if running:
            print("batch jobs still running: " + ", ".join(f"{j['id']} ({j['status']})" for j in running)
                  + "; rerun the same command to collect")
    except openai.APIStatusError as exc:
        if exc.status_code in (401, 403):
            raise FatalError(f"{args.base_url} refused the API key (HTTP {exc.status_code}); set OPENAI_API_KEY") from None
        raise FatalError(redact(f"batch API error: HTTP {exc.status_code}: {exc.message}")) from None
    except openai.APIError as exc:
        raise FatalError(redact(f"batch API error: {exc}")) from None
    finally:
        await client.close()
    return {"batch_jobs": len(jobs), "running_jobs": sum(not j["collected"] for j in jobs)}


def _print_summary(s: dict[str, Any], out_dir: Path) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["reject_reasons"].items())) or "none"
    run = s["this_run"]
    retries = ", ".join(f"{k} {v}" for k, v in sorted((run.get("retries") or {}).items())) or "none"
    print(f"synth {s['mode']} ({s['model']}, {s['prompt_id']}): {s['accepted']} accepted, {s['rejected']} rejected "
          f"({reasons}), {s['pending']} pending")
    print(f"tokens: {s['prompt_tokens']:,} prompt + {s['completion_tokens']:,} completion; cost ${s['cost_usd']:.4f}"
          + ("" if s["price_known"] else " (model not in price table)")
          + (f"; this run {run.get('responses', 0)} responses, {run.get('failed', 0)} failed, "
             f"{run.get('requests_per_s', 0)} req/s, retries: {retries}" if "responses" in run else ""))
    for name, n in s["files"].items():
        print(f"  {out_dir / name}: {n} records")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.monotonic()
    try:
        return run(args)
    except (CliError, InputError, FatalError) as exc:
        print(f"synth: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        # the journal keeps every whole line (Journal.append cuts a torn one back); outputs are atomic
        print(f"synth: {disk_full_line(exc)}; the journal is intact: rerun the same command to resume", file=sys.stderr)
        return EXIT_DISK_FULL
    except KeyboardInterrupt:
        print(f"synth: interrupted after {time.monotonic() - t0:.0f}s; responses so far are in "
              f"{args.output_dir / JOURNAL_FILE}; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
