"""Hub and tracking, offline: the MASA model card, the push requested by `--push_to_hub`, and wandb's meta metrics.

One step of `recipes/masa_qwen3_8b.py` (`main()`, in process, on CPU with the tiny model substituted by flags) with
`--push_to_hub --report_to wandb` is shared by the integration tests: the Hub client is a mock and wandb runs in
offline mode, so nothing leaves the machine. A step of the GRPO baseline checks its real code path too.
"""

import json
import math
from pathlib import Path
from unittest.mock import MagicMock, patch

import pytest
from file_modules import import_file

from masa_trl import MASAConfig
from masa_trl.dry_run import parse_recipe_args
from masa_trl.model_card import add_masa_section, final_meta_metrics, masa_card_section


ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "someone/masa-tiny"


def masa_config(tmp_path, **overrides) -> MASAConfig:
    values = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        num_generations=4,
        num_meta_generations=4,
        max_completion_length=64,
        meta_min_length=8,
        report_to="none",
    )
    values.update(overrides)
    return MASAConfig(**values)


LOG_HISTORY = [
    {"loss": 0.1, "meta/reward": 0.2, "meta/pass_rate_correlation": float("nan"), "step": 1},
    {"loss": 0.1, "meta/reward": 0.41234, "meta/pass_rate_correlation": 0.5, "meta/parse_failure_rate": 0.25,
     "meta/pass_rate_abs_error": 0.125, "meta/rewards/notion_alignment_reward/mean": 0.3, "reward": 0.5, "step": 2},
    {"train_runtime": 3.0, "step": 2},
]  # fmt: skip


class TestCardSection:
    def test_final_metrics_are_the_last_logged_ones(self):
        step, metrics = final_meta_metrics(LOG_HISTORY)
        assert step == 2
        assert metrics["meta/reward"] == 0.41234 and metrics["meta/pass_rate_correlation"] == 0.5
        assert list(metrics)[:2] == ["meta/reward", "meta/pass_rate_correlation"]  # headline metrics first
        assert final_meta_metrics([{"loss": 1.0}]) == (None, {})

    def test_section_names_masa_the_paper_the_config_and_the_metrics(self, tmp_path):
        text = masa_card_section(masa_config(tmp_path, use_expert_bc=True), LOG_HISTORY)
        assert "**MASA** (Meta-Awareness via Self-Alignment)" in text
        assert "https://huggingface.co/papers/2510.03259" in text and "eprint        = {2510.03259}" in text
        assert "| `num_meta_generations` | 4 |" in text
        assert "| `difficulty_base` | 0.01 |" in text
        assert "| `expert_buffer_size` | 128 |" in text  # expert BC is on: its settings are listed
        assert "gating_std_threshold" not in text  # MASA-efficient is off: its settings are not
        assert "Logged at training step 2." in text
        assert "| `meta/reward` | 0.4123 |" in text
        assert "| `meta/parse_failure_rate` | 0.25 |" in text
        assert "| `meta/rewards/notion_alignment_reward/mean` | 0.3 | mean notion alignment reward |" in text

    def test_undefined_metric_is_written_as_not_available(self, tmp_path):
        text = masa_card_section(masa_config(tmp_path), LOG_HISTORY[:1])
        assert math.isnan(LOG_HISTORY[0]["meta/pass_rate_correlation"])
        assert "| `meta/pass_rate_correlation` | n/a |" in text

    def test_section_goes_before_citations_and_is_replaced_not_repeated(self, tmp_path):
        readme = tmp_path / "README.md"
        readme.write_text("# Model Card\n\n## Training procedure\n\ntext\n\n## Citations\n\nCite TRL\n")
        args = masa_config(tmp_path)
        add_masa_section(readme, args, LOG_HISTORY[:1])
        add_masa_section(readme, args, LOG_HISTORY)
        text = readme.read_text()
        assert text.count("\n## MASA\n") == 1
        assert text.index("## Training procedure") < text.index("\n## MASA\n") < text.index("## Citations")
        assert "Logged at training step 2." in text and "step 1." not in text


ADAPTER = {"base_model_name_or_path": "Qwen/Qwen3-8B-Base", "peft_type": "LORA", "r": 64, "lora_alpha": 128,
           "target_modules": ["v_proj", "q_proj"]}  # fmt: skip


class TestAdapterCard:
    """A LoRA run's card names the base model and says that the repository holds an adapter."""

    def card(self, tmp_path, model=None, **args) -> str:
        readme = tmp_path / "README.md"
        readme.write_text("# Model Card\n\n## Citations\n\nCite TRL\n")
        add_masa_section(readme, masa_config(tmp_path, **args), LOG_HISTORY, model=model)
        return readme.read_text()

    def test_full_fine_tune_has_no_adapter_subsection(self, tmp_path):
        assert "Base model and adapter" not in masa_card_section(masa_config(tmp_path), LOG_HISTORY)
        assert "Base model and adapter" not in self.card(tmp_path)

    def test_adapter_saved_next_to_the_card_is_described(self, tmp_path):
        (tmp_path / "adapter_config.json").write_text(json.dumps(ADAPTER))
        text = self.card(tmp_path, hub_model_id="me/masa-8b-lora")
        assert "Base model: `Qwen/Qwen3-8B-Base`. This repository holds a **LoRA adapter** (PEFT)" in text
        assert "(rank r = 64, alpha = 128, target modules `q_proj`, `v_proj`)" in text
        assert "the cloning passes changed the adapter weights only" in text
        assert 'AutoPeftModelForCausalLM.from_pretrained("me/masa-8b-lora")' in text
        assert text.index("### Base model and adapter") < text.index("### MASA configuration")

    def test_full_weights_or_a_full_model_override_a_leftover_adapter_file(self, tmp_path):
        import torch

        (tmp_path / "adapter_config.json").write_text(json.dumps(ADAPTER))
        assert "Base model and adapter" not in self.card(tmp_path, model=torch.nn.Linear(2, 2))
        (tmp_path / "model.safetensors").write_bytes(b"")
        assert "Base model and adapter" not in self.card(tmp_path)

    def test_a_peft_model_is_described_from_its_config(self, tmp_path, tiny_model_dir):
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules=["k_proj"])
        )
        text = self.card(tmp_path, model=model)
        assert f"Base model: `{tiny_model_dir}`" in text and "(rank r = 2, alpha = 8, target modules `k_proj`)" in text


