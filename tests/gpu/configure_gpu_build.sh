#!/usr/bin/env bash
# Sourced by the GPU run scripts: unpacks the carried Boost/json .debs (.deps/, see
# docs/BUILDING.md) into /tmp/ra_deps, records the device, and configures $BUILD against the
# PyTorch wheel's LibTorch and NCCL. Expects ROOT, OUT and BUILD set; logs go to $OUT.
shopt -s nullglob  # no carried .debs: Boost and nlohmann-json are installed system-wide
prefix=/tmp/ra_deps
mkdir -p "$prefix"
for deb in "$ROOT"/.deps/boost/*.deb "$ROOT"/.deps/json/*.deb; do dpkg -x "$deb" "$prefix"; done
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
nccl_root="$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "cudnn", torch.backends.cudnn.version())' | tee -a "$OUT/device.txt"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" -DBoost_USE_STATIC_LIBS=ON \
  -DRA_CUDA_ARCHITECTURES=90 ${nccl_root:+-DNCCL_ROOT="$nccl_root"} > "$OUT/configure.log" 2>&1 \
  || { tail -40 "$OUT/configure.log"; exit 1; }
grep "ringattn:" "$OUT/configure.log"
