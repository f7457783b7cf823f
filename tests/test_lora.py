"""LoRA (PEFT) runs of `MASAGRPOTrainer` on the tiny model, and what a LoRA run needs from the packaging, the dry run
and the model card.

One scripted LoRA run (transformers generation replaced by fixed completions, sampling temperature 0.7, expert BC
with a pass at step 2, a checkpoint every step, a mocked Hub push at the end) is shared by the trainer tests; a second
trainer resumes it from its first checkpoint. Both take about 15 s on 2 CPU cores.
"""

import configparser
import json
import sys
from pathlib import Path
from unittest.mock import MagicMock, patch

import pytest
import torch
from file_modules import import_file
from masa_scripts import ScriptedGeneration, cpu_config, masa_dataset, meta_text, script_generation
from peft import LoraConfig
from safetensors.torch import load_file
from transformers import AutoTokenizer, TrainerCallback

from masa_trl import MASAGRPOTrainer
from masa_trl.dry_run import DryRunError, parse_recipe_args


ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = {"Compute 2 + 3.": "5", "Compute 7 - 4.": "3"}
REPO_ID = "someone/masa-tiny-lora"
TEMPERATURE = 0.7


def script():
    """Both prompts have a correct rollout using the predicted notion: one expert per prompt and step."""
    return {
        ("solution", "2 + 3"): ["Use addition: \\boxed{5}", "\\boxed{6}"],
        ("solution", "7 - 4"): ["By subtraction \\boxed{3}", "\\boxed{1}"],
        ("meta", "2 + 3"): [meta_text(4, 30, ["addition"]), meta_text(8, 30, ["parity"])],
        ("meta", "7 - 4"): [meta_text(2, 30, ["subtraction"]), "garbage"],
    }


def lora_config() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def lora_trainer(tiny_model_dir, output_dir, **overrides) -> MASAGRPOTrainer:
    values = dict(
        temperature=TEMPERATURE,  # the BC pass computes its loss at temperature 1 (`ExpertBC._untempered_log_probs`)
        use_expert_bc=True,
        expert_buffer_size=4,  # 2 experts per step: a pass after step 2
        expert_bc_steps=2,
        expert_bc_batch_size=2,
        expert_bc_learning_rate=5e-2,
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
    )
    values.update(overrides)
    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir),
        args=cpu_config(output_dir, **values),
        train_dataset=masa_dataset(PROBLEMS),
        peft_config=lora_config(),
    )
    script_generation(trainer, ScriptedGeneration(AutoTokenizer.from_pretrained(tiny_model_dir), script()))
    return trainer


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


