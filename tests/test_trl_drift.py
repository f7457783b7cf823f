"""Drift guard: MASAGRPOTrainer overrides and calls private TRL methods, pinned to trl==1.16.0.

If one of these tests fails after a TRL upgrade, read the new method before changing the expected signature: the
override in masa_trl/masa_trainer.py may rely on behaviour that moved.

The source checks parse TRL with `ast` (vLLM is not importable here; `trl.generation.vllm_generation` imports without
it). Each check has a negative control below it: the same check run on a name or a mutated source that must fail.
"""

import ast
import functools
import inspect
import textwrap

import pytest
import trl
from trl import GRPOTrainer
from trl.generation.vllm_generation import VLLMGeneration
from trl.trainer.utils import add_fused_lm_head

from masa_trl import MASAGRPOTrainer
from masa_trl.rollout_generation import CappedLLM, GroupedClient, add_capped_requests


# Private methods MASA overrides or calls, and the exact signatures it was written against.
PINNED_SIGNATURES = {
    "_generate_and_score_completions": (
        "(self, inputs: list[dict[str, torch.Tensor | typing.Any]]) -> dict[str, torch.Tensor | typing.Any]"
    ),
    "_calculate_rewards": "(self, inputs, prompts, completions, completion_ids_list)",
    "_generate_single_turn": "(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False)",
    "_generate": "(self, prompts: list)",
    "_tokenize_prompts": "(self, prompts: list)",
    "_compute_loss": "(self, model, inputs)",
    "_prepare_inputs": (
        "(self, generation_batch: dict[str, torch.Tensor | typing.Any]) -> dict[str, torch.Tensor | typing.Any]"
    ),
    "training_step": "(self, model, inputs, num_items_in_batch)",
    "_get_per_token_logps_and_entropies": (
        "(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, "
        "compute_aux_loss=False, pixel_values=None, image_grid_thw=None, num_images=None, pixel_attention_mask=None, "
        "spatial_shapes=None, num_tiles=None, image_sizes=None, token_type_ids=None, mm_token_type_ids=None, "
        "image_position_ids=None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]"
    ),
}


def test_trl_version_is_pinned():
    assert trl.__version__ == "1.16.0", (
        f"masa-trl extends private methods of trl 1.16.0, but trl {trl.__version__} is installed. Reinstall with "
        "`pip install trl==1.16.0` or port masa_trl/masa_trainer.py and update tests/test_trl_drift.py."
    )


@pytest.mark.parametrize("name", sorted(PINNED_SIGNATURES))
def test_private_method_signature(name):
    assert hasattr(GRPOTrainer, name), f"GRPOTrainer.{name} no longer exists; MASAGRPOTrainer relies on it."
    actual = str(inspect.signature(getattr(GRPOTrainer, name)))
    assert actual == PINNED_SIGNATURES[name], (
        f"GRPOTrainer.{name} changed signature: expected {PINNED_SIGNATURES[name]}, got {actual}. "
        "Review the MASAGRPOTrainer code that overrides or calls it."
    )


# --- Source helpers --------------------------------------------------------------------------------------------------


def _is_self_attribute(node, name: str | None = None) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and name in (None, node.attr)
    )


def _is_call_to(node, dotted: str) -> bool:
    return isinstance(node, ast.Call) and ast.unparse(node.func) == dotted


def _parse(source: str) -> ast.Module:
    return ast.parse(textwrap.dedent(source))


@functools.cache
def _method_tree(cls, name: str) -> ast.Module:
    return _parse(inspect.getsource(vars(cls)[name]))


