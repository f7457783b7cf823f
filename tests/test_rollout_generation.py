"""The row layout and the per-backend generators of masa_trl.rollout_generation, and one generation call per step."""

import contextlib
import time
from unittest.mock import patch

import pytest
import torch
from masa_scripts import ScriptedGeneration, cpu_config, masa_dataset, script_generation
from test_masa_trainer import PROBLEMS, batch_inputs, make_config, script_for
from transformers import AutoModelForCausalLM, AutoTokenizer

from masa_trl import MASAGRPOTrainer, rollout_generation
from masa_trl.layout import RolloutLayout
from masa_trl.rollout_generation import (
    META,
    SOLUTION,
    GroupedClient,
    RolloutGenerator,
    RowRequest,
    ServerGenerator,
    add_capped_requests,
    call_rows,
    check_server_seats,
    colocated_engine_seats,
    engine_seats,
    request_caps,
    row_caps,
    swapped,
)


EOS = 0


class TestLayout:
    def test_rows_and_prompts_over_two_processes(self):
        # 2 processes x 6 rows, G = 4: prompt 1 straddles the processes; M = 2 meta rows per prompt.
        first, second = (RolloutLayout(6, 4, 2, rank, 2) for rank in (0, 1))
        assert first.num_prompts == 3 and first.first_row == 0 and second.first_row == 6
        assert first.solution_prompts() == [0, 0, 0, 0, 1, 1]
        assert second.solution_prompts() == [1, 1, 2, 2, 2, 2]
        assert first.group_starts() == [0, 4] and second.group_starts() == [2]
        assert first.num_local_meta_rows == 3
        assert first.meta_prompts() == [0, 0, 1] and second.meta_prompts() == [1, 2, 2]
        assert first.per_prompt(list("aabbcc"), 2) == [["a", "a"], ["b", "b"], ["c", "c"]]

    def test_impossible_layouts_are_refused(self):
        with pytest.raises(ValueError, match="groups of 4"):
            RolloutLayout(3, 4, 2)
        with pytest.raises(ValueError, match="meta rows per process"):
            RolloutLayout(2, 4, 3, 0, 2)
        with pytest.raises(ValueError, match="expected 2 x 2"):
            RolloutLayout(4, 2, 2).per_prompt([1, 2, 3], 2)


class FakeTRL:
    """Stands in for TRL's `_generate_single_turn`: completion i of a call is `[100 + prompt[0]] * 5`."""

    def __init__(self, logprobs=False):
        self.calls, self.logprobs = [], logprobs

    def __call__(self, prompt_ids, n):
        self.calls.append([list(p) for p in prompt_ids])
        ids = [[100 + p[0]] * 5 for p in prompt_ids]
        return ids, ([[-1.0] * 5 for _ in ids] if self.logprobs else None)


class TestGenerator:
    def test_skipped_rows_are_not_generated_and_caps_cut(self):
        trl = FakeTRL(logprobs=True)
        rows = [
            RowRequest([1], SOLUTION, 0, skip=True),
            RowRequest([2], SOLUTION, 1, cap=3),
            RowRequest([3], META, 1),
        ]
        out = RolloutGenerator(trl, EOS).generate(rows)
        assert trl.calls == [[[2], [3]]]  # one call, without the skipped row
        assert out.completion_ids == [[EOS], [102] * 3, [103] * 5]
        assert out.logprobs == [[0.0], [-1.0] * 3, [-1.0] * 5]
        assert out.prompt_ids == [[1], [2], [3]]

    def test_a_process_with_nothing_to_generate_still_makes_the_call(self):
        trl = FakeTRL()
        out = RolloutGenerator(trl, EOS).generate([RowRequest([7], SOLUTION, 0, skip=True)] * 2)
        assert len(trl.calls) == 1  # FSDP / ZeRO-3 gather weights inside the call: every process makes it
        assert out.completion_ids == [[EOS], [EOS]]

    def test_select_keeps_row_order(self):
        out = RolloutGenerator(FakeTRL(), EOS).generate([RowRequest([i], SOLUTION, i) for i in range(4)])
        part = out.select([3, 1])
        assert part.prompt_ids == [[3], [1]] and part.completion_ids == [[103] * 5, [101] * 5]


