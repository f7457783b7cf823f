"""Scripted rollouts for trainer tests: generation replaced by fixed completions, so rewards are hand-computable."""

import itertools
import json

from datasets import Dataset

from masa_trl import MASAConfig


def cpu_config(output_dir, **overrides) -> MASAConfig:
    """A small MASA configuration for CPU tests; keyword arguments override the defaults."""
    values = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        num_generations=4,
        num_meta_generations=2,
        max_completion_length=64,
        meta_min_length=8,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
    )
    values.update(overrides)
    return MASAConfig(**values)


def meta_text(pass_rate: int, length: int, notions: list[str], reasoning: str = "thinking") -> str:
    payload = {"math_notion": notions, "pass_rate": pass_rate, "solution_length": length}
    return f"<meta>{reasoning}</meta>\n{json.dumps(payload)}"


def masa_dataset(problems: dict[str, str]) -> Dataset:
    return Dataset.from_dict({"problem": list(problems), "answer": list(problems.values())})


def script_generation(trainer, generation):
    """Replace the trainer's calls into TRL's generation (`MASAGRPOTrainer._trl_generate`) by `generation`.

    MASA generates every row through `_trl_generate`, TRL's `_generate_single_turn`; patching it on the instance
    scripts this trainer only. Returns `generation`.
    """
    trainer._trl_generate = lambda prompt_ids, num_generations: generation(prompt_ids, None, {}, num_generations)
    return generation


class ScriptedGeneration:
    """Stands in for `GRPOTrainer._generate_single_turn`.

    `script` maps (kind, problem marker) to a list of completion texts, with kind "solution" or "meta"; rows of that
    prompt and kind receive them in order, cycling. A row's prompt is recognised by decoding its token ids.
    `rank_script`, if given, maps a process index to such a script instead (for distributed tests).
    """

    def __init__(self, tokenizer, script: dict, eos: bool = True):
        self.tokenizer = tokenizer
        self.script = script
        self.eos = eos
        self.cycles = {key: itertools.cycle(texts) for key, texts in script.items()}
        self.calls = []

    def __call__(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        completions = []
        for ids in prompt_ids:
            prompt = self.tokenizer.decode(ids)
            kind = "meta" if "</meta>" in prompt else "solution"
            key = next((k for k in self.script if k[0] == kind and k[1] in prompt), None)
            if key is None:
                raise KeyError(f"no scripted {kind} completion for prompt {prompt!r}")
            text = next(self.cycles[key])
            completion = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            completions.append(completion + ([self.tokenizer.eos_token_id] if self.eos else []))
        self.calls.append((len(prompt_ids), num_generations))
        return completions, None
