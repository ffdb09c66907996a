#!/usr/bin/env bash
# Reproduces the footprint numbers of docs/footprint.md (issue 6 budget):
#   RSS <= 32 MB with a 1 M-event backlog and 1,000 events/s flowing,
#   cold start to ready (store opened, both brokers connected) < 300 ms.
# (The stripped aarch64 binary size comes from scripts/cross-build.sh.)
#
#   scripts/footprint.sh [EVENTS]        # default 1000000
#
# ESTATE_FOOTPRINT_STORE=DIR keeps the filled store in DIR (first run) and starts from a
# copy of it (later runs, phase 1 skipped): the store's layout after a fill depends on
# timing, so comparing two builds on the same store takes that variance out.
# ESTATE_FILL_RATE (default 10000) is the fill's events/s: 1000 builds the backlog the way
# an outage at that rate does (a 17-minute fill), `max` publishes as fast as the gateway
# takes them (full ingest speed). ESTATE_ALARM_EVERY_MS (default 100) is how often an alarm
# comes among the 1,000 events/s of phases 2 and 3 (10 = an alarm every 10 ms).
# ESTATE_FOOTPRINT_SECS (60) is the length
# of phases 2 and 3, ESTATE_FOOTPRINT_CACHE and ESTATE_FOOTPRINT_RECORD set
# store.cache_capacity and store.record_max_bytes, ESTATE_BIN_DIR the binaries' directory.
#
# Needs: mosquitto, curl, and a native release build (built here when missing).
# Phases, all against a Mosquitto on a free loopback port:
#   1. fill   the store with EVENTS events while the uplink is down (backlog = EVENTS)
#   2. steady 1,000 events/s for $secs s on top of that backlog, uplink still down
#   3. cold   restart with the uplink up: time to the ready line and to both brokers
#             connected; then 1,000 events/s for $secs s while the backlog drains upstream
# RSS is sampled from /proc every 100 ms (VmRSS) plus the kernel's peak (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-1000000}"

for t in mosquitto curl; do
    command -v "$t" >/dev/null || { echo "skipped: $t is not installed"; exit 0; }
done
secs="${ESTATE_FOOTPRINT_SECS:-60}"   # length of phases 2 and 3
fill_rate="${ESTATE_FILL_RATE:-10000}"
rate_args=(--rate "$fill_rate")
[ "$fill_rate" = max ] && rate_args=()
alarm_ms="${ESTATE_ALARM_EVERY_MS:-100}"
alarms=$((secs * 1000 / alarm_ms)) # alarms among the secs*1000 events of phases 2 and 3
bindir="${ESTATE_BIN_DIR:-target/release}"
gw=$bindir/estate-gateway
sim=$bindir/estate-sim
if [ "$bindir" = target/release ] && { [ ! -x "$gw" ] || [ ! -x "$sim" ]; }; then
    cargo build --release -p estate-gateway -p estate-sim --bins
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

port=$(free_port)
down_port=$(free_port) # nothing listens here: the uplink is "down"
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
# As config/mosquitto/estate-broker.conf; no queue limit, so the fill is never dropped.
max_inflight_messages 1000
max_queued_messages 0
CONF
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.05; done

estate=31011500000000000001
config() { # config UPLINK_PORT
    cat > "$work/gateway.toml" <<CONF
[gateway]
id = "gw-footprint"
estate_id = "$estate"
[ingest.mqtt]
port = $port
reconnect_max = "1s"
[store]
# room for the whole backlog: nothing is evicted during the measurement
disk_budget = "2 GiB"
cache_capacity = "${ESTATE_FOOTPRINT_CACHE:-4 MiB}"
record_max_bytes = "${ESTATE_FOOTPRINT_RECORD:-48 KiB}"
[uplink.mqtt]
port = $1
reconnect_min = "100ms"
reconnect_max = "1s"
[api]
listen = "127.0.0.1:0"
CONF
}
api=""
start_gateway() {
    : > "$work/gw.out"
    t0=$(now_ms)
    "$gw" run --config "$work/gateway.toml" --data-dir "$work/data" --log-format json \
        > "$work/gw.out" 2>> "$work/gw.log" &
    gwpid=$!
    pids+=($gwpid)
    until grep -q '^estate-gateway ready' "$work/gw.out"; do
        running "$gwpid" || { echo "the gateway exited before it was ready:" >&2; tail -5 "$work/gw.log" >&2; exit 1; }
        sleep 0.002
    done
    t_ready=$(now_ms)
    api=$(sed -n 's/.*api=\(http:[^ ]*\).*/\1/p' "$work/gw.out")
}
metric() { curl -s "$api/metrics" | awk -v m="$1" '$1==m {print $2}'; }
# Both lanes' backlog, from /metrics with curl and awk only (cheap enough to poll while
# measuring); prints nothing if the gateway does not answer.
backlog() { curl -s "$api/metrics" | awk '$1 ~ /^estate_forward_backlog[{]/ {s += $2; n++} END {if (n) print s}'; }
sample_rss() { # sample_rss PID FILE: VmRSS in kB every 100 ms until PID exits or the file is removed
    while [ -e "/proc/$1/status" ] && [ -e "$2" ]; do
        awk '/VmRSS/ {print $2}' "/proc/$1/status" >> "$2" 2>/dev/null || true
        sleep 0.1
    done
}
# running PID: the process exists and is not a zombie (a reaped one reads as not running)
running() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
stop_gateway() {
    kill -TERM "$gwpid"
    for _ in $(seq 300); do running "$gwpid" || break; sleep 0.1; done
    if running "$gwpid"; then
        echo "   WARNING: the gateway did not exit within 30 s of SIGTERM; killing it (SIGKILL)"
        kill -KILL "$gwpid" 2>/dev/null || true
    fi
    wait "$gwpid" || true
}
max_of() { sort -n "$1" | tail -1; }

