"""Token usage to money, from an editable price table (``synth/prices.json``).

Prices change and differ per provider, so they live in a data file the user edits, not in code;
a self-hosted model (vLLM, llama.cpp) simply has no entry and costs 0. Costs are computed from
integer token totals, so the summary's cost equals what the usage implies, to the cent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PRICES = Path(__file__).resolve().parent / "prices.json"


class PriceError(Exception):
    pass


@dataclass(frozen=True)
class Price:
    input_per_m: float
    output_per_m: float
    known: bool = True
    batch_discount: float = 0.5

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        c = (prompt_tokens * self.input_per_m + completion_tokens * self.output_per_m) / 1e6
        return c * self.batch_discount if batch else c


def load_price(model: str, table: Path | None = None, price_in: float | None = None, price_out: float | None = None) -> Price:
    """Price of ``model``: CLI overrides, else the table entry (exact, then longest prefix), else 0."""
    path = table or DEFAULT_PRICES
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PriceError(f"cannot read price table {path}: {exc}") from None
    discount = float(data.get("batch_discount", 0.5))
    models = data.get("models", {})
    entry = models.get(model)
    if entry is None:
        prefixes = [m for m in models if model.startswith(m)]
        entry = models[max(prefixes, key=len)] if prefixes else None
    known = entry is not None or (price_in is not None and price_out is not None)
    pin = price_in if price_in is not None else float((entry or {}).get("input", 0.0))
    pout = price_out if price_out is not None else float((entry or {}).get("output", 0.0))
    return Price(pin, pout, known, discount)
