"""Per-step cost of MASA and GRPO on one GPU: a random-init Qwen3 of Qwen3-0.6B's shape, transformers backend, bf16.

    python3 scripts/gpu_step_profile.py --output $OUT/profile.json       # GPU: 1 warm-up + 3 measured steps each
    python scripts/gpu_step_profile.py --device cpu --tiny                # CPU smoke test (tiny layout, 2 steps)
    python3 scripts/gpu_step_profile.py --check-env                       # what is installed, what would be

Self-contained for a GPU machine that has torch but not TRL, datasets, math-verify, ...: the script first checks
its imports and installs what is missing or too old with `pip install --no-index --find-links DIR` from the wheel
directory `--wheels` (default scripts/wheels/, gitignored; made by scripts/build_gpu_wheels.sh on a machine with
PyPI access), then starts itself again. `masa_trl` is imported from the repository this script sits in when there is
one (the code under test), else installed from its wheel in that directory (`--no-deps`).

What runs. Every method trains the same model on the same prompts in the same order, with the same seed:

- `grpo`: `trl.GRPOTrainer`, G solution rollouts per prompt;
- `masa`: `MASAGRPOTrainer` as configured by default (G solution + M meta rollouts per prompt; `joint_generation`
  left at its default, which on the transformers backend means one generation call per kind, so the trainer logs
  `timing/generate_meta_s` and `timing/generate_solution_s`);
- optional: `masa_joint` (`joint_generation=True`: both kinds in one padded `generate` call, logged as
  `timing/generate_joint_s`), `masa_separate` (`joint_generation=False`, explicitly) and `masa_efficient`
  (`efficient_start_step=0`).

The JSON is rewritten after each method (`"complete": false` until the last), so a run cut short keeps what it
measured.

Model: `transformers.Qwen3Config` with Qwen3-0.6B's layout (hidden 1024, 28 layers, 16 heads, 8 KV heads, head_dim
128, intermediate 3072, tied embeddings, RoPE theta 1e6), random init, saved to a temporary directory with its
tokenizer. The tokenizer is `masa_trl.tiny_model.build_tiny_tokenizer` (byte-level BPE, Qwen-style chat template),
trained with one token per digit (as Qwen's) on tiny_model's math corpus plus the solution and meta prompts of other
sum problems, so that prompts come to about as many tokens as with a real tokenizer (solution prompt ~46, meta prompt
~200); it learns ~850 tokens, and its vocabulary is then padded with filler words (" a", " b", ..., " zz", ...) up to
`--vocab-size`, default 151936 (Qwen3's embedding size), so that `len(tokenizer)` equals the model's vocabulary and
the embedding / LM-head cost (logits, log-softmax, sampling) is Qwen3-0.6B's. A random model practically never emits
EOS, so every rollout runs to `--max-completion-length` (meta rollouts too: with a trained model they are shorter,
about 0.37 x the solutions in the paper, so MASA's generation cost here is an upper bound).

Training settings are the paper recipe's (recipes/masa_qwen3_8b.py) where they bear on cost: bf16 weights and
autocast, gradient checkpointing (TRL's default; `--no-gradient-checkpointing`), loss_type "dapo", beta 0 (no
reference model), epsilon 0.2 / 0.28, temperature 1, top_p 1, lr 1e-6, max_grad_norm 1. The reward is
`masa_trl.math_reward.math_accuracy_reward` on sum problems from `masa_trl.arithmetic.make_arithmetic_dataset`. One
generation batch (prompts x G solution rows) feeds exactly one optimizer step: per_device_train_batch_size is
`--micro-batch` solution rows, gradient_accumulation_steps is prompts x G / micro-batch; MASA's micro-batches hold
(G + M) / G times as many rows (its meta rows ride along).

Per step it records: the step's wall time (`on_step_begin` to `on_step_end`, CUDA synchronised), generation time and
tokens as measured here around TRL's `_generate_single_turn` (GRPO) and `MASAGRPOTrainer._trl_generate` (MASA: the
same TRL function, called by MASA's rollout generator), the trainer's own `timing/generate_s`,
`timing/generate_joint_s`, `timing/generate_meta_s`, `timing/generate_solution_s`, `efficient/meta_tokens`,
`efficient/solution_tokens` (MASA only) and TRL's `step_time`, generated tokens per second, and peak GPU memory
(`torch.cuda.max_memory_allocated` / `max_memory_reserved`, reset at each step; the method's peak, setup included, is
reset per method). The first `--warmup` steps of each method are recorded but left out of the summary (means over
the measured steps). Output: a JSON file (`--output`) and markdown tables on stdout, with the device name and the
torch / transformers / trl versions.
"""