def test_swapped_restores_an_instance_attribute_and_removes_a_class_one():
    class Backend:
        def generate(self):
            return "class"

    backend = Backend()
    backend.llm = "engine"
    with swapped(backend, "llm", "capped"), swapped(backend, "generate", lambda: "wrapped"):
        assert backend.llm == "capped" and backend.generate() == "wrapped"
    assert backend.llm == "engine"  # the instance's own value is back
    assert "generate" not in vars(backend) and backend.generate() == "class"  # the class method shows through again
    with pytest.raises(KeyError), swapped(backend, "llm", "capped"):
        raise KeyError  # restored on an error too
    assert backend.llm == "engine"


class TestEngineSeats:
    # cpu_config: 8 solution rows per process and call (G = 4), so 8 * 2 / 4 = 4 meta rows (M = 2).
    @pytest.mark.parametrize(
        ("overrides", "seats"),
        [
            (dict(use_vllm=True), 8 + 4),  # one call holds both kinds (the default on vLLM)
            (dict(use_vllm=True, joint_generation=False), 8),  # one call per kind: the larger one
            (dict(use_vllm=True, joint_generation=False, num_meta_generations=8), 16),  # M > G: the meta call
            (dict(use_vllm=True, vllm_tensor_parallel_size=2), 2 * 12),  # TRL gathers a tensor-parallel group
            (dict(use_vllm=True, gradient_accumulation_steps=2), 2 * 12),  # one call per steps_per_generation
        ],
        ids=["joint", "separate", "meta-larger", "tensor-parallel", "steps-per-generation"],
    )
    def test_seats_hold_the_largest_call(self, tmp_path, overrides, seats):
        assert engine_seats(cpu_config(tmp_path, **overrides)) == seats

    def test_trl_builds_the_colocated_engine_with_them(self, tmp_path, monkeypatch):
        from trl.trainer import grpo_trainer

        built = []
        monkeypatch.setattr(grpo_trainer, "VLLMGeneration", lambda **kwargs: built.append(kwargs) or "engine")
        fake = grpo_trainer.VLLMGeneration
        args = cpu_config(tmp_path, use_vllm=True, vllm_mode="colocate")
        with colocated_engine_seats(args):
            # GRPOTrainer.__init__ builds it so (tests/test_trl_drift.py checks that it still does).
            assert grpo_trainer.VLLMGeneration(model="m", max_num_seqs=8) == "engine"
        assert built == [dict(model="m", max_num_seqs=12)]
        assert grpo_trainer.VLLMGeneration is fake  # TRL's name is back afterwards
        with colocated_engine_seats(args):  # never fewer seats than TRL's
            grpo_trainer.VLLMGeneration(max_num_seqs=64)
        assert built[-1] == dict(max_num_seqs=64)
        # A chosen number is taken as it is, fewer than TRL's too.
        with colocated_engine_seats(cpu_config(tmp_path, use_vllm=True, vllm_mode="colocate", vllm_max_num_seqs=6)):
            grpo_trainer.VLLMGeneration(max_num_seqs=8)
        assert built[-1] == dict(max_num_seqs=6)

    def test_a_chosen_number_must_be_positive(self, tmp_path):
        with pytest.raises(ValueError, match="vllm_max_num_seqs must be a positive number"):
            cpu_config(tmp_path, use_vllm=True, vllm_max_num_seqs=0)

    @pytest.mark.parametrize("overrides", [dict(use_vllm=True, vllm_mode="server"), dict(use_vllm=False)])
    def test_server_and_transformers_are_left_alone(self, tmp_path, overrides):
        # A server's seats are set where it is launched (`vllm serve --max-num-seqs`); transformers has no engine.
        from trl.generation.vllm_generation import VLLMGeneration
        from trl.trainer import grpo_trainer

        with colocated_engine_seats(cpu_config(tmp_path, **overrides)):
            assert grpo_trainer.VLLMGeneration is VLLMGeneration


class TestServerSeats:
    class Client:
        base_url = "http://node-7:8000"

        def __init__(self, info):
            self.info = info

        def get_server_info(self):
            if isinstance(self.info, Exception):
                raise self.info
            return self.info

    def test_too_few_seats_are_reported_with_the_fix(self, tmp_path):
        rows = 2 * call_rows(cpu_config(tmp_path, use_vllm=True, vllm_mode="server"))  # two trainer processes
        assert rows == 2 * 12
        with patch.object(rollout_generation.logger, "info") as info:
            assert check_server_seats(self.Client({"scheduler_config": {"max_num_seqs": 16}}), rows) == 16
        (message,) = info.call_args.args
        assert "http://node-7:8000" in message and "holds 24 rows" in message and "--max-num-seqs 24" in message

    def test_enough_seats_are_quiet_and_no_report_is_not_an_error(self):
        with patch.object(rollout_generation.logger, "info") as info:
            assert check_server_seats(self.Client({"scheduler_config": {"max_num_seqs": 256}}), 24) == 256
        info.assert_not_called()
        assert check_server_seats(self.Client({"model_config": {}}), 24) is None  # an older server's answer
        assert check_server_seats(self.Client(RuntimeError("no dev endpoints")), 24) is None


