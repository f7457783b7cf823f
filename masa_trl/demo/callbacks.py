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
    """Stop training once `max_seconds` have passed since `train()` began (None: no limit).

    A fixed step count with this guard keeps a run's length predictable on a slow or busy machine, without making a
    normal run depend on the machine's speed. `clock`, if given, returns the seconds to compare instead of the wall
    time since the start, e.g. [`HeldoutCurveCallback.train_seconds`] to leave evaluations out.
    """

    def __init__(self, max_seconds: float | None, clock: Callable[[], float] | None = None):
        self.max_seconds = max_seconds
        self.clock = clock
        self.stopped_at: int | None = None
        self._start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = self.clock() if self.clock is not None else time.perf_counter() - self._start
        if self.max_seconds is not None and elapsed > self.max_seconds:
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


def fastest_thread_count(candidates: tuple[int, ...] | None = None, repeats: int = 30) -> int:
    """The torch thread count, among `candidates` (default 1 and every core), that runs a model-sized op fastest now.

    On a 2-core machine shared with other processes, two torch threads can be 3-10x *slower* than one: a parallel
    region waits for whichever of its threads the OS has descheduled (measured: a warm-start step took 5 s with 2
    threads and 0.5-0.8 s with 1 while other test suites ran). On an idle machine both threads win. A micro-benchmark
    of the demo model's matmul shapes (about 0.1 s) tells which case holds. The thread count is left as it was found.
    """
    import os

    import torch

    candidates = candidates or tuple(sorted({1, os.cpu_count() or 1}))
    previous = torch.get_num_threads()
    a, w_in, w_out = torch.randn(512, 128), torch.randn(128, 512), torch.randn(512, 128)
    best, best_seconds = previous, math.inf
    try:
        for threads in candidates:
            torch.set_num_threads(threads)
            torch.nn.functional.silu(a @ w_in) @ w_out  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                torch.nn.functional.silu(a @ w_in) @ w_out
            seconds = time.perf_counter() - start
            if seconds < best_seconds:
                best, best_seconds = threads, seconds
    finally:
        torch.set_num_threads(previous)
    return best


class AdaptiveThreadsCallback(TrainerCallback):
    """Re-pick the torch thread count with [`fastest_thread_count`] every `every` steps (and at the start).

    The machine's load changes during a run (other jobs start and stop); the choice follows it. `history` records
    (step, threads) whenever the choice changes.
    """

    def __init__(self, every: int = 20):
        self.every = every
        self.history: list[tuple[int, int]] = []

    def _pick(self, step: int) -> None:
        import torch

        threads = fastest_thread_count()
        if threads != torch.get_num_threads() or not self.history:
            torch.set_num_threads(threads)
            self.history.append((step, threads))

    def on_train_begin(self, args, state, control, **kwargs):
        self._pick(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self._pick(state.global_step)
