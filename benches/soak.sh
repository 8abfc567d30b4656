#!/usr/bin/env bash
# Soak: stream for a long time and look for creep. Two processes on 127.0.0.1 (release build):
#
#   framecast send --listen 127.0.0.1:PORT --size 1280x720 --fps 30 --stats-json send.jsonl
#   framecast recv --connect 127.0.0.1:PORT --headless --duration DURATION \
#                  --stats-interval 60 --stats-json recv.jsonl
#
#   bash benches/soak.sh                   # 10 minutes
#   DURATION=120 bash benches/soak.sh      # shorter
#   SIZE=640x480 FPS=15 QUALITY=60 WARMUP=10 SAMPLE=10 bash benches/soak.sh
#
# Prints the resident memory (VmRSS from /proc/PID/status) of both processes after WARMUP
# seconds and at the end, with the peak of the samples taken every SAMPLE seconds, and one
# row per minute of the receiver's stats: fps, drops, and capture->displayed latency
# p50/p95/p99. The receiver reports once a minute (--stats-interval 60), so each minute's
# percentiles come from that minute's own histogram, not from averaging per-second ones.
# Growth "beyond noise" is for the reader to judge: compare "end - start" with the peak.
#
# Needs python3. The load average at start and end is printed: other work on the machine
# shows up in the latency column.
set -euo pipefail

DURATION=${DURATION:-600}
SIZE=${SIZE:-1280x720}
FPS=${FPS:-30}
QUALITY=${QUALITY:-75}
WARMUP=${WARMUP:-10}
SAMPLE=${SAMPLE:-10}
INTERVAL=${INTERVAL:-60}

command -v python3 >/dev/null || { echo "python3 not found; install it with: apt-get install -y python3" >&2; exit 1; }
if [ "$DURATION" -le "$((WARMUP + 5))" ]; then
    echo "DURATION=$DURATION must be more than WARMUP=$WARMUP + 5 seconds" >&2
    exit 1
fi

cd "$(dirname "$0")/.."
. benches/lib.sh
tmp=$(mktemp -d)
send_pid=""
recv_pid=""
cleanup() {
    for p in $recv_pid $send_pid; do
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

release_build
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
"$bin" send --listen "127.0.0.1:$port" --size "$SIZE" --fps "$FPS" --quality "$QUALITY" \
    --stats-json "$tmp/send.jsonl" 2>"$tmp/send.log" &
send_pid=$!
for _ in $(seq 100); do
    grep -q "waiting for viewers" "$tmp/send.log" && break
    sleep 0.1
done
"$bin" recv --connect "127.0.0.1:$port" --headless --duration "$DURATION" --stats-interval "$INTERVAL" \
    --stats-json "$tmp/recv.jsonl" 2>"$tmp/recv.log" &
recv_pid=$!
echo "== streaming $SIZE at $FPS fps, quality $QUALITY, for $DURATION s (sender pid $send_pid, receiver pid $recv_pid)" >&2

start=$(date +%s)
: >"$tmp/rss.txt"
while kill -0 "$recv_pid" 2>/dev/null; do
    now=$(($(date +%s) - start))
    # Samples from the end of the warm-up to 2 s before the receiver's end.
    if [ "$now" -ge "$WARMUP" ] && [ "$now" -le "$((DURATION - 2))" ]; then
        echo "$now $(rss "$send_pid") $(rss "$recv_pid")" >>"$tmp/rss.txt"
        echo "   t=${now}s  RSS send $(rss "$send_pid") KiB  recv $(rss "$recv_pid") KiB" >&2
    fi
    next=$((now < WARMUP ? WARMUP : now + SAMPLE))
    if [ "$next" -gt "$((DURATION - 2))" ] && [ "$now" -lt "$((DURATION - 2))" ]; then
        next=$((DURATION - 2))
    fi
    while [ "$(($(date +%s) - start))" -lt "$next" ] && kill -0 "$recv_pid" 2>/dev/null; do
        sleep 0.5
    done
done
recv_status=0
wait "$recv_pid" || recv_status=$?
recv_pid=""
kill -INT "$send_pid" 2>/dev/null || true
wait "$send_pid" || true
send_pid=""
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$recv_status" -ne 0 ]; then
    echo "the receiver failed (status $recv_status); its log:" >&2
    tail -20 "$tmp/recv.log" >&2
    exit 1
fi

python3 - "$tmp" "$SIZE" "$FPS" "$QUALITY" "$DURATION" "$load_start" "$load_end" <<'EOF'
import json, sys

tmp, size, fps, quality, duration, load_start, load_end = sys.argv[1:8]
samples = [tuple(int(x) for x in l.split()) for l in open(f"{tmp}/rss.txt") if l.strip()]
if len(samples) < 2:
    sys.exit("fewer than two RSS samples: the receiver ended early")
rows = [json.loads(l) for l in open(f"{tmp}/recv.jsonl") if l.strip()]
intervals = [r for r in rows if r.get("type") == "interval"]
summary = [r for r in rows if r.get("type") == "summary"]

print(f"soak: {size} at {fps} fps, quality {quality}, {duration} s; load average {load_start} at start, {load_end} at end")
print()
print("| process | RSS start (KiB) | RSS end (KiB) | end - start | peak (KiB) |")
print("|---|---|---|---|---|")
(t0, s0, r0), (t1, s1, r1) = samples[0], samples[-1]
for name, i in (("send", 1), ("recv", 2)):
    a, b = samples[0][i], samples[-1][i]
    peak = max(s[i] for s in samples)
    print(f"| {name} | {a} | {b} | {b - a:+} | {peak} |")
print(f"\n(RSS start at t={t0} s, end at t={t1} s, {len(samples)} samples)\n")
print("capture->displayed latency per receiver stats interval (a minute unless INTERVAL is set):\n")
print("| # | until t (s) | fps | drops | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |")
print("|---|---|---|---|---|---|---|---|")
def cells(r):
    lat = r.get("latency_capture_displayed_ms") or {}
    g = lambda k: f"{lat[k]:.1f}" if k in lat else "-"
    return f"{r['fps']:.1f} | {r['drops_total']} | {g('p50')} | {g('p95')} | {g('p99')} | {g('max')}"
for n, r in enumerate(intervals, 1):
    print(f"| {n} | {r['t']:.0f} | {cells(r)} |")
if summary:
    s = summary[-1]
    print(f"| all | {s['t']:.0f} | {cells(s)} |")
    if s.get("reconnects"):
        print(f"\nreconnects: {s['reconnects']}")
EOF
