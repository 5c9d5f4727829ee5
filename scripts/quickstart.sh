#!/usr/bin/env bash
# The main job end to end on the embedded default: install, keygen, build the
# example LNM release kit, verify it offline, inspect it, dry-run and apply it to
# an embedded SQLite database, show the evidence and status.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
work="$ROOT/quickstart"
rm -rf "$work"
mkdir -p "$work/keys"
export SOURCE_DATE_EPOCH=1764547200   # 2025-12-01: reproducible kit bytes
export KIT_STATE_DIR="$work/state"     # anti-rollback memory of this demo, not of your user account
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step kit keygen --type ed25519 --out "$work/keys/release"
step kit trust init --key "$work/keys/release.pub" --threshold 1 --expires 2027-12-31 --out "$work/trust.json"
step kit build manifests/lnm-release.yaml --key "$work/keys/release.key" --out "$work/lnm-release.kit.tar.zst"
step kit verify "$work/lnm-release.kit.tar.zst" --trust-root "$work/trust.json" --require-provenance \
  --attestation "$work/lnm-release.kit.tar.zst.intoto.jsonl"
step kit inspect "$work/lnm-release.kit.tar.zst" --trust-root "$work/trust.json" --sbom --provenance
step kit apply "$work/lnm-release.kit.tar.zst" --trust-root "$work/trust.json" --db "$work/site.db" --dry-run
step kit apply "$work/lnm-release.kit.tar.zst" --trust-root "$work/trust.json" --db "$work/site.db" \
  --batch-size 500 --stop-on-error --artifacts "$work/artifacts"
step kit status --db "$work/site.db"
report=$(ls -d "$work"/artifacts/*/ | tail -n 1)
step sh -c "cd '$report' && sha256sum -c --strict report.json.sha256"
step head -n 12 "$report/metrics.prom"
printf '\nquickstart OK: kit, keys, trust root, database and evidence are in %s\n' "$work"