class TestRowCaps:
    def test_each_row_stops_at_its_cap_within_one_call(self, tiny_model_dir):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        ids = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=20)
        kwargs.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=[])  # never stop on EOS: only the caps
        free = model.generate(**kwargs)
        with row_caps(model, [4, 9, 6]):
            capped = model.generate(**kwargs)
        assert "generate" not in vars(model)  # the patch is gone afterwards
        assert free.size(1) == 3 + 20
        assert capped.size(1) == 3 + 9  # the call ended when its longest-capped row reached its cap
        # Greedy: every row agrees with the uncapped run up to its cap, and is padded after it.
        for row, cap in enumerate([4, 9, 6]):
            assert capped[row, 3 : 3 + cap].tolist() == free[row, 3 : 3 + cap].tolist()
            assert (capped[row, 3 + cap :] == tokenizer.pad_token_id).all()

    def test_uncapped_rows_run_to_the_limit(self, tiny_model_dir):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        ids = torch.tensor([[5, 6], [7, 8]])
        with row_caps(model, [2, None]):
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=7, eos_token_id=[]
            )
        assert out.size(1) == 2 + 7


class FakeManager:
    """Stands in for transformers' `ContinuousBatchingManager`: records each `add_requests` call."""

    def __init__(self):
        self.calls, self.counter = [], 0

    def add_requests(self, inputs, max_new_tokens=None, **kwargs):
        self.calls.append(([p[0] for p in inputs], max_new_tokens, kwargs))
        ids = [f"req_{self.counter + i}" for i in range(len(inputs))]
        self.counter += len(inputs)
        return ids


class FakeCBModel:
    """`generate_batch` as transformers writes it: open the manager, submit through `add_requests`, keep the ids."""

    def __init__(self):
        self.manager = FakeManager()

    @contextlib.contextmanager
    def continuous_batching_context_manager(self, **kwargs):
        yield self.manager

    def generate_batch(self, inputs, max_new_tokens=8):
        with self.continuous_batching_context_manager(block=True) as manager:
            return manager.add_requests(inputs=inputs, max_new_tokens=max_new_tokens, record_timestamps=False)


