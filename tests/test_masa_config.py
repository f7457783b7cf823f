import dataclasses

import pytest
from trl import GRPOConfig, TrlParser

from masa_trl import MASAConfig


CPU = dict(use_cpu=True, bf16=False, report_to="none")


def test_is_a_grpo_config_with_masa_defaults(tmp_path):
    config = MASAConfig(output_dir=str(tmp_path), **CPU)
    assert isinstance(config, GRPOConfig)
    # M defaults to TRL's default G (8), so that a GRPO setup gains as many meta as solution rollouts; the paper uses
    # G = M = 16, which its recipes set (tests/test_recipes.py).
    assert config.num_meta_generations == config.num_generations == 8
    assert config.pass_rate_scale == 8
    assert config.difficulty_base == 0.01
    assert config.meta_loss_weight == 1.0
    assert config.meta_system_prompt == "You are a helpful assistant."


def test_every_new_field_has_help_and_docstring():
    parent = {f.name for f in dataclasses.fields(GRPOConfig)}
    for field in dataclasses.fields(MASAConfig):
        if field.name not in parent:
            assert field.metadata.get("help"), f"{field.name} has no help text"
            assert f"{field.name} (`" in MASAConfig.__doc__, f"{field.name} is not documented in the docstring"


def test_parsed_from_command_line(tmp_path):
    parser = TrlParser(MASAConfig)
    (config,) = parser.parse_args_and_config(
        [
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "--bf16",
            "false",
            "--num_meta_generations",
            "16",
            "--difficulty_base",
            "0.05",
            "--meta_reward_weights",
            "0.5",
            "0.25",
            "0.25",
            "--meta_system_prompt",
            "",
        ]
    )
    assert config.num_meta_generations == 16
    assert config.difficulty_base == 0.05
    assert config.meta_reward_weights == [0.5, 0.25, 0.25]
    assert config.meta_system_prompt == ""


def test_parsed_from_yaml_with_command_line_override(tmp_path):
    config_file = tmp_path / "masa.yaml"
    config_file.write_text(
        f"output_dir: {tmp_path}\nuse_cpu: true\nbf16: false\nnum_meta_generations: 4\npass_rate_scale: 10\n"
        "correctness_reward: math_accuracy_reward\n"
    )
    (config,) = TrlParser(MASAConfig).parse_args_and_config(
        ["--config", str(config_file), "--num_meta_generations", "6"]
    )
    assert config.num_meta_generations == 6
    assert config.pass_rate_scale == 10
    assert config.correctness_reward == "math_accuracy_reward"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(num_meta_generations=1), "num_meta_generations 2 or more"),
        (dict(difficulty_base=1.0), "difficulty_base must lie in"),
        (dict(pass_rate_scale=0), "pass_rate_scale"),
        (dict(meta_loss_weight=-1.0), "meta_loss_weight"),
        (dict(meta_min_length=4096, max_completion_length=256), "meta_min_length"),
        # 2 rows x 2 micro-batches: 4 solution + 3 meta rows = 7, which does not split into 2 micro-batches.
        (
            dict(
                per_device_train_batch_size=2, gradient_accumulation_steps=2, num_generations=4, num_meta_generations=3
            ),
            "steps_per_generation=2 micro-batches",
        ),
    ],
)
def test_bad_settings_fail_at_start_and_name_the_setting(tmp_path, overrides, message):
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, **CPU)
    values.update(overrides)
    with pytest.raises(ValueError, match=message):
        MASAConfig(**values)


@pytest.fixture
def four_processes(monkeypatch):
    # Settings that only break with several processes: pretend there are 4 without starting them.
    monkeypatch.setattr(MASAConfig, "world_size", property(lambda self: 4))


def test_meta_rows_must_split_evenly_over_processes(tmp_path, four_processes):
    # 4 processes x 1 row = 4 prompts... with G = 4: 1 prompt, M = 2 meta rows over 4 processes: not whole.
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=1, num_generations=4, **CPU)
    with pytest.raises(ValueError, match="multiple of num_generations"):
        MASAConfig(num_meta_generations=2, **values)
    MASAConfig(num_meta_generations=4, **values)


def test_eval_meta_rows_are_checked_only_when_evaluating(tmp_path, four_processes):
    values = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=1,
        num_generations=4,
        num_meta_generations=2,
        **CPU,
    )
    MASAConfig(**values)  # no evaluation: fine
    with pytest.raises(ValueError, match="per_device_eval_batch_size=1 times num_meta_generations"):
        MASAConfig(**values, eval_strategy="steps", eval_steps=1)


def test_masa_efficient_rejects_colocated_tensor_parallelism(tmp_path):
    # TRL gathers a tensor-parallel group's prompts before a colocated generate call: MASA-efficient's per-process
    # plans (skipped rows, per-row caps) would not line up, and a rank with nothing to generate would hang the group.
    # Rejected with the cutoff off too: gating alone leaves ranks with nothing to generate.
    values = dict(use_vllm=True, vllm_mode="colocate", vllm_tensor_parallel_size=2, efficient_start_step=0)
    for cutoff in (2.0, None):
        with pytest.raises(ValueError, match="vllm_tensor_parallel_size=1"):
            MASAConfig(output_dir=str(tmp_path), cutoff_factor=cutoff, **values, **CPU)
    MASAConfig(output_dir=str(tmp_path), **{**values, "efficient_start_step": None}, **CPU)  # plain MASA is fine
    MASAConfig(output_dir=str(tmp_path), **{**values, "vllm_mode": "server"}, **CPU)


def test_notion_hint_size_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="notion_hint_max_notions"):
        MASAConfig(output_dir=str(tmp_path), efficient_start_step=0, notion_hint_max_notions=0, **CPU)
    MASAConfig(output_dir=str(tmp_path), efficient_start_step=0, notion_hint=False, notion_hint_max_notions=0, **CPU)