def _trl_owner(cls, name: str):
    """The class in `cls`'s MRO, among those defined in TRL, that defines method `name` (None: not followed)."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] == "trl" and callable(vars(klass).get(name)):
            return klass
    return None


@functools.cache
def _reachable_methods(cls, roots: tuple[str, ...]) -> dict[str, ast.Module]:
    """TRL methods that `roots` run, following `self.<method>(...)` calls transitively, keyed `Class.method`."""
    reachable, pending, seen = {}, list(roots), set()
    while pending:
        name = pending.pop()
        owner = _trl_owner(cls, name)
        if name in seen or owner is None:
            continue
        seen.add(name)
        tree = reachable[f"{owner.__name__}.{name}"] = _method_tree(owner, name)
        pending += [
            node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and _is_self_attribute(node.func)
        ]
    return reachable


def _self_loads(tree) -> set[str]:
    return {node.attr for node in ast.walk(tree) if _is_self_attribute(node) and isinstance(node.ctx, ast.Load)}


def _last_assignment(tree, name: str, line: int) -> ast.expr:
    """The value last assigned to the local `name` before `line`."""
    values = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and node.lineno < line
        and any(isinstance(target, ast.Name) and target.id == name for target in node.targets)
    ]
    assert values, f"{name} is not assigned before line {line}"
    return max(values, key=lambda node: node.lineno).value


def _dict_keys(tree, name: str, line: int) -> set[str]:
    value = _last_assignment(tree, name, line)
    assert isinstance(value, ast.Dict), f"{name} is no longer a dict literal: {ast.unparse(value)}"
    return {key.value for key in value.keys if isinstance(key, ast.Constant)}


# --- What TRL reads while MASA has swapped an attribute -------------------------------------------------------------

# The meta phase (masa_trainer.py, `_meta_phase`) swaps MASAGRPOTrainer._META_PHASE_ATTRIBUTES and calls these TRL
# methods; the swap only matters if TRL reads the attribute on the code they run, not merely somewhere (`__init__`).
META_PHASE_ROOTS = ("_generate_and_score_completions",)

# The reachable methods that read each swapped attribute in trl 1.16.0, so that a move inside TRL is named precisely.
META_PHASE_READERS = {
    "num_generations": ("_generate", "_generate_and_score_completions"),
    "num_generations_eval": ("_generate", "_generate_and_score_completions"),
    "reward_funcs": ("_calculate_rewards", "_generate_and_score_completions"),
    "reward_func_names": ("_calculate_rewards", "_generate_and_score_completions"),
    "reward_weights": ("_generate_and_score_completions",),
    "reward_processing_classes": ("_calculate_rewards",),
    "_metrics": ("_generate", "_generate_and_score_completions"),
    "_logs": ("_generate_and_score_completions",),
}

# GRPOTrainer attributes read only in `__init__` (baked into the generation config and the vLLM backend there): the
# old substring check accepted them, the reachability check must not.
INIT_ONLY_ATTRIBUTES = ("temperature", "top_p")


def _check_read_on_path(name: str, expected_readers=()) -> list[str]:
    """Fails unless a method the meta phase runs loads `self.<name>`, and each of `expected_readers` still does."""
    reachable = _reachable_methods(GRPOTrainer, META_PHASE_ROOTS)
    readers = [method for method, tree in reachable.items() if name in _self_loads(tree)]
    assert readers, (
        f"No method that GRPOTrainer.{'/'.join(META_PHASE_ROOTS)} runs reads self.{name} any more, so swapping it "
        f"around that call has no effect. Searched (self.<method>() calls followed): {sorted(reachable)}."
    )
    for method in expected_readers:
        assert f"GRPOTrainer.{method}" in readers, (
            f"GRPOTrainer.{method} no longer reads self.{name} (now read by {readers}); check that the meta phase "
            "swap still reaches the code that used it there."
        )
    return readers


def _meta_phase_super_calls(source: str) -> set[str]:
    """The `super().<method>()` calls a class's `source` makes inside `with self._meta_phase(...)`."""
    calls = set()
    for node in ast.walk(_parse(source)):
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call) and _is_self_attribute(item.context_expr.func, "_meta_phase")
            for item in node.items
        ):
            for statement in node.body:
                for call in ast.walk(statement):
                    if (
                        isinstance(call, ast.Call)
                        and isinstance(call.func, ast.Attribute)
                        and _is_call_to(call.func.value, "super")
                    ):
                        calls.add(call.func.attr)
    return calls


