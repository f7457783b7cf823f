"""Two CPU processes (gloo): a prompt whose rollouts straddle the ranks is scored from gathered statistics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).parent / "distributed" / "masa_two_ranks.py"


def launch_two_ranks(script: Path, *args: str, backend: str = "ddp", timeout: int = 600) -> None:
    # `--cpu` would start a single process; `--multi_gpu` without GPUs gives two gloo ranks on the CPU (DDP). The
    # sharded backends (fsdp2, zero2, zero3) run from their CPU configs in tests/distributed/.
    if backend == "ddp":
        launch = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    else:
        launch = ["--config_file", str(SCRIPT.parent / f"{backend}_cpu.yaml")]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launch,
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        str(script),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"2-process run failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


@pytest.mark.timeout(600)
def test_straddling_group_is_scored_from_gathered_statistics(tiny_model_dir, tmp_path):
    output = tmp_path / "result.json"
    launch_two_ranks(SCRIPT, str(tiny_model_dir), str(output))
    results = [json.loads(Path(f"{output}.rank{rank}").read_text()) for rank in (0, 1)]
    for result in results:
        assert result["world_size"] == 2
        assert result["global_step"] == 2
        assert result["params_changed"]
        assert result["pass_rates"] == [1.0, 0.5, 0.0]
        # Every meta rollout predicts 4/8 = 0.5: reward 0.01 ** 0.5 = 0.1 for prompts 0 and 2, 1.0 for prompt 1.
        assert result["difficulty_rewards"] == pytest.approx([0.1, 0.1, 1.0, 1.0, 0.1, 0.1])


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("backend", "accumulation"),
    [("ddp", 1), ("fsdp2", 1), ("zero2", 1), ("zero3", 1), ("zero2", 2)],
    ids=["ddp", "fsdp2", "zero2", "zero3", "zero2-accumulation2"],
)
def test_behaviour_cloning_with_unequal_expert_counts_per_rank(tiny_model_dir, tmp_path, backend, accumulation):
    # With gradient accumulation, DeepSpeed's engine counts micro-steps: the pass must still step once per BC step.
    output = tmp_path / "bc.json"
    script = SCRIPT.parent / "masa_bc_two_ranks.py"
    launch_two_ranks(script, str(tiny_model_dir), str(output), str(accumulation), backend=backend)
    results = [json.loads(Path(f"{output}.rank{rank}").read_text()) for rank in (0, 1)]
    assert sorted(r["local_experts_at_pass"] for r in results) == [[1], [2]]
    for result in results:
        assert result["buffer_after"] == 0
        assert result["num_examples"] == 3
        assert result["loss_after"] < result["loss_before"]
        assert result["finite"]
        # The RL step at the scheduled rate, then the BC steps at expert_bc_learning_rate, then the schedule again;
        # ZeRO clips with the config's norm in the RL step and with expert_bc_max_grad_norm in the BC steps.
        # (ZeRO-1/2 step the torch optimizer once per parameter group: repeats are collapsed.)
        steps = [tuple(step) for step in result["step_lrs"]]
        clips = (1.0, 0.5) if backend.startswith("zero") else (None, None)
        assert [s for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]] == [(1e-2, clips[0]), (3e-3, clips[1])]
        assert result["lr_after"] == result["scheduled_lr"]
        assert result["optimizer_steps"] == 1 + 2  # one RL step, expert_bc_steps BC steps (not one per micro-batch)
        before, after = result["checksums_around_pass"]
        assert before != after  # the pass changed the weights
    assert results[0]["loss_before"] == results[1]["loss_before"]  # one global token mean, seen by both ranks
    assert results[0]["final_checksum"] == results[1]["final_checksum"]  # the replicas did not drift apart


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["ddp", "fsdp2", "zero3"])
def test_efficient_with_one_rank_gating_everything(tiny_model_dir, tmp_path, backend):
    # Sharded backends gather parameters in every forward: a rank that skips generation would hang the other.
    output = tmp_path / "efficient.json"
    launch_two_ranks(SCRIPT.parent / "masa_efficient_two_ranks.py", str(tiny_model_dir), str(output), backend=backend)
    results = [json.loads(Path(f"{output}.rank{rank}").read_text()) for rank in (0, 1)]
    for result in results:
        assert result["global_step"] == 2
        assert result["skipped_frac"] == 0.5
        assert result["params_changed"]
    # Per step: 4 meta rows, then the solution rows: rank 0 generated only a throw-away row, rank 1 all 4.
    assert results[0]["calls"] == [[4, 1], [1, 1]] * 2
    assert results[1]["calls"] == [[4, 1], [4, 1]] * 2


@pytest.mark.timeout(300)
def test_a_hung_vllm_server_fails_every_rank_instead_of_hanging(tmp_path):
    # TRL's real server-mode path with a stand-in HTTP client: a successful call, then a server that never answers.
    output = tmp_path / "server.json"
    launch_two_ranks(SCRIPT.parent / "server_failure_two_ranks.py", str(output), timeout=240)
    results = [json.loads(Path(f"{output}.rank{rank}").read_text()) for rank in (0, 1)]
    # Each prompt sent once with its n; each rank gets back its own rows (the second sample of prompt 0 on rank 1).
    assert results[0]["completions"] == [[10, 10], [20, 20], [21, 21]]
    assert results[1]["completions"] == [[11, 11], [30, 30], [31, 31]]
    for result in results:
        assert "http://stand-in-server:8000" in result["error"] and "vllm_request_timeout=3 s" in result["error"]
        assert result["seconds"] < 60


@pytest.mark.timeout(600)
def test_dynamic_sampling_with_one_rank_all_constant(tiny_model_dir, tmp_path):
    # Rank 0's groups are all filtered; both ranks still train full batches of informative groups only.
    output = tmp_path / "dapo.json"
    launch_two_ranks(SCRIPT.parent / "dapo_two_ranks.py", str(tiny_model_dir), str(output))
    results = [json.loads(Path(f"{output}.rank{rank}").read_text()) for rank in (0, 1)]
    for result in results:
        assert result["global_step"] == 2
        assert [batch["rows"] for batch in result["batches"]] == [4, 4]  # per rank: 1 prompt x G = 4
        for batch in result["batches"]:
            assert any(a != 0 for a in batch["advantages"]), "a constant group reached the batch"
        # Each round has one constant prompt (rank 0's) and one informative (rank 1's): 2 rounds fill 2 prompts.
        assert result["rounds"] == [2.0, 2.0] and result["filtered"] == [0.5, 0.5]
    assert results[0]["rounds"] == results[1]["rounds"]
