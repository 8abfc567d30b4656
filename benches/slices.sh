#!/usr/bin/env bash
# Slices (issue #12): what encoding and decoding each frame on N threads gives, against one
# thread, every ratio measured in this one invocation (runs alternate between the thread
# counts, so that a change in the machine's load falls on all of them). Sender and receiver
# in one process (`framecast demo --headless`), test pattern, 4:2:0, quality 75:
#
#   latency     capture->displayed p50 at 30 fps for each size in SIZES, with
#               --encode-threads N --decode-threads N; ratio N threads / the first of THREADS
#               (goals on 2 cores: <= 0.65 at 1920x1080, <= 0.6 at 3840x2160)
#   size        mean frame bytes in those runs, N threads against the first (one thread
#               writes no restart markers, slices one every MCU row; goal: <= 2 % more), and
#               with CODEC=1 the codec's own measurement of every restart interval
#               (`cargo test --release --lib ... -- --ignored`: 0, 1, 2 and 4 MCU rows)
#   throughput  --fps 0 at the first of SIZES, end-to-end fps; ratio N threads / the first
#               (goal: >= 0.95, no more than 5 % below one thread)
#   sliced%     per run, the share of frames each stage coded as slices (`encode_sliced_frames`,
#               `decode_sliced_frames`): under 100 while slices do not pay (e.g. at --fps 0)
#
#   bash benches/slices.sh                          # 1080p and 4K, threads 1 and 2, 10 s, 3 runs
#   QUICK=1 bash benches/slices.sh                  # 1080p only, 3 s, 1 run, no codec measurement
#   THREADS="1 4" bash benches/slices.sh            # on a 4-core board (Raspberry Pi 4 or 5)
#   SIZES=1280x720 DURATION=20 RUNS=5 bash benches/slices.sh
#   FRAMECAST=/path/to/framecast bash benches/slices.sh   # measure that binary, build nothing
#
# THREADS: thread counts, the first one the baseline (default "1 2"). SIZES: frame sizes for
# the latency runs, the first also for throughput (default "1920x1080 3840x2160").
# DURATION: seconds per run (default 10). RUNS: runs per case (default 3). CODEC: 1 runs the
# codec measurement (default 1, 0 with QUICK=1). Medians over runs are quoted; every run is
# listed with the load average when it started. Installs nothing; needs python3.
set -euo pipefail

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    SIZES=${SIZES:-1920x1080}
    DURATION=${DURATION:-3}
    RUNS=${RUNS:-1}
    CODEC=${CODEC:-0}
fi
THREADS=${THREADS:-1 2}
SIZES=${SIZES:-1920x1080 3840x2160}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
CODEC=${CODEC:-1}
QUALITY=75

read -r -a threads <<<"$THREADS"
read -r -a sizes <<<"$SIZES"
if [ "${#threads[@]}" -lt 2 ]; then
    echo "THREADS needs at least two thread counts (the first is the baseline), not '$THREADS'" >&2
    exit 2
fi
if [ "${#sizes[@]}" -lt 1 ]; then
    echo "SIZES needs at least one WIDTHxHEIGHT" >&2
    exit 2