def _check_meta_phase_roots(source: str) -> None:
    calls = _meta_phase_super_calls(source)
    assert calls, "found no super().<method>() call inside `with self._meta_phase(...)` in MASAGRPOTrainer"
    assert calls <= set(META_PHASE_ROOTS), f"the meta phase now also runs {sorted(calls - set(META_PHASE_ROOTS))}"


def test_meta_phase_roots_are_the_trl_calls_masa_makes():
    # The reachability search starts from META_PHASE_ROOTS: they must be what MASA calls with the attributes swapped.
    _check_meta_phase_roots(inspect.getsource(MASAGRPOTrainer))


@pytest.mark.parametrize(
    ("calls", "message"),
    [
        ((), "found no super"),
        (("_generate_and_score_completions", "_generate"), r"also runs \['_generate'\]"),
    ],
    ids=["no-root", "extra-root"],
)
def test_meta_phase_roots_check_fails_on_drift(calls, message):
    # Negative control: a meta phase that calls no TRL method, or another one as well, is reported.
    body = "".join(f"\n            super().{name}(inputs)" for name in calls) or "\n            pass"
    source = f"class Trainer:\n    def step(self, mode, inputs):\n        with self._meta_phase(mode):{body}\n"
    with pytest.raises(AssertionError, match=message):
        _check_meta_phase_roots(source)


def test_reachability_follows_the_generation_path():
    # Guards the search itself: if these drop out, TRL stopped calling them through `self` and the search went blind.
    reachable = _reachable_methods(GRPOTrainer, META_PHASE_ROOTS)
    for name in ("_generate", "_generate_single_turn", "_tokenize_prompts", "_calculate_rewards"):
        assert f"GRPOTrainer.{name}" in reachable, (
            f"{name} is not reached from {META_PHASE_ROOTS}: {sorted(reachable)}"
        )
    assert "GRPOTrainer.__init__" not in reachable


@pytest.mark.parametrize("name", MASAGRPOTrainer._META_PHASE_ATTRIBUTES)
def test_swapped_attribute_is_read_by_trl(name):
    assert name in META_PHASE_READERS, f"the meta phase swaps self.{name}: add it to META_PHASE_READERS"
    _check_read_on_path(name, META_PHASE_READERS[name])


@pytest.mark.parametrize("name", [*INIT_ONLY_ATTRIBUTES, "masa_no_such_attribute"])
def test_read_check_fails_for_attributes_off_the_path(name):
    # Negative control: a name TRL reads only in __init__, or nowhere, is reported with the methods searched.
    if name in INIT_ONLY_ATTRIBUTES:
        assert f"self.{name}" in inspect.getsource(GRPOTrainer)  # what the old substring check accepted
        assert name in _self_loads(_method_tree(GRPOTrainer, "__init__"))
    with pytest.raises(AssertionError, match=rf"reads self\.{name} any more") as failure:
        _check_read_on_path(name)
    assert "GRPOTrainer._generate_single_turn" in str(failure.value)


def test_read_check_names_a_reader_that_moved():
    # Negative control for META_PHASE_READERS: a method that doesn't read the attribute is named in the failure.
    with pytest.raises(AssertionError, match=r"GRPOTrainer\._tokenize_prompts no longer reads self\.reward_funcs"):
        _check_read_on_path("reward_funcs", ("_tokenize_prompts",))


# --- The TRL objects MASA's generators wrap (masa_trl/rollout_generation.py) ---------------------------------------


def _bind(wrapper, call: ast.Call, tree) -> inspect.BoundArguments:
    """Binds TRL's call as written (a `**dict` expanded from its literal) to the signature of MASA's wrapper."""
    assert not any(isinstance(arg, ast.Starred) for arg in call.args), ast.unparse(call)
    keywords = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            assert isinstance(keyword.value, ast.Name), ast.unparse(call)
            keywords.update(dict.fromkeys(_dict_keys(tree, keyword.value.id, call.lineno)))
        else:
            keywords[keyword.arg] = keyword.value
    try:
        return inspect.signature(wrapper).bind(None, *call.args, **keywords)
    except TypeError as error:
        raise AssertionError(f"TRL's `{ast.unparse(call)}` no longer fits {wrapper.__qualname__}: {error}") from error


