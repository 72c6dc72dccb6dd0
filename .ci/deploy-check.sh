#!/usr/bin/env bash
# Checks the systemd units in deploy/ with `systemd-analyze verify` where it exists (skipped
# loudly where it does not). The units name /usr/local/bin/qvault; the check points them at
# the binary this checkout built, so verify also proves the command exists and runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v systemd-analyze >/dev/null; then
    echo "deploy-check: SKIPPED: systemd-analyze is not installed" >&2
    exit 0
fi
bin="$PWD/target/debug/qvault"
[[ -x "$bin" ]] || cargo build --bin qvault
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in deploy/systemd/*.service deploy/systemd/*.timer; do
    sed "s#/usr/local/bin/qvault#$bin#g" "$unit" > "$work/$(basename "$unit")"
done
out=$(cd "$work" && systemd-analyze verify --man=no ./qvault-backup@prod.service ./qvault-backup@prod.timer 2>&1 || true)
# Users, directories and env files of the target host do not exist here; anything else fails.
problems=$(grep -v -e "EnvironmentFile" -e "User=" -e "Group=" -e "^$" <<<"$out" || true)
if [[ -n "$problems" ]]; then
    echo "deploy-check: systemd-analyze verify found problems:" >&2
    echo "$problems" >&2
    exit 1
fi
echo "deploy-check: systemd units verified"
