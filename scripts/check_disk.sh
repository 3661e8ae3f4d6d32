#!/usr/bin/env bash
# Refuse an install that cannot fit, before pip spends minutes and stops half-way with
# "No space left on device". On x86_64 the pinned torch 2.14.1 is a CUDA build: the demo's
# environment takes ~5.9 GB and the test environment ~6.6 GB, nearly all of it torch, its
# NVIDIA libraries and triton. Nothing is checked once torch is installed in the environment.
#   usage: scripts/check_disk.sh VENV NEEDED_GB
set -euo pipefail
venv=$1
needed_gb=$2
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import torch" 2>/dev/null; then
    exit 0
fi
where=$venv  # an existing venv (or a link to one on another disk) is measured where it is
if [ ! -e "$where" ]; then
    where=$(dirname "$venv")
    mkdir -p "$where"
fi
free_kb=$(df -Pk "$where" | awk 'NR==2 {print $4}')
needed_kb=$((needed_gb * 1024 * 1024))
if [ "$free_kb" -lt "$needed_kb" ]; then
    free_gb=$(awk -v k="$free_kb" 'BEGIN {printf "%.1f", k / 1024 / 1024}')
    echo "error: installing into $venv needs about $needed_gb GB free on its disk, and $where has $free_gb GB." >&2
    echo "       (torch 2.14.1 with its CUDA libraries is most of it.) Free some space, or put the" >&2
    echo "       environment on a larger disk with 'make VENV=/bigger/disk/venv ...'." >&2
    exit 1
fi
