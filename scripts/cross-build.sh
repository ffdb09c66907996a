#!/usr/bin/env bash
# Cross-builds the stripped release binary of estate-gateway for an ARM gateway.
#
#   scripts/cross-build.sh aarch64-unknown-linux-gnu       # 64-bit boards (RK3328/3568, Pi 3/4/5 on a 64-bit OS)
#   scripts/cross-build.sh armv7-unknown-linux-gnueabihf   # 32-bit boards (Allwinner H3, i.MX6, Pi 2)
#   scripts/cross-build.sh aarch64-unknown-linux-musl      # static 64-bit binary, no glibc needed
#
# Uses Debian's cross gcc as linker and as C compiler for ring (the only C code in the
# tree). The field build: `--no-default-features` leaves out the `demo` feature, so the
# binary links neither the embedded broker (rumqttd) nor the simulator. Installs the cross gcc (apt-get) and the Rust target (rustup) when missing;
# if either cannot be had, it says so and exits non-zero. Prints the path and size of
# the binary on the last line: `built TARGET PATH BYTES`.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-}"
case "$target" in
    aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl)
        gcc_pkg=gcc-aarch64-linux-gnu; cc=aarch64-linux-gnu-gcc; ar=aarch64-linux-gnu-ar ;;
    armv7-unknown-linux-gnueabihf)
        gcc_pkg=gcc-arm-linux-gnueabihf; cc=arm-linux-gnueabihf-gcc; ar=arm-linux-gnueabihf-ar ;;
    *)
        echo "usage: $0 aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf|aarch64-unknown-linux-musl" >&2
        exit 2 ;;
esac

# 1. The cross C toolchain (linker, and CC for ring).
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "== installing $gcc_pkg (apt-get)"
    if ! { command -v apt-get >/dev/null 2>&1 &&
        { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; }; then
        echo "error: $cc is missing and apt-get cannot run here; install $gcc_pkg" >&2
        exit 1
    fi
    sudo_="" ; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq || true
    if ! DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "$gcc_pkg" >/dev/null; then
        echo "error: cannot install $gcc_pkg; $target cannot be built here" >&2
        exit 1
    fi
fi

# 2. The Rust standard library for the target.
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "== rustup target add $target"
    if ! rustup target add "$target"; then
        echo "error: rustup cannot fetch the standard library for $target (offline or no such" >&2
        echo "       target for this toolchain); $target cannot be built here" >&2
        exit 1
    fi
fi

# 3. No second C crypto library: rustls must use ring only (aws-lc-sys needs cmake and a
#    much larger C build, and doubles the TLS code in the binary).
echo "== cargo tree -i aws-lc-sys (must find nothing)"
if out=$(cargo tree -p estate-gateway --no-default-features --target "$target" -e normal -i aws-lc-sys 2>&1); then
    echo "$out"
    echo "error: aws-lc-sys is in the dependency tree (see above)" >&2
    exit 1
else
    echo "   none: ${out##*$'\n'}"
fi

# 4. Build. Linker and C compiler per target, as cargo and the cc crate read them.
upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
lower=$(echo "$target" | tr '-' '_')
export "CARGO_TARGET_${upper}_LINKER=$cc"
export "CC_${lower}=$cc"
export "AR_${lower}=$ar"
if [[ "$target" == *musl ]]; then
    # Fully static: Rust links its own bundled musl (self-contained crt objects and libc);
    # gcc is only the linker driver here.
    export "CARGO_TARGET_${upper}_RUSTFLAGS=-C target-feature=+crt-static"
fi
echo "== cargo build --release --target $target -p estate-gateway --no-default-features --bin estate-gateway"
cargo build --release --locked --target "$target" -p estate-gateway --no-default-features --bin estate-gateway

bin="target/$target/release/estate-gateway"
bytes=$(stat -c %s "$bin")
file "$bin" 2>/dev/null || true
printf 'built %s %s %s (%s MiB)\n' "$target" "$bin" "$bytes" "$(awk "BEGIN{printf \"%.2f\", $bytes/1048576}")"
