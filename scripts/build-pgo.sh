#!/usr/bin/env bash
# A profile-guided (PGO) release build of flowtrace: the fastest binary this source
# makes, about 13 % fewer instructions than `cargo build --release` on the
# benchmark's small-packet capture (docs/PERFORMANCE.md, sessions 34-35).
#
# 1. builds flowtrace instrumented (-Cprofile-generate) in target/pgo-gen/;
# 2. runs it over the capture sets shipped in captures/ (real traffic of the lab's
#    stack: Keepalived, Kong-like relays, Nginx, Python back ends), each file alone
#    to JSON lines and each set as request paths: the benchmark's generated captures
#    are not among them, so the profile is not fitted to what bench/bench.py times;
# 3. merges the counts with the toolchain's llvm-profdata (rustup's llvm-tools
#    component, installed here when missing);
# 4. builds flowtrace with them (-Cprofile-use) in target/pgo/.
#
# Prints the binary's path (target/pgo/release/flowtrace) as its last line. Takes
# 6 to 8 minutes on two cores (two full release builds). The plain build in
# target/release/ is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/pgo-work
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "build-pgo: installing rustup's llvm-tools (llvm-profdata)" >&2
  rustup component add llvm-tools-preview >&2
fi
[ -x "$profdata" ] || { echo "build-pgo: no llvm-profdata at $profdata" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work/raw" "$work/train"
trap 'rm -rf "$work/raw" "$work/train"' EXIT

echo "build-pgo: instrumented build (target/pgo-gen)" >&2
CARGO_TARGET_DIR=$root/target/pgo-gen RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$work/raw" \
  cargo build --release --quiet --bin flowtrace
gen=$root/target/pgo-gen/release/flowtrace

echo "build-pgo: training runs over captures/" >&2
shopt -s nullglob
sets=0
for dir in captures/*/; do
  name=$(basename "$dir")
  case "$name" in lab|broken) continue ;; esac
  mkdir -p "$work/train/$name"
  # Plain pcap files, as most captures are read (mapped); the link tables beside them.
  for f in "$dir"*.pcap.gz; do gunzip -c "$f" > "$work/train/$name/$(basename "$f" .gz)"; done
  for f in "$dir"*.pcap "$dir"*.json; do cp "$f" "$work/train/$name/"; done
  files=( "$work/train/$name/"*.pcap )
  [ ${#files[@]} -eq 0 ] && continue
  for f in "${files[@]}"; do
    "$gen" pcap "$f" --format jsonl -o /dev/null --no-progress 2>/dev/null \
      || { echo "build-pgo: the training run on $f failed" >&2; exit 1; }
  done
  "$gen" pcap --paths --format jsonl -o /dev/null --no-progress "${files[@]}" 2>/dev/null \
    || { echo "build-pgo: the training run on $dir failed" >&2; exit 1; }
  rm -rf "${work:?}/train/$name"
  sets=$((sets + 1))
done
[ "$sets" -gt 0 ] || { echo "build-pgo: no capture sets in captures/ to train on" >&2; exit 1; }

"$profdata" merge -o "$work/flowtrace.profdata" "$work/raw"
echo "build-pgo: optimised build (target/pgo) with the profile of $sets capture sets" >&2
CARGO_TARGET_DIR=$root/target/pgo RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$work/flowtrace.profdata" \
  cargo build --release --quiet --bin flowtrace
echo "$root/target/pgo/release/flowtrace"
