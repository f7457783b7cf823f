"""`masa-trl train --recipe NAME [settings]`: the console command that runs a recipe of recipes/ (also as
`python -m masa_trl.cli` and under `accelerate launch -m masa_trl.cli`)."""

import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from masa_trl import cli


ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(path.stem for path in (ROOT / "recipes").glob("*.py"))


@pytest.fixture(scope="module")
def tiny_flags(tiny_model_dir, tmp_path_factory):
    problems = tmp_path_factory.mktemp("data") / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(4))
    )
    return [
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(problems),
        "--max_prompt_length", "1024",
        "--max_completion_length", "1024",
    ]  # fmt: skip


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=180, cwd=ROOT)


def test_setup_cfg_declares_the_console_script():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = dict(line.split(" = ") for line in config["options.entry_points"]["console_scripts"].split("\n") if line)
    assert scripts["masa-trl"] == "masa_trl.cli:main"


def test_the_known_recipes_are_those_of_recipes_folder():
    assert sorted(cli.known_recipes()) == RECIPES
    assert cli.find_recipe("masa_qwen3_8b") == ROOT / "recipes" / "masa_qwen3_8b.py"


def test_console_script_dry_runs_a_recipe_from_a_yaml(tiny_flags, tmp_path):
    """`masa-trl train --recipe masa_qwen3_14b --config my.yaml --dry_run ...`, the installed command, end to end."""
    command = shutil.which("masa-trl", path=str(Path(sys.executable).parent))
    assert command is not None, "masa-trl is not installed: pip install -e '.[dev]'"
    config = tmp_path / "my.yaml"
    config.write_text("num_meta_generations: 8\nlearning_rate: 2.0e-6\n")
    result = run([command, "train", "--recipe", "masa_qwen3_14b", "--config", str(config), "--dry_run", *tiny_flags])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Dry run OK." in result.stdout
    assert "meta rollouts per step       1024 (M = 8 per prompt)" in result.stdout  # the YAML's M, 8 processes


@pytest.mark.parametrize("name", ["grpo_qwen3_8b", "masa_tiny_cpu"])
def test_in_process_dry_run(name, tiny_flags, tiny_model_dir, capsys):
    flags = ["--model_dir", str(tiny_model_dir)] if name == "masa_tiny_cpu" else tiny_flags
    argv = list(sys.argv)
    cli.main(["train", "--recipe", name, "--dry_run", *flags])
    assert sys.argv == argv  # restored
    assert "Dry run OK." in capsys.readouterr().out


def test_a_recipe_file_path_is_accepted(tiny_flags, capsys):
    cli.main(["train", f"--recipe={ROOT / 'recipes' / 'dapo_qwen3_8b.py'}", "--dry_run", *tiny_flags])
    assert "Dry run OK." in capsys.readouterr().out


def test_unknown_recipe_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--recipe", "masa_qwen3_9b", "--dry_run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'masa_qwen3_9b'" in err and "did you mean masa_qwen3_8b?" in err
    for name in RECIPES:
        assert name in err


def test_usage_errors_and_help(capsys):
    for argv in (["train"], ["fit", "--recipe", "masa_qwen3_8b"], []):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2, argv
    assert "--recipe" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "accelerate launch" in out and all(name in out for name in RECIPES)
    # With a recipe, --help is the recipe's own (short) help
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--recipe", "masa_qwen3_8b", "--help"])
    assert exit_info.value.code == 0
    assert "MASA settings" in capsys.readouterr().out


def test_under_accelerate_launch(tiny_flags):
    """`accelerate launch -m masa_trl.cli train --recipe ...`, the multi-GPU form, here on one CPU process."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    command = [accelerate, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "-m", "masa_trl.cli", "train", "--recipe", "masa_qwen3_8b", "--dry_run"]
    result = run([*command, *tiny_flags])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Dry run OK." in result.stdout


def test_recipe_folders_in_order(tmp_path, monkeypatch):
    """$MASA_TRL_RECIPES, then the checkout's recipes/, then <prefix>/share/masa-trl/recipes (a regular install)."""
    installed = tmp_path / "prefix" / "share" / "masa-trl" / "recipes"
    installed.mkdir(parents=True)
    (installed / "masa_qwen3_8b.py").write_text('"""An installed copy."""\n')
    (installed / "installed_only.py").write_text('"""Installed only: a recipe."""\n')
    own = tmp_path / "mine"
    own.mkdir()
    (own / "grpo_qwen3_8b.py").write_text('"""My GRPO."""\n')
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    monkeypatch.setenv("MASA_TRL_RECIPES", str(own))
    assert cli.recipe_dirs() == [own, ROOT / "recipes", installed]
    recipes = cli.known_recipes()
    assert recipes["grpo_qwen3_8b"] == own / "grpo_qwen3_8b.py"
    assert recipes["masa_qwen3_8b"] == ROOT / "recipes" / "masa_qwen3_8b.py"  # the checkout shadows the copy
    assert recipes["installed_only"] == installed / "installed_only.py"
    assert "  installed_only           Installed only\n" in cli.recipe_listing(recipes)
