#!/usr/bin/env bash
# Installs everything rrloader needs on a fresh Debian 12 machine: the native
# libraries from Debian's -dev packages and the pinned Python packages. Idempotent:
# a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  liblz4-dev libxxhash-dev libgtest-dev
  clang libclang-rt-14-dev clang-format clang-tidy
  libturbojpeg0-dev libspng-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev ffmpeg
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=build/.requirements-dev.stamp
mkdir -p build
if [ ! -f "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
  "$PY" -m pip install -q -r requirements-dev.txt
  touch "$stamp"
fi
