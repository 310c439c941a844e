#!/usr/bin/env bash
# System packages the project needs (Debian): espeak-ng + sox to synthesise speech for the demo call and the
# default model's spoken training data; chromium for the real-browser test (tests/browser). Installs only what is
# missing; needs root (or sudo) when it does.
set -euo pipefail
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
# headless Chromium for the real-browser test (tests/browser)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
