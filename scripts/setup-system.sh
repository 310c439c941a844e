#!/usr/bin/env bash
# System packages, per make flavour (no argument: test):
#   demo  espeak-ng: speaks the demo's sample call (cli/sample_call.py) and the default model's training data
#   test  the same, plus headless Chromium for the real-browser test (tests/browser) and HAProxy for the cluster
#         rehearsal (tests/live/test_cluster_rehearsal.py)
# Installs only what is missing; needs root (or sudo) when it does. The distribution is read from
# /etc/os-release (OS_RELEASE overrides the path, for tests); `--print` says what would be installed and how,
# without installing.
#   Debian (and derivatives that are not Ubuntu's): apt packages espeak-ng, chromium, haproxy.
#   Ubuntu (and its derivatives): espeak-ng from apt. Ubuntu's `chromium-browser` deb only installs the snap,
#     whose confinement (private /tmp, no files outside $HOME) keeps it from reading the test's fake camera and
#     microphone files, so Chromium comes from Playwright instead (`playwright install --with-deps chromium`, in
#     its own venv under /opt/affectstream-chromium, linked as /usr/local/bin/chromium). Not tried here: the
#     project's machines are Debian, and Playwright's browser download host is out of their reach.
#   Anything else: says what is missing and stops.
set -euo pipefail

usage() { echo "usage: $0 [--print] [demo|test]   (default: test, everything)" >&2; exit 2; }
print_only=0
[ "${1:-}" = "--print" ] && { print_only=1; shift; }
profile="${1:-test}"
case "$profile" in demo|test) ;; *) usage ;; esac

PLAYWRIGHT_VERSION=1.65.3
CHROMIUM_VENV=/opt/affectstream-chromium

os_release="${OS_RELEASE:-/etc/os-release}"
id="" id_like=""
if [ -r "$os_release" ]; then
    id="$(. "$os_release" && echo "${ID:-}")"
    id_like="$(. "$os_release" && echo "${ID_LIKE:-}")"
fi
family=other
case " $id $id_like " in
    *" ubuntu "*) family=ubuntu ;;
    *" debian "*) family=debian ;;
esac

apt_packages=()
chromium_from=""  # playwright, or missing on an unsupported distribution
chromium_plan="not needed"
command -v espeak-ng >/dev/null 2>&1 || apt_packages+=(espeak-ng)
if [ "$profile" = test ]; then
    chromium_plan=present
    # `chromium` only: tests/browser takes it before `chromium-browser`, which on Ubuntu is the snap's
    if ! command -v chromium >/dev/null 2>&1; then
        case "$family" in
            debian) apt_packages+=(chromium); chromium_plan=apt ;;
            ubuntu) apt_packages+=(python3-venv); chromium_from=playwright; chromium_plan=playwright ;;
            *) chromium_from=missing; chromium_plan=missing ;;
        esac
    fi
    command -v haproxy >/dev/null 2>&1 || apt_packages+=(haproxy)
fi

if [ "$print_only" -eq 1 ]; then
    echo "distribution: ${id:-unknown} ($family)"
    echo "apt: ${apt_packages[*]}"
    echo "chromium: $chromium_plan"
    exit 0
fi
[ ${#apt_packages[@]} -eq 0 ] && [ -z "$chromium_from" ] && exit 0

if [ "$family" = other ]; then
    wanted="${apt_packages[*]}${chromium_from:+ chromium}"
    echo "setup-system.sh: unsupported distribution '${id:-unknown}' (Debian and Ubuntu are): install ${wanted} yourself" >&2
    exit 1
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#apt_packages[@]} -gt 0 ]; then
    echo "installing system packages: ${apt_packages[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi
if [ "$chromium_from" = playwright ]; then
    echo "installing Chromium from Playwright ${PLAYWRIGHT_VERSION} into ${CHROMIUM_VENV}"
    $sudo python3 -m venv "$CHROMIUM_VENV"
    $sudo "$CHROMIUM_VENV/bin/pip" install -q "playwright==${PLAYWRIGHT_VERSION}"
    $sudo env PLAYWRIGHT_BROWSERS_PATH="$CHROMIUM_VENV/browsers" "$CHROMIUM_VENV/bin/playwright" install --with-deps chromium
    chrome="$(find "$CHROMIUM_VENV/browsers" -path '*/chromium-*' -type f -name chrome -perm -u+x | head -n 1)"
    [ -n "$chrome" ] || { echo "setup-system.sh: Playwright installed no chrome binary" >&2; exit 1; }
    $sudo ln -sf "$chrome" /usr/local/bin/chromium
fi
