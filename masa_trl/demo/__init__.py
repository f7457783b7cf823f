"""The laptop-scale MASA experiment behind `make demo` (`recipes/masa_demo_cpu.py`).

- [`task`](masa_trl.demo.task): the sums task family with a difficulty knob, its prompts and targets, and the
  0.54M-parameter model with a digit-level tokenizer;
- [`warm_start`](masa_trl.demo.warm_start): a short supervised warm start, cached by a hash of its settings;
- [`heldout`](masa_trl.demo.heldout): held-out evaluation of meta-awareness (predicted vs re-measured pass rate and
  length) and a callback that runs it inside `MASAGRPOTrainer.train()`;
- [`plots`](masa_trl.demo.plots): the PNG figures.

Everything here is plain code with arguments: no module-level state, nothing downloaded.
"""
