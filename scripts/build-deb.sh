#!/usr/bin/env bash
# Builds the estate-gateway .deb with dpkg-deb (nothing else to install).
#
#   scripts/build-deb.sh [TARGET]          # default: aarch64-unknown-linux-gnu
#   scripts/build-deb.sh x86_64-unknown-linux-gnu
#
# Cross-builds first (scripts/cross-build.sh; the field build, without the `demo` feature)
# unless the binary exists and ESTATE_DEB_NO_BUILD=1. ESTATE_DEB_BIN=PATH packages that
# binary instead (no build); ESTATE_DEB_OUT=DIR writes the .deb there.
# Output: target/deb/estate-gateway_VERSION_ARCH.deb
#
# The package installs
#   /usr/bin/estate-gateway
#   /lib/systemd/system/estate-gateway.service
#   /etc/estate-gateway/gateway.toml            (conffile: upgrades keep local edits)
#   /etc/estate-gateway/profiles/*.toml         (the Modbus device profiles, conffiles;
#                                                `modbus.profile_files = ["profiles/NAME.toml"]`
#                                                is relative to the config file's folder)
#   /usr/share/doc/estate-gateway/{README.md,copyright} and docs/*.md (the README's
#                                                links resolve there)
# and on install creates the system user `estate-gateway`, /var/lib/estate-gateway
# (0750, owned by it), gives the group read access to /etc/estate-gateway, and enables
# the service. It is started only if the config passes `check-config`: the shipped config
# has empty gateway and estate ids, so a fresh install waits for them (and the brokers).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-aarch64-unknown-linux-gnu}"
case "$target" in
    aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl) arch=arm64 ;;
    armv7-unknown-linux-gnueabihf) arch=armhf ;;
    x86_64-unknown-linux-gnu | x86_64-unknown-linux-musl) arch=amd64 ;;
    *) echo "usage: $0 [aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf|aarch64-unknown-linux-musl|x86_64-unknown-linux-gnu]" >&2; exit 2 ;;
esac
command -v dpkg-deb >/dev/null || { echo "error: dpkg-deb is missing (apt-get install dpkg)" >&2; exit 1; }

bin="${ESTATE_DEB_BIN:-target/$target/release/estate-gateway}"
if [ -n "${ESTATE_DEB_BIN:-}" ]; then
    [ -x "$bin" ] || { echo "error: ESTATE_DEB_BIN=$bin is not an executable" >&2; exit 1; }
elif [ "${ESTATE_DEB_NO_BUILD:-}" != 1 ] || [ ! -x "$bin" ]; then
    if [[ "$target" == x86_64-* ]]; then
        cargo build --release --locked --target "$target" -p estate-gateway --no-default-features --bin estate-gateway
    else
        scripts/cross-build.sh "$target"
    fi
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
version="${ESTATE_DEB_VERSION:-$version}"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pkg="$root/pkg"
install -D -m 0755 "$bin" "$pkg/usr/bin/estate-gateway"
install -D -m 0644 packaging/estate-gateway.service "$pkg/lib/systemd/system/estate-gateway.service"
# The shipped config with the demo's gateway and estate ids emptied: check-config refuses
# it (naming both lines) until they are set, so a fresh install does not start, and store
# events, under the demo's ids.
install -d "$pkg/etc/estate-gateway"
sed -e 's/^id = "gw-demo-01"$/id = ""          # required: set before starting/' \
    -e 's/^estate_id = "31011500000000000001"$/estate_id = ""   # required: set before starting/' \
    config/gateway.toml > "$pkg/etc/estate-gateway/gateway.toml"
chmod 0640 "$pkg/etc/estate-gateway/gateway.toml"
grep -q '^id = ""' "$pkg/etc/estate-gateway/gateway.toml" && grep -q '^estate_id = ""' "$pkg/etc/estate-gateway/gateway.toml" \
    || { echo "error: config/gateway.toml's [gateway] ids changed; update the sed above" >&2; exit 1; }