def untempered_nll(model, examples) -> float:
    """Token-mean -log pi(completion | prompt) over `examples`, from the model's plain logits (temperature 1)."""
    total, count = 0.0, 0
    for example in examples:
        ids = torch.tensor([example["prompt_ids"] + example["completion_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
        completion = logps[len(example["prompt_ids"]) - 1 :]
        total, count = total - completion.sum().item(), count + completion.numel()
    return total / count


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """Two LoRA steps with a BC pass after the second, a checkpoint per step, then a (mocked) push to the Hub."""
    out = tmp_path_factory.mktemp("lora-run")
    hub = MagicMock()
    hub.create_repo.return_value.repo_id = REPO_ID
    record = {}
    with patch("transformers.trainer.hf_api", return_value=hub):
        trainer = lora_trainer(tiny_model_dir, out, push_to_hub=True, hub_model_id=REPO_ID)
        record["start"] = snapshot(trainer.model)
        bc_pass = trainer.expert_bc.run_pass

        def recorded_pass():
            record["buffer"] = [dict(example) for example in trainer.expert_buffer.examples]
            record["expected_loss_before"] = untempered_nll(trainer.model, record["buffer"])
            record["before_pass"] = snapshot(trainer.model)
            bc_pass()
            record["after_pass"] = snapshot(trainer.model)

        trainer.expert_bc.run_pass = recorded_pass

        class CardAtSave(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                record.setdefault("cards", {})[state.global_step] = (out / "README.md").read_text()

        trainer.add_callback(CardAtSave())
        trainer.train()
        trainer.push_to_hub()
    return trainer, out, record


def test_lora_wraps_the_model_and_trains_only_the_adapter(lora_run):
    trainer, _, record = lora_run
    assert type(trainer.model).__name__ == "PeftModelForCausalLM"
    trainable = {name for name, param in trainer.model.named_parameters() if param.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in trainer.model.parameters() if p.requires_grad}
    # Over the whole run (2 RL steps and the BC pass), the base weights never moved.
    moved = changed(record["start"], snapshot(trainer.model))
    assert moved and moved <= trainable


def test_expert_bc_pass_updates_only_the_adapter_weights(lora_run):
    trainer, _, record = lora_run
    passes = [entry.get("bc/passes") for entry in trainer.state.log_history if "loss" in entry]
    assert passes == [None, 1]  # the buffer (2 experts per step, N_expert = 4) filled at step 2
    moved = changed(record["before_pass"], record["after_pass"])
    adapters = {name for name in record["before_pass"] if "lora_" in name}
    assert moved and moved <= adapters  # the pass moved adapter weights, and nothing else
    assert any("lora_B" in name for name in moved)
    bc_log = next(entry for entry in trainer.state.log_history if "bc/passes" in entry)
    assert bc_log["bc/num_examples"] == 4
    assert bc_log["bc/loss_after"] < bc_log["bc/loss_before"]


def test_bc_loss_is_untempered_under_lora(lora_run):
    # The run samples at temperature 0.7; the BC loss is -log pi_theta at temperature 1 (the PEFT base model's
    # fused LM head is swapped for the pass), and the RL head is back afterwards.
    trainer, _, record = lora_run
    bc_log = next(entry for entry in trainer.state.log_history if "bc/passes" in entry)
    assert bc_log["bc/loss_before"] == pytest.approx(record["expected_loss_before"], rel=1e-4)
    example = record["buffer"][0]
    ids = torch.tensor([example["prompt_ids"] + example["completion_ids"]])
    n = len(example["completion_ids"])
    logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, torch.ones_like(ids), n)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids).logits[0, -n - 1 : -1].float() / TEMPERATURE
    tempered = torch.log_softmax(logits, dim=-1).gather(1, ids[0, -n:, None])[:, 0]
    torch.testing.assert_close(logps[0], tempered, rtol=1e-4, atol=1e-5)


def test_checkpoints_hold_the_adapter_not_the_full_model(lora_run):
    _, out, _ = lora_run
    for folder in (out / "checkpoint-1", out / "checkpoint-2", out):
        assert (folder / "adapter_model.safetensors").exists(), folder
        assert not (folder / "model.safetensors").exists(), folder
        assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4
    assert (out / "checkpoint-1" / "masa_state_rank0.json").exists()


def test_resume_from_a_lora_checkpoint(lora_run, tiny_model_dir, tmp_path):
    _, out, _ = lora_run
    checkpoint = out / "checkpoint-1"
    saved_adapter = load_file(str(checkpoint / "adapter_model.safetensors"))
    saved_buffer = json.loads((checkpoint / "masa_state_rank0.json").read_text())["expert_buffer"]
    resumed = lora_trainer(tiny_model_dir, tmp_path, save_strategy="no")
    loaded = {}

    class AtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            loaded["adapter"] = {n: p.detach().clone() for n, p in resumed.model.named_parameters() if "lora_" in n}
            loaded["buffer"] = [dict(example) for example in resumed.expert_buffer.examples]

    resumed.add_callback(AtStart())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    # The adapter weights of checkpoint-1 (not a fresh adapter, whose lora_B is zero) and the expert buffer were
    # loaded before training went on from step 1.
    assert len(loaded["adapter"]) == len(saved_adapter) > 0
    for name, tensor in saved_adapter.items():
        match = [value for key, value in loaded["adapter"].items() if key.startswith(name.removesuffix(".weight"))]
        assert len(match) == 1, name
        torch.testing.assert_close(match[0], tensor)
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in saved_adapter.items())
    assert len(loaded["buffer"]) == 2 and loaded["buffer"] == saved_buffer["examples"]
    assert resumed.state.global_step == 2
    [step_2] = [entry for entry in resumed.state.log_history if "loss" in entry and entry["step"] == 2]
    assert step_2["bc/passes"] == 1 and step_2["bc/num_examples"] == 4  # the 2 restored experts + step 2's 2


def test_model_card_names_the_base_model_and_the_adapter(lora_run, tiny_model_dir):
    _, out, _ = lora_run
    card = (out / "README.md").read_text()
    assert "\n## MASA\n" in card and card.count("\n## MASA\n") == 1
    assert "LoRA adapter" in card
    assert f"Base model: `{tiny_model_dir}`" in card
    assert "rank r = 4" in card and "`q_proj`" in card and "`v_proj`" in card
    assert "adapter weights only" in card
    assert f'AutoPeftModelForCausalLM.from_pretrained("{REPO_ID}")' in card


def test_card_written_at_the_first_checkpoint_names_the_adapter(lora_run, tiny_model_dir):
    # Pushed at the first save (hub_strategy every_save), before any adapter file is in output_dir: the card reads
    # the adapter from the model itself.
    _, _, record = lora_run
    assert f"Base model: `{tiny_model_dir}`" in record["cards"][1]


# ------------------------------------------------------------------------------------------ packaging, dry run
def test_peft_is_an_extra_and_in_dev():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = {name: value.split() for name, value in config["options.extras_require"].items()}
    assert any(requirement.startswith("peft>=") for requirement in extras["peft"])
    assert any(requirement.startswith("peft>=") for requirement in extras["dev"])


@pytest.fixture
def tiny_dry_run_flags(tiny_model_dir, tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(4))
    )
    return [
        "--dry_run",
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(problems),
        "--max_prompt_length", "1024",
        "--max_completion_length", "1024",
    ]  # fmt: skip


