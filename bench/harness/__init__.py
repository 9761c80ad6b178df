"""The bench harness behind ``python bench/run.py``: device profiles x variants x benchmark adapters.

One job per module: profiles (device data files), variants (discovery, memory budget, building
exports), suites (benchmark names and data), cache (predictions), worker (one variant per process),
latency / roofline / accuracy (the numbers), report / plot (the outputs), runner (the order).
"""