def _backend_calls(tree, backend: str) -> list[ast.Call]:
    calls = [node for node in ast.walk(tree) if _is_call_to(node, f"self.{backend}.generate")]
    assert calls, (
        f"VLLMGeneration.generate no longer calls self.{backend}.generate: MASA-efficient's wrapper is bypassed"
    )
    return calls


def _check_llm_calls(tree) -> None:
    """per_request_caps swaps `vllm_generation.llm` for CappedLLM, which clones one `sampling_params` per request."""
    for call in _backend_calls(tree, "llm"):
        params = _bind(CappedLLM.generate, call, tree).arguments["sampling_params"]
        assert isinstance(params, ast.Name), f"sampling_params is passed as {ast.unparse(params)}"
        built = _last_assignment(tree, params.id, call.lineno)
        assert _is_call_to(built, "SamplingParams"), (
            f"sampling_params is no longer one SamplingParams: {ast.unparse(built)}"
        )
        spread = [keyword.value for keyword in built.keywords if keyword.arg is None]
        assert len(spread) == 1 and isinstance(spread[0], ast.Name), ast.unparse(built)
        assert "max_tokens" in _dict_keys(tree, spread[0].id, built.lineno), "CappedLLM takes min(cap, max_tokens)"


def _check_client_calls(tree) -> None:
    """ServerGenerator swaps `vllm_generation.vllm_client` for GroupedClient: TRL must pass `n` and
    `max_tokens` (GroupedClient's defaults would cap at 16 tokens) and read only keys GroupedClient returns."""
    capped = _method_tree(GroupedClient, "generate")
    returned = {
        key
        for node in ast.walk(capped)
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Name)
        for key in _dict_keys(capped, node.value.id, node.lineno)
    }
    for call in _backend_calls(tree, "vllm_client"):
        bound = _bind(GroupedClient.generate, call, tree)
        assert {"prompts", "n", "max_tokens"} <= set(bound.arguments), (
            f"`{ast.unparse(call)}` binds only {sorted(bound.arguments)} of GroupedClient.generate"
        )
        (answer,) = [
            node.targets[0].id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and node.value is call and isinstance(node.targets[0], ast.Name)
        ]
        read = {
            ast.literal_eval(node.slice) if isinstance(node, ast.Subscript) else ast.literal_eval(node.args[0])
            for node in ast.walk(tree)
            if (isinstance(node, ast.Subscript) and ast.unparse(node.value) == answer)
            or (_is_call_to(node, f"{answer}.get"))
        }
        assert read, f"found no read of {answer}[...] after `{ast.unparse(call)}`"
        assert read <= returned, (
            f"TRL reads {sorted(read - returned)} from the server answer; GroupedClient omits them"
        )


def test_vllm_generation_is_the_class_these_checks_read():
    # rollout_generation.py swaps attributes of `trainer.vllm_generation`; the checks below read that class's source.
    from trl.trainer import grpo_trainer

    built = [
        ast.unparse(node.value.func)
        for node in ast.walk(_method_tree(GRPOTrainer, "__init__"))
        if isinstance(node, ast.Assign)
        and any(_is_self_attribute(target, "vllm_generation") for target in node.targets)
        and isinstance(node.value, ast.Call)
    ]
    assert built == ["VLLMGeneration"], built
    assert grpo_trainer.VLLMGeneration is VLLMGeneration
    reachable = _reachable_methods(GRPOTrainer, ("_generate_single_turn",))
    assert any(
        _is_call_to(node, "self.vllm_generation.generate") for tree in reachable.values() for node in ast.walk(tree)
    ), f"no self.vllm_generation.generate(...) call in {sorted(reachable)}: MASA-efficient's wrappers are bypassed"


