"""synth/: ALLaVA-style caption-then-QA data synthesis through any OpenAI-compatible model.

Run it as ``python synth/run.py MODE ...``; see ``python synth/run.py --help``. Modules have one
job each: inputs (find and filter what to synthesise), prompts (versioned prompt files), images
(data URLs), client (HTTP backend over the core's retrying OpenAI client), teacher (offline
backend), parsing (tagged responses), journal (durable resume), pricing, writer (final files),
batch (OpenAI Batch API), runner (async scheduling) and cli.
"""
