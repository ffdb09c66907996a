#!/usr/bin/env bash
# The city link on one machine (docs/uplink.md, "The reference city side"):
#
#   a 3-node NATS cluster on loopback (JetStream, MQTT with stream_replicas 3, routes),
#   an ingest broker (Mosquitto), GATEWAYS real gateways (release build, own config and
#   data dir each, uplink to one node each, spread over the nodes), `estate-sim fleet`
#   publishing their estates' sensors, and `estate-sim city --repair` on the third node.
#   A quarter in, one gateway is killed (SIGKILL) to time its *dark* on the board; half
#   way, node 1 is killed (kill -9) and restarted three quarters in. Then the fleet stops,
#   the gateways drain, and the consumer prints the board and the summary (events, unique,
#   lost after dedup, duplicates, dark/degraded estates).
#
#   scripts/city-demo.sh                       # 5 gateways, 80 s of traffic
#   GATEWAYS=10 DURATION=120 RATE=50 scripts/city-demo.sh
#
# Needs nats-server (Debian: apt-get install nats-server; 2.9 works) and mosquitto; the
# script installs them with apt-get when missing and it runs as root. Everything it
# starts is stopped, and its temp folder removed, on exit (KEEP=1 keeps the folder).
set -euo pipefail

GATEWAYS=${GATEWAYS:-5}
DURATION=${DURATION:-80}          # seconds of fleet traffic
RATE=${RATE:-50}                  # events per second per estate
REPORTING_TIME=${REPORTING_TIME:-30s}
DRAIN=${DRAIN:-20}                # seconds to drain after the fleet stops; keep it below the
                                  # reporting time, or the idle gateways show dark at the end
BASE=${BASE:-31011500000000000001}
PORT0=${PORT0:-24000}             # NATS client 4222-like, cluster, MQTT ports start here

cd "$(dirname "$0")/.."
ROOT=$PWD

need() {
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y "$2" >/dev/null
  else
    echo "city-demo: $1 is missing (apt-get install $2)" >&2
    exit 1
  fi
}
need nats-server nats-server
need mosquitto mosquitto

cargo build --release -q -p estate-gateway -p estate-sim
GW="$ROOT/target/release/estate-gateway"
SIM="$ROOT/target/release/estate-sim"

