"""The bench stage: device profiles, the latency/memory/accuracy harness, benchmark adapters, judge."""
