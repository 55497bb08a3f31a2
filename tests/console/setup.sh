#!/usr/bin/env bash
# What the console's browser test (tests/console_browser.rs) needs, installed outside the clone:
#   - Debian's Chromium (`apt-get install chromium`; the test runs it headless, loopback only);
#   - playwright-core from the npm registry into ${SKIFF_CACHE:-~/.cache/skiff}/console-browser
#     (it drives the system Chromium over the DevTools Protocol; it downloads no browser).
# Idempotent: returns at once when both are there. Prints two lines the test reads:
#   chromium: /usr/bin/chromium
#   node_modules: /root/.cache/skiff/console-browser/node_modules
set -euo pipefail
PLAYWRIGHT_VERSION=1.65.1
CACHE="${SKIFF_CACHE:-$HOME/.cache/skiff}"
DIR="$CACHE/console-browser"

chromium="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$chromium" ]]; then
  if [[ "$(id -u)" = 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >&2 || { apt-get update -q >&2 && apt-get install -y -q chromium >&2; }
    chromium="$(command -v chromium)"
  else
    echo "setup: chromium is not installed and this user cannot apt-get install it (sudo apt-get install chromium)" >&2
    exit 1
  fi
fi

installed="$(sed -n 's/^ *"version": "\(.*\)",$/\1/p' "$DIR/node_modules/playwright-core/package.json" 2>/dev/null | head -1 || true)"
if [[ "$installed" != "$PLAYWRIGHT_VERSION" ]]; then
  command -v npm >/dev/null || { echo "setup: npm not found (apt-get install nodejs npm)" >&2; exit 1; }
  echo "setup: installing playwright-core@$PLAYWRIGHT_VERSION into $DIR" >&2
  mkdir -p "$DIR"
  # playwright-core has no dependencies and never downloads a browser itself.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$DIR" --no-audit --no-fund --no-save \
    --loglevel=error "playwright-core@$PLAYWRIGHT_VERSION" >&2
fi

echo "chromium: $chromium"
echo "node_modules: $DIR/node_modules"
