#!/usr/bin/env bash
# Installs what nalcast needs, only what is missing, quietly when all is present.
#   scripts/setup.sh          for building and running (nasm, Node.js packages)
#   scripts/setup.sh --test   also what the tests need (Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

want=(nasm nodejs npm pkg-config)
if [[ "${1:-}" == "--test" ]]; then
    want+=(chromium ffmpeg)
fi

missing=()
for pkg in "${want[@]}"; do
    # Node.js may come from elsewhere (nvm, NodeSource): a working command is enough.
    case "$pkg" in
        nodejs) command -v node >/dev/null && continue ;;
        npm) command -v npm >/dev/null && continue ;;
        chromium) [[ -x /usr/bin/chromium ]] && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: Rust is missing: install it with rustup (https://rustup.rs), then run this again" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "setup: adding rustup component $component"
        rustup component add "$component" >/dev/null
    fi
done

# cargo-deny checks the dependencies in `make test`; built from source once (minutes).
if [[ "${1:-}" == "--test" ]] && ! cargo deny --version >/dev/null 2>&1; then
    echo "setup: installing cargo-deny (one-time build, a few minutes)"
    cargo install cargo-deny --locked --quiet
fi

# Node.js packages (Broadway.js for the page, playwright-core for the browser tests),
# reinstalled only when the lockfile changed.
if [[ ! -f web/node_modules/.package-lock.json || web/package-lock.json -nt web/node_modules/.package-lock.json ]]; then
    echo "setup: installing web packages"
    (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
