"""MASA with vLLM generation, run by `make test-vllm` in .venv-vllm (vLLM's CPU build; see scripts/).

Colocate mode trains end to end. Server mode drives the real HTTP generation path against `vllm serve` on 127.0.0.1;
only the weight synchronisation, which needs NCCL and therefore CUDA, is stood in.
"""

import gc
import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
from datasets import Dataset
from masa_scripts import cpu_config, masa_dataset

from masa_trl import MASAGRPOTrainer, rollout_generation
from masa_trl.generation_metrics import sampling_metrics


pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

PROBLEMS = {"What is 2 + 3?": "5", "What is 4 + 4?": "8"}


@pytest.fixture(autouse=True)
def isolated_process_state():
    """vLLM colocate sets RANK/WORLD_SIZE/MASTER_* in os.environ for its in-process engine; without a reset they leak
    into the next test, whose Accelerator then believes it is distributed."""
    from accelerate.state import AcceleratorState

    environ = dict(os.environ)
    yield
    # The finished test's engine must be torn down now: collected later, during the next test's engine start-up, it
    # destroys vLLM's process-global parallel groups under it ("pipeline model parallel group is not initialized").
    gc.collect()
    os.environ.clear()
    os.environ.update(environ)
    AcceleratorState._reset_state(reset_partial_state=True)


def vllm_config(tmp_path, **overrides):
    values = dict(use_vllm=True, max_completion_length=24, meta_min_length=4)
    values.update(overrides)
    return cpu_config(tmp_path, **values)


def colocate_config(tmp_path, **overrides):
    # On vLLM's CPU backend the memory utilization is the share of host memory the engine reserves.
    values = dict(vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, vllm_max_model_length=2048)
    return vllm_config(tmp_path, **(values | overrides))


def digit_share_reward(completions, **kwargs):
    return [sum(ch.isdigit() for ch in c[0]["content"]) / max(len(c[0]["content"]), 1) for c in completions]


def check_trained(trainer, before):
    last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    assert last["meta/completions/mean_length"] > 0
    assert "meta/sampling/importance_sampling_ratio/mean" in last  # meta rows carry vLLM IS ratios
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


@pytest.fixture
def unpacked_cpu_linear_weights(monkeypatch):
    """Keep vLLM's linear weights where colocate weight sync can write them.

    On CPU only, vLLM packs each linear weight for oneDNN after loading and drops the original parameter, so TRL's
    `load_weights` sync fails with "'Parameter' object has no attribute 'weight_loader'". GPU builds keep the weights.
    This fixture makes the CPU build run its linear layers with plain `torch.nn.functional.linear` on the unpacked
    weights; generation, sampling, log-probs and the weight sync itself stay vLLM's and TRL's own code.
    """
    import vllm.model_executor.layers.utils as layer_utils

    def keep_weights(layer, remove_weight):
        layer.cpu_linear = torch.nn.functional.linear

    monkeypatch.setattr(layer_utils, "dispatch_cpu_unquantized_gemm", keep_weights)


