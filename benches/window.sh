#!/usr/bin/env bash
# The window path: `framecast demo` drawing into a real minifb window under Xvfb, at a fixed
# frame rate. Prints frames shown per second and the delay the view adds, decoded→displayed
# (from the decoder's last pixel to `update_with_buffer` returning), per frame: p50/p95/max,
# plus capture→displayed and the drops. The goal (issue 7): 60 fps at 1280x720 with less than
# one frame (16.7 ms) decoded→displayed.
#
#   bash benches/window.sh                          # 1280x720 at 60 fps, 10 s, 3 runs
#   SIZE=1920x1080 FPS=30 RUNS=1 bash benches/window.sh
#   EXTRA="--fast-upsample" bash benches/window.sh  # any other demo flags
#   FRAMECAST=/path/to/other/framecast bash benches/window.sh   # another build
#
# Needs Xvfb (Debian: apt-get install -y xvfb), /usr/bin/time and python3.
set -euo pipefail

SIZE=${SIZE:-1280x720}
FPS=${FPS:-60}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
EXTRA=${EXTRA:-}

command -v Xvfb >/dev/null || { echo "Xvfb not found; install it with: apt-get install -y xvfb" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found; install it with: apt-get install -y time" >&2; exit 1; }

cd "$(dirname "$0")/.."
. benches/lib.sh
tmp=$(mktemp -d)
xvfb_pid=
cleanup() {
    [ -n "$xvfb_pid" ] && kill "$xvfb_pid" 2>/dev/null && wait "$xvfb_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

measured_bin

# Xvfb picks a free display and writes its number to fd 3.
Xvfb -displayfd 3 -screen 0 2048x1536x24 -nolisten tcp 3>"$tmp/display" 2>"$tmp/xvfb.log" &
xvfb_pid=$!
for _ in $(seq 100); do [ -s "$tmp/display" ] && break; sleep 0.1; done
[ -s "$tmp/display" ] || { echo "Xvfb did not start; its log:" >&2; cat "$tmp/xvfb.log" >&2; exit 1; }
DISPLAY=":$(cat "$tmp/display")"
export DISPLAY
unset WAYLAND_DISPLAY

for i in $(seq "$RUNS"); do
    read -ra extra <<<"$EXTRA"
    cmd=("$bin" demo --size "$SIZE" --fps "$FPS" --duration "$DURATION" --recv-stats-json "$tmp/recv-$i.jsonl" "${extra[@]}")
    echo "== run $i/$RUNS on $DISPLAY: ${cmd[*]}" >&2
    cut -d' ' -f1 /proc/loadavg >"$tmp/load-$i.txt"
    /usr/bin/time -f '%e %U %S' -o "$tmp/time-$i.txt" "${cmd[@]}" 2>"$tmp/log-$i.txt" ||
        { echo "run $i failed; its log:" >&2; tail -20 "$tmp/log-$i.txt" >&2; exit 1; }
    if grep -q headless "$tmp/log-$i.txt"; then
        echo "run $i ran headless, not in a window; its log:" >&2
        tail -5 "$tmp/log-$i.txt" >&2
        exit 1
    fi
done

python3 - "$tmp" "$RUNS" "$SIZE" "$FPS" "$DURATION" <<'EOF'
import json, statistics, sys

tmp, runs, size, fps, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
frame_ms = 1000 / fps
rows = []
for i in range(1, runs + 1):
    s = [json.loads(l) for l in open(f"{tmp}/recv-{i}.jsonl") if '"summary"' in l][-1]
    wall, user, sys_ = (float(x) for x in open(f"{tmp}/time-{i}.txt").read().split()[-3:])
    shown = s.get("latency_decoded_displayed_ms") or {}  # absent before this field existed
    disp = s.get("latency_capture_displayed_ms") or {}
    rows.append({
        "fps": s["displayed"] / s["seconds"] if s["seconds"] else 0.0,
        "shown": s["displayed"],
        "dec_disp_p50": shown.get("p50", float("nan")),
        "dec_disp_p95": shown.get("p95", float("nan")),
        "dec_disp_max": shown.get("max", float("nan")),
        "cap_disp_p50": disp.get("p50", float("nan")),
        "cap_disp_p95": disp.get("p95", float("nan")),
        "drops": s["drops_total"],
        "cpu_ms": 1000 * (user + sys_) / max(s["displayed"], 1),
        "load": float(open(f"{tmp}/load-{i}.txt").read()),
    })
cols = [("fps", "shown fps", "{:.1f}"), ("shown", "frames", "{:.0f}"),
        ("dec_disp_p50", "dec->disp p50", "{:.2f}"), ("dec_disp_p95", "p95", "{:.2f}"),
        ("dec_disp_max", "max", "{:.2f}"), ("cap_disp_p50", "cap->disp p50", "{:.2f}"),
        ("cap_disp_p95", "p95", "{:.2f}"), ("drops", "drops", "{:.0f}"),
        ("cpu_ms", "CPU ms/frame", "{:.2f}"), ("load", "load before", "{:.2f}")]
print()
print(f"framecast demo in a minifb window under Xvfb, {size} at --fps {fps}, {duration} s, {runs} runs (latencies in ms)")
print(f"{'':<8}" + "".join(f"{h:>14}" for _, h, _ in cols))
for i, r in enumerate(rows, 1):
    print(f"{'run ' + str(i):<8}" + "".join(f"{f.format(r[k]):>14}" for k, _, f in cols))
med = {k: statistics.median(r[k] for r in rows) for k, _, _ in cols}
print(f"{'median':<8}" + "".join(f"{f.format(med[k]):>14}" for k, _, f in cols))
ok = med["dec_disp_p95"] < frame_ms and med["fps"] >= 0.95 * fps
print(f"goal: {fps} fps shown and decoded->displayed p95 < {frame_ms:.1f} ms (one frame): {'met' if ok else 'NOT met'}")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
