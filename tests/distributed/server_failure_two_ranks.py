"""Run by tests/test_distributed.py on two gloo ranks: MASA's server-mode generator over TRL's real server path.

TRL's `VLLMGeneration.generate` (server mode) runs unchanged; only the HTTP client is a stand-in. First a step that
succeeds (each rank must get back its own rows), then one where the server hangs past `vllm_request_timeout`: every
rank must raise the error naming the server, none may be left waiting in a collective.
"""

import json
import sys
import time
from pathlib import Path

from accelerate import Accelerator
from trl.generation.vllm_generation import VLLMGeneration

from masa_trl.rollout_generation import META, SOLUTION, RowRequest, ServerGenerator


class StandInClient:
    base_url = "http://stand-in-server:8000"

    def __init__(self):
        self.hang = False

    def generate(self, prompts, n=1, max_tokens=16, **kwargs):
        if self.hang:
            time.sleep(600)
        ids = [[p[0] + s] * 2 for p in prompts for s in range(n)]
        return {"prompt_ids": prompts, "completion_ids": ids, "logprobs": [[[-0.5]] * 2 for _ in ids]}


def server_generation(accelerator) -> VLLMGeneration:
    """TRL's VLLMGeneration in server mode, without the constructor that would connect to a server."""
    generation = object.__new__(VLLMGeneration)
    settings = dict(
        mode="server",
        accelerator=accelerator,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        max_completion_length=8,
        logprobs=0,
        structured_outputs_regex=None,
        generation_kwargs={},
        enable_sleep_mode=False,
        _llm_weights_sleeping=False,
        vllm_client=StandInClient(),
    )
    for name, value in settings.items():
        setattr(generation, name, value)
    return generation


def main(output_file: str) -> None:
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    vllm = server_generation(accelerator)

    def trl_generate(prompt_ids, n):
        _, completion_ids, logprobs, _ = vllm.generate(prompts=prompt_ids, images=None, num_generations=n)
        return completion_ids, logprobs

    generator = ServerGenerator(trl_generate, 0, vllm, accelerator, timeout=3.0)
    # Prompt 0 straddles the ranks (G = 2); rank 1 also holds two meta rows of prompt 0 (M = 2).
    rows = (
        [RowRequest([10], SOLUTION, 0), RowRequest([20], SOLUTION, 1), RowRequest([20], SOLUTION, 1)]
        if rank == 0
        else [RowRequest([10], SOLUTION, 0), RowRequest([30], META, 0), RowRequest([30], META, 0)]
    )
    result = {"rank": rank, "completions": generator.generate(rows).completion_ids}
    vllm.vllm_client.hang = True
    start = time.monotonic()
    try:
        generator.generate(rows)
        result["error"] = None
    except RuntimeError as error:
        result["error"] = str(error)
    result["seconds"] = time.monotonic() - start
    Path(f"{output_file}.rank{rank}").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