config "$down_port"
snapshot="${ESTATE_FOOTPRINT_STORE:-}"
if [ -n "$snapshot" ] && [ -d "$snapshot" ]; then
    echo "== 1. fill: skipped, store copied from $snapshot"
    cp -a "$snapshot" "$work/data"
    sync # the copy's writeback would otherwise compete with the gateway's fsyncs
else
    echo "== 1. fill: $events events at $fill_rate events/s, uplink down"
    start_gateway
    t=$(now_ms)
    "$sim" publish --broker "127.0.0.1:$port" --estate-id "$estate" --count "$events" \
        "${rate_args[@]}" --max-inflight 1000 --alarms $((events / 100)) --drain-timeout 120s --json > "$work/fill.json"
    echo "   published in $(( $(now_ms) - t )) ms (PUBACKs from Mosquitto; it queues what the gateway has not taken yet)"
    # The gateway acknowledges after its group commit; wait until it has taken everything.
    until [ "$(backlog)" -ge "$events" ] 2>/dev/null; do sleep 0.5; done
    echo "   stored in $(( $(now_ms) - t )) ms; backlog $(backlog); store $(du -sh "$work/data" | cut -f1)"
    echo "   RSS after fill: $(awk '/VmRSS/ {print $2}' /proc/$gwpid/status) kB, peak $(awk '/VmHWM/ {print $2}' /proc/$gwpid/status) kB"
    stop_gateway
    if [ -n "$snapshot" ]; then
        cp -a "$work/data" "$snapshot"
        sync
        echo "   store saved to $snapshot"
    fi
fi

echo "== 2. steady: 1,000 events/s (an alarm every $alarm_ms ms) for $secs s on a backlog of $events, uplink down"
start_gateway
touch "$work/rss2"
sample_rss "$gwpid" "$work/rss2" &
"$sim" publish --broker "127.0.0.1:$port" --estate-id "$estate" --count $((secs * 1000)) --rate 1000 \
    --alarms $alarms --json > "$work/steady.json"
echo "   backlog $(backlog); RSS max $(max_of "$work/rss2") kB (sampled), VmHWM $(awk '/VmHWM/ {print $2}' /proc/$gwpid/status) kB"
rm -f "$work/rss2"
stop_gateway

echo "== 3. cold start with $(du -sh "$work/data" | cut -f1) of store, uplink up"
config "$port"
start_gateway
until [ "$(metric estate_ingest_connected)" = 1 ] && [ "$(metric estate_uplink_connected)" = 1 ]; do sleep 0.002; done
t_conn=$(now_ms)
echo "   exec -> ready line: $((t_ready - t0)) ms; exec -> store open and both brokers connected: $((t_conn - t0)) ms"
touch "$work/rss3"
sample_rss "$gwpid" "$work/rss3" &
# How long the drain takes: until what is left is what keeps flowing in (polled every 100 ms).
( until [ "$(backlog)" -lt 1000 ] 2>/dev/null; do sleep 0.1; done; echo $(( $(now_ms) - t_conn )) > "$work/drained" ) &
pids+=($!)
"$sim" publish --broker "127.0.0.1:$port" --estate-id "$estate" --count $((secs * 1000)) --rate 1000 \
    --alarms $alarms --json > "$work/drain.json"
echo "   while draining + 1,000 events/s (an alarm every $alarm_ms ms) for $secs s: backlog now $(backlog); RSS max $(max_of "$work/rss3") kB (sampled), VmHWM $(awk '/VmHWM/ {print $2}' /proc/$gwpid/status) kB"
if [ -s "$work/drained" ]; then
    echo "   drained (backlog under 1,000 events) $(cat "$work/drained") ms after connecting"
else
    echo "   not drained within the $secs s (backlog still 1,000 events or more)"
fi
rm -f "$work/rss3"
stop_gateway
echo "== done"
