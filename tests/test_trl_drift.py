"""Drift guard: MASAGRPOTrainer overrides and calls private TRL methods, pinned to trl==1.16.0.

If one of these tests fails after a TRL upgrade, read the new method before changing the expected signature: the
override in masa_trl/masa_trainer.py may rely on behaviour that moved.
"""

import inspect

import pytest
import trl
from trl import GRPOTrainer

from masa_trl import MASAGRPOTrainer


# Private methods MASA overrides or calls, and the exact signatures it was written against.
PINNED_SIGNATURES = {
    "_generate_and_score_completions": (
        "(self, inputs: list[dict[str, torch.Tensor | typing.Any]]) -> dict[str, torch.Tensor | typing.Any]"
    ),
    "_calculate_rewards": "(self, inputs, prompts, completions, completion_ids_list)",
    "_generate_single_turn": "(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False)",
    "_generate": "(self, prompts: list)",
    "_tokenize_prompts": "(self, prompts: list)",
    "_compute_loss": "(self, model, inputs)",
    "_prepare_inputs": (
        "(self, generation_batch: dict[str, torch.Tensor | typing.Any]) -> dict[str, torch.Tensor | typing.Any]"
    ),
    "training_step": "(self, model, inputs, num_items_in_batch)",
}


def test_trl_version_is_pinned():
    assert trl.__version__ == "1.16.0", (
        f"masa-trl extends private methods of trl 1.16.0, but trl {trl.__version__} is installed. Reinstall with "
        "`pip install trl==1.16.0` or port masa_trl/masa_trainer.py and update tests/test_trl_drift.py."
    )


@pytest.mark.parametrize("name", sorted(PINNED_SIGNATURES))
def test_private_method_signature(name):
    assert hasattr(GRPOTrainer, name), f"GRPOTrainer.{name} no longer exists; MASAGRPOTrainer relies on it."
    actual = str(inspect.signature(getattr(GRPOTrainer, name)))
    assert actual == PINNED_SIGNATURES[name], (
        f"GRPOTrainer.{name} changed signature: expected {PINNED_SIGNATURES[name]}, got {actual}. "
        "Review the MASAGRPOTrainer code that overrides or calls it."
    )


@pytest.mark.parametrize("name", MASAGRPOTrainer._META_PHASE_ATTRIBUTES)
def test_swapped_attribute_is_read_by_trl(name):
    source = inspect.getsource(GRPOTrainer)
    assert f"self.{name}" in source, f"GRPOTrainer no longer uses self.{name}; the MASA meta phase swaps it."


def test_deepspeed_internals_used_by_the_behaviour_cloning_pass():
    # The BC pass drives the DeepSpeed engine itself and overrides its clipping for the pass (masa_trainer.py,
    # `_expert_bc_optimizer`); the two-process ZeRO-2/3 tests cover the behaviour, this names the attribute that moved.
    from deepspeed.runtime.engine import DeepSpeedEngine as engine
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    assert "def backward(self, loss, retain_graph=False, scale_wrt_gas=True)" in inspect.getsource(engine)
    assert "self._config.gradient_clipping" in inspect.getsource(engine.gradient_clipping)
    assert "self._is_gradient_accumulation_boundary" in inspect.getsource(engine.is_gradient_accumulation_boundary)
    for optimizer in (DeepSpeedZeroOptimizer, DeepSpeedZeroOptimizer_Stage3):
        assert "self.clip_grad = clip_grad" in inspect.getsource(optimizer.__init__), optimizer.__name__