import argparse
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("PYTHONUNBUFFERED", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WHEELS = REPO / "scripts" / "wheels"
DEFAULT_OUTPUT = REPO / "outputs" / "gpu_step_profile.json"
REEXEC_ENV = "MASA_GPU_PROFILE_INSTALLED"
# The --target fallback. Its path names "site-packages": dill (datasets' fingerprinting) pickles modules by reference
# only when their file is under sys.prefix or such a path, and by value otherwise, which fails on pyarrow's types.
TARGET_SITE = Path(tempfile.gettempdir()) / "masa_gpu_profile" / "site-packages"

# (module to import, distribution, pip requirement): masa_trl's install_requires as far as this profile needs them.
REQUIREMENTS = [
    ("transformers", "transformers", "transformers>=5.0"),
    ("tokenizers", "tokenizers", "tokenizers>=0.22"),
    ("accelerate", "accelerate", "accelerate>=1.10.1"),
    ("datasets", "datasets", "datasets>=4.7.0"),
    ("trl", "trl", "trl==1.16.0"),
    ("math_verify", "math-verify", "math-verify>=0.9.0"),
    ("latex2sympy2_extended", "latex2sympy2-extended", "latex2sympy2-extended"),
    ("lemminflect", "lemminflect", "lemminflect>=0.2.3"),
]
VERSIONS_REPORTED = ("torch", "transformers", "trl", "accelerate", "datasets", "tokenizers", "math-verify")

METHODS = ("grpo", "masa", "masa_joint", "masa_separate", "masa_efficient")
LABELS = {
    "grpo": "GRPO",
    "masa": "MASA",
    "masa_joint": "MASA (one call)",
    "masa_separate": "MASA (call per kind)",
    "masa_efficient": "MASA-efficient",
}
JOINT_GENERATION = {"masa_joint": True, "masa_separate": False}  # the others keep MASAConfig's default

# Qwen3-0.6B's layout (its config.json), and a tiny one for CPU smoke tests.
LAYOUTS = {
    "qwen3-0.6b": dict(
        hidden_size=1024,
        num_layers=28,
        num_heads=16,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=3072,
        vocab_size=151936,
        max_position_embeddings=40960,
    ),
    "tiny": dict(
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=32,
        intermediate_size=128,
        vocab_size=512,
        max_position_embeddings=2048,
    ),
}
RUN_DEFAULTS = {
    "qwen3-0.6b": dict(prompts=8, generations=8, meta_generations=8, max_completion_length=512, steps=3, warmup=1),
    "tiny": dict(prompts=2, generations=4, meta_generations=4, max_completion_length=32, steps=1, warmup=1),
}

# The model config's fields recorded in the JSON.
CONFIG_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "tie_word_embeddings",
    "rope_parameters",
)

# Keys of the trainer's logs kept per step.
TRAINER_KEYS = (
    "step_time",
    "timing/generate_s",
    "timing/generate_joint_s",
    "timing/generate_meta_s",
    "timing/generate_solution_s",
    "efficient/meta_tokens",
    "efficient/solution_tokens",
    "completions/mean_length",
    "completions/clipped_ratio",
    "num_tokens",
    "reward",
    "loss",
    "meta/parse_failure_rate",
)


