#!/usr/bin/env bash
# Installs the Debian 12 packages ringattn builds against, if any is missing.
# (GPU machines with a PyTorch wheel: see docs/BUILDING.md instead.)
set -euo pipefail
packages=(build-essential cmake ninja-build libtorch-dev libopenmpi-dev openmpi-bin
          libboost-program-options-dev libgtest-dev nlohmann-json3-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
