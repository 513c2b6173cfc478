# Sourced by the lab's scripts (selftest.sh, live-selftest.sh, live-soak.sh,
# nats-demo.sh, run-scenario.sh) after they set HERE to this directory. It picks
# python ($PY) and installs one cleanup for exit, INT and TERM: stop the processes the
# script started ($SAMPLER and $CHILD, by PID only: TERM, then up to 30 s for them to
# exit, since lab.py tears its own run down on TERM), make sure the lab is down
# (lab.py down), then run the script's own `lab_cleanup_extra` if it defines one.
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
CHILD=""
lab_cleanup() {
    local pid
    for pid in ${SAMPLER:-} ${CHILD:-}; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        fi
    done
    "$PY" "$HERE/lab.py" down >/dev/null 2>&1 || true
    if declare -F lab_cleanup_extra >/dev/null; then lab_cleanup_extra; fi
}
trap lab_cleanup EXIT
trap 'lab_cleanup; trap - EXIT; exit 130' INT
trap 'lab_cleanup; trap - EXIT; exit 143' TERM