# ---------------------------------------------------------------------------------------------------- environment
def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfies(requirement: str, version: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no packaging: presence is all that can be checked
        return True
    return Requirement(requirement).specifier.contains(version, prereleases=True)


def use_repository_masa_trl() -> bool:
    """Import masa_trl from the checkout this script sits in, when there is one."""
    if (REPO / "masa_trl" / "__init__.py").is_file():
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        return True
    return False


def environment_problems() -> list[tuple[str, str]]:
    """(pip requirement, why) for every requirement that is missing or too old; masa_trl as `masa-trl`."""
    problems = []
    for module, distribution, requirement in REQUIREMENTS:
        version = installed_version(distribution)
        if version is None or importlib.util.find_spec(module) is None:
            problems.append((requirement, "missing"))
        elif not satisfies(requirement, version):
            problems.append((requirement, f"installed {version}"))
    if not use_repository_masa_trl() and importlib.util.find_spec("masa_trl") is None:
        problems.append(("masa-trl", "not installed, and no repository checkout next to this script"))
    return problems


def wheel_dirs(given: list[str] | None) -> list[Path]:
    """The wheel directories and their immediate subdirectories (a directory may be split into parts)."""
    dirs = []
    for entry in given or [str(DEFAULT_WHEELS)]:
        path = Path(entry).expanduser().resolve()
        if path.is_dir():
            dirs += [path] + sorted(p for p in path.iterdir() if p.is_dir())
    return dirs


def pip_install(requirements: list[str], dirs: list[Path], *options: str) -> bool:
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", "--no-input"]
    for path in dirs:
        command += ["--find-links", str(path)]
    command += [*options, *requirements]
    print("[gpu_step_profile] " + " ".join(command), flush=True)
    return subprocess.run(command, check=False).returncode == 0


def install_into_environment(problems, dirs: list[Path]) -> bool:
    """pip install the missing requirements, resolving their dependencies against what is installed."""
    regular = [requirement for requirement, _ in problems if requirement != "masa-trl"]
    if regular and not pip_install(regular, dirs):
        return False
    if any(requirement == "masa-trl" for requirement, _ in problems):  # its wandb/evaluate are not needed here
        return pip_install(["masa-trl"], dirs, "--no-deps")
    return True


def install_into_target(dirs: list[Path]) -> bool:
    """Fallback: every wheel of the directories, without dependency resolution, into TARGET_SITE (on PYTHONPATH)."""
    wheels = sorted(str(wheel) for path in dirs for wheel in path.glob("*.whl"))
    if not pip_install(wheels, [], "--no-deps", "--no-compile", "--upgrade", "--target", str(TARGET_SITE)):
        return False
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TARGET_SITE), os.environ.get("PYTHONPATH")]))
    return True


def ensure_environment(args) -> None:
    """Install what is missing from the wheel directory, then start this script again (once).

    First (`--install-mode env` or `auto`) into this interpreter's environment, with pip resolving dependencies
    against what is installed; if that fails (a dependency the directory lacks, a read-only environment) or with
    `--install-mode target`, every wheel of the directories goes with `--no-deps` into TARGET_SITE, which is put on
    PYTHONPATH for the restarted script.
    """
    if sys.version_info < (3, 11):  # noqa: UP036 (the GPU machine's interpreter may be older)
        sys.exit(f"masa_trl needs Python >= 3.11; this is {platform.python_version()} ({sys.executable}).")
    if importlib.util.find_spec("torch") is None:
        sys.exit(
            f"torch is not installed for {sys.executable}; this script does not install it (use the GPU image's)."
        )
    problems = environment_problems()
    if args.check_env:
        print(environment_report(problems, args))
        sys.exit(0)
    if not problems:
        return
    listing = ", ".join(f"{requirement} ({why})" for requirement, why in problems)
    if os.environ.get(REEXEC_ENV) or args.no_install:
        print(environment_report(problems, args), flush=True)
        sys.exit(f"Still missing after installation, or --no-install: {listing}")
    dirs = wheel_dirs(args.wheels)
    if not dirs or not any(path.glob("*.whl") for path in dirs):
        sys.exit(
            f"Missing: {listing}. No wheels in {args.wheels or [str(DEFAULT_WHEELS)]}: run `bash "
            "scripts/build_gpu_wheels.sh` on a machine with PyPI access and bring scripts/wheels/ along (--wheels)."
        )
    print(f"[gpu_step_profile] installing from {[str(d) for d in dirs]}: {listing}", flush=True)
    installed = args.install_mode != "target" and install_into_environment(problems, dirs)
    if not installed and args.install_mode != "env":
        print(f"[gpu_step_profile] installing every wheel with --no-deps into {TARGET_SITE}", flush=True)
        installed = install_into_target(dirs)
    if not installed:
        sys.exit(
            f"pip install failed. Build the wheels for this machine's Python ({platform.python_version()}) with "
            f"`bash scripts/build_gpu_wheels.sh --python-version {sys.version_info.major}."
            f"{sys.version_info.minor}` (add --h200-image for this workplace's H200 image) on a machine with "
            "PyPI access, bring scripts/wheels/ along, and look above for the package pip lacked."
        )
    importlib.invalidate_caches()
    os.environ[REEXEC_ENV] = "1"
    os.execv(sys.executable, [sys.executable, *sys.argv])


