#!/usr/bin/env bash
# Runs every test target in two lanes at once, after `cargo test --all-targets --no-run` built
# them: most tests wait on real-time streams (30 fps for seconds, reconnect backoff, RTSP and
# browser start-up), so one lane leaves the CPU idle; two lanes take about half the wall time.
#
# Lane 1 (normal priority) holds the tests that measure timing (latency, the window at 60 fps,
# Wi-Fi mode, UDP and the packet link, reconnect backoff); lane 2 (nice 5) everything else, including any test
# file added later (listed or not). Each target's output goes to target/ci-tests/NAME.log and
# is printed whole when it ends; a failed target fails the run after both lanes finish.
#
#   scripts/ci-tests.sh            (from the repository root; CI=true as .ci/run sets it)
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=target/ci-tests
rm -rf "$out"
mkdir -p "$out"

# Timing-sensitive targets: normal priority, one at a time.
lane1=(wifi faults udp latency rtsp_client e2e packet_link window)

# Every other target: the library's unit tests, the binary, benches and examples in test mode,
# and each tests/*.rs not in lane 1 (longest first, so the lanes end together).
lane2=(rtsp_publish rtsp_server http)
for f in tests/*.rs; do
    name=$(basename "$f" .rs)
    if [[ " ${lane1[*]} ${lane2[*]} " != *" $name "* ]]; then
        lane2+=("$name")
    fi
done
lane2+=(--lib --bins --examples)
# The benches in test mode, one by one (`--benches` would run the library's tests again).
for f in benches/*.rs; do
    lane2+=("--bench=$(basename "$f" .rs)")
done

# run_target NAME: `cargo test` for one target, its log printed whole when it ends.
run_target() {
    local name="$1" args log start rc=0
    if [[ "$name" == --* ]]; then
        args=("$name")
        log="$out/${name#--}.log"
    else
        args=(--test "$name")
        log="$out/$name.log"
    fi
    start=$(date +%s)
    cargo test "${args[@]}" --no-fail-fast >"$log" 2>&1 || rc=$?
    local took=$(($(date +%s) - start))
    {
        flock 9
        echo
        echo "== test target $name: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in ${took} s"
        cat "$log"
        printf '%-14s %4d s  %s\n' "$name" "$took" "$([ "$rc" -eq 0 ] && echo ok || echo FAILED)" >>"$out/summary"
    } 9>"$out/.print"
    return "$rc"
}

# run_lane NAME...: the targets one after another; fails if any failed.
run_lane() {
    local failed=0 t
    for t in "$@"; do
        run_target "$t" || failed=1
    done
    return "$failed"
}

run_lane "${lane1[@]}" &
lane1_pid=$!
nice -n 5 bash -c "$(declare -f run_target run_lane); out=$out; run_lane ${lane2[*]}" &
lane2_pid=$!
trap 'kill "$lane1_pid" "$lane2_pid" 2>/dev/null' EXIT

rc=0
wait "$lane1_pid" || rc=1
wait "$lane2_pid" || rc=1
trap - EXIT
echo
echo "== test targets (lane 1: ${lane1[*]})"
sort -k2 -rn "$out/summary"
exit "$rc"
