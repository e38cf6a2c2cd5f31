#!/usr/bin/env bash
# One short GPU check of guardray's CUDA paths with a pass/fail table (see scripts/gpu_check.py for what each
# check asserts). On a GPU host with the repo checked out:
#
#     pip install -e '.[gpu]'          # vLLM + Ray; without them the vllm/ray_* checks are reported as SKIP
#     scripts/gpu_check.sh             # writes gpu_check.md (the table) and prints it; exit 1 if any check FAILs
#     scripts/gpu_check.sh out.md --only cuda,learner
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.md}"
shift || true
if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
exec "$py" scripts/gpu_check.py --out "$out" "$@"
