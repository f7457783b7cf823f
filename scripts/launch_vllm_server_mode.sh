#!/usr/bin/env bash
# A recipe in vLLM server mode on one node: `trl vllm-serve` on dedicated GPUs, the trainer on the others.
#
#   bash scripts/launch_vllm_server_mode.sh                                  # masa_qwen3_8b.py: vLLM 0-3, train 4-7
#   bash scripts/launch_vllm_server_mode.sh recipes/grpo_qwen3_8b.py --push_to_hub --hub_model_id me/grpo-qwen3-8b
#   VLLM_GPUS=0,1 TRAIN_GPUS=2,3,4,5,6,7 bash scripts/launch_vllm_server_mode.sh   # fails: 2048 rows / 6 processes
#   MODEL=Qwen/Qwen3-1.7B-Base VLLM_GPUS=0 TRAIN_GPUS=1,2 bash scripts/launch_vllm_server_mode.sh
#
# Arguments after the recipe go to the recipe (any MASAConfig / GRPOConfig flag, or --config overrides.yaml).
# Environment (defaults): MODEL (Qwen/Qwen3-8B-Base; passed to the server and, as --model_name_or_path, to the recipe),
# VLLM_GPUS (0,1,2,3; the server runs tensor parallel over them, which must divide the model's attention heads),
# TRAIN_GPUS (4,5,6,7), ACCELERATE_CONFIG (recipes/accelerate_configs/zero3.yaml), PORT (8000),
# PROMPTS_PER_STEP (128), NUM_GENERATIONS (16), PER_DEVICE_TRAIN_BATCH_SIZE (2), MAX_MODEL_LEN (10240 = 2048 prompt
# + 8192 completion tokens), LOG_DIR (outputs/logs).
# The gradient accumulation is derived so that every training step has PROMPTS_PER_STEP prompts and one optimizer
# step: PER_DEVICE_TRAIN_BATCH_SIZE x training GPUs x accumulation = PROMPTS_PER_STEP x NUM_GENERATIONS.
set -euo pipefail

RECIPE=${1:-recipes/masa_qwen3_8b.py}
if [ $# -gt 0 ]; then shift; fi
MODEL=${MODEL:-Qwen/Qwen3-8B-Base}
VLLM_GPUS=${VLLM_GPUS:-0,1,2,3}
TRAIN_GPUS=${TRAIN_GPUS:-4,5,6,7}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-recipes/accelerate_configs/zero3.yaml}
PORT=${PORT:-8000}
PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-128}
NUM_GENERATIONS=${NUM_GENERATIONS:-16}
PER_DEVICE_TRAIN_BATCH_SIZE=${PER_DEVICE_TRAIN_BATCH_SIZE:-2}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-10240}
LOG_DIR=${LOG_DIR:-outputs/logs}

num_gpus() { awk -F, '{print NF}' <<< "$1"; }
NUM_VLLM=$(num_gpus "$VLLM_GPUS")
NUM_TRAIN=$(num_gpus "$TRAIN_GPUS")
ROWS=$((PROMPTS_PER_STEP * NUM_GENERATIONS))
if (( ROWS % (PER_DEVICE_TRAIN_BATCH_SIZE * NUM_TRAIN) != 0 )); then
  echo "error: $PROMPTS_PER_STEP prompts x $NUM_GENERATIONS rollouts = $ROWS rows per step do not split over" \
       "$NUM_TRAIN training GPUs x PER_DEVICE_TRAIN_BATCH_SIZE=$PER_DEVICE_TRAIN_BATCH_SIZE; use a power-of-two" \
       "number of TRAIN_GPUS (1, 2, 4, 8) or change PROMPTS_PER_STEP." >&2
  exit 1
fi
GRAD_ACC=$((ROWS / (PER_DEVICE_TRAIN_BATCH_SIZE * NUM_TRAIN)))
mkdir -p "$LOG_DIR"

echo "vLLM: $MODEL on GPUs $VLLM_GPUS (tensor parallel $NUM_VLLM), port $PORT, log $LOG_DIR/vllm.log"
CUDA_VISIBLE_DEVICES=$VLLM_GPUS trl vllm-serve --model "$MODEL" --tensor_parallel_size "$NUM_VLLM" \
  --port "$PORT" --max_model_len "$MAX_MODEL_LEN" >"$LOG_DIR/vllm.log" 2>&1 &
VLLM_PID=$!
trap 'kill "$VLLM_PID" 2>/dev/null || true' EXIT

until curl -sf "http://localhost:$PORT/health" >/dev/null; do
  if ! kill -0 "$VLLM_PID" 2>/dev/null; then
    echo "error: the vLLM server exited; see $LOG_DIR/vllm.log" >&2
    exit 1
  fi
  sleep 10
done

echo "training: $RECIPE on GPUs $TRAIN_GPUS ($NUM_TRAIN processes, $PER_DEVICE_TRAIN_BATCH_SIZE x $NUM_TRAIN x" \
     "$GRAD_ACC = $ROWS solution rollouts = $PROMPTS_PER_STEP prompts per step)"
CUDA_VISIBLE_DEVICES=$TRAIN_GPUS accelerate launch --config_file "$ACCELERATE_CONFIG" --num_processes "$NUM_TRAIN" \
  "$RECIPE" --model_name_or_path "$MODEL" --vllm_server_port "$PORT" \
  --per_device_train_batch_size "$PER_DEVICE_TRAIN_BATCH_SIZE" --gradient_accumulation_steps "$GRAD_ACC" "$@"
