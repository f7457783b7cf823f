"""Where each rollout of a MASA generation batch lives: rows, prompts and processes.

TRL hands every process an equal, contiguous share of the gathered solution rows, prompt-major, G per prompt; a
prompt's group may straddle two processes. MASA lays its meta rows out the same way over the gathered batch, M per
prompt, so each process holds `rows * M / G` of them. Everything that maps a row to its prompt reads this object.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class RolloutLayout:
    """The row layout of one generation batch on one process.

    Args:
        num_local_rows: solution rows on this process (TRL's local generation batch).
        group_size: solution rollouts per prompt (G; `num_generations`, or `num_generations_eval` in evaluation).
        meta_group_size: meta rollouts per prompt (M).
        process_index, num_processes: this process and the world size.
    """

    num_local_rows: int
    group_size: int
    meta_group_size: int
    process_index: int = 0
    num_processes: int = 1

    def __post_init__(self):
        total = self.num_local_rows * self.num_processes
        if total % self.group_size:
            raise ValueError(
                f"{total} solution rows do not split into groups of {self.group_size}: the generation batch must be "
                "a multiple of the group size."
            )
        if (self.num_local_rows * self.meta_group_size) % self.group_size:
            raise ValueError(
                f"{self.num_local_rows} local rows x {self.meta_group_size} meta rollouts per prompt / "
                f"{self.group_size} is not a whole number of meta rows per process."
            )

    @property
    def num_prompts(self) -> int:
        """Prompts of the whole (gathered) batch."""
        return self.num_local_rows * self.num_processes // self.group_size

    @property
    def first_row(self) -> int:
        """Global index of this process's first solution row."""
        return self.process_index * self.num_local_rows

    def prompt_of_row(self, local_row: int) -> int:
        """Global prompt index of a local solution row."""
        return (self.first_row + local_row) // self.group_size

    def solution_prompts(self) -> list[int]:
        """Global prompt index of every local solution row, in order."""
        return [self.prompt_of_row(i) for i in range(self.num_local_rows)]

    def group_starts(self) -> list[int]:
        """Local solution rows that open a prompt's group (one per prompt whose first row is here)."""
        return [i for i in range(self.num_local_rows) if (self.first_row + i) % self.group_size == 0]

    @property
    def num_local_meta_rows(self) -> int:
        return self.num_local_rows * self.meta_group_size // self.group_size

    def meta_prompts(self) -> list[int]:
        """Global prompt index of every local meta row, in order: an equal contiguous share, M per prompt."""
        start = self.process_index * self.num_local_meta_rows
        return [row // self.meta_group_size for row in range(start, start + self.num_local_meta_rows)]

    def per_prompt(self, gathered: list, group: int) -> list[list]:
        """Split a gathered prompt-major list of `group` entries per prompt into one list per prompt."""
        if len(gathered) != self.num_prompts * group:
            raise ValueError(f"expected {self.num_prompts} x {group} gathered entries, got {len(gathered)}")
        return [gathered[g * group : (g + 1) * group] for g in range(self.num_prompts)]
