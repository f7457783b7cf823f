from dataclasses import dataclass, field

from trl import GRPOConfig

from masa_trl.dynamic_sampling import DynamicSamplingArguments


@dataclass
class MASAConfig(DynamicSamplingArguments, GRPOConfig):
    r"""
    Configuration class for the [`MASAGRPOTrainer`].

    Extends [`~trl.GRPOConfig`] with the settings of MASA (Meta-Awareness via Self-Alignment,
    [arXiv 2510.03259](https://huggingface.co/papers/2510.03259)). For every prompt the policy writes
    `num_generations` (G) solution rollouts and `num_meta_generations` (M) meta rollouts, which predict the notions a
    solution needs, its pass rate and its length; the meta rollouts are rewarded by their agreement with the statistics
    of the same prompt's solution rollouts, and both kinds of rollout are trained in the same GRPO update.

    Parameters:
        > Parameters that control the meta rollouts

        num_meta_generations (`int`, *optional*, defaults to `8`):
            Number of meta rollouts per prompt (M). It may differ from `num_generations` (G). The paper uses 16.
        pass_rate_scale (`int`, *optional*, defaults to `8`):
            The meta prompt asks for `pass_rate` as an integer from 0 to this value (S in the paper's appendix A).
        meta_min_length (`int`, *optional*, defaults to `128`):
            Lower end of the `solution_length` range written in the meta prompt. The upper end is
            `max_completion_length`. A meta output whose `solution_length` lies outside this range is unparsable: it
            earns no meta reward, counts in `meta/parse_failure_rate` and never sets a cutoff.
        meta_system_prompt (`str` or `None`, *optional*, defaults to `"You are a helpful assistant."`):
            System message of the meta prompt; `None` or `""` omits it.
        meta_prompt_template (`str` or `None`, *optional*, defaults to `None`):
            Override of the meta prompt template (see `masa_trl.templates.META_PROMPT_TEMPLATE`); it must contain
            `{problem}` and may use `{pass_rate_scale}`, `{min_length}` and `{max_length}`.

        > Parameters that control the meta reward

        difficulty_base (`float`, *optional*, defaults to `0.01`):
            Base b of the difficulty reward `b ** |predicted pass rate - true pass rate|`, in (0, 1).
        meta_reward_weights (`list[float]` or `None`, *optional*, defaults to `None`):
            Weights of the meta reward functions. `None` gives each of them `1 / number of functions`, so that the
            meta reward is the mean of its components, as in the paper.
        correctness_reward (`str` or `None`, *optional*, defaults to `None`):
            Name of the reward function that decides which solution rollouts are correct (the meta reward's notion
            of "correct"). `None` takes the first reward function. A format or length reward added to
            `reward_funcs` therefore never makes a wrong answer count as correct.
        correctness_threshold (`float`, *optional*, defaults to `1.0`):
            A solution rollout is correct when the correctness reward is at least this value.

        > Parameters that control the update

        meta_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the meta rows in the policy loss, applied by scaling their advantages (every TRL policy loss
            is positively homogeneous in the advantage, so this is an exact weighting of the meta objective).

        > Parameters that control DAPO's dynamic sampling (used by `masa_trl.MASADAPOTrainer`)

        dynamic_sampling (`bool`, *optional*, defaults to `False`):
            DAPO's dynamic sampling: train only on prompts whose correctness reward is not constant over their G
            solution rollouts (their meta rollouts are kept or dropped with them), generating more batches until the
            training batch is full. Needs `masa_trl.MASADAPOTrainer`.
        dynamic_sampling_max_rounds (`int`, *optional*, defaults to `10`):
            Generation batches per training step at most (verl's `max_num_gen_batches`, positive here).
        dynamic_sampling_partial (`bool`, *optional*, defaults to `False`):
            After the last round, train on the kept prompts padded with filtered ones and warn, instead of failing.
        dynamic_sampling_reward (`str` or `None`, *optional*, defaults to `None`):
            Reward function whose group spread decides; `None`: `correctness_reward`.

        > Parameters that control generation

        joint_generation (`bool` or `None`, *optional*, defaults to `None`):
            Generate a step's meta and solution rollouts in one generation call, as the paper's parallel rollouts, so
            that meta generation hides in the solutions' long tail: one `LLM.generate` in vLLM colocate mode, all
            requests in flight at once in server mode, one padded `generate` on transformers. `False` makes one call
            per kind. `None` (default): one call on vLLM, whose engine schedules each request on its own, and one call
            per kind on transformers, whose padded `generate` pads every row to the longest prompt (the meta prompt is
            several times longer than a solution prompt) and runs every row to the longest completion
            (`benchmarks/bench_step_cost.py` measured it 1.7x slower in one call; README, "Generation"). MASA-efficient generates the meta rollouts first by design (the plan needs them),
            from `efficient_start_step` on.
        vllm_request_timeout (`float`, *optional*, defaults to `3600.0`):
            vLLM server mode: seconds the main process waits for the server's answers to one generation call. A
            request that fails or takes longer stops training on every process with an error naming the server.
        vllm_max_num_seqs (`int` or `None`, *optional*, defaults to `None`):
            vLLM colocate mode: sequences each process's engine runs at once (`max_num_seqs`). `None` (default): a
            seat for every row of MASA's largest generation call (solution plus meta rows in one call), so that the
            meta rows do not wait for the solutions; TRL alone would seat the solution rows only. On vLLM's CPU build
            more seats than a call's rows made that call slower (README, "Generation"), so a run made mostly of
            MASA-efficient's separate calls may want fewer.

        > Parameters that control the expert behaviour-cloning pass (paper section 3.3)

        use_expert_bc (`bool`, *optional*, defaults to `False`):
            Collect expert meta-trajectories (per prompt, the best meta rollout with the true pass rate and length
            substituted) and clone them with a cross-entropy pass whenever `expert_buffer_size` have been collected.
        expert_buffer_size (`int`, *optional*, defaults to `128`):
            N_expert: the number of experts, over all processes, that triggers a behaviour-cloning pass.
        expert_bc_steps (`int`, *optional*, defaults to `5`):
            Gradient steps per behaviour-cloning pass, each over the whole buffer.
        expert_bc_learning_rate (`float`, *optional*, defaults to `1e-6`):
            Learning rate of the behaviour-cloning steps. It is set on the optimizer for the pass only; the RL
            learning-rate schedule is neither used nor advanced.
        expert_bc_batch_size (`int`, *optional*, defaults to `8`):
            Per-device micro-batch size of the behaviour-cloning pass (gradients accumulate over micro-batches).
        expert_bc_max_grad_norm (`float`, *optional*, defaults to `1.0`):
            Gradient clipping of the behaviour-cloning steps.
        expert_min_notion_reward (`float`, *optional*, defaults to `0.2`):
            A prompt's best meta rollout becomes an expert only if its notion reward reaches this value.

        > Parameters that control MASA-efficient (paper section 3.3)

        efficient_start_step (`int` or `None`, *optional*, defaults to `None`):
            k: from this generation step on, meta rollouts are generated first and drive predictive gating, early
            cutoff and notion hints for the solution rollouts. `None` keeps plain MASA. The paper uses 120. Steps are
            counted in generation batches (the paper's RL steps), not optimizer steps: with `steps_per_generation`
            larger than `gradient_accumulation_steps`, one generation batch feeds several optimizer steps.
        gating_std_threshold (`float`, *optional*, defaults to `0.1`):
            A prompt is gated when the population standard deviation of its parsed predicted pass rates, as
            fractions `pass_rate / pass_rate_scale` (0..1), is below this value and their mean is within half a step
            of all (trivial) or none (unsolvable) correct. The fraction scale is the one the authors' reward code uses;
            on the 0..S integer scale the paper's 0.1 would need unanimity.
        cutoff_factor (`float` or `None`, *optional*, defaults to `2.0`):
            Solution rollouts stop at this factor times the median predicted length (at most
            `max_completion_length`). `None` disables the cutoff.
        notion_hint (`bool`, *optional*, defaults to `True`):
            Append predicted notions to the solution prompt as a hint: the (at most `notion_hint_max_notions`)
            notions named by the most parsable meta rollouts of the prompt, one hint shared by all G solution
            rollouts of the prompt. Gated prompts that are rolled out anyway (audits) get no hint.
        notion_hint_max_notions (`int`, *optional*, defaults to `3`):
            Largest number of notions in a hint.
        gating_audit_fraction (`float`, *optional*, defaults to `0.05`):
            Share of gated prompts whose solution rollouts are still generated, without training on them, to measure
            the gate's precision.
        gating_precision_floor (`float`, *optional*, defaults to `0.9`):
            Gating pauses (with a warning) while the audited precision is below this value, and resumes when it
            recovers.
        gating_audit_window (`int`, *optional*, defaults to `64`):
            Number of most recent audited prompts over which the precision is measured.
    """

    num_meta_generations: int = field(
        default=8,
        metadata={"help": "Number of meta rollouts per prompt (M); may differ from num_generations (G)."},
    )
    pass_rate_scale: int = field(
        default=8,
        metadata={"help": "The meta prompt asks for pass_rate as an integer from 0 to this value."},
    )
    meta_min_length: int = field(
        default=128,
        metadata={
            "help": "Lower end of the solution_length range in the meta prompt (upper end: max_completion_length)."
        },
    )
    meta_system_prompt: str | None = field(
        default="You are a helpful assistant.",
        metadata={"help": "System message of the meta prompt; empty to omit it."},
    )
    meta_prompt_template: str | None = field(
        default=None,
        metadata={"help": "Override of the meta prompt template; must contain {problem}."},
    )
    difficulty_base: float = field(
        default=0.01,
        metadata={"help": "Base b of the difficulty reward b ** |pred - true|, in (0, 1)."},
    )
    meta_reward_weights: list[float] | None = field(
        default=None,
        metadata={"help": "Weights of the meta reward functions; default: equal weights summing to 1 (the mean)."},
    )
    correctness_reward: str | None = field(
        default=None,
        metadata={"help": "Name of the reward function that decides correctness; default: the first one."},
    )
    correctness_threshold: float = field(
        default=1.0,
        metadata={"help": "A solution rollout is correct when the correctness reward is at least this value."},
    )
    meta_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the meta rows in the policy loss (scales their advantages)."},
    )

    joint_generation: bool | None = field(
        default=None,
        metadata={
            "help": "Generate the meta and solution rollouts of a step in one generation call (None: on vLLM, not "
            "on transformers, where one padded call measured slower)."
        },
    )
    vllm_request_timeout: float = field(
        default=3600.0,
        metadata={"help": "vLLM server mode: seconds to wait for the answers to one generation call."},
    )
    vllm_max_num_seqs: int | None = field(
        default=None,
        metadata={
            "help": "vLLM colocate: sequences the engine runs at once (None: every row of MASA's largest generation "
            "call)."
        },
    )

    use_expert_bc: bool = field(
        default=False,
        metadata={
            "help": "Clone expert meta-trajectories with a cross-entropy pass every expert_buffer_size experts."
        },
    )
    expert_buffer_size: int = field(
        default=128,
        metadata={"help": "N_expert: experts (over all processes) that trigger a behaviour-cloning pass."},
    )
    expert_bc_steps: int = field(
        default=5,
        metadata={"help": "Gradient steps per behaviour-cloning pass, each over the whole buffer."},
    )
    expert_bc_learning_rate: float = field(
        default=1e-6,
        metadata={"help": "Learning rate of the behaviour-cloning steps (the RL schedule is left untouched)."},
    )
    expert_bc_batch_size: int = field(
        default=8,
        metadata={"help": "Per-device micro-batch size of the behaviour-cloning pass."},
    )
    expert_bc_max_grad_norm: float = field(
        default=1.0,
        metadata={"help": "Gradient clipping of the behaviour-cloning steps."},
    )
    expert_min_notion_reward: float = field(
        default=0.2,
        metadata={"help": "Minimum notion reward of a prompt's best meta rollout for it to become an expert."},
    )

    efficient_start_step: int | None = field(
        default=None,
        metadata={
            "help": "k: from this generation step (paper's RL step), meta rollouts come first and gate/cut/hint the "
            "solutions (paper: 120)."
        },
    )
    gating_std_threshold: float = field(
        default=0.1,
        metadata={
            "help": "Gate a prompt when the std of its predicted pass rates as fractions (pass_rate / S, 0..1) is "
            "below this and they say all or none."
        },
    )
    cutoff_factor: float | None = field(
        default=2.0,
        metadata={"help": "Cap solution rollouts at this factor times the median predicted length; None disables."},
    )
    notion_hint: bool = field(
        default=True,
        metadata={
            "help": "Append the most-named predicted notions to the solution prompt as a hint (MASA-efficient)."
        },
    )
    notion_hint_max_notions: int = field(
        default=3,
        metadata={"help": "Largest number of notions in a MASA-efficient notion hint."},
    )
    gating_audit_fraction: float = field(
        default=0.05,
        metadata={"help": "Share of gated prompts still rolled out (not trained on) to measure gating precision."},
    )
    gating_precision_floor: float = field(
        default=0.9,
        metadata={"help": "Pause gating while the audited precision is below this value."},
    )
    gating_audit_window: int = field(
        default=64,
        metadata={"help": "Number of recent audited prompts over which the gating precision is measured."},
    )

    @property
    def generates_jointly(self) -> bool:
        """Whether a step's meta and solution rollouts share one generation call: `joint_generation`, with its default
        (`None`) resolved per backend (one call on vLLM, one call per kind on transformers)."""
        return self.use_vllm if self.joint_generation is None else self.joint_generation

    def __post_init__(self):
        super().__post_init__()  # resolves generation_batch_size and steps_per_generation first
        self._check_dynamic_sampling()

        if self.num_meta_generations < 2:
            raise ValueError(
                f"MASA needs at least 2 meta rollouts per prompt for group-relative advantages, got "
                f"num_meta_generations={self.num_meta_generations}. Set --num_meta_generations 2 or more."
            )
        if self.pass_rate_scale < 1:
            raise ValueError(f"pass_rate_scale must be a positive integer, got {self.pass_rate_scale}.")
        if not 0.0 < self.difficulty_base < 1.0:
            raise ValueError(f"difficulty_base must lie in (0, 1), got {self.difficulty_base} (the paper uses 0.01).")
        if self.meta_loss_weight < 0:
            raise ValueError(f"meta_loss_weight must be >= 0, got {self.meta_loss_weight}.")
        if self.vllm_max_num_seqs is not None and self.vllm_max_num_seqs < 1:
            raise ValueError(
                f"vllm_max_num_seqs must be a positive number of sequences, got {self.vllm_max_num_seqs}. Leave it "
                "unset to seat every row of a generation call."
            )
        if not self.vllm_request_timeout > 0:
            raise ValueError(
                f"vllm_request_timeout must be a positive number of seconds, got {self.vllm_request_timeout}."
            )
        if self.use_expert_bc:
            for name in ("expert_buffer_size", "expert_bc_steps", "expert_bc_batch_size"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
            if self.expert_bc_learning_rate <= 0:
                raise ValueError(
                    f"expert_bc_learning_rate must be positive, got {self.expert_bc_learning_rate}: the pass would "
                    "not move the weights. Set --expert_bc_learning_rate or --use_expert_bc false."
                )
        if self.efficient_start_step is not None:
            if self.efficient_start_step < 0:
                raise ValueError(f"efficient_start_step must be >= 0 or None, got {self.efficient_start_step}.")
            if self.cutoff_factor is not None and self.cutoff_factor <= 0:
                raise ValueError(f"cutoff_factor must be positive or None, got {self.cutoff_factor}.")
            if not 0.0 <= self.gating_audit_fraction <= 1.0:
                raise ValueError(f"gating_audit_fraction must lie in [0, 1], got {self.gating_audit_fraction}.")
            if self.gating_audit_window < 1:
                raise ValueError(f"gating_audit_window must be positive, got {self.gating_audit_window}.")
            if self.notion_hint and self.notion_hint_max_notions < 1:
                raise ValueError(
                    f"notion_hint_max_notions must be positive, got {self.notion_hint_max_notions}. Set "
                    "--notion_hint false to turn the hint off."
                )
            if self.use_vllm and self.vllm_mode == "colocate" and self.vllm_tensor_parallel_size > 1:
                # TRL gathers the prompts of a tensor-parallel group before generating, so per-row caps and skipped
                # rows would no longer line up with the requests, and a rank with nothing to generate would skip the
                # group's gather and hang the others.
                raise ValueError(
                    "MASA-efficient (efficient_start_step) plans each process's rows separately, which vLLM colocate "
                    f"mode supports only with vllm_tensor_parallel_size=1 (got {self.vllm_tensor_parallel_size}). Use "
                    "--vllm_tensor_parallel_size 1 (data-parallel colocated engines) or --vllm_mode server."
                )
        if self.meta_min_length > self.max_completion_length:
            raise ValueError(
                f"meta_min_length ({self.meta_min_length}) exceeds max_completion_length "
                f"({self.max_completion_length}): the meta prompt would ask for an empty length range. Lower "
                "--meta_min_length or raise --max_completion_length."
            )

        # Meta rows are spread evenly over the processes like the solution rows, M per prompt: every process must get
        # a whole number of them, and the joined rows must split evenly into steps_per_generation micro-batches
        # (TRL silently drops a remainder, which would lose rollouts).
        local_rows = self.per_device_train_batch_size * self.steps_per_generation
        meta_rows = local_rows * self.num_meta_generations
        if meta_rows % self.num_generations != 0:
            raise ValueError(
                f"Each process generates per_device_train_batch_size * steps_per_generation = {local_rows} solution "
                f"rollouts, i.e. {local_rows}/{self.num_generations} prompts, times num_meta_generations="
                f"{self.num_meta_generations} meta rollouts = {meta_rows / self.num_generations:g}, which is not a whole "
                "number. Make per_device_train_batch_size * steps_per_generation * num_meta_generations a multiple of "
                "num_generations."
            )
        total_rows = local_rows + meta_rows // self.num_generations
        if total_rows % self.steps_per_generation != 0:
            raise ValueError(
                f"Each process holds {local_rows} solution + {meta_rows // self.num_generations} meta rows per "
                f"generation = {total_rows}, which does not split evenly into steps_per_generation="
                f"{self.steps_per_generation} micro-batches (the remainder would be dropped). Change "
                "num_meta_generations, per_device_train_batch_size or gradient_accumulation_steps."
            )
        num_generations_eval = self.num_generations_eval or self.num_generations
        if self.eval_strategy != "no" and (
            self.per_device_eval_batch_size * self.num_meta_generations % num_generations_eval != 0
        ):
            raise ValueError(
                f"per_device_eval_batch_size={self.per_device_eval_batch_size} times num_meta_generations="
                f"{self.num_meta_generations} is not a multiple of the evaluation group size {num_generations_eval}, so "
                "the evaluation meta rows cannot be spread evenly over the processes. Change "
                "per_device_eval_batch_size."
            )