# The Modbus device profiles, where a config in /etc/estate-gateway finds them as
# "profiles/NAME.toml".
for profile in config/profiles/*.toml; do
    install -D -m 0644 "$profile" "$pkg/etc/estate-gateway/profiles/$(basename "$profile")"
done
install -D -m 0644 README.md "$pkg/usr/share/doc/estate-gateway/README.md"
for doc in docs/*.md; do
    install -D -m 0644 "$doc" "$pkg/usr/share/doc/estate-gateway/$doc"
done
install -D -m 0644 /dev/null "$pkg/usr/share/doc/estate-gateway/copyright"
cat > "$pkg/usr/share/doc/estate-gateway/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: estate-gateway
License: Apache-2.0
COPYRIGHT

mkdir -p "$pkg/DEBIAN"
# adduser: the postinst creates the service user with it (not Essential, so declared).
depends="Depends: adduser"
[[ "$target" == *gnu* ]] && depends="$depends, libc6 (>= 2.31)"
size_kb=$(du -sk "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: estate-gateway
Version: $version
Architecture: $arch
Maintainer: estate-gateway maintainers <ops@example.invalid>
Section: net
Priority: optional
Installed-Size: $size_kb
${depends:+$depends
}Recommends: mosquitto
Description: Edge gateway for residential-estate safety sensors
 Ingests smoke, leak, gas, door and camera alarms over MQTT, keeps every event
 durably on local disk (sled), and forwards protobuf batches to the city platform
 over MQTT with mutual TLS. Runs as the hardened systemd service estate-gateway.
CONTROL
{
    printf '/etc/estate-gateway/gateway.toml\n'
    for profile in config/profiles/*.toml; do
        printf '/etc/estate-gateway/profiles/%s\n' "$(basename "$profile")"
    done
} > "$pkg/DEBIAN/conffiles"

cat > "$pkg/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    install -d -m 0750 /var/lib/estate-gateway
    if ! getent passwd estate-gateway >/dev/null; then
        adduser --system --group --home /var/lib/estate-gateway --no-create-home \
            --shell /usr/sbin/nologin --gecos "estate gateway" estate-gateway >/dev/null
    fi
    # Serial ports for Modbus RTU.
    if getent group dialout >/dev/null; then adduser --quiet estate-gateway dialout >/dev/null 2>&1 || true; fi
    chown estate-gateway:estate-gateway /var/lib/estate-gateway
    # Config, CA, keys and password files: root writes, the service's group reads.
    chown root:estate-gateway /etc/estate-gateway /etc/estate-gateway/gateway.toml
    chmod 0750 /etc/estate-gateway
    chmod 0640 /etc/estate-gateway/gateway.toml
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl enable estate-gateway.service >/dev/null || true
        if /usr/bin/estate-gateway check-config /etc/estate-gateway/gateway.toml >/dev/null 2>&1; then
            # Upgrade: restart into the new binary (SIGTERM drains; nothing acked is lost).
            systemctl restart estate-gateway.service || true
        else
            echo "estate-gateway: /etc/estate-gateway/gateway.toml does not pass check-config;" >&2
            echo "  fix it, then: systemctl start estate-gateway" >&2
        fi
    fi
fi
exit 0
POSTINST

cat > "$pkg/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop estate-gateway.service || true
    systemctl disable estate-gateway.service >/dev/null || true
fi
exit 0
PRERM

cat > "$pkg/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ "$1" = purge ]; then
    # The event store goes only on purge; `remove` keeps it (and the config) for a
    # reinstall or a rollback to an older version.
    rm -rf /var/lib/estate-gateway
fi
exit 0
POSTRM
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

out_dir="${ESTATE_DEB_OUT:-target/deb}"
mkdir -p "$out_dir"
out="$out_dir/estate-gateway_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$pkg" "$out" >/dev/null
echo "built $out ($(stat -c %s "$out") bytes)"
dpkg-deb --info "$out" | sed -n '/Package:/,$p'
dpkg-deb --contents "$out"
