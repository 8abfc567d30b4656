#!/usr/bin/env bash
# Wi-Fi mode against a simulated bad link: `framecast send --listen` <- `framecast netsim`
# (5 Mbit/s, 20 ms each way, 5 ms jitter, 64 KB router queue) <- `framecast recv --connect
# --headless --frame-log`, 1280x720 test pattern at 30 fps, one case after another:
#
#   cc          congestion control only (the default), quality 75
#   target      --target-kbps 4000
#   latency     --max-latency-ms 150
#   nocc        --no-congestion-control, quality 75 (what other MJPEG streamers do)
#   target+stall, latency+stall: the same through --stall-every 10s --stall 500ms
#   downscale   --target-kbps 1500 --allow-downscale
#
# Prints per case: fps, kbit/s, quality, capture->displayed p50/p95/p99 after the warm-up
# (first 5 s), the p95 of the last 10 s over the p95 of the 10 s after warm-up (growth), and
# for stalls the worst time from a stall's end until latency stays under the budget, and for
# the 4000 kbit/s target cases the second from which the bit rate stays within 10 % of it.
#
#   bash benches/wifi.sh                 # 60 s per case, about 7.5 minutes
#   DURATION=20 CASES="target nocc" bash benches/wifi.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${DURATION:-60}"
CASES="${CASES:-cc target latency nocc target+stall latency+stall downscale}"
OUT="${OUT:-target/wifi-bench}"
mkdir -p "$OUT"
. benches/lib.sh
release_build
BIN=$bin

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

run_case() {
    local name="$1"
    local send_flags=() netsim_flags=() budget
    case "$name" in
        cc) send_flags=(--quality 75); budget=200 ;;
        target) send_flags=(--target-kbps 4000); budget=200 ;;
        latency) send_flags=(--max-latency-ms 150); budget=150 ;;
        nocc) send_flags=(--quality 75 --no-congestion-control); budget=200 ;;
        target+stall) send_flags=(--target-kbps 4000); netsim_flags=(--stall-every 10s --stall 500ms); budget=200 ;;
        latency+stall) send_flags=(--max-latency-ms 150); netsim_flags=(--stall-every 10s --stall 500ms); budget=150 ;;
        downscale) send_flags=(--target-kbps 1500 --allow-downscale); budget=200 ;;
        *) echo "unknown case $name" >&2; exit 2 ;;
    esac
    local sp np
    sp=$(port)
    np=$(port)
    "$BIN" send --listen "127.0.0.1:$sp" --size 1280x720 --fps 30 "${send_flags[@]}" \
        --stats-json "$OUT/$name-send.jsonl" 2>"$OUT/$name-send.log" &
    pids+=($!)
    "$BIN" netsim --listen "127.0.0.1:$np" --forward "127.0.0.1:$sp" --rate 5mbit --delay 20ms --jitter 5ms \
        "${netsim_flags[@]}" 2>"$OUT/$name-netsim.log" &
    pids+=($!)
    sleep 0.5
    "$BIN" recv --connect "127.0.0.1:$np" --headless --once --duration "$DURATION" \
        --frame-log "$OUT/$name-frames.csv" --stats-json "$OUT/$name-recv.jsonl" 2>"$OUT/$name-recv.log"
    cleanup
    pids=()
    echo "$name $budget" >>"$OUT/cases"
}

rm -f "$OUT/cases"
echo "== wifi bench: ${DURATION} s per case, load $(cut -d' ' -f1-3 /proc/loadavg)"
for c in $CASES; do
    echo "-- $c"
    run_case "$c"
done

python3 - "$OUT" <<'PY'
import csv, sys, statistics
out = sys.argv[1]
def pct(v, p):
    v = sorted(v)
    if not v: return float("nan")
    k = max(1, -(-len(v) * p // 100))
    return v[int(k) - 1]
rows = []
for line in open(f"{out}/cases"):
    name, budget = line.split(); budget = float(budget)
    fr = [r for r in csv.DictReader(open(f"{out}/{name}-frames.csv")) if r["capture_to_displayed_ms"]]
    fr = [(float(r["t_s"]), float(r["capture_to_displayed_ms"]), int(r["bytes"]), int(r["quality"])) for r in fr]
    end = fr[-1][0]
    steady = [f for f in fr if f[0] >= 5.0]
    lat = [f[1] for f in steady]
    span = steady[-1][0] - steady[0][0]
    fps = (len(steady) - 1) / span
    kbps = sum(f[2] for f in steady[1:]) * 8 / 1000 / span
    qs = [f[3] for f in steady]
    first10 = [f[1] for f in fr if 5.0 <= f[0] < 15.0]
    last10 = [f[1] for f in fr if f[0] >= end - 10.0]
    growth = pct(last10, 95) / pct(first10, 95) if first10 and last10 else float("nan")
    # Stalls: a gap in display times; recovery = from its end until latency stays under budget.
    rec = ""
    if "stall" in name:
        ends = [b[0] for a, b in zip(fr, fr[1:]) if b[0] - a[0] > 0.35]
        worst = 0.0
        for i, e in enumerate(ends):
            nxt = ends[i + 1] if i + 1 < len(ends) else float("inf")
            over = [f[0] for f in fr if e <= f[0] < nxt and f[1] > budget]
            worst = max(worst, (max(over) - e) if over else 0.0)
        rec = f"{len(ends)} stalls, worst {worst * 1000:.0f} ms"
    # Target cases: the first second from which every 1-s window's bit rate stays within
    # 10 % of the target (stall seconds excepted).
    if name.startswith("target"):
        secs = int(end)
        win = [sum(f[2] for f in fr if s <= f[0] < s + 1) * 8 / 1000 for s in range(secs)]
        bad = [s for s, k in enumerate(win) if abs(k - 4000) > 400 and not ("stall" in name and s % 10 in (9, 0, 1))]
        settled = (max(bad) + 1) if bad else 0
        rec = (rec + "; " if rec else "") + f"within 10 % of the target from {settled} s"
    rows.append((name, fps, kbps, f"{statistics.median(qs):.0f} ({min(qs)}-{max(qs)})",
                 pct(lat, 50), pct(lat, 95), pct(lat, 99), growth, rec))
print()
print("| case | fps | kbit/s | quality median (range) | latency p50 / p95 / p99 ms | p95 last 10 s / first 10 s | notes |")
print("|---|---:|---:|---|---|---:|---|")
for n, fps, kb, q, p50, p95, p99, g, rec in rows:
    print(f"| {n} | {fps:.1f} | {kb:.0f} | {q} | {p50:.0f} / {p95:.0f} / {p99:.0f} | {g:.2f} | {rec} |")
print()
print("(after the first 5 s; capture->displayed from recv --frame-log; logs in " + out + ")")
PY