def load_recipe(name: str):
    return import_file(ROOT / "recipes" / f"{name}.py", f"recipe_{name}")


LORA_FLAGS = ["--use_peft", "--lora_r", "8", "--lora_target_modules", "q_proj", "v_proj"]


@pytest.mark.parametrize("name", ["masa_qwen3_8b", "grpo_qwen3_8b"])
def test_dry_run_with_use_peft_fails_without_peft(name, tiny_dry_run_flags, monkeypatch, capsys):
    recipe = load_recipe(name)
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    with pytest.raises(DryRunError) as error:
        recipe.main(*parse_recipe_args(recipe.make_parser(), [*tiny_dry_run_flags, *LORA_FLAGS]))
    assert "Dry run OK." not in capsys.readouterr().out
    [problem] = error.value.problems
    assert "--use_peft" in problem and "pip install 'masa-trl[peft]'" in problem


def test_dry_run_reports_the_lora_settings(tiny_dry_run_flags, capsys):
    recipe = load_recipe("masa_qwen3_8b")
    recipe.main(*parse_recipe_args(recipe.make_parser(), [*tiny_dry_run_flags, *LORA_FLAGS]))
    out = capsys.readouterr().out
    assert "Dry run OK." in out
    [line] = [line for line in out.splitlines() if line.startswith("[ok] LoRA")]
    assert "r=8" in line and "alpha=32" in line and "q_proj, v_proj" in line


def test_real_run_with_use_peft_fails_early_without_peft(tiny_dry_run_flags, monkeypatch):
    recipe = load_recipe("masa_qwen3_8b")
    flags = [flag for flag in tiny_dry_run_flags if flag != "--dry_run"]
    args = parse_recipe_args(recipe.make_parser(), [*flags, "--use_cpu", "--bf16", "false", *LORA_FLAGS])
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"pip install 'masa-trl\[peft\]'"):
        recipe.main(*args)
