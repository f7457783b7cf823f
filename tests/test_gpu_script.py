"""Smoke test of scripts/gpu_step_profile.py in its CPU mode (`--device cpu --tiny`), at its smallest; no timing asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from file_modules import import_file


SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_step_profile.py"


def load_script():
    return import_file(SCRIPT)


def test_tokenizer_is_padded_to_the_model_vocabulary():
    tokenizer, learned = load_script().build_tokenizer(1000, 2048)
    assert len(tokenizer) == 1000 and learned < 1000
    assert tokenizer.decode([999]).strip().isalpha()  # a filler word
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


@pytest.mark.slow
def test_cpu_tiny_mode_profiles_both_methods(tmp_path):
    output = tmp_path / "profile.json"
    sizes = ["--prompts", "2", "--num-generations", "2", "--num-meta-generations", "2", "--max-completion-length", "8"]
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", *sizes, "--steps", "1", "--warmup", "0"]
    result = subprocess.run(
        [*command, "--no-install", "--output", str(output)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    profile = json.loads(output.read_text())
    assert set(profile["methods"]) == {"grpo", "masa"}
    assert profile["environment"]["versions"]["trl"] == "1.16.0"
    assert profile["model"]["vocab_size"] == 512
    for method, run in profile["methods"].items():
        assert len(run["steps"]) == 1, method
        step = run["steps"][0]
        assert step["generation_calls"] >= 1 and step["generated_tokens"] > 0, (method, step)
        assert step["solution_tokens"] > 0, (method, step)
        assert run["summary"]["measured_steps"] == 1
        assert f"| {run['label']} |" in result.stdout
    assert profile["methods"]["grpo"]["steps"][0]["meta_tokens"] == 0
    masa = profile["methods"]["masa"]["steps"][0]
    assert masa["meta_tokens"] > 0 and "timing/generate_s" in masa["trainer"]
