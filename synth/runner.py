"""Async scheduling: N workers, a budget, the journal and a live progress bar.

Concurrency is bounded by the number of worker tasks (no unbounded ``gather`` over a million
items). The budget reserves an estimated cost per request before sending it, so a run stops
*below* ``--max-cost`` rather than overshooting by a whole concurrency's worth of calls; requests
already in flight finish and are journaled (they are paid for).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm import tqdm

from synth.client import Backend, ChatRequest, FatalError, RequestFailed, Stats
from synth.inputs import Item
from synth.journal import FAILED, RESPONSE, Journal
from synth.pricing import Price
from synth.redact import redact

log = logging.getLogger("synth")


@dataclass
class RunTotals:
    done: int = 0  # responses journaled this run
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    stopped: str | None = None  # "max-cost" when the budget stopped dispatching
    elapsed: float = 0.0
    retries: dict[str, int] = field(default_factory=dict)


async def run_requests(
    items: list[Item],
    build_request: Callable[[Item], ChatRequest],
    backend: Backend,
    journal: Journal,
    price: Price,
    prompt_id: str,
    concurrency: int,
    stats: Stats,
    spent_before: float = 0.0,
    max_cost: float | None = None,
    est_cost: float = 0.0,
    progress: bool = True,
) -> RunTotals:
    totals = RunTotals()
    queue = list(reversed(items))  # pop() from the end keeps input order
    reserved = 0.0
    fatal: list[FatalError] = []
    t0 = time.monotonic()
    # A live bar on a terminal; in logs and pipes it would be hundreds of lines, so it is off there.
    show_bar = progress and sys.stderr.isatty()
    bar = tqdm(total=len(items), unit="req", desc="synth", disable=not show_bar, dynamic_ncols=True, smoothing=0.1)

    def show() -> None:
        bar.set_postfix(done=totals.done, failed=totals.failed, cost=f"${spent_before + totals.cost:.4f}", refresh=False)

    def per_request_estimate() -> float:
        return totals.cost / totals.done if totals.done else est_cost

    async def worker() -> None:
        nonlocal reserved
        while queue and not fatal and totals.stopped is None:
            est = per_request_estimate()
            if max_cost is not None and spent_before + totals.cost + reserved + est > max_cost:
                totals.stopped = "max-cost"
                return
            item = queue.pop()
            reserved += est
            try:
                # Image encoding is CPU work; keep it off the event loop so other requests keep flowing.
                request = await asyncio.to_thread(build_request, item)
                result = await backend.complete(request)
            except RequestFailed as exc:
                reason = redact(str(exc))
                journal.append({"key": item.key, "status": FAILED, "reason": reason, "t": round(time.time(), 3)})
                log.warning("failed %s (%s): %s", item.key, item.source, reason)
                totals.failed += 1
                bar.update(1)
                show()
                continue
            except FatalError as exc:
                fatal.append(exc)
                return
            finally:
                reserved -= est
            cost = price.cost(result.prompt_tokens, result.completion_tokens)
            journal.append(
                {
                    "key": item.key,
                    "status": RESPONSE,
                    "text": result.text,
                    "finish_reason": result.finish_reason,
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "cost": cost,
                    "model": result.model,
                    "prompt_id": prompt_id,
                    "attempts": result.attempts,
                    "t": round(time.time(), 3),
                }
            )
            totals.done += 1
            totals.prompt_tokens += result.prompt_tokens
            totals.completion_tokens += result.completion_tokens
            totals.cost += cost
            bar.update(1)
            show()

    try:
        tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, len(items))))]
        try:
            while tasks:
                finished, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in finished:
                    t.result()
                tasks = list(pending)
                if fatal:  # other workers' requests would fail the same way: stop them now
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise fatal[0]
        finally:
            for t in tasks:
                t.cancel()
    finally:
        bar.close()
        totals.elapsed = time.monotonic() - t0
        totals.retries = dict(stats.retries)
    return totals
