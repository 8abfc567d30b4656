# shellcheck shell=bash
# shellcheck disable=SC2034,SC2120  # sets `bin`/`target_dir` for, and takes arguments from, its callers
# Shared by the bench scripts, sourced from the repository root (`. benches/lib.sh`).

# The directory cargo builds into (CARGO_TARGET_DIR and cargo's config respected).
cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# release_build [CARGO BUILD ARGS...]: builds in release mode, then sets `target_dir` and
# `bin` (the framecast binary there).
release_build() {
    echo "== cargo build --release $*" >&2
    cargo build --quiet --release "$@"
    target_dir=$(cargo_target_dir)
    bin="$target_dir/release/framecast"
}

# measured_bin: sets `bin` to $FRAMECAST when set (to measure another build), otherwise
# builds this one (release_build).
measured_bin() {
    if [ -n "${FRAMECAST:-}" ]; then
        bin=$FRAMECAST
    else
        release_build
    fi
}
