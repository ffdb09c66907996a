#!/usr/bin/env bash
# Power-cut harness (issue 13): does an event the gateway acknowledged survive a power cut?
#
#   scripts/powerloss.sh LAZYFS_BINARY [CUTS] [SEED]      # defaults: 20 cuts, seed 1
#
# LAZYFS_BINARY is LazyFS (github.com/dsrhaslab/lazyfs) built by you; docs/never-lost.md
# says how. The gateway's data dir lives on a LazyFS mount, which keeps every write that
# was not fsynced in its cache; a cut is SIGSTOP of the gateway, `lazyfs::clear-cache`
# (the unsynced writes are gone, as after a power cut), then SIGKILL. Then the gateway is
# restarted on the same dir. Cuts rotate over four situations, each at a seeded random
# point:
#   burst     right after a restart, while the broker redelivers the queue that built up
#             while the gateway was stopped (large group commits)
#   down      the uplink (city broker) is down: everything piles up in the store
#   up        the uplink is up: commits, forwarding and deletions interleave
#   evict     uplink down, telemetry floods a small store.disk_budget: eviction runs
# Every published alarm is SMOKE.ALARM from one device with a unique payload `seq`
# (QoS 1; mosquitto_pub exits 0 only when the broker has acknowledged all of them). The
# gateway's ingest session is persistent, so whatever the gateway did not acknowledge is
# redelivered after the restart. After the last cut the uplink comes up and the gateway
# drains; a city-side subscriber (mosquitto_sub, persistent session on a city broker with
# persistence) has recorded every batch. Counted:
#   lost        alarms published (acknowledged by the broker) that never reached the city:
#               the broker redelivers what the gateway did not acknowledge, so these are
#               events the gateway acknowledged and then lost
#   unopenable  restarts after a cut where the gateway exited or was not ready within 30 s
#               (the dir is then moved aside and the run goes on with a fresh store)
#   reused      (gateway_id, store_epoch, lane, seq) seen at the city for two different
#               events (a receiver deduplicating on that key would drop one silently)
# Telemetry evicted under the budget is allowed to go and is not counted.
# Exit status 1 when any count is above 0.
#
# Environment: POWERLOSS_GATEWAY (gateway binary; default target/release/estate-gateway,
# built when missing), POWERLOSS_ALARMS (alarms per cut, default 500), POWERLOSS_FILLER
# (telemetry per evict cut, default 4000), POWERLOSS_BUDGET (store.disk_budget, default
# "4 MiB"), POWERLOSS_KEEP=1 keeps the work dir.
# Needs: mosquitto, mosquitto_pub/mosquitto_sub (mosquitto-clients), python3, curl, FUSE
# (/dev/fuse; run as root or with user_allow_other).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/powerloss.sh LAZYFS_BINARY [CUTS] [SEED]"
lazyfs=$(realpath "${1:?$usage}")
cuts="${2:-20}"
seed="${3:-1}"
alarms_per_cut="${POWERLOSS_ALARMS:-500}"
filler="${POWERLOSS_FILLER:-4000}"
budget="${POWERLOSS_BUDGET:-4 MiB}"
[ -x "$lazyfs" ] || { echo "$lazyfs is not an executable" >&2; exit 2; }
for t in mosquitto mosquitto_pub mosquitto_sub python3 curl fusermount3; do
    command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done
gw="${POWERLOSS_GATEWAY:-target/release/estate-gateway}"
if [ -z "${POWERLOSS_GATEWAY:-}" ] && [ ! -x "$gw" ]; then
    cargo build --release -p estate-gateway
fi
gw=$(realpath "$gw")
RANDOM=$seed

