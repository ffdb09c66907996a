#!/usr/bin/env bash
# Runs the aarch64 build for real, under qemu-aarch64-static (Debian's qemu-user-static):
#   1. check-config config/gateway.toml
#   2. a short end-to-end ingest → store → forward: a Mosquitto on a free loopback port,
#      one SMOKE.ALARM published with mosquitto_pub, the batch captured on city/v1/# with
#      mosquitto_sub and decoded with protoc (when installed)
#   3. reports the binary size and the peak RSS of the emulated gateway (VmHWM of the
#      qemu process: it includes qemu's own code cache, so it overstates the real board)
# Exits 0 with "skipped: <reason>" when qemu, the aarch64 build or Mosquitto is absent.
#
#   scripts/qemu-smoke.sh [BINARY]   # default target/aarch64-unknown-linux-gnu/release/estate-gateway
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-target/aarch64-unknown-linux-gnu/release/estate-gateway}"
skip() { echo "skipped: $*"; exit 0; }
command -v qemu-aarch64-static >/dev/null || skip "qemu-aarch64-static is not installed (apt-get install qemu-user-static)"
[ -x "$bin" ] || skip "no aarch64 build at $bin (run scripts/cross-build.sh aarch64-unknown-linux-gnu)"
for t in mosquitto mosquitto_pub mosquitto_sub; do
    command -v "$t" >/dev/null || skip "$t is not installed (apt-get install mosquitto mosquitto-clients)"
done
# The dynamic loader and libc of the target (libc6-arm64-cross, pulled in by
# gcc-aarch64-linux-gnu); a static (musl) binary needs none.
sysroot=/usr/aarch64-linux-gnu
qemu=(qemu-aarch64-static)
[ -d "$sysroot" ] && qemu+=(-L "$sysroot")

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@"; do
        [ $SECONDS -lt $deadline ] || { echo "FAIL: $what within the deadline" >&2; return 1; }
        sleep 0.05
    done
}

echo "== binary: $bin ($(stat -c %s "$bin") bytes, $(file -b "$bin" | cut -d, -f1-2))"
echo "== check-config config/gateway.toml (under qemu)"
"${qemu[@]}" "$bin" check-config config/gateway.toml

port=$(free_port)
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 1000
max_queued_messages 0
log_type all
CONF
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_for 10 "Mosquitto listening on $port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null

estate=31011500000000000001
cat > "$work/gateway.toml" <<CONF
[gateway]
id = "gw-qemu-smoke"
estate_id = "$estate"
[ingest.mqtt]
port = $port
[uplink.mqtt]
port = $port
CONF

echo "== city subscriber on city/v1/#"
mosquitto_sub -h 127.0.0.1 -p "$port" -i smoke-city -q 1 -t 'city/v1/#' -C 1 -N -W 60 > "$work/batch.bin" &
sub=$!
pids+=($sub)
wait_for 10 "the city subscriber subscribed" grep -q "Received SUBSCRIBE from smoke-city" "$work/mosquitto.log"

echo "== gateway (aarch64, under qemu)"
start=$(date +%s%N)
"${qemu[@]}" "$bin" run --config "$work/gateway.toml" --data-dir "$work/data" \
    --api-listen 127.0.0.1:0 --grace 2s > "$work/gateway.out" 2> "$work/gateway.log" &
gw=$!
pids+=($gw)
wait_for 60 "the gateway's ready line" grep -q "^estate-gateway ready" "$work/gateway.out" ||
    { cat "$work/gateway.log"; exit 1; }
echo "   ready after $(( ($(date +%s%N) - start) / 1000000 )) ms (emulated)"
wait_for 30 "the gateway subscribed to the ingest topics" \
    grep -q "Received SUBSCRIBE from estate-gw-gw-qemu-smoke-ingest" "$work/mosquitto.log" ||
    { cat "$work/gateway.log"; exit 1; }

echo "== publish one SMOKE.ALARM"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t "estate/$estate/smoke/smoke-1-1-3/event" \
    -m '{"code":"SMOKE.ALARM","seq":1}'
if ! wait "$sub"; then
    echo "FAIL: no batch on city/v1/# within 60 s" >&2
    tail -20 "$work/gateway.log" >&2
    exit 1
fi
echo "   batch received: $(stat -c %s "$work/batch.bin") bytes"
if command -v protoc >/dev/null; then
    protoc --decode=estate.v1.EventBatch -I protocols/proto protocols/proto/estate/v1/events.proto \
        < "$work/batch.bin" | tee "$work/batch.txt" | sed 's/^/   /' | head -30
    grep -q 'code: "SMOKE.ALARM"' "$work/batch.txt" || { echo "FAIL: the batch holds no SMOKE.ALARM" >&2; exit 1; }
else
    echo "   (protoc not installed: not decoded; apt-get install protobuf-compiler)"
    grep -q SMOKE.ALARM "$work/batch.bin" || { echo "FAIL: the batch holds no SMOKE.ALARM" >&2; exit 1; }
fi

hwm=$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw/status")
kill -TERM "$gw"
code=0; wait "$gw" || code=$?
[ "$code" = 0 ] || { echo "FAIL: the gateway exited $code after SIGTERM" >&2; tail -20 "$work/gateway.log" >&2; exit 1; }
echo "== OK: aarch64 gateway ingested and forwarded under qemu; clean exit on SIGTERM"
echo "   binary size: $(stat -c %s "$bin") bytes"
echo "   RSS of the emulated gateway: ${rss} kB now, ${hwm} kB peak (qemu process, emulator included)"