fi
command -v python3 >/dev/null || { echo "python3 not found; install it with: apt-get install -y python3" >&2; exit 1; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

measured_bin

# run_demo ID ARGS...: one `framecast demo --headless` run with ARGS, stats in $tmp/ID-*.
run_demo() {
    local id=$1
    shift
    local cmd=("$bin" demo --headless --quality "$QUALITY" --duration "$DURATION"
        --send-stats-json "$tmp/$id-send.jsonl" --recv-stats-json "$tmp/$id-recv.jsonl" "$@")
    echo "== $id: ${cmd[*]}" >&2
    cut -d' ' -f1 /proc/loadavg >"$tmp/$id-load.txt"
    "${cmd[@]}" 2>"$tmp/$id-log.txt" ||
        { echo "run $id failed; its log:" >&2; tail -20 "$tmp/$id-log.txt" >&2; exit 1; }
}

for i in $(seq "$RUNS"); do
    for size in "${sizes[@]}"; do
        for t in "${threads[@]}"; do
            run_demo "lat-$size-$t-$i" --size "$size" --fps 30 --encode-threads "$t" --decode-threads "$t"
        done
    done
    for t in "${threads[@]}"; do
        run_demo "fps0-${sizes[0]}-$t-$i" --size "${sizes[0]}" --fps 0 --encode-threads "$t" --decode-threads "$t"
    done
done

codec_out="$tmp/codec.txt"
: >"$codec_out"
if [ "$CODEC" = 1 ]; then
    echo "== cargo test --release --lib encode_and_decode_times_and_restart_overhead -- --ignored" >&2
    cargo test --quiet --release --lib encode_and_decode_times_and_restart_overhead -- --ignored --nocapture \
        2>&1 | grep -E '^[0-9]+x[0-9]+ ' >"$codec_out" || { echo "the codec measurement failed" >&2; exit 1; }
fi

python3 - "$tmp" "$RUNS" "$DURATION" "$QUALITY" "$THREADS" "$SIZES" "$codec_out" <<'EOF'
import json, statistics, sys

tmp, runs, duration, quality = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
threads, sizes, codec_out = sys.argv[5].split(), sys.argv[6].split(), sys.argv[7]
base = threads[0]
# The issue's goals for 2 threads on 2 cores; other sizes and counts are reported only.
LATENCY_GOAL = {"1920x1080": 0.65, "3840x2160": 0.6}
SIZE_GOAL, FPS_GOAL = 1.02, 0.95

def summary(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r for r in rows if r.get("type") == "summary"][-1]

def sliced_pct(r, field, coded):
    """Percent of the frames a stage coded that it coded as slices (NaN with one thread)."""
    n = r.get(field)
    return float("nan") if n is None or not r.get(coded) else 100.0 * n / r[coded]

def run(id):
    send, recv = summary(f"{tmp}/{id}-send.jsonl"), summary(f"{tmp}/{id}-recv.jsonl")
    lat = recv.get("latency_capture_displayed_ms") or {}
    return {
        "p50": lat.get("p50", float("nan")),
        "p95": lat.get("p95", float("nan")),
        "fps": recv.get("fps", 0.0),
        "bytes": recv.get("mean_frame_bytes", float("nan")),
        "enc_ms": send.get("encode_ms", float("nan")),
        "enc_cpu": send.get("encode_cpu_ms", float("nan")),
        "dec_ms": recv.get("decode_ms", float("nan")),
        "dec_cpu": recv.get("decode_cpu_ms", float("nan")),
        "enc_sliced": sliced_pct(send, "encode_sliced_frames", "encoded"),
        "dec_sliced": sliced_pct(recv, "decode_sliced_frames", "frames"),
        "drops": send.get("drops_total", 0) + recv.get("drops_total", 0),
        "load": float(open(f"{tmp}/{id}-load.txt").read()),
    }

COLS = [("p50", "p50 ms", "{:.2f}"), ("p95", "p95 ms", "{:.2f}"), ("fps", "fps", "{:.1f}"),
        ("bytes", "frame bytes", "{:.0f}"), ("enc_ms", "enc ms", "{:.2f}"), ("enc_cpu", "enc CPU ms", "{:.2f}"),
        ("dec_ms", "dec ms", "{:.2f}"), ("dec_cpu", "dec CPU ms", "{:.2f}"),
        ("enc_sliced", "enc sliced%", "{:.0f}"), ("dec_sliced", "dec sliced%", "{:.0f}"), ("drops", "drops", "{:.0f}"),
        ("load", "load before", "{:.2f}")]

def table(kind, size):
    """Prints every run and the medians per thread count; returns the medians."""
    print(f"{'':<16}" + "".join(f"{h:>12}" for _, h, _ in COLS))
    meds = {}
    for t in threads:
        rows = [run(f"{kind}-{size}-{t}-{i}") for i in range(1, runs + 1)]
        for i, r in enumerate(rows, 1):
            print(f"{t + ' thr run ' + str(i):<16}" + "".join(f"{f.format(r[k]):>12}" for k, _, f in COLS))
        meds[t] = {k: statistics.median(r[k] for r in rows) for k, _, _ in COLS}
        print(f"{t + ' thr median':<16}" + "".join(f"{f.format(meds[t][k]):>12}" for k, _, f in COLS))
    return meds

def verdict(ratio, goal, at_most):
    if goal is None:
        return ""
    ok = ratio <= goal if at_most else ratio >= goal
    return f"  (goal {'<=' if at_most else '>='} {goal}: {'met' if ok else 'NOT met'})"

results = []
print()
print(f"framecast demo --headless, test pattern 4:2:0 q{quality}, {duration} s per run, {runs} run(s) per case,")
print(f"--encode-threads N --decode-threads N for N in {' '.join(threads)}; medians over runs")
for size in sizes:
    print(f"\n-- latency: {size} at 30 fps (capture->displayed from the receiver's summary)")
    meds = table("lat", size)
    for t in threads[1:]:
        two = t == "2" and base == "1"
        r = meds[t]["p50"] / meds[base]["p50"]
        results.append(f"capture->displayed p50 {size}, {t}/{base} threads: {meds[t]['p50']:.2f} / "
                       f"{meds[base]['p50']:.2f} ms = {r:.2f}" + verdict(r, LATENCY_GOAL.get(size) if two else None, True))
        s = meds[t]["bytes"] / meds[base]["bytes"]
        results.append(f"mean frame bytes {size}, {t}/{base} threads: {meds[t]['bytes']:.0f} / "
                       f"{meds[base]['bytes']:.0f} = {s:.4f} ({100 * (s - 1):+.2f} %)" +
                       verdict(s, SIZE_GOAL if base == "1" else None, True))
size = sizes[0]
print(f"\n-- throughput: {size} at --fps 0 (frames decoded per second, both ends on this machine)")
meds = table("fps0", size)
for t in threads[1:]:
    r = meds[t]["fps"] / meds[base]["fps"]
    results.append(f"throughput {size} --fps 0, {t}/{base} threads: {meds[t]['fps']:.1f} / "
                   f"{meds[base]['fps']:.1f} fps = {r:.2f}" + verdict(r, FPS_GOAL if base == "1" else None, False))
codec = [l.rstrip() for l in open(codec_out) if l.strip()]
if codec:
    print("\n-- the codec's measurement (one frame of the test pattern, q75 4:2:0, medians of 30):")
    for l in codec:
        print("   " + l)
print("\n== results")
for l in results:
    print(l)
print("'load before' is the 1-minute load average when a run started: a run that shared the cores with")
print("other work reads high on latency and low on fps. NaN: the binary does not report that field.")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