def _check_engine_seats(trainer_init: ast.Module, generation_trees: list[ast.Module]) -> None:
    """rollout_generation.colocated_engine_seats rewrites the `max_num_seqs` GRPOTrainer builds VLLMGeneration with;
    VLLMGeneration must hand that value to vLLM's `LLM(...)`."""
    (built,) = [node for node in ast.walk(trainer_init) if _is_call_to(node, "VLLMGeneration")]
    assert "max_num_seqs" in {keyword.arg for keyword in built.keywords}, (
        f"GRPOTrainer builds VLLMGeneration without max_num_seqs: `{ast.unparse(built)[:200]}`"
    )
    nodes = [node for tree in generation_trees for node in ast.walk(tree)]
    stored = any(
        isinstance(node, ast.Assign)
        and any(_is_self_attribute(target, "max_num_seqs") for target in node.targets)
        and ast.unparse(node.value) == "max_num_seqs"
        for node in nodes
    )
    engines = [node for node in nodes if _is_call_to(node, "LLM")]
    assert engines, "VLLMGeneration no longer builds vllm.LLM itself"
    for engine in engines:
        seats = {keyword.arg: ast.unparse(keyword.value) for keyword in engine.keywords}.get("max_num_seqs")
        assert seats == "max_num_seqs" or (seats == "self.max_num_seqs" and stored), (
            f"vLLM's engine no longer gets VLLMGeneration's max_num_seqs: max_num_seqs={seats}"
        )


def _vllm_generation_trees(init_source: str | None = None, engine_source: str | None = None) -> list[ast.Module]:
    init = init_source or inspect.getsource(VLLMGeneration.__init__)
    return [_parse(init), _parse(engine_source or inspect.getsource(VLLMGeneration._init_vllm))]


def test_colocated_engine_gets_the_seats_masa_sets():
    _check_engine_seats(_method_tree(GRPOTrainer, "__init__"), _vllm_generation_trees())


@pytest.mark.parametrize(
    ("where", "old", "new"),
    [
        ("trainer", "max_num_seqs=args.per_device_train_batch_size", "max_seqs=args.per_device_train_batch_size"),
        ("init", "self.max_num_seqs = max_num_seqs", "self.max_num_seqs = 256"),
        ("engine", "max_num_seqs=self.max_num_seqs,", "max_num_seqs=256,"),
        ("engine", "max_num_seqs=self.max_num_seqs,", ""),
    ],
    ids=["trainer-keyword", "init-ignores-it", "engine-literal", "engine-default"],
)
def test_engine_seats_check_fails_on_drift(where, old, new):
    sources = {
        "trainer": inspect.getsource(GRPOTrainer.__init__),
        "init": inspect.getsource(VLLMGeneration.__init__),
        "engine": inspect.getsource(VLLMGeneration._init_vllm),
    }
    assert old in sources[where]
    sources[where] = sources[where].replace(old, new, 1)
    with pytest.raises(AssertionError):
        _check_engine_seats(_parse(sources["trainer"]), _vllm_generation_trees(sources["init"], sources["engine"]))


def test_colocate_generation_calls_the_llm_as_capped_llm_accepts():
    _check_llm_calls(_method_tree(VLLMGeneration, "generate"))


def test_server_generation_calls_the_client_as_grouped_client_accepts():
    _check_client_calls(_method_tree(VLLMGeneration, "generate"))


@pytest.mark.parametrize(
    ("check", "old", "new"),
    [
        (_check_llm_calls, "self.llm.generate(", "self.llm.chat("),
        (_check_llm_calls, "sampling_params=sampling_params,", "sampling_params=[sampling_params],"),
        (_check_llm_calls, "vllm_prompts, sampling_params=sampling_params", "vllm_prompts, None, sampling_params"),
        (_check_client_calls, "self.vllm_client.generate(", "self.vllm_client.chat("),
        (_check_client_calls, '"max_tokens": max_completion_length,', ""),  # the first dict: the server's
        (_check_client_calls, 'output.get("logprob_token_ids")', 'output["token_ids"]'),
    ],
    ids=[
        "llm-not-called",
        "llm-params-list",
        "llm-extra-positional",
        "client-not-called",
        "client-no-max-tokens",
        "client-new-key",
    ],
)
def test_vllm_wrapper_checks_fail_on_drift(check, old, new):
    # Negative control: the checks above, run on VLLMGeneration.generate with one plausible TRL change, must fail.
    source = inspect.getsource(VLLMGeneration.generate)
    assert old in source
    with pytest.raises(AssertionError):
        check(_parse(source.replace(old, new, 1)))


