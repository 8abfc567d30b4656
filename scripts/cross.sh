#!/usr/bin/env bash
# Builds framecast for a Raspberry Pi (or any Debian arm64/armhf machine), and its .deb.
#
#   scripts/cross.sh aarch64 [--deb] [--check] [--profile NAME]   Pi OS 64-bit (Pi 3/4/5, Zero 2 W)
#   scripts/cross.sh armhf   [--deb] [--check] [--profile NAME]   Pi OS 32-bit on ARMv7 (Pi 2/3/4)
#   scripts/cross.sh amd64   [--deb] [--profile NAME]             this machine (x86-64)
#
#   --deb            also build the .deb with cargo-deb (installed, pinned, if missing)
#   --check          also build examples/arm_check.rs and run it under qemu-user (aarch64 only
#                    has been run here; the binary is single-threaded, see the README)
#   --profile NAME   cargo profile (default release; CI uses `cross`, see Cargo.toml)
#
# How (Debian 12, installed by `scripts/setup.sh --cross-deps`): rustup here has only the x86-64
# standard library, so the ARM targets are compiled by Debian's `rustc-web` (/usr/bin/rustc)
# with `libstd-rust-web-dev:arm64|armhf` from multiarch, cross-linked by Debian's gcc
# cross-compilers. Only cargo's RUSTC points at /usr/bin/rustc: rustup's rustc stays first on
# PATH for everything else. C code (libjpeg-turbo with its NEON SIMD) is built by the cross gcc;
# bindgen (nokhwa's V4L2 bindings) gets clang's --target and the target's header directory.
#
# Prints where the binaries and packages are and their sizes. Exit status: 0 built, 1 failed,
# 2 bad usage.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# Pinned: cargo-deb 3.6.2 is the newest that `cargo install --locked` resolves for rustc 1.81+.
CARGO_DEB_VERSION=3.6.2

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

arch="${1:-}"
[ $# -gt 0 ] && shift
deb=false
check=false
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) deb=true ;;
        --check) check=true ;;
        --profile)
            [ $# -ge 2 ] || { echo "cross.sh: --profile needs a NAME" >&2; exit 2; }
            profile="$2"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "cross.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

case "$arch" in
    aarch64 | arm64) triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu debarch=arm64 qemu=qemu-aarch64 ;;
    armhf | armv7) triple=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf debarch=armhf qemu=qemu-arm ;;
    amd64 | x86_64) triple=x86_64-unknown-linux-gnu gnu="" debarch=amd64 qemu="" ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cross.sh: first argument must be aarch64, armhf or amd64 (try --help)" >&2; exit 2 ;;
esac

say() { printf 'cross.sh: %s\n' "$*"; }
die() { printf 'cross.sh: %s\n' "$*" >&2; exit 1; }

# The directory cargo writes a profile's output to (`dev` is the one exception to its name).
profile_dir() { if [ "$profile" = dev ]; then echo debug; else echo "$profile"; fi; }

target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
cargo_args=(--profile "$profile" --target "$triple" --locked)

# Environment for a cross target: Debian's rustc, the cross gcc as linker and C/C++ compiler.
setup_cross_env() {
    local var="${triple//-/_}"
    local VAR="${var^^}"
    [ -x /usr/bin/rustc ] || die "/usr/bin/rustc is missing: run  scripts/setup.sh --cross-deps"
    command -v "$gnu-gcc" >/dev/null || die "$gnu-gcc is missing: run  scripts/setup.sh --cross-deps"
    local sysroot
    sysroot="$(/usr/bin/rustc --print sysroot)"
    [ -d "$sysroot/lib/rustlib/$triple/lib" ] ||
        die "no Rust standard library for $triple in $sysroot: install libstd-rust-web-dev:$debarch (scripts/setup.sh --cross-deps)"
    export RUSTC=/usr/bin/rustc
    export "CARGO_TARGET_${VAR}_LINKER=$gnu-gcc"
    export "CC_${var}=$gnu-gcc" "CXX_${var}=$gnu-g++" "AR_${var}=$gnu-ar"
    export "BINDGEN_EXTRA_CLANG_ARGS_${var}=--target=$gnu -I/usr/include/$gnu"
    export "PKG_CONFIG_ALLOW_CROSS=1"
    say "rustc for $triple: $(/usr/bin/rustc --version) (rustup's stays first on PATH: $(command -v rustc))"
}

# cargo-deb, pinned; installed into ~/.cargo/bin by cargo itself when missing.
ensure_cargo_deb() {
    if cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
        return 0
    fi
    say "installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked)"
    # A separate target dir: the tool's build must not share (or evict) the project's.
    CARGO_TARGET_DIR="$target_dir/cargo-deb-build" cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION"
    rm -rf "$target_dir/cargo-deb-build"
}

size_of() { du -h "$1" | cut -f1; }

build() {
    local start=$SECONDS
    if [ -n "$gnu" ]; then
        # The environment only for this cargo call, so that `--deb`'s host tools are unaffected.
        (setup_cross_env && cargo build "${cargo_args[@]}" --bin framecast)
    else
        cargo build "${cargo_args[@]}" --bin framecast
    fi
    bin="$target_dir/$triple/$(profile_dir)/framecast"
    [ -x "$bin" ] || die "cargo said it built, but $bin is missing"
    say "built $bin ($(size_of "$bin"), $((SECONDS - start)) s): $(file -b "$bin" | cut -d, -f1-2)"
}

package() {
    ensure_cargo_deb
    local out
    # --no-build: the binary above is the one packaged (cargo-deb would otherwise rebuild it
    # with the host's rustc, which has no ARM standard library). --strip: the release profile
    # keeps line tables (debug = 1), which would make the package 5 times larger; cargo-deb
    # strips with the target's binutils ($gnu-strip).
    out="$(cargo deb --no-build --strip --target "$triple" --profile "$profile" --output "$target_dir/debian/" 2>&1 | tail -n1)"
    [ -f "$out" ] || die "cargo deb did not say where the package is: $out"
    say "package $out ($(size_of "$out"))"
}

check() {
    [ -n "$qemu" ] || die "--check is for ARM targets (run examples/arm_check.rs with cargo run on x86-64)"
    command -v "$qemu" >/dev/null || die "$qemu is missing: run  scripts/setup.sh --cross-deps"
    local start=$SECONDS
    (setup_cross_env && cargo build "${cargo_args[@]}" --example arm_check)
    local ex
    ex="$target_dir/$triple/$(profile_dir)/examples/arm_check"
    say "built $ex ($(size_of "$ex"), $((SECONDS - start)) s)"
    # The binary is dynamically linked against the target's glibc: -L gives qemu the sysroot.
    # Bounded: a program that starts a thread hangs under qemu-user on these machines.
    timeout 120 "$qemu" -L "/usr/$gnu" "$ex"
    say "$ex ran under $qemu: ok"
}

build
if $check; then
    check
fi
if $deb; then
    package
fi