work=$(mktemp -d /tmp/powerloss.XXXXXX)
root=$work/lazyfs-root # what survives: LazyFS writes here on fsync
mnt=$work/mnt          # the gateway's view
data=$mnt/data
mkdir -p "$root" "$mnt" "$work/city-db"
pids=()
gwpid=""
cleanup() {
    [ -n "$gwpid" ] && kill -KILL "$gwpid" 2>/dev/null
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    if [ "${POWERLOSS_KEEP:-0}" = 1 ]; then echo "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap "exit 130" INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
running() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# --- LazyFS -------------------------------------------------------------------------------
cat > "$work/lazyfs.toml" <<CONF
[faults]
fifo_path="$work/faults.fifo"
fifo_path_completed="$work/faults-done.fifo"
[cache]
apply_eviction=false
[cache.simple]
custom_size="1gb"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile=""
CONF
"$lazyfs" "$mnt" --config-path "$work/lazyfs.toml" -o allow_other -o modules=subdir \
    -o "subdir=$root" -f > "$work/lazyfs.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -p "$work/faults-done.fifo" ] && break; sleep 0.05; done
exec 8<> "$work/faults-done.fifo" # LazyFS opens it for writing: keep a reader open
# LazyFS pre-allocates its cache (a few seconds) before it mounts.
for _ in $(seq 600); do mountpoint -q "$mnt" && break; sleep 0.1; done
mountpoint -q "$mnt" || { echo "LazyFS did not mount:" >&2; tail "$work/lazyfs.log" >&2; exit 2; }

# --- brokers and the city-side recorder -----------------------------------------------------
port=$(free_port)
city_port=$(free_port)
cat > "$work/estate-broker.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 1000
max_queued_messages 0
CONF
mosquitto -c "$work/estate-broker.conf" > "$work/estate-broker.log" 2>&1 &
pids+=($!)
wait_port "$port"
# The city broker is stopped for "down" phases; persistence keeps the recorder's queue.
# `user root`: run as root, Mosquitto would drop to its own user, which cannot write the
# persistence file in this private work dir, and the recorder's session (with the batches
# queued for it while it reconnects) would be lost at every restart of the city broker.
cat > "$work/city-broker.conf" <<CONF
listener $city_port 127.0.0.1
allow_anonymous true
user root
persistence true
persistence_location $work/city-db/
max_inflight_messages 1000
max_queued_messages 0
CONF
citypid=""
subpid=""
city_up() {
    [ -n "$citypid" ] && return 0
    mosquitto -c "$work/city-broker.conf" >> "$work/city-broker.log" 2>&1 &
    citypid=$!
    wait_port "$city_port"
    # One line per batch: topic, then the EventBatch in hex.
    stdbuf -oL mosquitto_sub -p "$city_port" -q 1 -c -i powerloss-city -t 'city/v1/#' \
        -F '%t %x' >> "$work/city.txt" 2>> "$work/city-sub.log" &
    subpid=$!
}
city_down() {
    [ -z "$citypid" ] && return 0
    kill -TERM "$subpid" "$citypid"
    wait "$subpid" "$citypid" 2>/dev/null || true
    citypid=""
    subpid=""
}
city_up

cat > "$work/gateway.toml" <<CONF
[gateway]
id = "gw-powerloss"
estate_id = "31011500000000000001"
[ingest.mqtt]
port = $port
reconnect_min = "100ms"
reconnect_max = "1s"
[store]
disk_budget = "$budget"
[uplink.mqtt]
port = $city_port
reconnect_min = "100ms"
reconnect_max = "1s"
[api]
listen = "127.0.0.1:0"
CONF
topic="estate/31011500000000000001/smoke/smoke-powerloss/event"
tele_topic="estate/31011500000000000001/smoke/smoke-telemetry/event"

api=""
# start_gateway: 0 when ready, 1 when it exited or was not ready within 30 s
start_gateway() {
    : > "$work/gw.out"
    NO_COLOR=1 "$gw" run --config "$work/gateway.toml" --data-dir "$data" --grace 5s \
        > "$work/gw.out" 2>> "$work/gw.log" &
    gwpid=$!
    for _ in $(seq 3000); do
        grep -q '^estate-gateway ready' "$work/gw.out" && {
            api=$(sed -n 's/.*api=\(http:[^ ]*\).*/\1/p' "$work/gw.out")
            return 0
        }
        running "$gwpid" || break
        sleep 0.01
    done
    kill -KILL "$gwpid" 2>/dev/null || true
    wait "$gwpid" 2>/dev/null || true
    gwpid=""
    return 1
}
stop_gateway() {
    kill -TERM "$gwpid"
    wait "$gwpid" 2>/dev/null || true
    gwpid=""
}
power_cut() {
    kill -STOP "$gwpid"
    echo "lazyfs::clear-cache" > "$work/faults.fifo"
    local done_line
    read -r -t 60 done_line <&8 || { echo "LazyFS did not confirm clear-cache" >&2; exit 2; }
    kill -KILL "$gwpid"
    wait "$gwpid" 2>/dev/null || true
    gwpid=""
}
unopenable=0
# After a cut: the gateway must open the dir. If it does not, count it, keep the dir aside
# for diagnosis and go on with a fresh store.
restart_after_cut() { # restart_after_cut CUT
    start_gateway && return 0
    unopenable=$((unopenable + 1))
    echo "   cut $1: the gateway did not start on the dir after the cut:"
    grep -v '^\s*$' "$work/gw.log" | tail -3 | sed 's/^/     /'
    mv "$data" "$mnt/unopenable-$1"
    start_gateway || { echo "the gateway does not start on a fresh dir either" >&2; exit 2; }
}

published=0 # alarms seq 1..published, all acknowledged by the broker
next_alarms() { # next_alarms N: writes N alarms with the next unique seqs to alarms.jsonl
    local from=$((published + 1)) to=$((published + $1))
    published=$to
    python3 -c "
for s in range($from, $to + 1):
    print('{\"code\":\"SMOKE.ALARM\",\"state\":\"active\",\"seq\":%d}' % s)" > "$work/alarms.jsonl"
}
publish_alarms() { mosquitto_pub -p "$port" -q 1 -i powerloss-pub -t "$topic" -l < "$work/alarms.jsonl"; }
publish_filler() { # publish_filler N: telemetry (events lane), evictable
    python3 -c "
for s in range(1, $1 + 1):
    print('{\"code\":\"SMOKE.TEST\",\"unit\":\"%s\",\"seq\":%d}' % ('x' * 400, s))" > "$work/filler.jsonl"
    mosquitto_pub -p "$port" -q 1 -i "powerloss-filler" -t "$tele_topic" -l < "$work/filler.jsonl"
}
ms_sleep() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
backlog() { curl -s "$api/metrics" | awk '$1 ~ /^estate_forward_backlog[{]/ {s += $2; n++} END {if (n) print s}'; }

echo "powerloss: $cuts cuts, seed $seed, $alarms_per_cut alarms per cut, budget $budget"
echo "  gateway $gw"
kinds=(burst down up evict)
start_gateway || { echo "the gateway does not start:" >&2; tail -5 "$work/gw.log" >&2; exit 2; }
for i in $(seq 1 "$cuts"); do
    kind=${kinds[$(((i - 1) % 4))]}
    delay=$((RANDOM % 1000)) # ms
    case $kind in
        burst)
            city_up
            stop_gateway
            next_alarms "$alarms_per_cut"
            publish_alarms # queued by the broker for the gateway's session
            start_gateway || { restart_after_cut "$i-pre"; }
            ms_sleep $((delay / 2))
            power_cut
            ;;
        down | up | evict)
            if [ "$kind" = up ]; then city_up; else city_down; fi
            next_alarms "$alarms_per_cut"
            publish_alarms &
            pubs=($!)
            if [ "$kind" = evict ]; then
                publish_filler "$filler" &
                pubs+=($!)
                delay=$((delay * 2))
            fi
            ms_sleep "$delay"
            power_cut
            for p in "${pubs[@]}"; do wait "$p" || { echo "mosquitto_pub failed" >&2; exit 2; }; done
            ;;
    esac
    restart_after_cut "$i"
    echo "  cut $i ($kind, +${delay} ms): $published alarms published so far, unopenable $unopenable"