def _check_transformers_generate(trees: dict[str, ast.Module], method: str = "generate") -> None:
    """row_caps patches `generate` (request_caps: `generate_batch`'s manager) on
    `accelerator.unwrap_model(trainer.model_wrapped)` around `_generate_single_turn`: TRL's transformers path must call
    `method` on the model that `unwrap_model_for_generation(self.model_wrapped)` yields, without a stopping criterion of
    its own (row_caps adds one)."""
    calls = []
    for tree in trees.values():
        for node in ast.walk(tree):
            if not isinstance(node, ast.With):
                continue
            for item in node.items:
                if (
                    isinstance(item.context_expr, ast.Call)
                    and ast.unparse(item.context_expr.func) == "unwrap_model_for_generation"
                    and item.context_expr.args
                    and _is_self_attribute(item.context_expr.args[0], "model_wrapped")
                    and isinstance(item.optional_vars, ast.Name)
                ):
                    name = item.optional_vars.id
                    calls += [c for c in ast.walk(node) if _is_call_to(c, f"{name}.{method}")]
    assert calls, f"no `<unwrap_model_for_generation(self.model_wrapped)>.{method}(...)` call in {sorted(trees)}"
    for call in calls:
        assert "stopping_criteria" not in {k.arg for k in call.keywords}, ast.unparse(call)


def _check_unwrapped_model(tree) -> None:
    """What `_unwrap_model_for_generation` yields must be `accelerator.unwrap_model(model)`, the object row_caps patches."""
    assigned = {
        node.targets[0].id: ast.unparse(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    yielded = [ast.unparse(node.value) for node in ast.walk(tree) if isinstance(node, ast.Yield)]
    assert yielded, "_unwrap_model_for_generation yields nothing"
    for value in yielded:
        assert assigned.get(value, value) == "accelerator.unwrap_model(model)", f"yields {value}"


@pytest.mark.parametrize("method", ["generate", "generate_batch"])
def test_transformers_generation_calls_generate_on_the_model_row_caps_patches(method):
    from trl.models import utils

    _check_transformers_generate(_reachable_methods(GRPOTrainer, ("_generate_single_turn",)), method)
    _check_unwrapped_model(_parse(inspect.getsource(utils._unwrap_model_for_generation)))


def _check_generate_batch(tree: ast.Module) -> None:
    """request_caps replaces `add_requests` on the manager that `generate_batch` opens with
    `self.continuous_batching_context_manager(...)`: `generate_batch` must submit its prompts through that manager's
    `add_requests`, with arguments `add_capped_requests` accepts, and use the request ids it returns."""
    opened = {
        node.targets[0].id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and _is_call_to(node.value, "self.continuous_batching_context_manager")
    }
    managers = [
        item.optional_vars.id
        for node in ast.walk(tree)
        if isinstance(node, ast.With)
        for item in node.items
        if isinstance(item.optional_vars, ast.Name)
        and (
            (isinstance(item.context_expr, ast.Name) and item.context_expr.id in opened)
            or _is_call_to(item.context_expr, "self.continuous_batching_context_manager")
        )
    ]
    assert managers, "generate_batch no longer opens self.continuous_batching_context_manager(...) in a `with`"
    calls = [node for node in ast.walk(tree) for name in managers if _is_call_to(node, f"{name}.add_requests")]
    assert calls, f"generate_batch no longer calls {managers[0]}.add_requests(...): per-request caps are bypassed"
    signature = inspect.signature(functools.partial(add_capped_requests, None, None))
    for call in calls:
        assert not any(isinstance(arg, ast.Starred) for arg in call.args), ast.unparse(call)
        try:
            bound = signature.bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg is not None})
        except TypeError as error:
            raise AssertionError(f"`{ast.unparse(call)}` no longer fits add_capped_requests: {error}") from error
        # The call's own limit is what a cap is compared with: it must arrive as `max_new_tokens`, not in **kwargs.
        assert "max_new_tokens" in bound.arguments, f"`{ast.unparse(call)}` passes no max_new_tokens"
    assigned = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(node.value is call for call in calls)
        and isinstance(node.targets[0], ast.Name)
    ]
    assert assigned, "generate_batch drops the request ids add_requests returns (results are ordered by them)"


