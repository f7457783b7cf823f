"""The MASA section of a trained model's card: the method, the paper, the MASA settings and the final meta metrics.

TRL writes the model card (`README.md` in `output_dir`) whenever a checkpoint is saved and before `push_to_hub`
uploads the folder; [`~masa_trl.MASAGRPOTrainer.create_model_card`] then calls [`add_masa_section`], which inserts
the section below (or replaces it, so repeated saves keep one copy with the latest metrics).

For a LoRA (PEFT) run the section also names the base model and the adapter: TRL's card names the base model only
when it is a Hub id, and says nothing of the adapter, so a reader could not tell that the repository holds adapter
weights to load on top of a base model.
"""

import json
import math
from pathlib import Path


PAPER_ID = "2510.03259"
PAPER_TITLE = "Meta-Awareness Enhances Reasoning Models: Self-Alignment Reinforcement Learning"
PAPER_URL = f"https://huggingface.co/papers/{PAPER_ID}"
CITATION = f"""@misc{{masa2025,
    title         = {{{{{PAPER_TITLE}}}}},
    year          = 2025,
    eprint        = {{{PAPER_ID}}},
    archivePrefix = {{arXiv}},
    primaryClass  = {{cs.CL}},
    url           = {{https://arxiv.org/abs/{PAPER_ID}}}
}}"""

_START, _END = "<!-- masa-trl:start -->", "<!-- masa-trl:end -->"

# (config field, what it means), in the order of the card's table; fields a config does not have are skipped.
CONFIG_ROWS = [
    ("num_generations", "solution rollouts per prompt (G)"),
    ("num_meta_generations", "meta rollouts per prompt (M)"),
    ("generation_batch_size", "solution rollouts per generation, over all processes"),
    ("max_completion_length", "maximum completion length (tokens)"),
    ("pass_rate_scale", "pass rate asked as an integer from 0 to"),
    ("meta_min_length", "lower end of the predicted solution length"),
    ("difficulty_base", "difficulty reward base b"),
    ("meta_reward_weights", "meta reward weights (None: the mean of length, difficulty, notion)"),
    ("meta_loss_weight", "weight of the meta rows in the loss"),
    ("correctness_threshold", "a solution is correct when its correctness reward reaches"),
    ("use_expert_bc", "expert behaviour cloning"),
    ("expert_buffer_size", "expert buffer size N_expert"),
    ("expert_bc_steps", "behaviour-cloning gradient steps per pass"),
    ("expert_bc_learning_rate", "behaviour-cloning learning rate"),
    ("efficient_start_step", "MASA-efficient: gating and cutoff from step k"),
    ("gating_std_threshold", "MASA-efficient: gate when the std of predicted pass rates is below"),
    ("cutoff_factor", "MASA-efficient: cut a rollout at this times the predicted length"),
    ("notion_hint", "MASA-efficient: predicted notions added to the solution prompt"),
    ("loss_type", "policy loss"),
    ("learning_rate", "learning rate"),
    ("epsilon", "clip range, low"),
    ("epsilon_high", "clip range, high"),
    ("beta", "KL coefficient"),
    ("temperature", "sampling temperature"),
    ("top_p", "sampling top-p"),
]
_EXPERT_ONLY = {"expert_buffer_size", "expert_bc_steps", "expert_bc_learning_rate"}
_EFFICIENT_ONLY = {"gating_std_threshold", "cutoff_factor", "notion_hint"}

# Headline meta-alignment metrics, in the card's order; any other `meta/rewards/*/mean` follows them.
HEADLINE_METRICS = [
    ("meta/reward", "meta reward (mean of the alignment rewards)"),
    ("meta/pass_rate_correlation", "correlation of predicted and true pass rate across prompts"),
    ("meta/pass_rate_abs_error", "mean absolute error of the predicted pass rate"),
    ("meta/pred_pass_rate", "mean predicted pass rate"),
    ("meta/true_pass_rate", "mean true pass rate"),
    ("meta/pred_length", "mean predicted solution length (tokens)"),
    ("meta/true_correct_length", "mean length of correct solutions (tokens)"),
    ("meta/parse_failure_rate", "share of meta outputs that could not be parsed"),
    ("meta/num_notions", "mean number of predicted notions"),
    ("reward", "solution reward"),
]


def final_meta_metrics(log_history: list[dict]) -> tuple[int | None, dict[str, float]]:
    """The step and the meta metrics of the last training log entry that has them (`(None, {})` if none does)."""
    for entry in reversed(log_history):
        if "meta/reward" in entry:
            names = [name for name, _ in HEADLINE_METRICS if name in entry]
            names += sorted(k for k in entry if k.startswith("meta/rewards/") and k.endswith("/mean"))
            return entry.get("step"), {name: entry[name] for name in names}
    return None, {}