def test_colocate_mode_trains(tiny_model_dir, tmp_path, unpacked_cpu_linear_weights):
    from trl.generation.vllm_generation import VLLMGeneration

    from masa_trl.math_reward import math_accuracy_reward

    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=[math_accuracy_reward, digit_share_reward],
        args=colocate_config(tmp_path),
        train_dataset=masa_dataset(PROBLEMS),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    llm, engine_calls = trainer.vllm_generation.llm, []
    # The engine seats every row of that call (TRL seats the 8 solution rows only, so the meta rows would queue).
    assert llm.llm_engine.vllm_config.scheduler_config.max_num_seqs == 2 * 4 + 2 * 2
    real_generate = llm.generate

    def recording_generate(prompts, **kwargs):
        engine_calls.append(len(prompts))
        return real_generate(prompts, **kwargs)

    with (
        patch.object(VLLMGeneration, "sync_weights", autospec=True, side_effect=VLLMGeneration.sync_weights) as sync,
        patch.object(llm, "generate", recording_generate),
    ):
        trainer.train()
    check_trained(trainer, before)
    # One engine call per step holds both kinds of rollout: 2 prompts x (G = 4 solutions + M = 2 meta rollouts).
    assert engine_calls == [2 * 4 + 2 * 2] * trainer.state.global_step
    # The weights of step 1 reached vLLM before the generation of step 2.
    assert sync.call_count >= 1
    llm_model = trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
    vllm_norm = dict(llm_model.named_parameters())["model.norm.weight"]
    assert not torch.equal(vllm_norm.detach().cpu(), before["model.norm.weight"]), (
        "vLLM still holds the initial weights"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def vllm_server(tiny_model_dir):
    port = _free_port()
    # Started exactly as a user would: `trl vllm-serve` (in TRL 1.16 a wrapper around `vllm serve` in development
    # mode, with the logprobs mode and weight-transfer settings TRL needs).
    command = [
        str(Path(sys.executable).parent / "trl"),
        "vllm-serve",
        "--model",
        str(tiny_model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max_model_len",
        "2048",
        "--dtype",
        "float32",
        "--enforce_eager",
        # On the CPU backend this is the share of host memory vLLM reserves (0.9 by default fails on a busy node).
        "--gpu_memory_utilization",
        "0.3",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"vllm serve exited early:\n{server.stderr.read()[-4000:]}")
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError("vllm serve did not become healthy within 300 s")
            time.sleep(2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_colocate_mode_trains_a_lora_adapter(tiny_model_dir, tmp_path, unpacked_cpu_linear_weights):
    # LoRA under vLLM colocate: TRL merges the adapter into the engine's weights at each sync, so vLLM samples from
    # the adapted policy while only the adapter weights train.
    from peft import LoraConfig
    from trl.generation.vllm_generation import VLLMGeneration

    from masa_trl.math_reward import math_accuracy_reward

    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=[math_accuracy_reward, digit_share_reward],  # a random model needs a reward with variance
        args=colocate_config(tmp_path, learning_rate=5e-2),
        train_dataset=masa_dataset(PROBLEMS),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )  # fmt: skip
    llm_model = trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
    engine_before = {n: p.detach().clone() for n, p in llm_model.named_parameters()}
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with patch.object(VLLMGeneration, "sync_weights", autospec=True, side_effect=VLLMGeneration.sync_weights) as sync:
        trainer.train()
    assert trainer.state.global_step == 2 and sync.call_count >= 1
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in params.items() if "lora_" in n)  # the adapter trained
    # The base did not: TRL merges the adapter into the base weights for the sync and subtracts it again, which
    # leaves float rounding (measured below 1e-6) in the projections LoRA wraps, and nothing else.
    drift = max((params[n] - before[n]).abs().max().item() for n in params if "lora_" not in n)
    assert drift < 1e-5, drift
    engine_changed = [n for n, p in llm_model.named_parameters() if not torch.equal(p.detach(), engine_before[n])]
    assert any("qkv_proj" in n for n in engine_changed), "vLLM never received the merged adapter"
    assert not any("mlp" in n for n in engine_changed)  # the frozen base elsewhere is unchanged


def test_server_mode_generates_through_http(tiny_model_dir, tmp_path, vllm_server):
    from trl.generation.vllm_client import VLLMClient
    from trl.generation.vllm_generation import VLLMGeneration

    from masa_trl.math_reward import math_accuracy_reward

    generate = VLLMClient.generate
    requests = []

    def recording_generate(self, prompts, **kwargs):
        start = time.monotonic()
        answer = generate(self, prompts, **kwargs)
        requests.append(((len(prompts), kwargs["n"], kwargs["max_tokens"]), start, time.monotonic()))
        return answer

    # Weight sync needs NCCL, i.e. CUDA: stand in for it, and only it.
    with (
        patch.object(VLLMClient, "init_communicator", lambda self, device: None),
        patch.object(VLLMGeneration, "sync_weights", autospec=True) as sync_weights,
        patch.object(VLLMClient, "generate", recording_generate),
        patch.object(rollout_generation, "check_server_seats", wraps=rollout_generation.check_server_seats) as seats,
    ):
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            reward_funcs=[math_accuracy_reward, digit_share_reward],
            args=vllm_config(tmp_path, vllm_mode="server", vllm_server_base_url=vllm_server),
            train_dataset=masa_dataset(PROBLEMS),
        )
        # The trainer read the server's seats at start: one call holds 8 solution + 4 meta rows, fewer than them.
        client = trainer.vllm_generation.vllm_client
        seats.assert_called_once_with(client, 12)
        assert rollout_generation.check_server_seats(client, 12) >= 12
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()

    check_trained(trainer, before)
    # Per step, both in flight at once: one request for the 2 solution prompts (n = G = 4) and one for the 2 meta
    # prompts (n = M = 2), each prompt sent once.
    assert len(requests) == 2 * trainer.state.global_step
    for step in range(trainer.state.global_step):
        first, second = sorted(requests[2 * step : 2 * step + 2], key=lambda r: r[1])
        assert sorted([first[0], second[0]]) == [(2, 2, 24), (2, 4, 24)]
        assert second[1] < first[2], "the meta and solution requests of a step did not overlap"
    assert sync_weights.call_count >= 1