def _generate_batch_source() -> str:
    from transformers.generation.continuous_batching.continuous_api import ContinuousMixin

    return inspect.getsource(ContinuousMixin.generate_batch)


def test_generate_batch_submits_through_the_manager_request_caps_patches():
    _check_generate_batch(_parse(_generate_batch_source()))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("manager.add_requests(", "manager.add_many("),
        ("request_ids = manager.add_requests(", "manager.add_requests("),
        ("inputs=inputs, max_new_tokens=max_new_tokens", "inputs=inputs, max_tokens=max_new_tokens"),
        ("self.continuous_batching_context_manager(", "self.open_manager("),
    ],
    ids=["other-method", "ids-dropped", "renamed-keyword", "other-manager"],
)
def test_generate_batch_check_fails_on_drift(old, new):
    # Negative control: the check, run on `generate_batch` with one plausible transformers change, must fail.
    source = _generate_batch_source()
    assert source.count(old) >= 1, old
    with pytest.raises(AssertionError):
        _check_generate_batch(_parse(source.replace(old, new)))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("unwrapped_model.generate(", "unwrapped_model.generate_with("),
        ("generation_config=self.generation_config", "generation_config=self.generation_config, stopping_criteria=s"),
        ("self.model_wrapped,", "self.model,"),
    ],
    ids=["other-method", "own-stopping-criteria", "other-model"],
)
def test_transformers_generate_check_fails_on_drift(old, new):
    # Negative control: the check, run on `_generate_single_turn` with one plausible TRL change, must fail.
    reachable = dict(_reachable_methods(GRPOTrainer, ("_generate_single_turn",)))
    source = textwrap.dedent(inspect.getsource(GRPOTrainer._generate_single_turn))
    assert source.count(old) >= 1, old
    reachable["GRPOTrainer._generate_single_turn"] = _parse(source.replace(old, new))
    with pytest.raises(AssertionError):
        _check_transformers_generate(reachable)


def test_generate_batch_call_check_fails_on_drift():
    reachable = dict(_reachable_methods(GRPOTrainer, ("_generate_single_turn",)))
    source = textwrap.dedent(inspect.getsource(GRPOTrainer._generate_single_turn))
    assert "unwrapped_model.generate_batch(" in source
    reachable["GRPOTrainer._generate_single_turn"] = _parse(source.replace("unwrapped_model.generate_batch(", "x.b("))
    with pytest.raises(AssertionError):
        _check_transformers_generate(reachable, "generate_batch")


def test_unwrapped_model_check_fails_on_drift():
    from trl.models import utils

    source = inspect.getsource(utils._unwrap_model_for_generation)
    assert "yield unwrapped_model" in source
    with pytest.raises(AssertionError):
        _check_unwrapped_model(_parse(source.replace("yield unwrapped_model", "yield model")))


# --- The fused LM head the behaviour-cloning pass re-patches ---------------------------------------------------------

ADD_FUSED_LM_HEAD_SIGNATURE = (
    "(model: transformers.modeling_utils.PreTrainedModel, temperature: float = 1.0, cast_lm_head_to_fp32: bool = "
    "False, outputs: tuple[str, ...] = ('log_probs',)) -> None"
)


def test_add_fused_lm_head_signature():
    actual = str(inspect.signature(add_fused_lm_head))
    assert actual == ADD_FUSED_LM_HEAD_SIGNATURE, f"add_fused_lm_head changed signature: {actual}"


