#!/usr/bin/env bash
# GPU check in one call, from the repository root of a CUDA machine (after `bash .ci/setup none`):
#   bash bench/gpu_check.sh SEMANTICKITTI_ROOT [CHECKPOINT.pt ...]
# Runs teacher and student forwards on the real scan 08/000000 in fp32 and fp16 (Segmenter end to
# end; fp16 labels must agree with fp32 on > 95 % of points), 5 training steps of the student
# config on the GPU, then the node and Segmenter tests (real rclpy), and prints what it
# measured. Exits non-zero on the first failure, or at once where no CUDA device is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:?usage: bash bench/gpu_check.sh SEMANTICKITTI_ROOT [CHECKPOINT.pt ...]}
shift
. "${PVD_VENV:-.venv}/bin/activate"
models=()
[ "$#" -gt 0 ] && models=(--models "$@")
python bench/gpu_check.py --scan "$root/sequences/08/velodyne/000000.bin" --data-root "$root" "${models[@]}"
python -m pytest -q -p no:cacheprovider test/test_segment_node.py test/test_segmenter.py