EFFICIENT_PROBLEMS = {"What is 2 + 3?": "5", "What is 4 + 4?": "8"}


def scripted_meta_then_real_solutions(tokenizer):
    """Meta rollouts are scripted (a random model writes no parsable prediction); solutions come from vLLM.

    Prompt "2 + 3": every meta rollout says "always solved" -> gated. Prompt "4 + 4": learnable, predicted length 3
    -> its solution rollouts are capped at 6 tokens. Its meta rollouts name different notions ("carry" and
    "doubling" once each, "addition" in both), so the single hint of the group is "addition" (hint size 1).
    """
    from masa_scripts import meta_text
    from trl import GRPOTrainer

    real = GRPOTrainer._generate_single_turn

    def generate(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        prompts = tokenizer.batch_decode(prompt_ids)
        if "</meta>" not in prompts[0]:
            return real(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        extra = itertools.cycle([["carry"], ["doubling"]])
        texts = [meta_text(8 if "2 + 3" in p else 4, 3, [*next(extra), "addition"]) for p in prompts]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
        return ids, [[-1.0] * len(x) for x in ids] if self.use_vllm else None

    return generate


def check_efficient_batch(trainer, batch, tokenizer, generated_prompts):
    lengths = batch["completion_mask"][~batch["is_meta"]].sum(1).tolist()
    assert lengths[:4] == [0, 0, 0, 0]  # gated prompt: placeholders, masked
    assert 0 < max(lengths[4:]) <= 6  # capped at 2 x 3 tokens by vLLM itself
    metrics = {name: values[-1] for name, values in trainer._metrics["train"].items()}
    assert metrics["efficient/skipped_frac"] == 0.5
    # One hinted prompt for the whole group, the one vLLM generated from: the most-named notion only.
    trained = set(tokenizer.batch_decode(batch["prompt_ids"][4:8], skip_special_tokens=True))
    assert len(trained) == 1
    (prompt,) = trained
    assert "addition" in prompt and "carry" not in prompt and "doubling" not in prompt
    assert generated_prompts == [prompt]
    # Placeholders are out of the length and importance-sampling metrics: the real rollouts only.
    assert metrics["completions/min_length"] >= 1 and metrics["completions/max_length"] <= 6
    solution = ~batch["is_meta"]
    expected = sampling_metrics(
        batch["old_per_token_logps"][solution],
        batch["sampling_per_token_logps"][solution],
        batch["importance_sampling_ratio"][solution],
        batch["completion_mask"][solution],
        gather=lambda t: t,
    )
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value), name


def test_colocate_mode_efficient_caps_per_request(tiny_model_dir, tmp_path, unpacked_cpu_linear_weights):
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir),
        args=colocate_config(tmp_path, efficient_start_step=0, gating_audit_fraction=0.0, shuffle_dataset=False,
                             meta_min_length=3, notion_hint_max_notions=1),
        train_dataset=masa_dataset(EFFICIENT_PROBLEMS),
    )  # fmt: skip
    trainer.model.train()
    inputs = [dict(example) for example in trainer.train_dataset for _ in range(4)]
    llm, generated_prompts = trainer.vllm_generation.llm, []

    def recording_generate(prompts, **kwargs):  # the prompts that reach the engine, one per request
        generated_prompts.extend(tokenizer.decode(p["prompt_token_ids"], skip_special_tokens=True) for p in prompts)
        return real_generate(prompts, **kwargs)

    real_generate = llm.generate
    with (
        patch.object(GRPOTrainer, "_generate_single_turn", scripted_meta_then_real_solutions(tokenizer)),
        patch.object(llm, "generate", recording_generate),
    ):
        batch = trainer._generate_and_score_completions(inputs)
    # vLLM colocate gets one request per row (n = 1 per SamplingParams): the 4 rows of the learnable prompt.
    assert len(generated_prompts) == 4 and len(set(generated_prompts)) == 1
    check_efficient_batch(trainer, batch, tokenizer, generated_prompts[:1])


