#!/usr/bin/env bash
# Runs one of framecast's fuzz targets (fuzz/fuzz_targets/) for a while, on the stable
# toolchain, and says what came of it.
#
#   scripts/fuzz.sh TARGET [SECONDS]        # SECONDS defaults to 180
#
# It installs cargo-fuzz from crates.io if it is missing, writes the seed corpus
# (fuzz/examples/gen_corpus.rs, and for the RTSP targets fuzz/gst_seeds.py or
# fuzz/rtsp_seeds.py) into fuzz/corpus/, builds the target with libFuzzer and
# AddressSanitizer, runs it for SECONDS and prints the executions, libFuzzer's coverage
# (cov: edges, ft: features) at the start (the seeds and what earlier runs kept) and at the
# end, and any crash with its reproducer.
# Exit status: 0 when the run ended without a finding, 1 on a finding, 2 on a usage or
# build error.
#
# cargo-fuzz asks for nightly-only compiler flags (-Zsanitizer, sanitizer coverage);
# RUSTC_BOOTSTRAP=1 lets the stable compiler take them. The same compiler, so the same code.
#
# Environment:
#   CARGO_TARGET_DIR    where to build (default fuzz/target); the target and the corpus
#                       generator are built under it, in directories of their own
#   FUZZ_SANITIZER      address (default) or none
#   FUZZ_TOOLCHAIN      a rustup toolchain for `cargo +TOOLCHAIN fuzz` (default: stable,
#                       with RUSTC_BOOTSTRAP=1)
#   FUZZ_GEN            0: do not run gen_corpus (saves its build; the corpus stays as it is)
#   FUZZ_ARGS           more libFuzzer flags, e.g. "-max_len=4096" or "-seed=1"
#   FUZZ_LOG            where to keep libFuzzer's output (default fuzz/artifacts/TARGET.log)
#
# Not for CI: a run takes minutes, and CI's budget is for the tests (.ci/run).
set -euo pipefail

usage() {
    echo "usage: scripts/fuzz.sh TARGET [SECONDS]   (targets: $(targets | tr '\n' ' '))" >&2
    exit 2
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz="$root/fuzz"

# The targets fuzz/Cargo.toml declares.
targets() {
    find "$fuzz/fuzz_targets" -maxdepth 1 -name '*.rs' -printf '%f\n' | sed 's/\.rs$//' | sort
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
target=$1
secs=${2:-180}
targets | grep -qx "$target" || { echo "no fuzz target '$target'" >&2; usage; }
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
    echo "SECONDS must be a positive integer, not '$secs'" >&2
    usage
fi

sanitizer=${FUZZ_SANITIZER:-address}
case "$sanitizer" in address | none) ;; *) echo "FUZZ_SANITIZER must be address or none" >&2; exit 2 ;; esac
target_dir=${CARGO_TARGET_DIR:-$fuzz/target}
log=${FUZZ_LOG:-$fuzz/artifacts/$target.log}
corpus="$fuzz/corpus/$target"
artifacts="$fuzz/artifacts/$target"
mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"

if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    cargo_fuzz=(cargo "+$FUZZ_TOOLCHAIN" fuzz)
else
    export RUSTC_BOOTSTRAP=1
    cargo_fuzz=(cargo fuzz)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
fi
echo "== $(cargo fuzz --version), $(rustc ${FUZZ_TOOLCHAIN:++$FUZZ_TOOLCHAIN} --version)${RUSTC_BOOTSTRAP:+ with RUSTC_BOOTSTRAP=1}"

# Per-target libFuzzer flags (docs/malformed-inputs.md, "Fuzzing"): the JPEG, RTP and RTSP targets
# may not allocate 64 MB at once, whatever an input claims; decode's inputs are up to 8 KiB.
flags=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
case "$target" in
    jpeg | split | rtp_jpeg | rtsp_source | udp_media | mjpeg_split | multipart) flags+=(-malloc_limit_mb=64) ;;
    decode) flags+=(-max_len=8192) ;;
    # past the 8 KiB cap on a request's head
    rtsp_request) flags+=(-malloc_limit_mb=64 -max_len=16384) ;;
