#!/usr/bin/env bash
# End-to-end throughput and cost of the whole pipeline on one machine: sender and receiver
# in one process (`framecast demo`), test pattern, as fast as possible, headless receiver.
#
#   bash benches/e2e.sh                       # 1280x720, 10 s, 3 runs
#   RUNS=5 DURATION=20 SIZE=640x480 bash benches/e2e.sh
#   KEY=both bash benches/e2e.sh              # with and without --key-file, runs alternating
#
# KEY=0 (default) runs without a key, KEY=1 with a new key (--key-file: Noise handshake, every
# message encrypted and authenticated), KEY=both alternates the two and gives a median for
# each, to measure what encryption costs.
#
# Per run: end-to-end fps and frames (the receiver's summary: frames decoded), CPU seconds
# (user + sys from /usr/bin/time -v), CPU ms per decoded frame (all threads of both ends:
# capture, encode, send, receive, decode, stats), and peak RSS. Then the median of each.
# With --fps 0 the sender still drops frames the socket cannot take yet (newest wins), so
# "captured" > "sent" > "frames"; the drop causes are listed under the table.
#
# Needs /usr/bin/time (Debian: apt-get install -y time) and python3.
set -euo pipefail

SIZE=${SIZE:-1280x720}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
QUALITY=${QUALITY:-75}
KEY=${KEY:-0}
case "$KEY" in
    0) modes=(plain) ;;
    1) modes=(key) ;;
    both) modes=(plain key) ;;
    *) echo "KEY must be 0, 1 or both, not '$KEY'" >&2; exit 2 ;;
esac

if [ ! -x /usr/bin/time ]; then
    echo "/usr/bin/time not found; install it with: apt-get install -y time" >&2
    exit 1
fi
command -v python3 >/dev/null || { echo "python3 not found; install it with: apt-get install -y python3" >&2; exit 1; }

cd "$(dirname "$0")/.."
. benches/lib.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

release_build

if [ "$KEY" != 0 ]; then
    "$bin" keygen "$tmp/key" 2>/dev/null
fi

for i in $(seq "$RUNS"); do
    for mode in "${modes[@]}"; do
        id="$mode-$i"
        cmd=("$bin" demo --headless --fps 0 --size "$SIZE" --quality "$QUALITY" --duration "$DURATION"
            --recv-stats-json "$tmp/recv-$id.jsonl" --send-stats-json "$tmp/send-$id.jsonl")
        if [ "$mode" = key ]; then
            cmd+=(--key-file "$tmp/key")
        fi
        echo "== run $i/$RUNS ($mode): ${cmd[*]}" >&2
        cut -d' ' -f1 /proc/loadavg >"$tmp/load-$id.txt"
        /usr/bin/time -v -o "$tmp/time-$id.txt" "${cmd[@]}" 2>"$tmp/log-$id.txt" ||
            { echo "run $id failed; its log:" >&2; tail -20 "$tmp/log-$id.txt" >&2; exit 1; }
    done
done

python3 - "$tmp" "$RUNS" "$SIZE" "$DURATION" "$QUALITY" "${modes[@]}" <<'EOF'
import json, statistics, sys

tmp, runs, size, duration, quality = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
modes = sys.argv[6:]

def summary(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r for r in rows if r.get("type") == "summary"][-1]

def time_v(path):
    out = {}
    for line in open(path):
        key, _, val = line.strip().rpartition(": ")
        out[key] = val
    return out

def run(mode, i):
    id = f"{mode}-{i}"
    recv, send = summary(f"{tmp}/recv-{id}.jsonl"), summary(f"{tmp}/send-{id}.jsonl")
    t = time_v(f"{tmp}/time-{id}.txt")
    cpu = float(t["User time (seconds)"]) + float(t["System time (seconds)"])
    return {
        "fps": recv["fps"],
        "frames": recv["frames"],
        "captured": send.get("captured", 0),
        "sent": send["frames"],
        "drops": send["drops_total"] + recv["drops_total"],
        "cpu_s": cpu,
        "cpu_ms_frame": 1000 * cpu / max(recv["frames"], 1),
        "rss_mb": int(t["Maximum resident set size (kbytes)"]) / 1024,
        "enc_ms": send.get("encode_ms") or 0.0,
        "dec_ms": recv.get("decode_ms") or 0.0,
        "load": float(open(f"{tmp}/load-{id}.txt").read()),
        "causes": {**send.get("drops", {}), **recv.get("drops", {})},
    }

cols = [("fps", "fps", "{:.1f}"), ("frames", "frames", "{:d}"), ("captured", "captured", "{:d}"),
        ("sent", "sent", "{:d}"), ("drops", "drops", "{:d}"), ("cpu_s", "CPU s", "{:.2f}"),
        ("cpu_ms_frame", "CPU ms/frame", "{:.2f}"), ("rss_mb", "peak RSS MB", "{:.1f}"),
        ("enc_ms", "enc ms", "{:.2f}"), ("dec_ms", "dec ms", "{:.2f}"), ("load", "load before", "{:.2f}")]
def cell(v, f):
    if f == "{:d}":  # a median of counts may fall between two
        return f"{int(v):d}" if v == int(v) else f"{v:.1f}"
    return f.format(v)

print()
print(f"framecast demo --headless --fps 0 --size {size} --quality {quality} --duration {duration}, {runs} runs")
print("frames/fps: decoded by the receiver; captured/sent: sender; drops: both ends, all causes;")
print("CPU: user+sys of the whole process (both ends); CPU ms/frame = CPU s / decoded frames")
for mode in modes:
    rows = [run(mode, i) for i in range(1, runs + 1)]
    if len(modes) > 1 or mode == "key":
        print(f"-- {'with --key-file (encrypted)' if mode == 'key' else 'without a key (plaintext)'}")
    print(f"{'':<8}" + "".join(f"{h:>13}" for _, h, _ in cols))
    for i, r in enumerate(rows, 1):
        print(f"{'run ' + str(i):<8}" + "".join(f"{cell(r[k], f):>13}" for k, _, f in cols))
    med = {k: statistics.median(r[k] for r in rows) for k, _, _ in cols}
    print(f"{'median':<8}" + "".join(f"{cell(med[k], f):>13}" for k, _, f in cols))
    for i, r in enumerate(rows, 1):
        print(f"run {i} drops by cause: " + ", ".join(f"{k}={v}" for k, v in sorted(r["causes"].items())))
print("'load before' is the 1-minute load average when the run started: a run that shared the cores")
print("with other work reads low on fps and high on CPU ms/frame.")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
