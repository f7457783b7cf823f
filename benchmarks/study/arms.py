"""The study's arms: which trainer, with which configuration on top of the common settings.

Main arms follow the paper's comparison (table 1 and 4); the ablations follow fig. 6 (one meta reward component at a
time) and take MASA-efficient apart (no hints, gating only, cutoff only). Every arm runs on the same warm start, the
same held-out problems and, for a given seed, the same prompt stream.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arm:
    """One arm of the study.

    Attributes:
        name: key in results and cache paths.
        label: the name in tables and plots.
        trainer: `"grpo"` (`trl.GRPOTrainer`), `"dapo"` ([`masa_trl.DAPOTrainer`]), `"masa"`
            ([`masa_trl.MASAGRPOTrainer`]) or `"masa_dapo"` ([`masa_trl.MASADAPOTrainer`]).
        overrides: configuration fields on top of the study's common ones (`efficient_start_step=True` means the
            study's k).
        group: `"main"` or `"ablation"`.
        parent: the arm an ablation is compared with.
        description: one line for the report.
    """

    name: str
    label: str
    trainer: str
    overrides: dict = field(default_factory=dict)
    group: str = "main"
    parent: str | None = None
    description: str = ""

    @property
    def is_masa(self) -> bool:
        return self.trainer in ("masa", "masa_dapo")


_BC = {"use_expert_bc": True}
# After dynamic_sampling_max_rounds generation batches without enough informative prompts, train on a batch padded with
# filtered ones (and warn) rather than stop the run: a study must not die on an unlucky step.
_DYNAMIC = {"dynamic_sampling": True, "dynamic_sampling_partial": True}
_EFFICIENT = {**_BC, "efficient_start_step": True}

ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("grpo", "GRPO", "grpo", description="trl.GRPOTrainer, solution rollouts only"),
        Arm("masa", "MASA", "masa", description="meta and solution rollouts in one GRPO update, no expert BC"),
        Arm("masa_bc", "MASA + BC", "masa", _BC, description="MASA with expert behaviour cloning"),
        Arm(
            "masa_efficient",
            "MASA-efficient",
            "masa",
            _EFFICIENT,
            description="MASA + BC; from step k gating, early cutoff and notion hints",
        ),
        Arm("dapo", "DAPO", "dapo", _DYNAMIC, description="GRPO with DAPO's dynamic sampling"),
        Arm(
            "masa_dapo",
            "MASA + DAPO",
            "masa_dapo",
            {**_BC, **_DYNAMIC},
            description="MASA + BC with dynamic sampling (a prompt is kept or dropped with its meta rows)",
        ),
        Arm(
            "masa_length_only",
            "MASA, length reward only",
            "masa",
            {"meta_reward_weights": [1.0, 0.0, 0.0]},
            "ablation",
            "masa",
            "meta reward = length alignment only",
        ),
        Arm(
            "masa_difficulty_only",
            "MASA, difficulty reward only",
            "masa",
            {"meta_reward_weights": [0.0, 1.0, 0.0]},
            "ablation",
            "masa",
            "meta reward = difficulty alignment only",
        ),
        Arm(
            "masa_notion_only",
            "MASA, notion reward only",
            "masa",
            {"meta_reward_weights": [0.0, 0.0, 1.0]},
            "ablation",
            "masa",
            "meta reward = notion alignment only",
        ),
        Arm(
            "efficient_no_hint",
            "MASA-efficient without hints",
            "masa",
            {**_EFFICIENT, "notion_hint": False},
            "ablation",
            "masa_efficient",
            "gating and cutoff, no notion hints",
        ),
        Arm(
            "gating_only",
            "gating only",
            "masa",
            {**_EFFICIENT, "notion_hint": False, "cutoff_factor": None},
            "ablation",
            "masa_efficient",
            "predictive gating, no cutoff, no hints",
        ),
        Arm(
            "cutoff_only",
            "cutoff only",
            "masa",
            # A threshold of 0 never gates: the spread of the predictions is never below it.
            {**_EFFICIENT, "notion_hint": False, "gating_std_threshold": 0.0},
            "ablation",
            "masa_efficient",
            "early cutoff, no gating, no hints",
        ),
    )
}

MAIN_ARMS = ("grpo", "masa", "masa_bc", "masa_efficient", "dapo", "masa_dapo")
QUICK_ARMS = ("grpo", "masa", "masa_efficient")
ABLATIONS = tuple(name for name, arm in ARMS.items() if arm.group == "ablation")
# Arms that get the extra seeds when the budget allows.
EXTRA_SEED_ARMS = ("grpo", "masa", "masa_efficient")
