"""The README's "use it in your project" walk-through runs as written: train, save, evaluate, warm start."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest


README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "MASAGRPOTrainer" in block)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    assert namespace["trainer"].state.global_step == 2
    assert any("meta/reward" in entry for entry in namespace["trainer"].state.log_history)
    assert (tmp_path / "masa-out" / "config.json").exists()  # a saved, loadable model

    # The next command the README shows: evaluate the saved model.
    commands = re.findall(r"```bash\n(python -m evaluation .*?)\n```", README.read_text())
    (command,) = [c for c in commands if "--model masa-out" in c]
    argv = shlex.split(command)
    result = subprocess.run(
        [sys.executable, *argv[1:], "--output-dir", str(tmp_path / "eval")], cwd=tmp_path, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "eval").rglob("*.jsonl")), "the evaluation wrote no records"

    # And the inference call on the saved model, with the run's settings.
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    inference = next(block for block in blocks if '"masa-out"' in block and "predict_meta" in block)
    exec(compile(inference, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    assert len(namespace["estimate"].predictions) == 4


@pytest.mark.slow
def test_readme_warm_start_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "prepare_experiment" in block)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    history = namespace["trainer"].state.log_history
    assert namespace["trainer"].state.global_step == 20
    assert any(entry.get("meta/parse_failure_rate", 1.0) < 1.0 for entry in history)  # the warm model parses

    # The inference example (same cached warm start).
    example = next(block for block in blocks if "generate_with_meta(" in block)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    assert namespace["meta"][0].parse_rate > 0.5 and namespace["solutions"][0].budget is not None


def test_readme_building_blocks_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "parse_meta_prediction(" in block)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    prediction = namespace["prediction"]
    assert (prediction.notions, prediction.pass_rate, prediction.length) == (("addition",), 0.75, 40)
    assert namespace["reward"].total == 1.0
    assert namespace["scores"] == [1.0, 0.0]
    assert "addition" in namespace["hinted"][-1]["content"]
    assert "<meta>" in namespace["messages"][-1]["content"]
