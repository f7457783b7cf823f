"""Evaluation of MASA models: pass@k on the paper's math benchmarks (and GPQA-Diamond), meta-awareness metrics.

Command line: `python -m evaluation --model PATH --benchmarks aime24,aime25,amc23,math500,minerva,olympiadbench`
(also installed as `masa-eval`); see `python -m evaluation --help`.

Modules: [`benchmarks`] (registry and loading), [`generate`] (vLLM / transformers backends), [`scoring`] and
[`compat_grader`] (math-verify and paper-compatible scorers), [`passk`] (unbiased pass@k), [`runner`] (the resumable
run), [`meta_eval`] (meta-awareness metrics and plots), [`report`] (Table 1-style Markdown).

Importing this package is light: torch, transformers and vLLM load only when a run needs them.
"""

import importlib


_LAZY = {
    "EvalConfig": "evaluation.runner",
    "Evaluator": "evaluation.runner",
    "run_evaluation": "evaluation.runner",
    "BENCHMARKS": "evaluation.benchmarks",
    "load_benchmark": "evaluation.benchmarks",
    "pass_at_k": "evaluation.passk",
    "markdown_table": "evaluation.report",
    "make_scorer": "evaluation.scoring",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