def environment_report(problems, args) -> str:
    lines = [f"python {platform.python_version()} ({sys.executable})"]
    for name in ("torch", "numpy", "pandas", "pyarrow", "huggingface-hub", "fsspec", "packaging", "safetensors"):
        lines.append(f"  {name}: {installed_version(name)}")
    for _, distribution, requirement in REQUIREMENTS:
        lines.append(f"  {distribution}: {installed_version(distribution)} (need {requirement})")
    source = "repository " + str(REPO) if use_repository_masa_trl() else installed_version("masa-trl")
    lines.append(f"  masa_trl: {source}")
    dirs = wheel_dirs(args.wheels)
    wheels = sorted(p.name for d in dirs for p in d.glob("*.whl"))
    lines.append(f"wheel directories {[str(d) for d in dirs]}: {len(wheels)} wheels")
    lines.append("to install: " + (", ".join(f"{r} ({why})" for r, why in problems) if problems else "nothing"))
    return "\n".join(lines)


def versions() -> dict:
    return {name: installed_version(name) for name in VERSIONS_REPORTED}


def git_state() -> dict:
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {}


# ---------------------------------------------------------------------------------------------------- model
def build_tokenizer(vocab_size: int, model_max_length: int) -> tuple:
    """A byte-level BPE tokenizer (masa_trl.tiny_model's) of `vocab_size` tokens: trained, then padded with fillers.

    It is trained, with Qwen's one token per digit, on masa_trl.tiny_model's math corpus plus the solution and meta
    prompts of other sum problems, so that the prompts tokenise to about as many tokens as with a real tokenizer
    (the meta prompt to ~200 tokens); the trainer stops merging at a few hundred tokens, and the rest of the
    vocabulary is filler words, which the random model samples like any other token. Returns the tokenizer and
    the number of learned tokens.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from masa_trl.arithmetic import make_arithmetic_dataset
    from masa_trl.templates import meta_prompt, solution_prompt
    from masa_trl.tiny_model import build_tiny_tokenizer, generate_corpus

    trained = min(vocab_size, 4096)
    if trained < 300:
        raise ValueError(f"--vocab-size {vocab_size} is below the byte-level alphabet and special tokens (~300).")
    corpus = generate_corpus()
    for problem in make_arithmetic_dataset(300, seed=12345, terms=(2, 5))["problem"]:
        for messages in (solution_prompt(problem), meta_prompt(problem)):
            corpus += [message["content"] for message in messages]
    tokenizer = build_tiny_tokenizer(
        vocab_size=trained, model_max_length=model_max_length, corpus=corpus, individual_digits=True
    )
    learned = len(tokenizer)
    if learned >= vocab_size:
        return tokenizer, learned
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    next_id, counter = max(vocab.values()) + 1, 0
    while next_id < vocab_size:
        number, word = counter, ""
        while True:  # bijective base 26: a, ..., z, aa, ab, ...
            number, digit = divmod(number, 26)
            word = chr(ord("a") + digit) + word
            if number == 0:
                break
            number -= 1
        counter += 1
        token = "\u0120" + word  # byte-level "Ġ": a leading space
        if token not in vocab:
            vocab[token] = next_id
            next_id += 1
    padded = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        chat_template=tokenizer.chat_template,
        model_max_length=model_max_length,
        padding_side="left",
    )
    if len(padded) != vocab_size:
        raise RuntimeError(f"padded tokenizer has {len(padded)} tokens, expected {vocab_size}")
    return padded, learned


def build_model(args, path: Path, device: str, dtype) -> dict:
    """Save a random-init Qwen3 of the layout and its tokenizer to `path`; returns a description of it."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    start = time.perf_counter()
    tokenizer, learned = build_tokenizer(args.vocab_size, args.max_position_embeddings)
    tokenizer.save_pretrained(path)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_kv_heads,
        head_dim=args.head_dim,
        max_position_embeddings=args.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    model.to(dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    parameters = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "parameters": parameters,
        "non_embedding_parameters": parameters - embedding,
        "vocab_size": len(tokenizer),
        "trained_tokenizer_tokens": learned,
        "config": {key: getattr(config, key) for key in CONFIG_KEYS},
        "build_s": time.perf_counter() - start,
    }


def make_dataset(args):
    from masa_trl.arithmetic import make_arithmetic_dataset
    from masa_trl.templates import solution_prompt

    # Twice the prompts the run consumes, so that no sampler runs short.
    dataset = make_arithmetic_dataset(2 * args.prompts * (args.steps + args.warmup), seed=args.seed, terms=(2, 5))
    return dataset.map(lambda example: {"prompt": solution_prompt(example["problem"])})


