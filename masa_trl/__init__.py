"""masa-trl: MASA (Meta-Awareness via Self-Alignment, arXiv 2510.03259) on Hugging Face TRL.

Heavy modules (the trainer, which imports TRL and transformers) load on first attribute access, so that
`import masa_trl.meta` or a reward worker process stays light.
"""

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0"

_LAZY_ATTRIBUTES = {
    "MASAConfig": "masa_trl.masa_config",
    "MASAGRPOTrainer": "masa_trl.masa_trainer",
    "DAPOConfig": "masa_trl.dynamic_sampling",
    "DAPOTrainer": "masa_trl.dapo",
    "MASADAPOTrainer": "masa_trl.dapo",
    "MetaPrediction": "masa_trl.meta",
    "parse_meta_prediction": "masa_trl.meta",
    "format_meta_prediction": "masa_trl.meta",
    "math_accuracy_reward": "masa_trl.math_reward",
    "build_tiny_model": "masa_trl.tiny_model",
    "MetaEstimate": "masa_trl.inference",
    "predict_meta": "masa_trl.inference",
    "generate_with_meta": "masa_trl.inference",
}

__all__ = list(_LAZY_ATTRIBUTES)

if TYPE_CHECKING:
    from masa_trl.dapo import DAPOTrainer, MASADAPOTrainer
    from masa_trl.dynamic_sampling import DAPOConfig
    from masa_trl.inference import MetaEstimate, generate_with_meta, predict_meta
    from masa_trl.masa_config import MASAConfig
    from masa_trl.masa_trainer import MASAGRPOTrainer
    from masa_trl.math_reward import math_accuracy_reward
    from masa_trl.meta import MetaPrediction, format_meta_prediction, parse_meta_prediction
    from masa_trl.tiny_model import build_tiny_model


def __getattr__(name: str):
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'masa_trl' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