class TestRequestCaps:
    def test_each_request_gets_its_cap_and_ids_keep_the_input_order(self):
        manager = FakeManager()
        ids = add_capped_requests(manager.add_requests, [3, None, 3, 20], [[1], [2], [3], [4]], max_new_tokens=8, x=1)
        # One submission per distinct limit; a cap above max_new_tokens is max_new_tokens; None is max_new_tokens.
        assert manager.calls == [([1, 3], 3, {"x": 1}), ([2, 4], 8, {"x": 1})]
        assert ids == ["req_0", "req_2", "req_1", "req_3"]  # in input order, whatever the submission order

    def test_a_count_mismatch_is_an_error(self):
        with pytest.raises(RuntimeError, match="3 prompts were submitted for 2 capped rows"):
            add_capped_requests(FakeManager().add_requests, [1, 2], [[1], [2], [3]], max_new_tokens=8)

    def test_generate_batch_submits_capped_requests_only_within_the_context(self):
        model = FakeCBModel()
        with request_caps(model, [2, None]):
            assert model.generate_batch([[5], [6]]) == ["req_0", "req_1"]
            assert "add_requests" not in vars(model.manager)  # a cached manager does not keep the caps
        assert model.manager.calls[:2] == [
            ([5], 2, {"record_timestamps": False}),
            ([6], 8, {"record_timestamps": False}),
        ]
        assert "continuous_batching_context_manager" not in vars(model)  # the patch is gone afterwards
        model.generate_batch([[7], [8]])
        assert model.manager.calls[2] == ([7, 8], 8, {"record_timestamps": False})

    def test_rows_stop_at_their_caps_in_real_continuous_batching(self, tiny_model_dir):
        from transformers import GenerationConfig

        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        # Greedy, and no EOS (-1 disables it), so only the caps stop a row.
        config = GenerationConfig(max_new_tokens=12, do_sample=False, eos_token_id=-1, pad_token_id=0)
        prompts = [[5, 6, 7], [8, 9, 10], [11, 12, 13]]
        # Each call costs seconds on a CPU whatever its size (the manager's thread); warm-up would add more.
        free = model.generate_batch(prompts, generation_config=config, progress_bar=False, warmup=False)
        with request_caps(model, [4, None, 7]):
            capped = model.generate_batch(prompts, generation_config=config, progress_bar=False, warmup=False)
        free_ids = [out.generated_tokens for out in free.values()]
        capped_ids = [out.generated_tokens for out in capped.values()]
        assert [len(ids) for ids in free_ids] == [12, 12, 12]
        assert [len(ids) for ids in capped_ids] == [4, 12, 7]
        for row, cap in enumerate([4, 12, 7]):
            assert capped_ids[row] == free_ids[row][:cap]

    @pytest.mark.parametrize("continuous", [False, True])
    def test_the_trainer_picks_the_caps_of_its_backend(self, tiny_model_dir, tmp_path, continuous):
        args = make_config(tmp_path, efficient_start_step=0, use_transformers_continuous_batching=continuous)
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            reward_funcs=[lambda **kw: [0.0]],
            args=args,
            train_dataset=masa_dataset(PROBLEMS),
        )
        assert trainer._rollout_generator.continuous_batching is continuous

    def test_the_trainer_generator_caps_requests_under_continuous_batching(self):
        model = FakeCBModel()

        def trl_generate(prompt_ids, n):  # TRL's continuous-batching path: generate_batch on the unwrapped model
            model.generate_batch(prompt_ids)
            return [[1] * 8 for _ in prompt_ids], None

        generator = RolloutGenerator(trl_generate, EOS, unwrapped_model=lambda: model, continuous_batching=True)
        out = generator.generate([RowRequest([1], SOLUTION, 0, cap=3), RowRequest([2], SOLUTION, 0)])
        assert model.manager.calls == [([1], 3, {"record_timestamps": False}), ([2], 8, {"record_timestamps": False})]
        assert out.completion_ids == [[1] * 3, [1] * 8]


class FakeClient:
    base_url = "http://fake:8000"

    def __init__(self, delay=0.0, error=None):
        self.requests, self.delay, self.error = [], delay, error

    def generate(self, prompts, n=1, max_tokens=16, **kwargs):
        self.requests.append((tuple(p[0] for p in prompts), n, max_tokens))
        if self.error:
            raise self.error
        time.sleep(self.delay)
        ids = [[p[0]] * min(3, max_tokens) for p in prompts for _ in range(n)]
        return {"prompt_ids": prompts, "completion_ids": ids, "logprobs": [[[-0.5]] * len(c) for c in ids]}


