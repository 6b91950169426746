#!/usr/bin/env bash
# The documented sidecar chain on this machine, with no container engine and no backend:
#
#   demo agent app (deploy/demo/agent_app.py, the OpenTelemetry SDK)
#     --OTLP/gRPC--> collector    config/collector-sidecar.yaml, the binary that
#                                 benchmarks/collector/build.sh builds (or $OTELCOL)
#     --OTLP/gRPC--> agent-sampler config/sampler-sidecar.yaml, as shipped: with no
#                                 SAMPLER_DOWNSTREAM it writes what it keeps to
#     --> WORKDIR/agent-sampler-kept.jsonl   (OTLP/JSON lines)
#
# then prints what was kept: sessions and spans by rule, from the file's agent_sampler.rule
# attributes (deploy/local/summarize.py), and checks that every conversation with a failed
# tool call or a tool loop was kept, whole (exit 1 if not).
#
# Everything listens on 127.0.0.1, on free ports; everything started here is stopped when the
# script ends. Only flags differ from the shipped configs: the listen addresses, and a
# decision_wait of DECISION_WAIT instead of 30s so that the run takes seconds.
#
# Environment (all optional):
#   CONVERSATIONS  how many the demo app sends (default 60), RATE new ones per second (10),
#                  SEED (1)
#   DECISION_WAIT  the sampler's --decision-wait (default 2s)
#   WORKDIR        where the logs and files go (default: a new temporary directory, kept)
#   PYTHON         a Python with agent-tail-sampler and the demo's dependencies
#                  (default .venv/bin/python, created and installed here if missing)
#   OTELCOL        a collector binary (default: the one build.sh builds; otelcol-contrib 0.160.0
#                  works too)
#   TIMEOUT        seconds to wait for the sessions to be decided (default 120)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

