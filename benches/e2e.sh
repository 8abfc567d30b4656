#!/usr/bin/env bash
# End-to-end throughput and cost of the whole pipeline on one machine: sender and receiver
# in one process (`framecast demo`), test pattern, as fast as possible, headless receiver.
#
#   bash benches/e2e.sh                       # 1280x720, 10 s, 3 runs
#   RUNS=5 DURATION=20 SIZE=640x480 bash benches/e2e.sh
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

if [ ! -x /usr/bin/time ]; then
    echo "/usr/bin/time not found; install it with: apt-get install -y time" >&2
    exit 1
fi
command -v python3 >/dev/null || { echo "python3 not found; install it with: apt-get install -y python3" >&2; exit 1; }

cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== cargo build --release" >&2
cargo build --quiet --release
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/framecast"

for i in $(seq "$RUNS"); do
    cmd=("$bin" demo --headless --fps 0 --size "$SIZE" --quality "$QUALITY" --duration "$DURATION"
        --recv-stats-json "$tmp/recv-$i.jsonl" --send-stats-json "$tmp/send-$i.jsonl")
    echo "== run $i/$RUNS: ${cmd[*]}" >&2
    cut -d' ' -f1 /proc/loadavg >"$tmp/load-$i.txt"
    /usr/bin/time -v -o "$tmp/time-$i.txt" "${cmd[@]}" 2>"$tmp/log-$i.txt" ||
        { echo "run $i failed; its log:" >&2; tail -20 "$tmp/log-$i.txt" >&2; exit 1; }
done

python3 - "$tmp" "$RUNS" "$SIZE" "$DURATION" "$QUALITY" <<'EOF'
import json, statistics, sys

tmp, runs, size, duration, quality = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def summary(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r for r in rows if r.get("type") == "summary"][-1]

def time_v(path):
    out = {}
    for line in open(path):
        key, _, val = line.strip().rpartition(": ")
        out[key] = val
    return out

rows = []
for i in range(1, runs + 1):
    recv, send = summary(f"{tmp}/recv-{i}.jsonl"), summary(f"{tmp}/send-{i}.jsonl")
    t = time_v(f"{tmp}/time-{i}.txt")
    cpu = float(t["User time (seconds)"]) + float(t["System time (seconds)"])
    rows.append({
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
        "load": float(open(f"{tmp}/load-{i}.txt").read()),
        "causes": {**send.get("drops", {}), **recv.get("drops", {})},
    })

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