TMP=$(mktemp -d /tmp/city-demo.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT INT TERM

wait_port() { # port, what
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "city-demo: $2 did not listen on $1" >&2
  exit 1
}

nats_port() { echo $((PORT0 + $1)); }          # client
route_port() { echo $((PORT0 + 10 + $1)); }    # cluster
mqtt_port() { echo $((PORT0 + 20 + $1)); }     # MQTT

# --- the NATS cluster -------------------------------------------------------------
NODE_PID=()
start_node() { # index 1..3
  local i=$1
  "$(command -v nats-server)" -c "$TMP/n$i.conf" >>"$TMP/n$i.log" 2>&1 &
  NODE_PID[$i]=$!
  PIDS+=($!)
}
routes="nats-route://127.0.0.1:$(route_port 1), nats-route://127.0.0.1:$(route_port 2), nats-route://127.0.0.1:$(route_port 3)"
for i in 1 2 3; do
  mkdir -p "$TMP/n$i"
  cat >"$TMP/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$(nats_port $i)
jetstream { store_dir: "$TMP/n$i" }
cluster { name: city, listen: 127.0.0.1:$(route_port $i), routes: [ $routes ] }
# The 2.9 default of 2 replicas stalls the cluster when one node dies.
mqtt { port: $(mqtt_port $i), stream_replicas: 3 }
EOF
  start_node "$i"
done
for i in 1 2 3; do wait_port "$(mqtt_port $i)" "NATS node $i MQTT"; done
echo "NATS cluster: MQTT on $(mqtt_port 1), $(mqtt_port 2), $(mqtt_port 3)"

# --- the ingest broker --------------------------------------------------------------
INGEST=$((PORT0 + 30))
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$INGEST" >"$TMP/mosquitto.conf"
mosquitto -c "$TMP/mosquitto.conf" >"$TMP/mosquitto.log" 2>&1 &
PIDS+=($!)
wait_port "$INGEST" mosquitto

# --- the consumer, on node 3 --------------------------------------------------------
"$SIM" city --broker "127.0.0.1:$(mqtt_port 3)" --repair --reporting-time "$REPORTING_TIME" \
  --json "$TMP/board.json" >"$TMP/city.out" 2>"$TMP/city.log" &
CITY=$!
PIDS+=($CITY)
# Subscribed before any gateway publishes: a clean session misses what came before.
for _ in $(seq 1 300); do grep -q "Subscribed" "$TMP/city.log" 2>/dev/null && break; sleep 0.1; done
grep -q "Subscribed" "$TMP/city.log" || { echo "city-demo: the consumer did not subscribe" >&2; tail "$TMP/city.log" >&2; exit 1; }

# --- the gateways ---------------------------------------------------------------------
# Estate k: BASE + k at the width of BASE, as `estate-sim fleet` numbers them (the sum
# on the last six digits: a 20-digit code does not fit bash arithmetic).
estate() { printf '%s' "${BASE:0:$((${#BASE} - 6))}$(printf '%06d' $((10#${BASE: -6} + $1)))"; }
GW_PID=()
for k in $(seq 0 $((GATEWAYS - 1))); do
  node=$((k % 3 + 1))
  id=$(printf 'gw-city-%03d' "$k")
  est=$(estate "$k")
  mkdir -p "$TMP/$id"
  # The shipped config (its device list is the simulator's), with this gateway's ids and
  # ports. The uplink lists all three nodes, starting at this gateway's own (spread over
  # the cluster): when its node dies it moves to the next.
  hosts="\"127.0.0.1:$(mqtt_port $node)\", \"127.0.0.1:$(mqtt_port $((node % 3 + 1)))\", \"127.0.0.1:$(mqtt_port $(((node + 1) % 3 + 1)))\""
  awk -v id="$id" -v est="$est" -v ingest="$INGEST" -v hosts="$hosts" '
    /^\[/ { section = $0 }
    section == "[gateway]" && /^id = /        { $0 = "id = \"" id "\"" }
    section == "[gateway]" && /^estate_id = / { $0 = "estate_id = \"" est "\"" }
    section == "[ingest.mqtt]" && /^port = /  { $0 = "port = " ingest }
    section == "[uplink.mqtt]" && /^host = /  { $0 = "hosts = [" hosts "]" }
    section == "[uplink.mqtt]" && /^port = /  { next }
    { print }
  ' config/gateway.toml >"$TMP/$id/gateway.toml"
  "$GW" run --config "$TMP/$id/gateway.toml" --data-dir "$TMP/$id/data" \
    --api-listen "127.0.0.1:$((PORT0 + 100 + k))" >"$TMP/$id/log" 2>&1 &
  GW_PID[$k]=$!
  PIDS+=($!)
done
echo "$GATEWAYS gateways, uplinks spread over the three nodes; consumer on node 3"
sleep 2

# --- the fleet ------------------------------------------------------------------------
"$SIM" fleet --broker "127.0.0.1:$INGEST" --estates "$GATEWAYS" --base "$BASE" --rate "$RATE" \
  --duration "${DURATION}s" >"$TMP/fleet.out" 2>"$TMP/fleet.log" &
FLEET=$!
PIDS+=($FLEET)

now_ms() { date +%s%3N; }
state_of() { # estate → its state on the board, from the JSON snapshot
  grep -o "\"estate_id\":\"$1\",\"gateway_id\":\"[^\"]*\",\"state\":\"[a-z]*\"" "$TMP/board.json" 2>/dev/null |
    sed 's/.*"state":"\([a-z]*\)"/\1/'
}

# A quarter in: SIGKILL the last gateway (on a node that stays up); a watcher times
# its *dark* on the board (the JSON snapshot, rewritten every second).
sleep $((DURATION / 4))
victim=$((GATEWAYS - 1))
victim_estate=$(estate "$victim")
kill -9 "${GW_PID[$victim]}"
killed=$(now_ms)
wait "${GW_PID[$victim]}" 2>/dev/null || true
echo "$(date +%T) SIGKILL gateway gw-city-$(printf %03d $victim) (estate $victim_estate)"
(
  until [ "$(state_of "$victim_estate")" = dark ]; do sleep 0.1; done
  echo $(($(now_ms) - killed)) >"$TMP/dark_ms"
) &
PIDS+=($!)
sleep $((DURATION / 4))
echo "$(date +%T) kill -9 NATS node 1 (its gateways move to the next node)"
kill -9 "${NODE_PID[1]}"
wait "${NODE_PID[1]}" 2>/dev/null || true
sleep $((DURATION / 4))
echo "$(date +%T) restart NATS node 1"
start_node 1
wait "$FLEET" || true
cat "$TMP/fleet.out"
echo "fleet done; $DRAIN s for the gateways to drain"
sleep "$DRAIN"
kill -INT "$CITY"
wait "$CITY" || true
tail -n $((GATEWAYS + 3)) "$TMP/city.out"
echo "dark on the board $(cat "$TMP/dark_ms" 2>/dev/null || echo never) ms after the SIGKILL of a gateway" \
  "(its last will; without one, the reporting time of $REPORTING_TIME)"
echo "logs: $TMP (KEEP=1 keeps them)"
