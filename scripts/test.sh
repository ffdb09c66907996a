#!/usr/bin/env bash
# The test command: installs and starts what the tests need, then runs every test of the
# workspace with none skipped. Run it as root (or with sudo) on Debian; extra arguments go
# to `cargo test` (e.g. `scripts/test.sh -p estate-gateway --test tls`).
#
# What a test cannot do without (each installed only when missing): Mosquitto (the
# external-broker and TLS tests), nats-server (the 3-node cluster tests), systemd-analyze
# (the unit check), curl (an independent HTTP digest client for the camera push test), headless Chromium with a CJK font and node/npm (the console tests). The
# TLS tests make their certificates with rcgen and the Modbus serial test its
# pseudo-terminal with rustix (dev-dependencies), so neither needs openssl or socat.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
updated=
install() {
    if [ -z "$updated" ]; then
        $SUDO apt-get update -qq
        updated=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
have() { command -v "$1" >/dev/null 2>&1; }

have mosquitto || install mosquitto mosquitto-clients
have nats-server || install nats-server
have systemd-analyze || install systemd
have curl || install curl
if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi 'wqy'; then
    install chromium fonts-wqy-microhei
fi
# Node usually comes with the machine (its nodejs bundles npm, which Debian's npm package
# would conflict with), so Debian's nodejs and npm are only a fallback.
if ! have node || ! have npm; then
    install nodejs npm
fi
if [ -n "$updated" ]; then
    $SUDO apt-get clean
fi
npm ci --prefix tests/console --no-audit --no-fund --loglevel=error

# A real Mosquitto on 127.0.0.1:1883, configured as a deployment's.
listening() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }
if ! listening; then
    mosquitto -d -c config/mosquitto/estate-broker.conf
    for _ in $(seq 100); do listening && break; sleep 0.1; done
    listening || { echo "Mosquitto did not start on 127.0.0.1:1883" >&2; exit 1; }
fi
export ESTATE_TEST_MQTT=127.0.0.1:1883
# Every test must run: one that finds a tool missing fails instead of skipping.
export CI=1

cargo check -p estate-gateway --no-default-features
exec cargo test --workspace "$@"