def _format(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def adapter_info(model=None, folder: str | Path | None = None) -> dict | None:
    """The PEFT adapter config (`adapter_config.json`'s content) of a run, or `None` for a full fine-tune.

    With `model` (the trainer's model), its active adapter's config if it is a PEFT model, else `None`. Without it,
    `adapter_config.json` in `folder` (the card's folder, where `save_model` writes the adapter before a push), unless
    the folder holds full model weights too (then the adapter file is left over from an earlier run).
    """
    if model is not None:
        from accelerate.utils import is_peft_model

        if not is_peft_model(model):
            return None
        config = model.peft_config[getattr(model, "active_adapter", "default")]
        return json.loads(json.dumps(config.to_dict(), default=lambda value: sorted(value)))  # sets -> lists
    if folder is None:
        return None
    folder = Path(folder)
    path = folder / "adapter_config.json"
    if not path.exists() or any(folder.glob("model*.safetensors")) or (folder / "pytorch_model.bin").exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def adapter_section(adapter: dict, repo: str) -> list[str]:
    """The lines of the card's "Base model and adapter" subsection for a PEFT adapter config `adapter`."""
    base = adapter.get("base_model_name_or_path") or "unknown (not recorded in adapter_config.json)"
    kind = "LoRA" if adapter.get("peft_type", "LORA") == "LORA" else adapter["peft_type"]
    details = []
    if adapter.get("r") is not None:
        details.append(f"rank r = {adapter['r']}")
    if adapter.get("lora_alpha") is not None:
        details.append(f"alpha = {adapter['lora_alpha']}")
    targets = adapter.get("target_modules")
    if isinstance(targets, str):
        details.append(f"target modules matching `{targets}`")
    elif targets:
        details.append("target modules " + ", ".join(f"`{name}`" for name in sorted(targets)))
    return [
        "### Base model and adapter",
        "",
        f"Base model: `{base}`. This repository holds a **{kind} adapter** (PEFT), not full model weights"
        + (f" ({', '.join(details)})" if details else "")
        + ". MASA trained the adapter on top of the frozen base model: the GRPO update over solution and meta "
        "rollouts and, with expert behaviour cloning, the cloning passes changed the adapter weights only. Load the "
        "base model with the adapter (or merge it into the base with `merge_and_unload()`):",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "",
        f'model = AutoPeftModelForCausalLM.from_pretrained("{repo}")  # {base}, then the adapter',
        "```",
        "",
    ]


def masa_card_section(args, log_history: list[dict], adapter: dict | None = None) -> str:
    """The markdown of the MASA section for a run with config `args` and Trainer log history `log_history`;
    `adapter` (see [`adapter_info`]) adds the base model and the adapter of a LoRA run."""
    values = args.to_dict()
    lines = [
        _START,
        "## MASA",
        "",
        (
            f"This model was trained with **MASA** (Meta-Awareness via Self-Alignment), the method of [{PAPER_TITLE}]"
            f"({PAPER_URL}) (arXiv {PAPER_ID}), using `MASAGRPOTrainer` from masa-trl, a subclass of TRL's "
            "`GRPOTrainer`. For every training prompt the policy wrote G solution rollouts and, in parallel, M meta "
            "rollouts predicting the notions a solution needs, its pass rate and its length; the meta rollouts were "
            "rewarded by their agreement with the statistics of the same prompt's solution rollouts, and both kinds of "
            "rollout were trained in the same GRPO update."
        ),
        "",
    ]
    if adapter is not None:
        lines += adapter_section(adapter, args.hub_model_id or args.output_dir)
    lines += [
        "### MASA configuration",
        "",
        "| setting | value | meaning |",
        "|---|---|---|",
    ]
    for name, meaning in CONFIG_ROWS:
        if name not in values:
            continue
        if name in _EXPERT_ONLY and not values.get("use_expert_bc"):
            continue
        if name in _EFFICIENT_ONLY and values.get("efficient_start_step") is None:
            continue
        lines.append(f"| `{name}` | {_format(values[name])} | {meaning} |")

    step, metrics = final_meta_metrics(log_history)
    lines += ["", "### Final meta-alignment metrics", ""]
    if metrics:
        meanings = dict(HEADLINE_METRICS)
        lines += [f"Logged at training step {step}.", "", "| metric | value | meaning |", "|---|---|---|"]
        for name, value in metrics.items():
            # `meta/rewards/<function>/mean` for a meta reward function that is not a headline metric
            meaning = meanings[name] if name in meanings else f"mean {name.split('/')[2].replace('_', ' ')}"
            value = "n/a" if value is None else _format(value)  # NaN is logged as None: undefined this step
            lines.append(f"| `{name}` | {value} | {meaning} |")
    else:
        lines.append("No meta metrics were logged yet.")
    lines += ["", "### Cite MASA", "", "```bibtex", CITATION, "```", _END]
    return "\n".join(lines) + "\n"


def add_masa_section(readme_path: str | Path, args, log_history: list[dict], model=None) -> None:
    """Insert the MASA section into the model card at `readme_path`, before "## Citations" if present,
    replacing a MASA section written earlier. `model` (the trained model) tells a LoRA run from a full fine-tune;
    without it, an `adapter_config.json` next to the card does (see [`adapter_info`])."""
    path = Path(readme_path)
    text = path.read_text(encoding="utf-8")
    if _START in text and _END in text:
        head, rest = text.split(_START, 1)
        text = head + rest.split(_END, 1)[1].lstrip("\n")
    adapter = adapter_info(model) if model is not None else adapter_info(folder=path.parent)
    section = masa_card_section(args, log_history, adapter=adapter)
    anchor = "## Citations"
    if anchor in text:
        head, tail = text.split(anchor, 1)
        text = f"{head}{section}\n{anchor}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{section}"
    path.write_text(text, encoding="utf-8")