# ---------------------------------------------------------------------------------------------------- one method
def training_args(method: str, args, output_dir: str, device: str):
    import dataclasses

    from trl import GRPOConfig

    from masa_trl import MASAConfig

    rows = args.prompts * args.generations
    values = dict(
        output_dir=output_dir,
        use_cpu=device == "cpu",
        bf16=args.dtype == "bfloat16",
        model_init_kwargs={"dtype": args.dtype, "attn_implementation": args.attn_implementation},
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=rows // args.micro_batch,
        gradient_checkpointing=args.gradient_checkpointing,
        num_generations=args.generations,
        max_completion_length=args.max_completion_length,
        temperature=1.0,
        top_p=1.0,
        use_vllm=False,
        max_steps=args.steps + args.warmup,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        beta=0.0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        shuffle_dataset=False,
        dataloader_num_workers=0,
    )
    if method == "grpo":
        fields = {field.name for field in dataclasses.fields(GRPOConfig)}
        return GRPOConfig(**{k: v for k, v in values.items() if k in fields})
    values.update(
        num_meta_generations=args.meta_generations,
        meta_min_length=min(128, args.max_completion_length),
        efficient_start_step=0 if method == "masa_efficient" else None,
    )
    if method in JOINT_GENERATION:
        if "joint_generation" not in {field.name for field in dataclasses.fields(MASAConfig)}:
            raise SystemExit(f"{method} needs MASAConfig.joint_generation, which this masa_trl does not have.")
        values["joint_generation"] = JOINT_GENERATION[method]
    return MASAConfig(**values)


class GenerationProbe:
    """Times TRL's generation calls (`_generate_single_turn`) and counts the tokens they return."""

    def __init__(self, synchronize):
        self.synchronize = synchronize
        self.reset()

    def reset(self):
        self.seconds, self.calls, self.rows, self.tokens, self.longest = 0.0, 0, 0, 0, 0

    def wrap(self, obj, name: str) -> None:
        original = getattr(obj, name)

        def timed(*args, **kwargs):
            self.synchronize()
            start = time.perf_counter()
            completion_ids, logprobs = original(*args, **kwargs)
            self.synchronize()
            self.seconds += time.perf_counter() - start
            self.calls += 1
            self.rows += len(completion_ids)
            lengths = [len(ids) for ids in completion_ids]
            self.tokens += sum(lengths)
            self.longest = max([self.longest, *lengths])
            return completion_ids, logprobs

        setattr(obj, name, timed)


