#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels that scripts/gpu_step_profile.py installs offline on a GPU
# machine that has torch but not TRL and the rest, and build a wheel of masa_trl itself.
#
#   bash scripts/build_gpu_wheels.sh --h200-image           # only what this workplace's H200 image lacks (~3 MiB)
#   bash scripts/build_gpu_wheels.sh                        # the whole closure (~120 MiB: over the device carry limit)
#   bash scripts/build_gpu_wheels.sh --python-version 3.11 --exclude "numpy pyarrow"
#
# Then, on the GPU machine, from the repository root (carry scripts/wheels):
#   python3 scripts/gpu_step_profile.py --wheels scripts/wheels ...
# which runs `pip install --no-index --find-links scripts/wheels ...` for whatever it finds missing or too old.
#
# The package set is the dependency closure, read from the installed metadata of this repository's .venv (markers
# evaluated for the target Python), of what the profile imports: transformers, trl, accelerate, datasets, math-verify,
# latex2sympy2-extended, lemminflect, tokenizers. torch is not followed (the GPU machine has its own build), so torch,
# triton, nvidia-* and networkx are left out; torch's small dependencies that other packages also need (filelock,
# fsspec, jinja2, sympy, typing-extensions, ...) are included, because the versions the GPU machine has may be too old
# for them. An excluded package is assumed present with its own dependencies, which are then not followed. Each
# package is pinned to the version installed in .venv (the versions the test suite runs with) and downloaded with
# --no-deps as a binary wheel for the target platform; a package that .venv lacks (needed only on another Python
# version) is downloaded unpinned, with a warning. masa_trl's own wheel is built with --no-deps (its other
# install_requires, wandb and evaluate, are not needed by the profile; the profile imports masa_trl from the
# repository when it runs from a checkout, and installs this wheel only otherwise).
#
# Options:
#   --python-version X.Y   target CPython version (default 3.12: python3 on this workplace's H200 image is 3.12.3,
#                          see /work/.library/device/KINDS.md; masa_trl needs >= 3.11)
#   --h200-image           leave out the packages that image already has (the list in KINDS.md, 2026-11-17), except a
#                          few small pure-Python ones whose installed version may not fit (fsspec: datasets needs
#                          <= 2026.9.0); what is left is trl, datasets, math-verify and their missing dependencies
#   --exclude "A B"        (more) distributions to leave out, e.g. ones the GPU machine is known to have
#   --dest DIR             wheel directory (default scripts/wheels, gitignored); emptied of *.whl first
#   --platform TAG         a platform tag, repeatable (default: manylinux 2_28, 2_27, 2_24, 2_17/2014, 2_12/2010, 1;
#                          pip matches manylinux_2_N tags exactly)
#   --python PATH          interpreter whose metadata gives the versions (default .venv/bin/python)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$REPO/.venv/bin/python"
PYVER="3.12"
DEST="$REPO/scripts/wheels"
EXCLUDE=""
H200_IMAGE=0
PLATFORMS=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --python-version) PYVER="$2"; shift 2 ;;
        --dest) DEST="$2"; shift 2 ;;
        --platform) PLATFORMS+=("$2"); shift 2 ;;
        --exclude) EXCLUDE="$EXCLUDE $2"; shift 2 ;;
        --h200-image) H200_IMAGE=1; shift ;;
        --python) PYTHON="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ ${#PLATFORMS[@]} -eq 0 ]]; then
    PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
        manylinux2014_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux1_x86_64)
fi
if [[ ! "$PYVER" =~ ^3\.[0-9]+$ ]]; then
    echo "--python-version must look like 3.11, got $PYVER" >&2
    exit 2
fi
ABI="cp${PYVER/./}"

# The pinned requirement lines, one per distribution.
mapfile -t REQUIREMENTS < <("$PYTHON" - "$PYVER" "$EXCLUDE" "$H200_IMAGE" <<'EOF'
import importlib.metadata as md
import sys

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pyver, exclude, h200_image = sys.argv[1], {canonicalize_name(n) for n in sys.argv[2].split()}, sys.argv[3] == "1"
ROOTS = ["transformers", "trl", "accelerate", "datasets", "math-verify", "latex2sympy2-extended", "lemminflect",
         "tokenizers"]
NOT_FOLLOWED = {"torch", "triton"}  # the GPU machine's own torch build, and what only it needs
# Python packages of this workplace's H200 image ('cuda'), from /work/.library/device/KINDS.md (read 2026-11-17).
H200_IMAGE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp"""
# Small pure-Python ones kept even then: the image's version may fall outside a new package's range (datasets pins
# fsspec <= 2026.9.0), and pip takes them from the wheel directory only if it must.
H200_KEEP = {"fsspec", "filelock", "typing-extensions", "packaging", "tqdm", "psutil"}
if h200_image:
    exclude |= {canonicalize_name(name) for name in H200_IMAGE.split()} - H200_KEEP
environment = default_environment() | {
    "python_version": pyver, "python_full_version": f"{pyver}.0", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
}

found, unpinned, stack = {}, set(), [(canonicalize_name(name), ()) for name in ROOTS]
seen = set()
while stack:
    name, extras = stack.pop()
    if (name, extras) in seen or name in NOT_FOLLOWED or name.startswith("nvidia-") or name in exclude:
        continue  # an excluded package is taken as present, with its own dependencies
    seen.add((name, extras))
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        unpinned.add(name)
        continue
    found[name] = dist.version
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not any(
            requirement.marker.evaluate(environment | {"extra": extra}) for extra in ("", *extras)
        ):
            continue
        stack.append((canonicalize_name(requirement.name), tuple(sorted(requirement.extras))))

for name in sorted(found):
    print(f"{name}=={found[name]}")
for name in sorted(unpinned):
    print(f"warning: {name} is needed on Python {pyver} but not installed in this environment; downloading the "
          "newest wheel", file=sys.stderr)
    print(name)
EOF
)

if [[ ${#REQUIREMENTS[@]} -eq 0 ]]; then
    echo "no requirements resolved from $PYTHON" >&2
    exit 1
fi

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
PLATFORM_FLAGS=()
for platform in "${PLATFORMS[@]}"; do
    PLATFORM_FLAGS+=(--platform "$platform")
done

echo "Downloading ${#REQUIREMENTS[@]} wheels for CPython $PYVER (${PLATFORMS[*]}) into $DEST:"
printf '  %s\n' "${REQUIREMENTS[@]}"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: "${PLATFORM_FLAGS[@]}" \
    --python-version "$PYVER" --implementation cp --abi "$ABI" --abi abi3 --abi none \
    -d "$DEST" "${REQUIREMENTS[@]}"

echo "Building the masa_trl wheel"
HAD_BUILD_DIR=0
[[ -e "$REPO/build" ]] && HAD_BUILD_DIR=1
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DEST" "$REPO"
[[ $HAD_BUILD_DIR -eq 0 ]] && rm -rf "$REPO/build"  # setuptools' in-tree build folder, if this made it

echo
echo "Wheels in $DEST (largest first):"
ls -S -l "$DEST"/*.whl | awk '{printf "  %8.1f MiB  %s\n", $5 / 1048576, $NF}' | sed "s|$DEST/||"
COUNT=$(ls "$DEST"/*.whl | wc -l)
TOTAL=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
awk -v n="$COUNT" -v b="$TOTAL" 'BEGIN { printf "Total: %d wheels, %.1f MiB\n", n, b / 1048576 }'
