#!/usr/bin/env bash
# Installs the system packages lifeline's build needs, only if they are missing.
# Safe to run any number of times. Needs root (or sudo) only when it installs.
set -euo pipefail

# The rocksdb crate compiles C++ and runs bindgen. ccache keeps the compiled
# objects: cargo builds RocksDB's sources again for every distinct feature set
# of its build dependencies (clippy, doc and test each resolve their own), and
# with ccache only the first of those compiles (about 30 minutes here), the
# others take a minute.
packages=(clang libclang-dev ccache iproute2)
# The web app's browser tests (cli/tests/web.rs) drive Debian's Chromium
# through playwright-core (npm); chromium-driver serves WebDriver clients.
packages+=(chromium chromium-driver)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# The interop test runs a js-libp2p peer: Node.js (20 or newer) and npm. A
# machine that already has them (from anywhere) keeps its own.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
  missing+=(nodejs npm)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not on PATH. Install the Rust toolchain (https://rustup.rs) first." >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: system packages present (${packages[*]})"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: missing ${missing[*]} and no apt-get here; install them with your package manager." >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "setup: missing ${missing[*]}; run as root or install them: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
echo "setup: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
