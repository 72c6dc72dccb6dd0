#!/usr/bin/env bash
# Renders `qvault report --html` in a real headless Chromium (Debian's package, installed if
# missing) and checks what a person would see: the page loads with no console errors, each
# group's plot has one point per backup, and a screenshot can be taken (kept out of the repo,
# in $REPORT_SCREENSHOT or a temporary directory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v chromium >/dev/null; then
    echo "report-check: installing chromium (Debian package)" >&2
    if [[ $(id -u) -eq 0 ]]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null; fi
fi
[[ -x target/debug/qvault ]] || cargo build --bin qvault
bin="$PWD/target/debug/qvault"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export QVAULT_REPOSITORY="$work/repo" QVAULT_CACHE_DIR="$work/cache" XDG_CONFIG_HOME="$work/config"
"$bin" -q init --identity "$work/identity.txt" >/dev/null
export QVAULT_IDENTITY="$work/identity.txt"
backups=4
for i in $(seq 1 $backups); do
    head -c $((i * 200000)) /dev/urandom >"$work/data.bin"
    "$bin" -q backup --file "$work/data.bin" >/dev/null
done
"$bin" -q report --html "$work/report.html" --max-age 1d

chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
        --disable-background-networking --disable-component-update --disable-sync
        --user-data-dir="$work/chrome")
"${chrome[@]}" --enable-logging=stderr --v=0 --dump-dom "file://$work/report.html" \
    >"$work/dom.html" 2>"$work/console.log" || true
points=$(grep -o 'class="point"' "$work/dom.html" | wc -l)
if [[ "$points" -ne "$backups" ]]; then
    echo "report-check: the rendered plot has $points points, expected $backups" >&2
    exit 1
fi
if grep -q "CONSOLE" "$work/console.log" && grep "CONSOLE" "$work/console.log" | grep -qiv "deprecat"; then
    echo "report-check: console messages while rendering:" >&2
    grep "CONSOLE" "$work/console.log" >&2
    exit 1
fi
shot="${REPORT_SCREENSHOT:-$work/report.png}"
"${chrome[@]}" --screenshot="$shot" --window-size=1000,900 "file://$work/report.html" 2>/dev/null || true
[[ -s "$shot" ]] || { echo "report-check: no screenshot was taken" >&2; exit 1; }
echo "report-check: the report renders in Chromium with $points points and no console errors"
