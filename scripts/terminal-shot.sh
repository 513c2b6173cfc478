#!/usr/bin/env bash
# Renders what `flowtrace pcap --paths` shows on a terminal (summary first) for the
# failover scenario into docs/img/terminal-summary.png, with headless Chromium.
# Usage: scripts/terminal-shot.sh   (after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# script(1) gives flowtrace a pseudo-terminal, so it prints the terminal's view.
TZ=UTC script -qec "./target/release/flowtrace pcap --paths --no-progress --top 1 captures/failover/*.pcap.gz" /dev/null \
  | tr -d '\r' > "$tmp/out.txt"
python3 - "$tmp/out.txt" "$tmp/term.html" <<'PY'
import html, sys
text = open(sys.argv[1]).read()
open(sys.argv[2], "w").write(
    "<!doctype html><meta charset=utf-8><body style='margin:0;background:#1e1e1e'>"
    "<pre style='color:#ddd;font:13px/1.35 monospace;padding:12px;margin:0'>$ flowtrace pcap "
    "--paths --top 1 captures/failover/*.pcap.gz\n" + html.escape(text) + "</pre>")
PY
chromium --headless --no-sandbox --disable-gpu --user-data-dir="$tmp/profile" \
  --hide-scrollbars --window-size=1500,1020 --screenshot="$tmp/shot.png" "file://$tmp/term.html" 2>/dev/null
if command -v pngquant >/dev/null; then
  pngquant --force --output docs/img/terminal-summary.png 64 "$tmp/shot.png"
else
  cp "$tmp/shot.png" docs/img/terminal-summary.png
fi
echo "wrote docs/img/terminal-summary.png"