def test_server_mode_efficient_sends_one_request_per_cap(tiny_model_dir, tmp_path, vllm_server):
    from transformers import AutoTokenizer
    from trl import GRPOTrainer
    from trl.generation.vllm_client import VLLMClient

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    generate = VLLMClient.generate
    requests = []

    server_prompts = []

    def recording_generate(self, prompts, **kwargs):
        requests.append((len(prompts), kwargs["n"], kwargs["max_tokens"]))
        server_prompts.extend(prompts)
        return generate(self, prompts, **kwargs)

    with (
        patch.object(VLLMClient, "init_communicator", lambda self, device: None),
        patch.object(VLLMClient, "generate", recording_generate),
    ):
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            args=vllm_config(tmp_path, vllm_mode="server", vllm_server_base_url=vllm_server, efficient_start_step=0,
                             gating_audit_fraction=0.0, shuffle_dataset=False, meta_min_length=3,
                             notion_hint_max_notions=1),
            train_dataset=masa_dataset(EFFICIENT_PROBLEMS),
        )  # fmt: skip
        trainer.model.train()
        trainer._last_loaded_step = trainer.state.global_step  # no weight sync (NCCL) in this test
        inputs = [dict(example) for example in trainer.train_dataset for _ in range(4)]
        with patch.object(GRPOTrainer, "_generate_single_turn", scripted_meta_then_real_solutions(tokenizer)):
            batch = trainer._generate_and_score_completions(inputs)
    # TRL sends each group's prompt once (token ids): the hinted prompt the group is trained on.
    check_efficient_batch(trainer, batch, tokenizer, tokenizer.batch_decode(server_prompts, skip_special_tokens=True))
    # Solutions: only the learnable prompt was requested, with n = G = 4 and its own cap; the meta rollouts were
    # scripted, so the server saw no meta request.
    assert requests == [(1, 4, 6)]


def odd_length_reward(completions, completion_ids, **kwargs):
    """1 for an odd number of generated tokens: a random model gives most groups a reward spread, some none."""
    return [float(len(ids) % 2) for ids in completion_ids]


def test_colocate_mode_masa_with_dynamic_sampling(tiny_model_dir, tmp_path, unpacked_cpu_linear_weights):
    # MASA + DAPO on vLLM colocate: the filled batch trains, meta rows travel with their prompt.
    from masa_trl import MASADAPOTrainer

    trainer = MASADAPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=[odd_length_reward],
        args=colocate_config(
            tmp_path,
            dynamic_sampling=True,
            dynamic_sampling_partial=True,
            max_steps=1,
        ),
        train_dataset=masa_dataset(PROBLEMS),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    check_trained(trainer, before)
    last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    assert last["dynamic_sampling/num_gen_batches"] >= 1
    assert trainer._generation_step == 1


def test_server_mode_dapo_with_dynamic_sampling(tiny_model_dir, tmp_path, vllm_server):
    # DAPO (GRPO + dynamic sampling) against a real `vllm serve`: every round's requests go to the server.
    from trl.generation.vllm_client import VLLMClient
    from trl.generation.vllm_generation import VLLMGeneration

    from masa_trl import DAPOConfig, DAPOTrainer

    args = DAPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=24,
        max_steps=1,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_vllm=True,
        vllm_mode="server",
        vllm_server_base_url=vllm_server,
        dynamic_sampling=True,
        dynamic_sampling_partial=True,
    )
    with (
        patch.object(VLLMClient, "init_communicator", lambda self, device: None),
        patch.object(VLLMGeneration, "sync_weights", autospec=True),
    ):
        trainer = DAPOTrainer(
            model=str(tiny_model_dir),
            reward_funcs=[odd_length_reward],
            args=args,
            train_dataset=Dataset.from_dict({"prompt": list(PROBLEMS), "answer": list(PROBLEMS.values())}),
        )
        trainer.train()
    last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    assert trainer.state.global_step == 1 and last["dynamic_sampling/num_gen_batches"] >= 1
