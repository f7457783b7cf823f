"""The recipes: the paper's values, YAML and command-line overrides, dry runs on CPU, batch layouts, launch configs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from file_modules import import_file

from masa_trl.dry_run import DryRunError, batch_layout, check_layout, parse_recipe_args


ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
GPU_RECIPES = [
    "masa_qwen3_8b",
    "masa_qwen3_14b",
    "masa_efficient_qwen3_8b",
    "masa_dapo_qwen3_8b",
    "grpo_qwen3_8b",
    "dapo_qwen3_8b",
]
MASA_RECIPES = ["masa_qwen3_8b", "masa_qwen3_14b", "masa_efficient_qwen3_8b", "masa_dapo_qwen3_8b"]
DYNAMIC_SAMPLING_RECIPES = ["dapo_qwen3_8b", "masa_dapo_qwen3_8b"]
_loaded = {}


def recipe(name: str):
    """Import recipes/<name>.py as a module (once), without running its `__main__` block."""
    if name not in _loaded:
        _loaded[name] = import_file(RECIPES / f"{name}.py", f"recipe_{name}")
    return _loaded[name]


def parse(name: str, *args: str):
    """Parse a recipe's arguments as its `__main__` block does; `--dry_run` makes the GPU configs buildable on CPU."""
    return parse_recipe_args(recipe(name).make_parser(), ["--dry_run", *args])


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    rows = [{"problem": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1), "solution": "..."} for i in range(12)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_flags(tiny_model_dir, problems_file):
    """Substitute the tiny local model and dataset; the tiny model's 2048-token context needs shorter lengths."""
    return [
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(problems_file),
        "--max_prompt_length", "1024",
        "--max_completion_length", "1024",
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------ the paper's values
PAPER_VALUES = dict(
    num_generations=16,
    learning_rate=1e-6,
    weight_decay=0.1,
    warmup_steps=20,
    max_grad_norm=1.0,
    epsilon=0.2,
    epsilon_high=0.28,
    beta=0.0,
    temperature=1.0,
    top_p=1.0,
    max_completion_length=8192,
    num_train_epochs=1,
    loss_type="dapo",
    use_vllm=True,
    vllm_mode="server",
)
MASA_VALUES = dict(num_meta_generations=16, difficulty_base=0.01, use_expert_bc=True, expert_buffer_size=128)


def test_masa_8b_resolves_to_the_papers_setup():
    data_args, args, model_args, dry = parse("masa_qwen3_8b")
    assert model_args.model_name_or_path == "Qwen/Qwen3-8B-Base"
    assert data_args.dataset_name == "agentica-org/DeepScaleR-Preview-Dataset"
    assert data_args.max_prompt_length == 2048
    for name, value in {**PAPER_VALUES, **MASA_VALUES, "expert_bc_steps": 5}.items():
        assert getattr(args, name) == value, name
    assert args.lr_scheduler_type == "constant_with_warmup"  # 20 warm-up steps, then constant
    assert args.efficient_start_step is None  # plain MASA
    layout = batch_layout(args, dry.dry_run_num_processes)
    assert layout.prompts_per_step == 128
    assert layout.meta_rows_per_process * layout.num_processes == 2048
    assert layout.optimizer_steps_per_generation == 1


def test_efficient_and_14b_recipes_differ_from_8b_only_where_they_should():
    _, masa, masa_model, _ = parse("masa_qwen3_8b")
    _, efficient, efficient_model, _ = parse("masa_efficient_qwen3_8b")
    _, big, big_model, big_dry = parse("masa_qwen3_14b")
    assert (efficient.efficient_start_step, efficient.gating_std_threshold, efficient.cutoff_factor) == (120, 0.1, 2.0)
    assert efficient.notion_hint
    assert big_model.model_name_or_path == "Qwen/Qwen3-14B-Base"
    assert batch_layout(big, big_dry.dry_run_num_processes).prompts_per_step == 128
    for name in [*PAPER_VALUES, *MASA_VALUES, "per_device_train_batch_size", "gradient_accumulation_steps"]:
        assert getattr(efficient, name) == getattr(masa, name), name
        if name != "gradient_accumulation_steps":  # 8 training processes instead of 4
            assert getattr(big, name) == getattr(masa, name), name
    assert efficient_model.model_name_or_path == masa_model.model_name_or_path


@pytest.mark.parametrize("baseline", ["grpo_qwen3_8b", "dapo_qwen3_8b"])
def test_baselines_share_every_setting_with_masa(baseline):
    masa_data, masa, masa_model, _ = parse("masa_qwen3_8b")
    data_args, args, model_args, *_ = parse(baseline)
    grpo_fields = set(type(args).__dataclass_fields__) - {"output_dir", "logging_dir", "run_name", "dynamic_sampling"}
    differing = {name for name in grpo_fields if getattr(args, name) != getattr(masa, name)}
    assert differing == set()
    assert (model_args.model_name_or_path, data_args) == (masa_model.model_name_or_path, masa_data)
    # The paper's DAPO: dynamic sampling, and neither overlong filtering nor the soft overlong punishment
    assert getattr(args, "dynamic_sampling", False) == (baseline == "dapo_qwen3_8b")
    assert args.mask_truncated_completions is False


def setup_changes(name: str, base: str) -> tuple[set[str], set[str]]:
    """The keys of a recipe's PAPER_SETUP that are new or differ from its base recipe's, and those it drops."""
    setup, base_setup = recipe(name).PAPER_SETUP, recipe(base).PAPER_SETUP
    changed = {key for key, value in setup.items() if key not in base_setup or base_setup[key] != value}
    return changed, set(base_setup) - set(setup)


def test_variants_change_only_what_they_name():
    """Each variant is its base recipe's setup plus its differences: the identical settings are the same by
    construction, and the differences are exactly these."""
    from trl import GRPOConfig

    from masa_trl import MASAConfig

    assert setup_changes("masa_qwen3_14b", "masa_qwen3_8b") == (
        {"model_name_or_path", "gradient_accumulation_steps", "dry_run_num_processes", "output_dir"},
        set(),
    )
    assert setup_changes("masa_efficient_qwen3_8b", "masa_qwen3_8b") == (
        {"efficient_start_step", "gating_std_threshold", "cutoff_factor", "notion_hint", "output_dir"},
        set(),
    )
    # GRPO drops MASA's own settings (the fields MASAConfig adds to GRPOConfig) and nothing else
    masa_only = set(MASAConfig.__dataclass_fields__) - set(GRPOConfig.__dataclass_fields__)
    assert setup_changes("grpo_qwen3_8b", "masa_qwen3_8b") == (
        {"output_dir"},
        set(recipe("masa_qwen3_8b").PAPER_SETUP) & masa_only,
    )
    assert setup_changes("dapo_qwen3_8b", "grpo_qwen3_8b") == (
        {"dynamic_sampling", "dynamic_sampling_max_rounds", "mask_truncated_completions", "output_dir"},
        set(),
    )
    assert setup_changes("masa_dapo_qwen3_8b", "masa_qwen3_8b") == (
        {"dynamic_sampling", "dynamic_sampling_max_rounds", "mask_truncated_completions", "output_dir"},
        set(),
    )
    outputs = [recipe(name).PAPER_SETUP["output_dir"] for name in GPU_RECIPES]
    assert len(set(outputs)) == len(outputs)


# ------------------------------------------------------------------------------------------ YAML and CLI
def test_yaml_overrides_defaults_and_the_command_line_overrides_yaml(tmp_path, monkeypatch):
    monkeypatch.delenv("MASA_TEST_ENV", raising=False)
    config = tmp_path / "overrides.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "learning_rate": 2e-6,
                "num_meta_generations": 8,
                "model_name_or_path": "my/model",
                "problem_column": "question",
                "env": {"MASA_TEST_ENV": "set"},
            }
        )
    )
    data_args, args, model_args, _ = parse("masa_qwen3_8b", "--config", str(config), "--learning_rate", "3e-6")
    assert args.learning_rate == 3e-6  # command line over YAML
    assert args.num_meta_generations == 8  # YAML over the recipe
    assert args.num_generations == 16  # the recipe's value where neither says otherwise
    assert model_args.model_name_or_path == "my/model"
    assert data_args.problem_column == "question"
    import os

    assert os.environ["MASA_TEST_ENV"] == "set"