esac
# shellcheck disable=SC2206 # FUZZ_ARGS is a list of flags on purpose
flags+=(${FUZZ_ARGS:-})

# Seeds: the generator knows the targets of fuzz/examples/gen_corpus.rs; a target it does
# not know starts from what is in its corpus directory (or from nothing).
echo "== seeding $corpus"
if [ "${FUZZ_GEN:-1}" != 0 ]; then
    cargo run --quiet --release --manifest-path "$fuzz/Cargo.toml" --target-dir "$target_dir/gen-corpus" \
        --example gen_corpus -- "$fuzz/corpus" || { echo "the seed generator failed" >&2; exit 2; }
fi
# The RTSP targets: what foreign software sends. rtp_jpeg and rtsp_source (same input format):
# GStreamer's rtpjpegpay packets (also from the JPEGs with restart markers gen_corpus wrote
# for split); rtsp_request: the
# requests of ffmpeg and rtspsrc. Both need Debian's python3, ffmpeg and GStreamer.
seeder=()
case "$target" in
    rtp_jpeg | rtsp_source) seeder=("$fuzz/gst_seeds.py" "$corpus" "$fuzz/corpus/split") ;;
    rtsp_request) seeder=("$fuzz/rtsp_seeds.py" "$corpus") ;;
esac
if [ ${#seeder[@]} -gt 0 ]; then
    /usr/bin/python3 "${seeder[@]}" || echo "   (no seeds from foreign clients: scripts/setup.sh --test-deps installs them)"
fi
echo "   $(find "$corpus" -type f | wc -l) inputs in the corpus"

echo "== building $target (sanitizer: $sanitizer)"
cd "$fuzz"
"${cargo_fuzz[@]}" build --sanitizer "$sanitizer" --target-dir "$target_dir/fuzz" "$target" ||
    { echo "building $target failed" >&2; exit 2; }

echo "== running $target for ${secs}s (log: $log)"
set +e
"${cargo_fuzz[@]}" run --sanitizer "$sanitizer" --target-dir "$target_dir/fuzz" "$target" "$corpus" -- \
    -max_total_time="$secs" "${flags[@]}" >"$log" 2>&1
status=$?
set -e

# libFuzzer's status lines: "#N INITED cov: C ft: F corp: ..." after the seeds, and
# "#N DONE cov: ..." (or the last pulse/NEW line before a crash) at the end.
inited=$(grep -m1 -E '^#[0-9]+[[:space:]]+INITED' "$log" || true)
last=$(grep -E '^#[0-9]+[[:space:]]+(DONE|NEW|REDUCE|pulse|INITED)' "$log" | tail -n1 || true)
field() { sed -n "s/.*[[:space:]]$1: *\([^ ]*\).*/\1/p" <<<"$2"; }
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
[ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")

echo "== $target: ${secs}s, sanitizer $sanitizer"
echo "   executions: ${execs:-?} (${rate:-?}/s)"
echo "   coverage:   cov $(field cov "$last") ft $(field ft "$last") (at the start: cov $(field cov "$inited") ft $(field ft "$inited"))"
echo "   corpus:     $(field corp "$last") inputs/bytes, $(find "$corpus" -type f | wc -l) files in $corpus"
if [ "$status" -eq 0 ]; then
    echo "   findings:   none"
    exit 0
fi
echo "   findings:   libFuzzer exited $status; from its log:"
grep -E -m20 "panicked at|==ERROR|ERROR: libFuzzer|SUMMARY|out-of-memory|malloc\(|timeout|deadly signal" "$log" | sed 's/^/     /' || true
grep -E "Test unit written to|^Base64:" "$log" | sed 's/^/     /' || true
echo "   replay:     cd fuzz && ${cargo_fuzz[*]} run --sanitizer $sanitizer --target-dir $target_dir/fuzz $target <artifact>"
exit 1