class TestGroupedClient:
    # Rows of the gathered batch: prompt 0 (G = 2, the second process holds one of them), prompt 1 skipped, and three
    # meta rows of prompt 0 (M = 3), all in one call with n = 1.
    SPECS = (
        (SOLUTION, 0, None, False),
        (SOLUTION, 1, None, True),
        (META, 0, None, False),
        (SOLUTION, 0, None, False),
        (SOLUTION, 1, None, True),
        (META, 0, None, False),
        (META, 0, None, False),
    )
    PROMPTS = ([10], [11], [20], [10], [11], [20], [20])

    def test_one_request_per_group_size_each_prompt_once(self):
        client, failure = FakeClient(), [None]
        out = GroupedClient(client, self.SPECS, EOS, 10.0, failure).generate(self.PROMPTS, n=1, max_tokens=8)
        assert failure == [None]
        assert sorted(client.requests) == [((10,), 2, 8), ((20,), 3, 8)]  # the skipped prompt is never requested
        assert out["completion_ids"] == [[10] * 3, [EOS], [20] * 3, [10] * 3, [EOS], [20] * 3, [20] * 3]
        assert out["prompt_ids"] == list(map(list, self.PROMPTS))
        assert len(out["logprobs"]) == len(out["logprob_token_ids"]) == 7

    def test_caps_split_requests(self):
        specs = [
            (SOLUTION, 0, 2, False),
            (SOLUTION, 0, 2, False),
            (SOLUTION, 1, None, False),
            (SOLUTION, 1, None, False),
        ]
        client = FakeClient()
        out = GroupedClient(client, specs, EOS, 10.0, [None]).generate([[1], [1], [2], [2]], n=1, max_tokens=8)
        assert sorted(client.requests) == [((1,), 2, 2), ((2,), 2, 8)]
        assert out["completion_ids"] == [[1] * 2, [1] * 2, [2] * 3, [2] * 3]

    def test_a_failed_request_is_reported_not_raised(self):
        failure = [None]
        grouped = GroupedClient(FakeClient(error=ConnectionError("refused")), self.SPECS, EOS, 10.0, failure)
        out = grouped.generate(self.PROMPTS, n=1, max_tokens=8)
        assert out["completion_ids"] == [[EOS]] * 7  # placeholders, so TRL's broadcast to the others still happens
        assert "http://fake:8000" in failure[0] and "ConnectionError: refused" in failure[0]

    def test_a_slow_server_times_out_with_a_clear_message(self):
        failure = [None]
        start = time.monotonic()
        GroupedClient(FakeClient(delay=5.0), self.SPECS, EOS, 0.3, failure).generate(self.PROMPTS, n=1, max_tokens=8)
        assert time.monotonic() - start < 2.0
        assert "http://fake:8000" in failure[0] and "vllm_request_timeout=0.3 s" in failure[0]

    def test_server_generator_raises_after_the_answer_is_shared(self):
        class VLLMGeneration:
            vllm_client = FakeClient(error=TimeoutError("read timed out"))

        class Accelerator:
            is_main_process = True

        vllm = VLLMGeneration()
        client = vllm.vllm_client

        def trl_generate(prompt_ids, n):  # TRL's server path: the (wrapped) client answers every row, then returns
            answer = vllm.vllm_client.generate(prompt_ids, n=n, max_tokens=8)
            return answer["completion_ids"], None

        rows = [RowRequest([1], SOLUTION, 0), RowRequest([1], SOLUTION, 0)]
        with pytest.raises(RuntimeError, match="vLLM server at http://fake:8000 failed"):
            ServerGenerator(trl_generate, EOS, vllm, Accelerator(), 5.0).generate(rows)
        assert vllm.vllm_client is client  # the wrapper is removed even on failure


def run_step(trainer):
    trainer.model.train()
    return trainer._generate_and_score_completions(batch_inputs(trainer))


class TestOneGenerationCall:
    @pytest.mark.parametrize(("joint", "calls"), [(True, [(8 + 4, 1)]), (None, [(8, 1), (4, 1)])])
    def test_plain_masa_generates_both_kinds_in_one_call(self, tiny_model_dir, tmp_path, joint, calls):
        # 2 prompts x (G = 4 solutions + M = 2 meta rollouts); by default (None) one call per kind on transformers,
        # the faster choice measured there, one call on vLLM (tests/test_vllm.py).
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        script, _ = script_for(tokenizer)
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            args=make_config(tmp_path, joint_generation=joint),
            train_dataset=masa_dataset(PROBLEMS),
        )
        generation = script_generation(trainer, ScriptedGeneration(tokenizer, script))
        run_step(trainer)
        assert generation.calls == calls
        timings = {"timing/generate_joint_s"} if joint else {"timing/generate_meta_s", "timing/generate_solution_s"}
        assert set(trainer._metrics["train"]) >= timings | {"timing/generate_s"}

    def test_rows_and_rewards_are_identical_whichever_way_they_were_generated(self, tiny_model_dir, tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        script, _ = script_for(tokenizer)
        batches, rewards, calls = [], [], []
        for joint in (True, False):
            torch.manual_seed(0)
            trainer = MASAGRPOTrainer(
                model=str(tiny_model_dir),
                args=make_config(
                    tmp_path / str(joint), joint_generation=joint, shuffle_dataset=False, log_completions=True
                ),
                train_dataset=masa_dataset(PROBLEMS),
            )
            generation = script_generation(trainer, ScriptedGeneration(tokenizer, script))
            batches.append(run_step(trainer))
            rewards.append({k: list(v) for k, v in trainer._logs["rewards"].items()})
            calls.append(generation.calls)
        assert calls == [[(12, 1)], [(8, 1), (4, 1)]]
        joint, separate = batches
        assert joint.keys() == separate.keys()
        for key in joint:
            torch.testing.assert_close(joint[key], separate[key], equal_nan=True, msg=key)
        assert rewards[0].keys() == rewards[1].keys() and len(rewards[0]) == 1 + 3  # the answer and 3 meta rewards
        for name, values in rewards[0].items():
            torch.testing.assert_close(torch.tensor(values), torch.tensor(rewards[1][name]), equal_nan=True)