def test_unknown_yaml_key_fails_loudly(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("num_meta_generation: 8\n")
    with pytest.raises(DryRunError, match="num_meta_generation"):
        parse("masa_qwen3_8b", "--config", str(config))


@pytest.mark.parametrize("config", sorted((RECIPES / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_yaml_configs_resolve(config, tiny_flags, capsys):
    report = recipe("masa_qwen3_8b").main(*parse("masa_qwen3_8b", "--config", str(config), *tiny_flags))
    assert "Dry run OK." in capsys.readouterr().out
    assert report.layout.optimizer_steps_per_generation == 1


# ------------------------------------------------------------------------------------------ --help and typos
def recipe_help(name: str, flag: str, capsys) -> str:
    """The text `python recipes/<name>.py <flag>` prints (it exits 0)."""
    with pytest.raises(SystemExit) as exit_info:
        parse_recipe_args(recipe(name).make_parser(), [flag])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_recipes_parse_with_the_recipe_parser(name):
    from masa_trl.recipe_parser import RecipeParser

    parser = recipe(name).make_parser()
    assert isinstance(parser, RecipeParser) and parser.allow_abbrev is False


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_short_help_lists_the_config_file_the_recipe_and_masa_settings(name, capsys):
    text = recipe_help(name, "--help", capsys)
    lines = text.splitlines()
    assert len(lines) < 200, len(lines)  # TRL's full list is about 1,500 lines: that is --help-all
    assert lines[0].startswith("usage: ") and "[--config YAML]" in lines[0]
    assert "--config YAML" in text and "--help-all" in text
    # The recipe's own settings, with the values the recipe sets, and its data and dry-run arguments
    setup = recipe(name).PAPER_SETUP
    assert f"--model_name_or_path {setup['model_name_or_path']}\n" in text
    assert "--learning_rate 1e-06  " in text and f"--output_dir {setup['output_dir']}" in text
    assert "--problem_column problem  " in text and "--dry_run_num_processes" in text
    assert "--adam_beta1" not in text  # a TrainingArguments setting the recipe leaves alone: --help-all
    if name in MASA_RECIPES:
        masa = text.index("MASA settings")
        assert text.index("recipe settings") < masa < text.index("--num_meta_generations 16  ")
        assert "--expert_bc_learning_rate" in text and "--efficient_start_step" in text
    else:
        assert "MASA settings" not in text and "--num_meta_generations" not in text
    if name == "dapo_qwen3_8b":
        assert "--soft_punish_cache" in text and "--soft_overlong_punishment" in text
    if name in DYNAMIC_SAMPLING_RECIPES:
        assert "--dynamic_sampling True" in text and "--dynamic_sampling_max_rounds 10" in text


def test_help_all_lists_every_setting_with_the_recipe_and_masa_first(capsys):
    text = recipe_help("masa_qwen3_8b", "--help-all", capsys)
    assert len(text.splitlines()) > 1000
    assert "--config YAML" in text
    order = ["recipe settings", "MASA settings", "--num_meta_generations", "other settings", "--adam_beta1"]
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "--use_peft" in text and "--lora_r" in text


def test_yaml_typo_suggests_the_nearest_settings(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("num_meta_generation: 8\nlearnig_rate: 2.0e-6\n")
    with pytest.raises(DryRunError) as error:
        parse("masa_qwen3_8b", "--config", str(config))
    message = str(error.value)
    assert str(config) in message
    assert "'num_meta_generation' (did you mean 'num_meta_generations'?)" in message
    assert "'learnig_rate' (did you mean 'learning_rate'?)" in message


def test_misspelled_flag_is_an_error_not_a_prefix_match(capsys):
    # argparse would accept --num_meta_generation as an abbreviation of --num_meta_generations
    with pytest.raises(DryRunError, match=r"--num_meta_generation \(did you mean --num_meta_generations\?\)"):
        parse("masa_qwen3_8b", "--num_meta_generation", "8")
    with pytest.raises(DryRunError, match=r"--dry_run_num_process \(did you mean --dry_run_num_processes\?\)"):
        parse("grpo_qwen3_8b", "--dry_run_num_process", "8")
    # Without --dry_run: an argparse error (status 2), not a traceback
    with pytest.raises(SystemExit) as exit_info:
        parse_recipe_args(recipe("masa_qwen3_8b").make_parser(), ["--num_meta_generation", "8"])
    assert exit_info.value.code == 2
    assert "did you mean --num_meta_generations?" in capsys.readouterr().err


def test_config_flag_with_an_equals_sign(tmp_path):
    config = tmp_path / "overrides.yaml"
    config.write_text("num_meta_generations: 8\n")
    _, args, _, _ = parse("masa_qwen3_8b", f"--config={config}")
    assert args.num_meta_generations == 8


# ------------------------------------------------------------------------------------------ dry runs
@pytest.mark.parametrize("name", GPU_RECIPES)
def test_every_gpu_recipe_dry_runs_on_cpu_with_the_tiny_model(name, tiny_flags, capsys):
    report = recipe(name).main(*parse(name, *tiny_flags))
    out = capsys.readouterr().out
    assert "Dry run OK." in out
    assert "no server is contacted" in out
    assert "prompts per step             128" in out
    assert report.layout.optimizer_steps_per_generation == 1
    assert report.warnings == []
    assert "Let's think step by step" in report.solution_prompt
    if name in MASA_RECIPES:
        assert "<meta>" in report.meta_prompt and "solution_length (integer from 128 to 1024)" in report.meta_prompt
        assert "rows per micro-batch         4 per process" in out  # 2 solution + 2 meta rows on average
    else:
        assert report.meta_prompt is None
        assert "rows per micro-batch         2 per process" in out
    if name in DYNAMIC_SAMPLING_RECIPES:  # the generation batch and the worst case
        assert "generation batch 128 prompts per round" in out
        assert "10 rounds = 1280 prompts generated at most" in out
    else:
        assert "dynamic sampling" not in out


@pytest.mark.parametrize("data_flags", [[], ["--dataset_name", "PROBLEMS"]], ids=["generated", "file"])
def test_tiny_recipe_dry_runs(data_flags, tiny_model_dir, problems_file, capsys):
    data_flags = [str(problems_file) if flag == "PROBLEMS" else flag for flag in data_flags]
    report = recipe("masa_tiny_cpu").main(*parse("masa_tiny_cpu", "--model_dir", str(tiny_model_dir), *data_flags))
    assert "Dry run OK." in capsys.readouterr().out
    assert report.layout.prompts_per_step == 2
    assert len(report.meta_prompt_lengths) == 8


def test_tiny_recipe_trains_one_step_on_a_local_file(tiny_model_dir, problems_file, tmp_path, capsys):
    """The `make demo` recipe's real path, with a dataset file substituted and tiny lengths (a few seconds)."""
    args = ["--model_dir", str(tiny_model_dir), "--dataset_name", str(problems_file), "--output_dir", str(tmp_path)]
    args += ["--max_steps", "1", "--max_completion_length", "12", "--meta_min_length", "4"]
    trainer = recipe("masa_tiny_cpu").main(*parse_recipe_args(recipe("masa_tiny_cpu").make_parser(), args))
    assert trainer.state.global_step == 1
    out = capsys.readouterr().out
    assert "meta/reward" in out
    # It leaves a model to evaluate, and says how.
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    assert f"python -m evaluation --model {tmp_path}" in out


def test_dry_run_errors_name_the_setting_to_change(tiny_model_dir, problems_file):
    flags = ["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(problems_file)]
    # The recipe's 2048 + 8192 tokens exceed the tiny model's context; the column does not exist.
    with pytest.raises(DryRunError) as error:
        recipe("masa_qwen3_8b").main(*parse("masa_qwen3_8b", *flags, "--problem_column", "question"))
    problems = error.value.problems
    assert len(problems) == 2
    assert "--max_completion_length" in problems[0]
    assert "--problem_column" in problems[1] and "['answer', 'problem', 'solution']" in problems[1]
    assert error.value.code.startswith("Dry run failed, 2 problem(s):")

    # A model that cannot be loaded (here: no such directory, and the Hub is offline in tests).
    with pytest.raises(DryRunError, match="--model_name_or_path"):
        recipe("grpo_qwen3_8b").main(*parse("grpo_qwen3_8b", "--model_name_or_path", "/nonexistent/model"))

    # An invalid config is reported, not raised as a traceback.
    with pytest.raises(DryRunError, match="--num_meta_generations"):
        parse("masa_qwen3_8b", "--num_meta_generations", "1")


def test_dry_run_warns_when_the_layout_changes_the_prompts_per_step(tiny_flags):
    report = recipe("masa_qwen3_8b").main(*parse("masa_qwen3_8b", *tiny_flags, "--dry_run_num_processes", "8"))
    assert report.layout.prompts_per_step == 256
    assert len(report.warnings) == 1 and "--gradient_accumulation_steps 128" in report.warnings[0]


@pytest.mark.parametrize("name", ["masa_qwen3_8b", "dapo_qwen3_8b", "masa_dapo_qwen3_8b"])  # they import others
def test_recipe_dry_run_as_a_script(name, tiny_flags):
    """A real subprocess: `python recipes/<name>.py --dry_run` with the tiny model exits 0 in seconds."""
    result = subprocess.run(
        [sys.executable, str(RECIPES / f"{name}.py"), "--dry_run", *tiny_flags],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Dry run OK." in result.stdout


# ------------------------------------------------------------------------------------------ batch arithmetic
def test_authors_two_optimizer_steps_per_masa_step():
    _, args, _, dry = parse(
        "masa_qwen3_8b", "--steps_per_generation", "256", "--gradient_accumulation_steps", "128"
    )  # the flags the recipe's docstring gives
    layout = batch_layout(args, dry.dry_run_num_processes)
    assert layout.prompts_per_step == 128
    assert layout.optimizer_steps_per_generation == 2


def test_layout_errors_when_rollouts_do_not_split_into_groups():
    _, args, _, _ = parse("grpo_qwen3_8b")
    layout = batch_layout(args, 4)
    layout.solution_rows_per_process = 3  # as if per_device_train_batch_size x steps_per_generation were 3
    errors, _ = check_layout(layout)
    assert len(errors) == 1 and "--per_device_train_batch_size" in errors[0]


# ------------------------------------------------------------------------------------------ launch
ACCELERATE_CONFIGS = {
    "ddp.yaml": ("MULTI_GPU", None),
    "zero2.yaml": ("DEEPSPEED", 2),
    "zero3.yaml": ("DEEPSPEED", 3),
    "fsdp2.yaml": ("FSDP", None),
    "multi_node.yaml": ("DEEPSPEED", 3),
}


@pytest.mark.parametrize("name", sorted(ACCELERATE_CONFIGS))
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = RECIPES / "accelerate_configs" / name
    raw = yaml.safe_load(path.read_text())
    config = load_config_from_file(str(path))
    distributed_type, zero_stage = ACCELERATE_CONFIGS[name]
    assert raw["distributed_type"] == distributed_type == config.distributed_type.value
    assert config.mixed_precision == "bf16"
    if zero_stage is not None:
        assert config.deepspeed_config["zero_stage"] == zero_stage
    if name == "fsdp2.yaml":
        assert config.fsdp_config["fsdp_version"] == 2
    assert (config.num_machines, config.num_processes) == ((2, 16) if name == "multi_node.yaml" else (1, 8))


@pytest.mark.parametrize("script", ["scripts/launch_vllm_server_mode.sh", "scripts/slurm/masa_multinode.slurm"])
def test_launch_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(ROOT / script)], check=False, capture_output=True).returncode == 0
