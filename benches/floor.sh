#!/usr/bin/env bash
# How close the whole pipeline comes to libjpeg-turbo's own cost, and what memory each end
# needs, in one run: for each size, `tjbench` compress-from-YUV + decompress on the test
# pattern's frame (the floor), then framecast as two processes, `send --listen --source test
# --fps 0` and `recv --connect --headless` (every frame decoded to display-ready 0RGB), timed
# by /usr/bin/time -v. Prints CPU ms per frame of each end, their sum, the ratio to the floor
# (issue 7's goal: <= 1.15) and each end's peak RSS (goal: <= 30 MB at 1920x1080).
#
#   bash benches/floor.sh                              # 1280x720 and 1920x1080, 3 runs of 8 s
#   SIZES=1920x1080 RUNS=5 DURATION=10 bash benches/floor.sh
#   SEND_FLAGS=--fast-dct RECV_FLAGS=--fast-upsample bash benches/floor.sh
#
# The pipeline's CPU includes everything both processes do: rendering the pattern (moving
# parts only), capture/encode/send/receive/decode threads, TCP on 127.0.0.1, stats. tjbench
# times one core doing nothing but the codec on the same frame and settings (q75, 4:2:0,
# accurate DCT, smooth upsampling, BGRX out).
#
# Needs tjbench (apt-get install -y libjpeg-turbo-progs), /usr/bin/time (time), python3.
set -euo pipefail

SIZES=${SIZES:-"1280x720 1920x1080"}
RUNS=${RUNS:-3}
DURATION=${DURATION:-8}
QUALITY=${QUALITY:-75}
BENCHTIME=${BENCHTIME:-1}
SEND_FLAGS=${SEND_FLAGS:-}
RECV_FLAGS=${RECV_FLAGS:-}
SEQ=123

command -v tjbench >/dev/null || { echo "tjbench not found; install it with: apt-get install -y libjpeg-turbo-progs" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found; install it with: apt-get install -y time" >&2; exit 1; }

cd "$(dirname "$0")/.."
. benches/lib.sh
tmp=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

release_build --bin framecast --example pattern
pattern="$target_dir/release/examples/pattern"

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
tj_ms() {
    local label=$1 dir=$2
    shift 2
    for _ in $(seq "$RUNS"); do
        (cd "$dir" && tjbench "$@" -nowrite -benchtime "$BENCHTIME" -warmup 0.5) |
            awk -v l="$label" 'index($0, l) == 1 { for (i = 1; i <= NF; i++) if ($i == "rate:") print 1000 / $(i + 1) }'
    done | median
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

: >"$tmp/results.tsv"
for size in $SIZES; do
    d="$tmp/$size"
    mkdir -p "$d"
    "$pattern" --size "$size" --frame "$SEQ" --subsampling 420 --ppm "$d/frame.ppm" --jpg "$d/frame.jpg" --quality "$QUALITY"
    echo "== $size: tjbench, $RUNS runs x ${BENCHTIME}s" >&2
    tj_enc=$(tj_ms "Comp from YUV" "$d" frame.ppm "$QUALITY" -subsamp 420 -yuv -componly)
    tj_dec=$(tj_ms "Decompress" "$d" frame.jpg -bgrx)
    for i in $(seq "$RUNS"); do
        port=$(free_port)
        echo "== $size run $i/$RUNS: send --listen 127.0.0.1:$port --fps 0 $SEND_FLAGS / recv --connect $RECV_FLAGS" >&2
        load=$(cut -d' ' -f1 /proc/loadavg)
        # shellcheck disable=SC2086 # flag lists
        /usr/bin/time -v -o "$d/send-$i.time" "$bin" send --listen "127.0.0.1:$port" --source test --size "$size" \
            --fps 0 --quality "$QUALITY" --duration "$DURATION" --no-stats $SEND_FLAGS 2>"$d/send-$i.log" &
        pids=("$!")
        for _ in $(seq 100); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.05; done
        # shellcheck disable=SC2086
        /usr/bin/time -v -o "$d/recv-$i.time" "$bin" recv --connect "127.0.0.1:$port" --headless \
            --stats-json "$d/recv-$i.jsonl" $RECV_FLAGS 2>"$d/recv-$i.log" ||
            { echo "recv failed:" >&2; tail -5 "$d/recv-$i.log" >&2; exit 1; }
        wait "${pids[0]}" || { echo "send failed:" >&2; tail -5 "$d/send-$i.log" >&2; exit 1; }
        pids=()
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$i" "$tj_enc" "$tj_dec" "$load" "$d" >>"$tmp/results.tsv"
    done
done

python3 - "$tmp/results.tsv" <<'EOF'
import json, statistics, sys

def time_v(path):
    out = {}
    for line in open(path):
        key, _, val = line.strip().rpartition(": ")
        out[key] = val
    return out

def cpu(t):
    return float(t["User time (seconds)"]) + float(t["System time (seconds)"])

rows = {}
for line in open(sys.argv[1]):
    size, i, tj_enc, tj_dec, load, d = line.split("\t")
    d = d.strip()
    s, r = time_v(f"{d}/send-{i}.time"), time_v(f"{d}/recv-{i}.time")
    summ = [json.loads(l) for l in open(f"{d}/recv-{i}.jsonl") if '"summary"' in l][-1]
    n = max(summ["frames"], 1)
    rows.setdefault(size, []).append({
        "tj_enc": float(tj_enc), "tj_dec": float(tj_dec), "fps": summ["fps"], "frames": summ["frames"],
        "send_ms": 1000 * cpu(s) / n, "recv_ms": 1000 * cpu(r) / n,
        "send_mb": int(s["Maximum resident set size (kbytes)"]) / 1024,
        "recv_mb": int(r["Maximum resident set size (kbytes)"]) / 1024,
        "drops": summ["drops_total"], "load": float(load),
    })

print()
print("framecast (send --listen + recv --connect --headless, test pattern, --fps 0, q75 4:2:0) vs tjbench on the same frame")
print("ms are CPU per frame (user+sys, all threads); floor = tjbench compress-from-YUV + decompress to BGRX")
hdr = ["size", "run", "fps", "send ms", "recv ms", "sum ms", "tj enc", "tj dec", "floor", "sum/floor",
       "send RSS MB", "recv RSS MB", "drops", "load"]
print("".join(f"{h:>12}" for h in hdr))
for size, rs in rows.items():
    for i, r in enumerate(rs + [None], 1):
        if r is None:
            keys = rs[0].keys()
            r = {k: statistics.median(x[k] for x in rs) for k in keys}
            label = "median"
        else:
            label = str(i)
        total = r["send_ms"] + r["recv_ms"]
        floor = r["tj_enc"] + r["tj_dec"]
        cells = [size, label, f"{r['fps']:.0f}", f"{r['send_ms']:.3f}", f"{r['recv_ms']:.3f}", f"{total:.3f}",
                 f"{r['tj_enc']:.3f}", f"{r['tj_dec']:.3f}", f"{floor:.3f}", f"{total / floor:.2f}",
                 f"{r['send_mb']:.1f}", f"{r['recv_mb']:.1f}", f"{r['drops']:.0f}", f"{r['load']:.2f}"]
        print("".join(f"{c:>12}" for c in cells))
print("goals (issue 7): sum/floor <= 1.15; each RSS <= 30 MB at 1920x1080. 'load' is the 1-min load average")
print("before the run: with other work on the cores, both the pipeline's and tjbench's figures rise.")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