conversations=${CONVERSATIONS:-60}
rate=${RATE:-10}
seed=${SEED:-1}
decision_wait=${DECISION_WAIT:-2s}
timeout=${TIMEOUT:-120}
work=${WORKDIR:-$(mktemp -d -t agent-sampler-local.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)

say() { echo "run.sh: $*" >&2; }

# --- Python: the sampler and the demo app's SDK -------------------------------------------
imports="import sampler, sampler._native, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc"
if [ -z "${PYTHON:-}" ]; then
    PYTHON=$repo/.venv/bin/python
    if ! { [ -x "$PYTHON" ] && "$PYTHON" -c "$imports" 2>/dev/null; }; then
        say "installing agent-tail-sampler and the demo's dependencies into .venv (minutes)..."
        [ -x "$PYTHON" ] || python3 -m venv "$repo/.venv"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check -e . \
            -r deploy/demo/requirements.txt >&2
    fi
fi
if ! "$PYTHON" -c "$imports" 2>/dev/null; then
    say "$PYTHON lacks agent-tail-sampler or the OpenTelemetry SDK:" \
        "pip install -e . -r deploy/demo/requirements.txt"
    exit 1
fi

# --- the collector ------------------------------------------------------------------------
if [ -z "${OTELCOL:-}" ]; then
    OTELCOL=$(bash benchmarks/collector/build.sh) || true
fi
if [ -z "$OTELCOL" ] || [ ! -x "$OTELCOL" ]; then
    say "no collector binary: benchmarks/collector/build.sh needs Go 1.26 (see its README)," \
        "or set OTELCOL to an otelcol-contrib 0.160.0 binary"
    exit 1
fi

# --- ports, processes, and stopping them -------------------------------------------------
read -r app_grpc app_http sampler_grpc sampler_metrics collector_metrics < <(
    "$PYTHON" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
pids=()
stopped=0
stop() { # stop PID [SECONDS]: SIGTERM, then SIGKILL after SECONDS; its exit code in $stopped
    local pid=$1 wait_s=${2:-30}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((wait_s * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    stopped=0
    wait "$pid" 2>/dev/null || stopped=$?
}
cleanup() {
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then stop "$pid" 5; fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    say "timed out after ${seconds}s waiting for $what; logs in $work"
    exit 1
}
metric() { # the sum of a sampler metric's samples
    "$PYTHON" - "http://127.0.0.1:$sampler_metrics/metrics" "$1" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
names = (sys.argv[2], sys.argv[2] + "_total")
print(int(sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
              if not line.startswith("#") and line.split("{")[0].split(" ")[0] in names)))
EOF
}
ready() { "$PYTHON" -c "import urllib.request as u; u.urlopen('$1', timeout=1)" 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null || { say "$2 exited early; its log: $3" && tail -20 "$3" >&2 && exit 1; }; }

say "working in $work"

# --- the sampler, as shipped, from the working directory (its file goes there) -------------
(cd "$work" && exec "$PYTHON" -m sampler run --config "$repo/config/sampler-sidecar.yaml" \
    --listen "127.0.0.1:$sampler_grpc" --metrics-listen "127.0.0.1:$sampler_metrics" \
    --decision-wait "$decision_wait") >"$work/sampler.log" 2>&1 &
sampler_pid=$!
pids+=("$sampler_pid")
sampler_up() { alive "$sampler_pid" sampler "$work/sampler.log" && ready "http://127.0.0.1:$sampler_metrics/readyz"; }
wait_for 30 "the sampler" sampler_up
say "sampler ready: OTLP/gRPC 127.0.0.1:$sampler_grpc, metrics http://127.0.0.1:$sampler_metrics/metrics"

# --- the collector, as shipped, its addresses from the variables the file names -------------
OTLP_GRPC_ENDPOINT=127.0.0.1:$app_grpc OTLP_HTTP_ENDPOINT=127.0.0.1:$app_http \
    SAMPLER_ENDPOINT=127.0.0.1:$sampler_grpc \
    COLLECTOR_METRICS_HOST=127.0.0.1 COLLECTOR_METRICS_PORT=$collector_metrics \
    "$OTELCOL" --config="$repo/config/collector-sidecar.yaml" >"$work/collector.log" 2>&1 &
collector_pid=$!
pids+=("$collector_pid")
collector_up() { alive "$collector_pid" collector "$work/collector.log" && grep -q "Everything is ready" "$work/collector.log"; }
wait_for 30 "the collector" collector_up
say "collector ready: OTLP/gRPC 127.0.0.1:$app_grpc, OTLP/HTTP 127.0.0.1:$app_http"

# --- the demo app ------------------------------------------------------------------------
say "demo app: $conversations conversations at $rate a second..."
OTEL_BSP_SCHEDULE_DELAY=${OTEL_BSP_SCHEDULE_DELAY:-200} "$PYTHON" deploy/demo/agent_app.py \
    --endpoint "http://127.0.0.1:$app_grpc" --conversations "$conversations" --rate "$rate" \
    --think-time 0.5 --seed "$seed" --manifest "$work/sent.jsonl" 2>"$work/app.log" ||
    { say "the demo app failed:" && cat "$work/app.log" >&2 && exit 1; }
sent=$(grep -c . "$work/sent.jsonl")

# Every conversation is one session: wait until the sampler has decided them all.
decided_all() { alive "$sampler_pid" sampler "$work/sampler.log" && [ "$(metric agent_sampler_sessions_decided)" -ge "$sent" ]; }
wait_for "$timeout" "$sent sessions decided" decided_all
say "$sent sessions decided; stopping the collector, then the sampler (it flushes on SIGTERM)"
stop "$collector_pid"
[ "$stopped" = 0 ] || say "the collector exited with $stopped; its log: $work/collector.log"
stop "$sampler_pid"
if [ "$stopped" != 0 ]; then
    say "the sampler exited with $stopped; its log: $work/sampler.log"
    exit 1
fi

echo
"$PYTHON" deploy/local/summarize.py "$work/agent-sampler-kept.jsonl" --sent "$work/sent.jsonl" \
    --check
say "the rarity rules (rare, slow-model, outliers) keep nothing before 200 sessions of" \
    "warm-up (signals.rarity.warmup_sessions): CONVERSATIONS=600 RATE=30 shows them at work"
