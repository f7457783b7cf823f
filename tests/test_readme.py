"""The README's "use it in your project" example runs as written."""

import re
from pathlib import Path


README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "MASAGRPOTrainer" in block)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    assert namespace["trainer"].state.global_step == 2
    assert any("meta/reward" in entry for entry in namespace["trainer"].state.log_history)


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