def _check_fused_patch(tree) -> None:
    """The BC pass re-patches the model at temperature 1 and then restores `model.forward`: that undoes the patch
    only if `model.forward` (an instance attribute) is all the patch changes on the model."""
    stores = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Attribute, ast.Subscript))
        and isinstance(node.ctx, ast.Store)
        and ast.unparse(node).startswith("model.")
    ]
    assert stores == ["model.forward"], f"add_fused_lm_head now stores {stores} on the model"
    (patch,) = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "model.forward"
    ]
    assert _is_call_to(patch.value, "types.MethodType"), ast.unparse(patch)
    assert not [node for node in ast.walk(tree) if _is_call_to(node, "setattr") or _is_call_to(node, "delattr")]
    # The patch wraps the forward it finds, so a second patch nests over the first and restoring unnests it.
    assert "original_forward = model.forward" in ast.unparse(tree)


def test_add_fused_lm_head_only_replaces_model_forward():
    _check_fused_patch(_parse(inspect.getsource(add_fused_lm_head)))


def _check_fused_logps(tree) -> None:
    """The BC pass's log-probs come from this method: the model call must take the fused head, and the temperature
    must come only from the patched forward (so re-patching at temperature 1 is enough)."""
    assert any(
        _is_call_to(node, "model")
        and any(
            k.arg == "fused_lm_head" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        for node in ast.walk(tree)
    ), "_get_per_token_logps_and_entropies no longer calls model(..., fused_lm_head=True)"
    assert "temperature" not in _self_loads(tree), "it now applies self.temperature itself"


def test_per_token_logps_go_through_the_fused_lm_head():
    _check_fused_logps(_method_tree(GRPOTrainer, "_get_per_token_logps_and_entropies"))


@pytest.mark.parametrize(
    ("check", "source", "old", "new"),
    [
        (
            _check_fused_patch,
            add_fused_lm_head,
            "    model.forward = ",
            "    model.config.fused = True\n    model.forward = ",
        ),
        (
            _check_fused_patch,
            add_fused_lm_head,
            "model.forward = types.MethodType(",
            "model.forward = functools.partial(",
        ),
        (
            _check_fused_logps,
            GRPOTrainer._get_per_token_logps_and_entropies,
            "fused_lm_head=True",
            "fused_lm_head=False",
        ),
        (
            _check_fused_logps,
            GRPOTrainer._get_per_token_logps_and_entropies,
            "logps = torch.cat(all_logps, dim=0)",
            "logps = torch.cat(all_logps, dim=0) / self.temperature",
        ),
    ],
    ids=["patch-stores-more", "patch-not-bound", "logps-unfused", "logps-own-temperature"],
)
def test_fused_lm_head_checks_fail_on_drift(check, source, old, new):
    # Negative control: the fused-head checks, run on TRL's source with one plausible change, must fail.
    text = inspect.getsource(source)
    assert old in text
    with pytest.raises(AssertionError):
        check(_parse(text.replace(old, new, 1)))


def test_deepspeed_internals_used_by_the_behaviour_cloning_pass():
    # The BC pass drives the DeepSpeed engine itself and overrides its clipping for the pass (masa_trainer.py,
    # `ExpertBC._optimizer`); the two-process ZeRO-2/3 tests cover the behaviour, this names the attribute that moved.
    from deepspeed.runtime.engine import DeepSpeedEngine as engine
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    assert "def backward(self, loss, retain_graph=False, scale_wrt_gas=True)" in inspect.getsource(engine)
    assert "self._config.gradient_clipping" in inspect.getsource(engine.gradient_clipping)
    assert "self._is_gradient_accumulation_boundary" in inspect.getsource(engine.is_gradient_accumulation_boundary)
    for optimizer in (DeepSpeedZeroOptimizer, DeepSpeedZeroOptimizer_Stage3):
        assert "self.clip_grad = clip_grad" in inspect.getsource(optimizer.__init__), optimizer.__name__
