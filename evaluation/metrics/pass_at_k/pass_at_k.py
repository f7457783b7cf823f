"""Unbiased pass@k (Chen et al., 2021) as a Hugging Face `evaluate` metric.

Load it from the repository path (works offline, e.g. with HF_HUB_OFFLINE=1):

>>> import evaluate
>>> pass_at_k = evaluate.load("evaluation/metrics/pass_at_k")  # doctest: +SKIP
>>> pass_at_k.compute(predictions=[[1, 0, 0, 1], [0, 0, 0, 0]], k=[1, 2])  # doctest: +SKIP
{'pass@1': 0.25, 'pass@2': 0.41666666666666663, 'num_problems': 2}

This script is self-contained (evaluate copies it into its module cache); `evaluation.passk` is the same estimator.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """\
Unbiased pass@k: for a problem with n sampled answers of which c are correct, the probability that at least one of
k answers drawn without replacement is correct, 1 - C(n - c, k) / C(n, k), computed in the numerically stable product
form 1 - prod_{i = n - c + 1}^{n} (1 - k / i) and averaged over problems. pass@1 equals the mean accuracy over samples.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[int | bool | float]]`): per problem, the correctness (1/0) of each of its n samples.
        Problems may have different numbers of samples; use one type (all bools, or all numbers) throughout.
    k (`int` or `list[int]`, defaults to `[1]`): the k values; a k larger than a problem's n raises.
Returns:
    `dict`: `pass@k` for each k (mean over problems), and `num_problems`.
Examples:
    >>> pass_at_k = evaluate.load("evaluation/metrics/pass_at_k")
    >>> pass_at_k.compute(predictions=[[1, 1], [0, 1], [0, 0]], k=[1, 2])
    {'pass@1': 0.5, 'pass@2': 0.6666666666666666, 'num_problems': 3}
"""

_CITATION = """\
@article{chen2021codex,
  title={Evaluating Large Language Models Trained on Code},
  author={Chen, Mark and Tworek, Jerry and Jun, Heewoo and others},
  journal={arXiv preprint arXiv:2107.03374},
  year={2021}
}
"""


def _estimate(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PassAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64"))}),
            reference_urls=["https://arxiv.org/abs/2107.03374"],
        )

    def _compute(self, predictions, k=None):
        ks = [1] if k is None else ([int(k)] if np.isscalar(k) else [int(x) for x in k])
        counts = []
        for samples in predictions:
            n = len(samples)
            c = int(sum(1 for s in samples if float(s) > 0))
            counts.append((n, c))
        result = {}
        for kk in ks:
            for n, _ in counts:
                if not 1 <= kk <= n:
                    raise ValueError(f"pass@{kk} needs at least {kk} samples per problem; a problem has {n}")
            result[f"pass@{kk}"] = float(np.mean([_estimate(n, c, kk) for n, c in counts])) if counts else float("nan")
        result["num_problems"] = len(counts)
        return result
