#!/usr/bin/env bash
# The main job: set up, build, and for every capture set shipped in captures/ (one
# directory per scenario, one capture per host) print the summary of its request paths
# with its slowest and first failed path, and write the full output and the diagrams
# under out/<scenario>/ (paths.txt, paths.jsonl, svg/, report.html).
# Usage: scripts/run.sh [extra flowtrace pcap options for the printed view, e.g. --utc]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
shopt -s nullglob
status=0
bin=./target/release/flowtrace
for dir in captures/*/; do
  case "$dir" in captures/lab/|captures/broken/) continue ;; esac
  files=( "$dir"*.pcap "$dir"*.pcapng "$dir"*.pcap.gz "$dir"*.pcapng.gz )
  [ ${#files[@]} -eq 0 ] && continue
  name=$(basename "$dir")
  out="out/$name"
  mkdir -p "$out"
  echo "== $name: ${files[*]}"
  # The view a person reads first: summary, the slowest path, the first failed one.
  "$bin" pcap --summary --top 1 --no-progress --svg "$out/svg" --html "$out/report.html" \
    "${files[@]}" "$@" || status=$?
  # Everything, for reading at leisure and for programs.
  "$bin" pcap --paths --all --no-progress -o "$out/paths.txt" "${files[@]}" || status=$?
  "$bin" pcap --paths --format jsonl --no-progress -o "$out/paths.jsonl" "${files[@]}" || status=$?
  echo "   every path: $out/paths.txt (text), $out/paths.jsonl (JSON lines); diagrams: $out/svg/;"
  echo "   report page: $out/report.html"
  echo
done
exit $status
