#!/usr/bin/env bash
# The main job end to end on the embedded default: install, keygen, build the
# example LNM release kit, verify it offline, inspect it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
work="$ROOT/quickstart"
rm -rf "$work"
mkdir -p "$work/keys"
export SOURCE_DATE_EPOCH=1764547200   # 2025-12-01: reproducible kit bytes
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step kit keygen --type ed25519 --out "$work/keys/release"
step kit trust init --key "$work/keys/release.pub" --threshold 1 --expires 2027-12-31 --out "$work/trust.json"
step kit build manifests/lnm-release.yaml --key "$work/keys/release.key" --out "$work/lnm-release.kit.tar.zst"
step kit verify "$work/lnm-release.kit.tar.zst" --trust-root "$work/trust.json"
step kit inspect "$work/lnm-release.kit.tar.zst" --trust-root "$work/trust.json"
printf '\nquickstart OK: kit, keys and trust root are in %s\n' "$work"