# ------------------------------------------------------------------------------------------ one tiny run
def load_recipe(name: str):
    return import_file(ROOT / "recipes" / f"{name}.py", f"recipe_{name}")


def tiny_substitutions(tiny_model_dir, problems, output_dir) -> list[str]:
    """Flags that run a GPU recipe's real code path for one step on CPU: tiny model, local data, no vLLM."""
    return [
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(problems),
        "--output_dir", str(output_dir),
        "--use_cpu", "--bf16", "false", "--dtype", "float32", "--use_vllm", "false",
        "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1",
        "--num_generations", "2",
        "--max_prompt_length", "1024",
        "--max_completion_length", "12",
        "--max_steps", "1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text(
        "".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(8))
    )
    return path


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, problems, tmp_path_factory):
    """`masa_qwen3_8b.py --push_to_hub --report_to wandb` for one step on CPU, with a mock Hub client and wandb
    offline: the recipe's real code path (data preparation, trainer, save, push, end). Returns the trainer, the
    mock Hub client, the output folder and the dicts the run logged to wandb."""
    out = tmp_path_factory.mktemp("tiny-run")
    recipe = load_recipe("masa_qwen3_8b")
    hub = MagicMock()
    hub.create_repo.return_value.repo_id = REPO_ID
    args = [
        *tiny_substitutions(tiny_model_dir, problems, out / "model"),
        "--num_meta_generations", "2",
        "--meta_min_length", "4",
        "--save_steps", "1",
        "--push_to_hub",
        "--hub_model_id", REPO_ID,
        "--report_to", "wandb",
        "--run_name", "masa-tiny-test",
    ]  # fmt: skip
    import wandb
    from wandb.sdk.wandb_run import Run

    with (
        pytest.MonkeyPatch.context() as env,
        patch("transformers.trainer.hf_api", return_value=hub),
        patch.object(Run, "log", autospec=True, side_effect=Run.log) as wandb_log,
    ):
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_DIR", str(out))
        env.setenv("WANDB_SILENT", "true")
        trainer = recipe.main(*parse_recipe_args(recipe.make_parser(), args))
        wandb.finish()
    return trainer, hub, out, [call.args[1] for call in wandb_log.call_args_list]


def test_push_is_requested_for_the_hub_model_id(tiny_run):
    _, hub, out, _ = tiny_run
    hub.create_repo.assert_called_once_with(REPO_ID, token=None, private=None, exist_ok=True)
    uploads = hub.upload_folder.call_args_list
    # The checkpoint push (hub_strategy="every_save") and the final push, both of the output folder to the repo.
    assert [call.kwargs["commit_message"] for call in uploads] == ["Training in progress, step 1", "End of training"]
    for call in uploads:
        assert call.kwargs["repo_id"] == REPO_ID
        assert call.kwargs["folder_path"] == str(out / "model")
    assert uploads[-1].kwargs["run_as_future"] is False  # the final push blocks until it is done


def test_pushed_card_names_masa_the_paper_the_config_and_final_meta_metrics(tiny_run):
    trainer, _, out, _ = tiny_run
    card = (out / "model" / "README.md").read_text()
    assert "tags:" in card and "- masa" in card
    assert "**MASA** (Meta-Awareness via Self-Alignment)" in card
    assert "https://huggingface.co/papers/2510.03259" in card
    assert "| `num_meta_generations` | 2 |" in card
    last = [entry for entry in trainer.state.log_history if "meta/reward" in entry][-1]
    assert f"| `meta/reward` | {last['meta/reward']:.4g} |" in card
    assert "`meta/parse_failure_rate`" in card
    assert card.count("\n## MASA\n") == 1  # written at the checkpoint and again at the push, kept once


META_KEYS = ["train/meta/reward", "train/meta/parse_failure_rate"]  # defined at every step


def test_meta_metrics_reach_wandb_offline(tiny_run):
    trainer, _, out, wandb_logs = tiny_run
    logged = {key for data in wandb_logs for key in data}
    assert set(META_KEYS) | {"train/reward"} <= logged
    # Every meta metric the trainer logged reaches wandb; one without a defined value this step (e.g. the pass-rate
    # error while no meta output of the random-init model parses) is left out of the logs, not sent as None.
    meta = {f"train/{key}" for entry in trainer.state.log_history for key in entry if key.startswith("meta/")}
    assert meta and meta <= logged
    assert all(value is not None for data in wandb_logs for key, value in data.items() if key in meta)
    # The run was recorded offline, for `wandb sync`; its file is written by wandb's service process in the
    # background, so its content is not inspected here (reading it raced with the flush under load).
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_grpo_baseline_trains_saves_and_writes_a_plain_trl_card(tiny_model_dir, problems, tmp_path):
    recipe = load_recipe("grpo_qwen3_8b")
    args = [*tiny_substitutions(tiny_model_dir, problems, tmp_path), "--report_to", "none", "--save_strategy", "no"]
    trainer = recipe.main(*parse_recipe_args(recipe.make_parser(), args))
    assert trainer.state.global_step == 1
    assert (tmp_path / "model.safetensors").exists()
    assert "masa" not in trainer._tag_names