def run_method(method: str, args, model_path: Path, dataset, device: str) -> dict:
    import torch
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOTrainer

    from masa_trl import MASAGRPOTrainer
    from masa_trl.math_reward import math_accuracy_reward

    cuda = device == "cuda"

    def synchronize():
        if cuda:
            torch.cuda.synchronize()

    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() if cuda else None
    start = time.perf_counter()
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix=f"gpu-step-profile-{method}-") as output_dir:
        trainer_class = GRPOTrainer if method == "grpo" else MASAGRPOTrainer
        trainer = trainer_class(
            model=str(model_path),
            reward_funcs=[math_accuracy_reward],
            args=training_args(method, args, output_dir, device),
            train_dataset=dataset,
        )
        synchronize()
        setup_s = time.perf_counter() - start
        setup_peak = torch.cuda.max_memory_allocated() if cuda else None
        setup_reserved = torch.cuda.max_memory_reserved() if cuda else None
        probe = GenerationProbe(synchronize)
        # GRPO generates through `_generate_single_turn`; MASA's rollout generator calls the same TRL function
        # through `_trl_generate` (MASA's own `_generate_single_turn` only hands TRL the rows generated before).
        probe.wrap(trainer, "_generate_single_turn" if method == "grpo" else "_trl_generate")

        class StepClock(TrainerCallback):
            def on_step_begin(self, train_args, state, control, **kwargs):
                synchronize()
                probe.reset()
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                self.start = time.perf_counter()

            def on_step_end(self, train_args, state, control, **kwargs):
                synchronize()
                record = {
                    "step": state.global_step,
                    "warmup": state.global_step <= args.warmup,
                    "step_s": time.perf_counter() - self.start,
                    "generation_s": probe.seconds,
                    "generation_calls": probe.calls,
                    "generated_rows": probe.rows,
                    "generated_tokens": probe.tokens,
                    "longest_completion": probe.longest,
                }
                if cuda:
                    record["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
                    record["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
                records.append(record)
                memory = f", peak {record['peak_allocated_bytes'] / 2**30:.2f} GiB" if cuda else ""
                print(
                    f"[gpu_step_profile] {LABELS[method]} step {state.global_step}"
                    f"{' (warm-up)' if record['warmup'] else ''}: {record['step_s']:.2f} s, generation "
                    f"{probe.seconds:.2f} s ({probe.calls} call(s), {probe.tokens} tokens){memory}",
                    flush=True,
                )

        trainer.remove_callback(PrinterCallback)  # the per-step log dicts: this script prints its own line
        trainer.add_callback(StepClock())
        trainer.train()
        logged: dict[int, dict] = {}
        for entry in trainer.state.log_history:  # the step's metrics, then (last step) the run's summary
            if "step" in entry:
                logged.setdefault(entry["step"], {}).update(entry)
        num_parameters = sum(p.numel() for p in trainer.model.parameters())
        joint_generation = getattr(trainer.args, "joint_generation", None)
        trainer.accelerator.free_memory()
        del trainer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    for record in records:
        entry = logged.get(record["step"], {})
        record["trainer"] = {k: entry[k] for k in TRAINER_KEYS if isinstance(entry.get(k), (int, float))}
        if method == "grpo":
            record["solution_tokens"], record["meta_tokens"] = record["generated_tokens"], 0
        else:
            record["solution_tokens"] = record["trainer"].get("efficient/solution_tokens")
            record["meta_tokens"] = record["trainer"].get("efficient/meta_tokens")
        record["rest_s"] = record["step_s"] - record["generation_s"]
        record["tokens_per_s"] = (
            record["generated_tokens"] / record["generation_s"] if record["generation_s"] else None
        )
    result = {
        "method": method,
        "label": LABELS[method],
        "setup_s": setup_s,
        "wall_s": time.perf_counter() - start,
        "num_parameters": num_parameters,
        "joint_generation_setting": joint_generation,  # None: MASAConfig's per-backend default
        "steps": records,
    }
    if cuda:
        step_peaks = [r["peak_allocated_bytes"] for r in records]
        result |= {
            "memory_allocated_at_start_bytes": baseline,
            "setup_peak_allocated_bytes": setup_peak,
            "peak_allocated_bytes": max([setup_peak, *step_peaks]),
            "peak_reserved_bytes": max([setup_reserved, *(r["peak_reserved_bytes"] for r in records)]),
        }
    result["summary"] = summarise(records)
    return result


def summarise(records: list[dict]) -> dict:
    """Means over the measured (non-warm-up) steps; the last step if every step was a warm-up."""
    measured = [r for r in records if not r["warmup"]] or records[-1:]
    keys = [
        "step_s",
        "generation_s",
        "rest_s",
        "generated_tokens",
        "meta_tokens",
        "solution_tokens",
        "tokens_per_s",
        "peak_allocated_bytes",
        "peak_reserved_bytes",
    ]
    summary = {"measured_steps": len(measured), "warmup_only": all(r["warmup"] for r in measured)}
    for key in keys:
        values = [r[key] for r in measured if r.get(key) is not None]
        summary[key] = statistics.fmean(values) if values else None
    for key in TRAINER_KEYS:
        values = [r["trainer"][key] for r in measured if key in r["trainer"]]
        summary[f"trainer:{key}"] = statistics.fmean(values) if values else None
    if len(measured) > 1:
        summary["step_s_spread"] = [min(r["step_s"] for r in measured), max(r["step_s"] for r in measured)]
    return summary


# ---------------------------------------------------------------------------------------------------- report
def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.{digits}f}"
    return f"{int(value)}" if isinstance(value, (int, float)) else str(value)


def gib(value) -> str:
    return "-" if value is None else f"{value / 2**30:.2f}"


def markdown(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def ratio(a, b):
    return None if a is None or not b else a / b


def report(result: dict) -> str:
    env, settings, model = result["environment"], result["settings"], result["model"]
    methods = result["methods"]
    v = env["versions"]
    config = model["config"]
    device = (
        f"- device: {env['device_name']} (CUDA {env['cuda']}), torch {v['torch']}, transformers "
        f"{v['transformers']}, trl {v['trl']}, accelerate {v['accelerate']}, Python {env['python']}"
        + (f"; peak RSS {env['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in env else "")
    )
    layout = (
        f"- model: random-init Qwen3, hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, "
        f"{config['num_attention_heads']} heads / {config['num_key_value_heads']} KV, head_dim {config['head_dim']}, "
        f"intermediate {config['intermediate_size']}, vocab {model['vocab_size']} (tied), "
        f"{model['parameters'] / 1e6:.1f}M parameters ({model['non_embedding_parameters'] / 1e6:.1f}M non-embedding), "
        f"{settings['dtype']}, {settings['attn_implementation']}, gradient checkpointing "
        f"{'on' if settings['gradient_checkpointing'] else 'off'}"
    )
    rollouts = (
        f"- rollouts per step: {settings['prompts']} prompts x G={settings['generations']} solution (+ M="
        f"{settings['meta_generations']} meta for MASA), max_completion_length {settings['max_completion_length']}; "
        f"micro-batch {settings['micro_batch']} solution rows x {settings['gradient_accumulation_steps']} "
        "accumulation steps = one optimizer step per generation batch; transformers backend (use_vllm=False)"
    )
    steps = (
        f"- {settings['warmup']} warm-up + {settings['steps']} measured steps per method; table: means over the "
        "measured steps; generation = TRL's `_generate_single_turn` calls, timed here (MASA: both kinds)"
    )
    lines = ["## MASA vs GRPO step profile", "", device, layout, rollouts, steps, ""]
    headers = [
        "method",
        "step s",
        "generation s",
        "trainer gen s",
        "rest s",
        "meta tokens",
        "solution tokens",
        "gen tokens/s",
        "peak alloc GiB (step)",
        "peak alloc GiB (method)",
        "peak reserved GiB",
        "setup s",
    ]
    rows = []
    for run in methods.values():
        s = run["summary"]
        rows.append(
            [
                run["label"] + (" (warm-up only)" if s["warmup_only"] else ""),
                fmt(s["step_s"]),
                fmt(s["generation_s"]),
                fmt(s["trainer:timing/generate_s"]),
                fmt(s["rest_s"]),
                fmt(s["meta_tokens"], 0),
                fmt(s["solution_tokens"], 0),
                fmt(s["tokens_per_s"], 0),
                gib(s["peak_allocated_bytes"]),
                gib(run.get("peak_allocated_bytes")),
                gib(run.get("peak_reserved_bytes")),
                fmt(run["setup_s"], 1),
            ]
        )
    lines.append(markdown(headers, rows))
    if "grpo" in methods:
        base = methods["grpo"]["summary"]
        ratio_rows = []
        for name, run in methods.items():
            if name == "grpo":
                continue
            s = run["summary"]
            ratio_rows.append(
                [
                    f"{run['label']} / GRPO",
                    fmt(ratio(s["step_s"], base["step_s"])),
                    fmt(ratio(s["generation_s"], base["generation_s"])),
                    fmt(ratio(s["rest_s"], base["rest_s"])),
                    fmt(ratio(s["generated_tokens"], base["generated_tokens"])),
                    fmt(ratio(s["tokens_per_s"], base["tokens_per_s"])),
                    fmt(ratio(s["peak_allocated_bytes"], base["peak_allocated_bytes"])),
                ]
            )
        if ratio_rows:
            lines += [
                "",
                markdown(
                    ["ratio", "step", "generation", "rest", "generated tokens", "tokens/s", "peak alloc (step)"],
                    ratio_rows,
                ),
            ]
    step_rows = []
    for run in methods.values():
        for r in run["steps"]:
            t = r["trainer"]
            trainer_gen = ", ".join(
                f"{k} {fmt(t[f'timing/generate_{k}_s'])}"
                for k in ("joint", "meta", "solution")
                if f"timing/generate_{k}_s" in t
            )
            step_rows.append(
                [
                    run["label"],
                    r["step"],
                    "yes" if r["warmup"] else "",
                    fmt(r["step_s"]),
                    fmt(r["generation_s"]),
                    r["generation_calls"],
                    fmt(t.get("timing/generate_s")),
                    trainer_gen or "-",
                    fmt(r["meta_tokens"], 0),
                    fmt(r["solution_tokens"], 0),
                    r["longest_completion"],
                    fmt(r["tokens_per_s"], 0),
                    fmt(t.get("step_time")),
                    gib(r.get("peak_allocated_bytes")),
                ]
            )
    lines += [
        "",
        "Per step (trainer gen s: `timing/generate_s`; by call: `timing/generate_{joint,meta,solution}_s`):",
        "",
        markdown(
            [
                "method",
                "step",
                "warm-up",
                "step s",
                "generation s",
                "calls",
                "trainer gen s",
                "trainer gen by call s",
                "meta tokens",
                "solution tokens",
                "longest",
                "tokens/s",
                "TRL step_time s",
                "peak alloc GiB",
            ],
            step_rows,
        ),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny layout and sizes (2 steps): a CPU smoke test")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["grpo", "masa"])
    parser.add_argument("--prompts", type=int, help="prompts per step (default 8; --tiny 2)")
    parser.add_argument("--num-generations", dest="generations", type=int, help="G (default 8; --tiny 4)")
    parser.add_argument("--num-meta-generations", dest="meta_generations", type=int, help="M (default 8; --tiny 4)")
    parser.add_argument("--max-completion-length", type=int, help="default 512; --tiny 32")
    parser.add_argument("--steps", type=int, help="measured steps per method (default 3; --tiny 1)")
    parser.add_argument("--warmup", type=int, help="warm-up steps per method, not summarised (default 1)")
    parser.add_argument(
        "--micro-batch",
        type=int,
        help="solution rows per micro-batch (per_device_train_batch_size); default min(8, P x G)",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TRL's GRPOConfig default, which the recipes keep (default: on)",
    )
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], help="default bfloat16 (cpu: float32)")
    parser.add_argument("--attn-implementation", default="sdpa")
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    layout = parser.add_argument_group("model layout (default Qwen3-0.6B's; --tiny: a tiny one)")
    for name in LAYOUTS["qwen3-0.6b"]:
        layout.add_argument("--" + name.replace("_", "-"), type=int)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON file (default %(default)s)")
    parser.add_argument(
        "--wheels",
        action="append",
        help=f"wheel directory for missing packages, repeatable (default {DEFAULT_WHEELS})",
    )
    parser.add_argument("--no-install", action="store_true", help="fail instead of installing missing packages")
    parser.add_argument(
        "--install-mode",
        choices=["auto", "env", "target"],
        default="auto",
        help="env: pip install into this environment, resolving dependencies against it; target: every wheel of "
        "--wheels with --no-deps into a temporary site directory on PYTHONPATH; auto (default): env, then target",
    )
    parser.add_argument("--check-env", action="store_true", help="print what is installed and what would be; exit")
    args = parser.parse_args(argv)

    kind = "tiny" if args.tiny else "qwen3-0.6b"
    for name, value in (LAYOUTS[kind] | RUN_DEFAULTS[kind]).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.micro_batch is None:
        args.micro_batch = min(8, args.prompts * args.generations)
    if args.dtype is None:
        args.dtype = "float32" if args.device == "cpu" else "bfloat16"
    rows = args.prompts * args.generations
    if rows % args.micro_batch:
        parser.error(f"prompts x G = {rows} is not a multiple of --micro-batch {args.micro_batch}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    ensure_environment(args)  # may install packages and start this script again

    import torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available; run with --device cpu (and --tiny) for a smoke test.")
    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    environment = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions(),
        "masa_trl": str(REPO) if use_repository_masa_trl() else installed_version("masa-trl"),
        "git": git_state(),
        "torch_threads": torch.get_num_threads(),
    }
    settings = {
        key: getattr(args, key)
        for key in (
            "methods",
            "prompts",
            "generations",
            "meta_generations",
            "max_completion_length",
            "steps",
            "warmup",
            "micro_batch",
            "gradient_checkpointing",
            "dtype",
            "attn_implementation",
            "learning_rate",
            "seed",
            "tiny",
        )
    } | {"gradient_accumulation_steps": args.prompts * args.generations // args.micro_batch}
    print(f"[gpu_step_profile] {environment['device_name']}, torch {environment['versions']['torch']}", flush=True)
    result = {"environment": environment, "settings": settings, "methods": {}, "complete": False}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-step-profile-model-") as model_dir:
        result["model"] = build_model(args, Path(model_dir), device, dtype)
        print(f"[gpu_step_profile] model: {result['model']['parameters'] / 1e6:.1f}M parameters", flush=True)
        dataset = make_dataset(args)
        for method in args.methods:
            print(f"[gpu_step_profile] {LABELS[method]}: {args.warmup} + {args.steps} steps", flush=True)
            result["methods"][method] = run_method(method, args, Path(model_dir), dataset, device)
            result["wall_s"] = time.perf_counter() - started
            output.write_text(json.dumps(result, indent=1))  # after each method: a cut-short run keeps its results
    if device == "cpu":
        import resource

        environment["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["wall_s"] = time.perf_counter() - started
    result["complete"] = True
    output.write_text(json.dumps(result, indent=1))
    print()
    print(report(result))
    print(f"\nJSON: {output} (total {result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
