# Sourced by the GPU job scripts (run_multi_gpu.sh, ab_dense.sh, ab_dilated.sh) from the
# repository root: the environment every process needs on the GPU machine, a work folder ($OUT)
# packed at exit into one archive $PACK/$JOB_LOGS (the GPU machine's tool brings back only a few
# files; PACK is the caller's $OUT, default /tmp/$JOB), elapsed(), the GPU count, the mpirun
# command (every NCCL_* variable passed on) and an empty $RESULTS (JSON lines).
# In: JOB (the work folder's prefix), JOB_LOGS (the archive's name).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
PACK="${OUT:-/tmp/$JOB}"
OUT="$(mktemp -d "/tmp/${JOB}_work.XXXX")"
mkdir -p "$PACK"
trap 'tar -czf "$PACK/$JOB_LOGS" -C "$OUT" . && echo "logs: $PACK/$JOB_LOGS"' EXIT
start=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - start )) s] $*"; }
GPUS=$(nvidia-smi -L | wc -l)
MPIRUN=(mpirun --allow-run-as-root --bind-to none -x TORCH_SYMM_MEM_DISABLE_MULTICAST
        -x NVSHMEM_DISABLE_NVLS)
for var in $(compgen -e | grep '^NCCL_'); do MPIRUN+=(-x "$var"); done
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