done

# Final drain: uplink up; wait until the backlog is 0 and the city has everything (or
# nothing new arrives for 20 s).
city_up
last_size=-1
stable=0
for _ in $(seq 600); do
    size=$(stat -c %s "$work/city.txt" 2>/dev/null || echo 0)
    if [ "$size" = "$last_size" ]; then stable=$((stable + 1)); else stable=0; fi
    last_size=$size
    if [ "$(backlog)" = 0 ] && [ "$stable" -ge 4 ]; then break; fi
    [ "$stable" -ge 40 ] && break
    sleep 0.5
done
stop_gateway
city_down

python3 - "$work/city.txt" "$published" "$cuts" "$unopenable" "$seed" <<'PY'
import sys
path, published, cuts, unopenable, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def fields(buf):
    """Protobuf wire format: yields (field number, value); bytes for length-delimited."""
    i, n = 0, len(buf)
    def varint():
        nonlocal i
        v = s = 0
        while True:
            b = buf[i]; i += 1
            v |= (b & 0x7F) << s; s += 7
            if b < 0x80:
                return v
    while i < n:
        key = varint()
        f, t = key >> 3, key & 7
        if t == 0:
            yield f, varint()
        elif t == 1:
            yield f, buf[i:i + 8]; i += 8
        elif t == 2:
            l = varint(); yield f, buf[i:i + l]; i += l
        elif t == 5:
            yield f, buf[i:i + 4]; i += 4
        else:
            raise ValueError("wire type %d" % t)

