#!/usr/bin/env bash
# Installs kafkajs and its codec packages (npm ci from package-lock.json) into a cache dir:
# ${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/node-kafkajs/node_modules. Idempotent.
# kafkajs-lz4 (lz4) and zstd-napi build native addons with node-gyp against the installed
# Node's headers; build_from_source skips prebuild-install's binary download attempt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${SKIFF_CACHE:-$HOME/.cache/skiff}/compat/node-kafkajs"
if [ -d "$dir/node_modules" ] && cmp -s "$here/package-lock.json" "$dir/.installed-lock.json"; then
  echo "node-kafkajs: node_modules up to date ($dir)"
  exit 0
fi
mkdir -p "$dir"
rm -f "$dir/.installed-lock.json"
cp "$here/package.json" "$here/package-lock.json" "$dir/"
(cd "$dir" && npm_config_build_from_source=true npm ci --no-audit --no-fund --loglevel=error)
NODE_PATH="$dir/node_modules" node -e '
  require("kafkajs-snappy"); require("kafkajs-lz4"); require("zstd-napi").compress(Buffer.from("x"));
  console.log("node-kafkajs: kafkajs", require("kafkajs/package.json").version, "with snappy, lz4, zstd codecs")'
cp "$here/package-lock.json" "$dir/.installed-lock.json"
