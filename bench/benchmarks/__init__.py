"""The report's 12 benchmarks as adapters: ``get_adapter(name).load(root)`` -> items,
``.prompt(item)`` -> text, ``.score(items, predictions, judge)`` -> :class:`ScoreResult`,
``.submission_files(items, predictions, folder, model_id)`` -> the official tool's input files
(``submission.write_submissions`` does it for a whole run; rules and formats: ``bench/README.md``)."""

from bench.benchmarks import (  # noqa: F401  (imports register the adapters)
    emt,
    gqa,
    llava_bench,
    mllm_bench,
    mmbench,
    mme,
    mmmu,
    mmvet,
    seed,
    textvqa,
    touchstone,
    vicuna80,
)
from bench.benchmarks.base import (
    STATUS_NO_JUDGE,
    STATUS_OK,
    Adapter,
    DataFormatError,
    Item,
    ScoreResult,
    stratified_subsample,
)
from bench.benchmarks.registry import UnknownBenchmarkError, get_adapter, known_benchmarks, register

REPORT_BENCHMARKS = ["vicuna80", "mmbench", "seed", "mmvet", "mmmu", "mme", "textvqa", "gqa", "emt", "mllm_bench",
                     "touchstone", "llava_bench"]

__all__ = ["Adapter", "DataFormatError", "Item", "REPORT_BENCHMARKS", "STATUS_NO_JUDGE", "STATUS_OK", "ScoreResult",
           "UnknownBenchmarkError", "get_adapter", "known_benchmarks", "register", "stratified_subsample"]
