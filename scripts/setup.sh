#!/usr/bin/env bash
# Installs what flowtrace's build, tests and lab need on a fresh Debian machine that has
# only Rust, gcc, Python 3 and git. Idempotent: packages already present are skipped.
set -euo pipefail

need=()
# chromium: the tests render every kind of SVG diagram and the HTML report in it (the
# report test fails without it when scripts/test.sh runs as root); libcap2-bin (setcap):
# a test grants flowtrace capture capabilities instead of root; nats-server: the
# agent/collect tests (tests/nats.rs) start their own JetStream server; tshark:
# tests/encap.rs checks ERSPAN, NFLOG, SOCKS and after-gap parity against it (skipped
# without it).
for pkg in libpcap-dev pkg-config tcpdump chromium libcap2-bin nats-server tshark; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
