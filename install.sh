#!/usr/bin/env bash
# Installs everything drsn-asr needs on a fresh Debian machine: system packages, then a virtual
# environment in .venv with the package (editable) and its test/TTS extras. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"

DEBIAN_PACKAGES=(
  libportaudio2 libsndfile1            # sounddevice / soundfile
  pulseaudio pulseaudio-utils libasound2-plugins   # virtual microphone for the live-mic tests
  espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox   # TTS for the corpus
)

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # Pico TTS (Apache-2.0 code, redistributable data) lives in Debian's non-free component
  if ! dpkg-query -W -f='${Status}' libttspico-utils 2>/dev/null | grep -q "install ok installed"; then
    if [ -f /etc/apt/sources.list.d/debian.sources ] && ! grep -q "non-free" /etc/apt/sources.list.d/debian.sources; then
      echo "enabling Debian's non-free component for libttspico-utils (Pico TTS)"
      $SUDO sed -i '0,/^Components: main$/s//Components: main non-free/' /etc/apt/sources.list.d/debian.sources
    fi
    missing+=(libttspico-utils)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
else
  echo "warning: no apt-get; install the equivalents of: ${DEBIAN_PACKAGES[*]}" >&2
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[test,tts,export,plot,bench,embedding]'
touch .venv/.installed
echo "installed: $(.venv/bin/python -c 'import torch, torchaudio; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)')"
