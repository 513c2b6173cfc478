#!/usr/bin/env bash
# The test command: set up, then run every test (unit, integration over the shared
# corpus and shipped captures, and the lab's live self-test when running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The HTML report test must run Chromium, and the agent/collect tests nats-server, not
# skip them, where setup.sh could install them.
if [ "$(id -u)" -eq 0 ]; then export FLOWTRACE_REQUIRE_CHROMIUM=1 FLOWTRACE_REQUIRE_NATS=1; fi
cargo test --release
# Regression checks: every shipped scenario against its expectation in fixtures/.
for expect in fixtures/*/expect.toml; do
  name=$(basename "$(dirname "$expect")")
  echo "== flowtrace check $name"
  ./target/release/flowtrace check --no-progress --expect "$expect" captures/"$name"/*.pcap.gz
done
# The shipped lab scenarios: captures hold what their truth names, no marker left.
if [ -x captures/lab/check-shipped.sh ]; then
  captures/lab/check-shipped.sh
fi
if [ -x captures/lab/selftest.sh ]; then
  if [ "$(id -u)" -eq 0 ]; then
    captures/lab/selftest.sh
    # flowtrace live in server A's namespace during a scenario, against the files and the truth.
    captures/lab/live-selftest.sh
  else
    echo "*** lab self-test SKIPPED: it needs root (network namespaces) ***" >&2
  fi
fi