seen_alarms = set()
keys = {}  # (gateway_id, store_epoch, lane, seq) -> set of event identities
batches = undecodable = 0
for line in open(path):
    parts = line.split()
    if len(parts) != 2 or not (parts[0].endswith("/alarms") or parts[0].endswith("/events")):
        continue
    batches += 1
    try:
        gw, epoch, lane, events = "", 0, 0, []
        for f, v in fields(bytes.fromhex(parts[1])):
            if f == 1: gw = v.decode()
            elif f == 4: epoch = v
            elif f == 7: lane = v
            elif f == 8: events.append(v)
        for raw in events:
            e = {}
            for f, v in fields(raw):
                e[f] = v
            seq = e.get(1, 0)
            device = e.get(5, b"").decode()
            code = e.get(7, b"").decode()
            dseq = e.get(18)
            alert = 19 in e
            ident = (device, code, dseq, alert) if dseq is not None else e.get(2, b"").decode()
            keys.setdefault((gw, epoch, lane, seq), set()).add(ident)
            if device == "smoke-powerloss" and code == "SMOKE.ALARM" and dseq is not None and not alert:
                seen_alarms.add(dseq)
    except (ValueError, IndexError, UnicodeDecodeError):
        undecodable += 1

lost = [s for s in range(1, published + 1) if s not in seen_alarms]
reused = sum(1 for ids in keys.values() if len(ids) > 1)
def ranges(xs):
    out = []
    for x in xs:
        if out and out[-1][1] == x - 1: out[-1][1] = x
        else: out.append([x, x])
    return ", ".join("%d-%d" % (a, b) if a != b else str(a) for a, b in out[:10]) + (" …" if len(out) > 10 else "")
print("powerloss result (seed %s)" % seed)
print("  runs (cuts)                  %d" % cuts)
print("  alarms published (PUBACKed)  %d" % published)
print("  batches at the city          %d (undecodable %d)" % (batches, undecodable))
print("  acknowledged but lost        %d%s" % (len(lost), ("  seqs " + ranges(lost)) if lost else ""))
print("  unopenable stores            %d" % unopenable)
print("  reused seqs                  %d" % reused)
sys.exit(1 if lost or unopenable or reused or undecodable else 0)
PY
