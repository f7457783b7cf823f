"""Trainer callbacks of the demo: held-out curves during `train()`, a time guard, and a one-line progress bar."""

import math
import time
from collections.abc import Callable

from transformers import TrainerCallback


class HeldoutCurveCallback(TrainerCallback):
    """Evaluate the policy on held-out problems every `eval_steps` optimizer steps and record the curve.

    `evaluate(model)` returns a [`~masa_trl.demo.heldout.HeldoutEvaluation`]. Each point of [`history`] holds the
    step, the training seconds so far (evaluation time excluded), and the evaluation summary. The training logs
    (meta reward components, gating metrics, ...) are kept in [`train_logs`], one dict per logging step. Pass
    `initial` to record an evaluation made before training as step 0 instead of evaluating again.
    """

    def __init__(self, evaluate: Callable, eval_steps: int, *, initial=None, on_point: Callable | None = None):
        if eval_steps < 1:
            raise ValueError(f"eval_steps must be positive, got {eval_steps}.")
        self.evaluate = evaluate
        self.eval_steps = eval_steps
        self.initial = initial
        self.on_point = on_point
        self.history: list[dict] = []
        self.evaluations: dict[int, object] = {}
        self.train_logs: list[dict] = []
        self.eval_seconds = 0.0
        self._start = None

    def train_seconds(self) -> float:
        return time.perf_counter() - self._start - self.eval_seconds if self._start is not None else 0.0

    def _record(self, step: int, evaluation) -> None:
        self.evaluations[step] = evaluation
        point = {"step": step, "train_seconds": round(self.train_seconds(), 2), **evaluation.summary()}
        self.history.append(point)
        if self.on_point is not None:
            self.on_point(point)

    def _evaluate(self, step: int, model) -> None:
        start = time.perf_counter()
        evaluation = self.evaluate(model)
        self.eval_seconds += time.perf_counter() - start
        self._record(step, evaluation)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._start = time.perf_counter()
        if not self.history:
            if self.initial is not None:
                self._record(state.global_step, self.initial)
            else:
                self._evaluate(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.eval_steps == 0 and state.global_step not in self.evaluations:
            self._evaluate(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.global_step not in self.evaluations:
            self._evaluate(state.global_step, model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.train_logs.append(
                {"step": state.global_step, "train_seconds": round(self.train_seconds(), 2), **logs}
            )


class TimeLimitCallback(TrainerCallback):
    """Stop training once `max_seconds` of wall time have passed since `train()` began (None: no limit).

    A fixed step count with this guard keeps a run's length predictable on a slow or busy machine, without making a
    normal run depend on the machine's speed.
    """

    def __init__(self, max_seconds: float | None):
        self.max_seconds = max_seconds
        self.stopped_at: int | None = None
        self._start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.max_seconds is not None and time.perf_counter() - self._start > self.max_seconds:
            control.should_training_stop = True
            self.stopped_at = state.global_step


class CompactProgressCallback(TrainerCallback):
    """A single tqdm bar over the optimizer steps, its postfix showing chosen logged values and the last held-out
    Pearson; it replaces transformers' progress bar, which prints every log dict in full.
    """

    def __init__(self, keys: dict[str, str] | None = None, desc: str = "RL"):
        self.keys = keys or {"meta/reward": "meta_r", "reward": "sol_r"}
        self.desc = desc
        self.bar = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, desc=self.desc, unit="step", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            for key, short in self.keys.items():
                value = logs.get(key)
                if isinstance(value, float) and math.isfinite(value):
                    self.postfix[short] = f"{value:.3f}"
            self.bar.set_postfix(self.postfix, refresh=False)

    def show(self, name: str, value: float) -> None:
        if self.bar is not None:
            self.postfix[name] = f"{value:.2f}"
            self.bar.set_postfix(self.postfix)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
