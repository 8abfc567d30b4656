#!/usr/bin/env bash
# framecast next to GStreamer, FFmpeg and the classic OpenCV socket snippet: the same Y4M clip
# (FFmpeg's testsrc2, 4:2:0, 30 fps) JPEG-encoded, sent over TCP on 127.0.0.1, decoded.
#
#   sudo bash benches/compare.sh                             # 640x480, 1280x720, 1920x1080; 3 runs each
#   SIZES=1280x720 RUNS=5 bash benches/compare.sh
#   TOOLS="framecast gstreamer" LATENCY=0 bash benches/compare.sh
#
# Per size, RUNS rounds; each round runs every tool once (the order rotates from round to
# round, so slow drifts in the machine's load spread over all tools):
#
#   throughput  every frame of the clip, as fast as possible, nothing dropped:
#     framecast  recv --listen --headless --once  <-  send --connect --source CLIP --fps 0
#     gstreamer  tcpserversrc ! gdpdepay ! jpegdec ! fakesink
#                  <-  filesrc ! y4mdec ! jpegenc ! gdppay ! tcpclientsink     (gst-launch-1.0)
#     gstreamer-queue  the same with a queue before jpegdec, jpegenc and gdppay: one more
#                streaming thread per stage, so reading, coding and the socket overlap
#     ffmpeg     ffmpeg -f mjpeg -i tcp://...?listen=1 -f null -
#                  <-  ffmpeg -i CLIP -c:v mjpeg -q:v Q -f mjpeg tcp://...
#     opencv     benches/compare/cv_snippet.py: cv2.VideoCapture -> imencode -> sendall |
#                  data += recv(4096) -> imdecode (first OPENCV_FRAMES frames only: it is slow)
#   latency     capture -> decoded at a live 30 fps, LAT_FRAMES frames, on the clock both
#               processes share (CLOCK_MONOTONIC):
#     framecast  its receiver's summary (latency_capture_decoded_ms)
#     gstreamer  the same elements hosted by benches/compare/gst_latency.py, an identity
#                sync=true pacing the file to 30 fps, pad probes stamping each frame when it
#                leaves the pacer and when it leaves jpegdec (needs python3-gi + Gst typelib)
#     opencv     cv_snippet.py, paced to 30 fps, capture time sent with each frame
#     ffmpeg     not measured: ffmpeg has no per-frame hook to stamp frames with
#     gstreamer-queue  not measured (queues only matter when frames queue up)
#
# The receiver always listens and the sender connects. fps = decoded frames / wall time from
# starting the sender to the receiver's exit (the same stopwatch for every tool; process
# start-up is included, about 10 ms for gst-launch and 60 ms for ffmpeg). CPU = user+sys of
# both processes (/usr/bin/time), per decoded frame. KB = 1000 bytes of JPEG per frame.
# Quality: JPEG quality QUALITY for framecast, jpegenc and OpenCV (all libjpeg scaling);
# FFmpeg's mjpeg takes a quantiser (-q:v) instead, so it is calibrated per size to the -q:v
# whose frames come closest in size to framecast's (FFMPEG_Q overrides).
# Differences that favour the peers: framecast and OpenCV decode to RGB (what a window
# shows), GStreamer's jpegdec and FFmpeg stop at planar YUV (their display sinks convert
# later, often on the GPU); jpegenc and jpegdec default to libjpeg's fast, less accurate
# integer DCT (idct-method=ifast), framecast uses the accurate one (islow).
#
# A default run takes about 5 minutes on 2 cores once the clips are cached (rendering them
# takes about 10 s more, apt longer).
#
# Noise: before each run the script waits (up to QUIET_WAIT s per run, QUIET_BUDGET s in
# all) until other processes use at most NOISE_MAX cores over half a second. It reads
# /proc/stat around every run: CPU time spent by other processes during the run (in cores)
# is "others". A run with others > NOISE_MAX is repeated (up to RETRIES times, while the
# budget lasts) and the quietest attempt kept; rows that stay noisy are marked.
#
# Environment: SIZES, RUNS (3), TOOLS, CLIP_SECONDS (20), LAT_FRAMES (150), OPENCV_FRAMES
# (150), QUALITY (75), LATENCY (1), FFMPEG_Q, NOISE_MAX (0.25 cores), QUIET_WAIT (20 s),
# QUIET_BUDGET (180 s), RETRIES (2), TIMEOUT (120 s per process), CACHE_DIR (rendered clips;
# 3 GB for the three sizes at 20 s), OUT_DIR (keep raw logs there), INSTALL (1: apt-get
# install what is missing, as root), PORT_BASE (19300), FRAMECAST (binary; default: build).
set -euo pipefail

SIZES=${SIZES:-"640x480 1280x720 1920x1080"}
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-"framecast gstreamer gstreamer-queue ffmpeg opencv"}
CLIP_SECONDS=${CLIP_SECONDS:-20}
LAT_FRAMES=${LAT_FRAMES:-150}
OPENCV_FRAMES=${OPENCV_FRAMES:-150}
QUALITY=${QUALITY:-75}
LATENCY=${LATENCY:-1}
FFMPEG_Q=${FFMPEG_Q:-}
NOISE_MAX=${NOISE_MAX:-0.25}
QUIET_WAIT=${QUIET_WAIT:-20}
QUIET_BUDGET=${QUIET_BUDGET:-180}
RETRIES=${RETRIES:-2}
TIMEOUT=${TIMEOUT:-120}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/framecast-compare}
OUT_DIR=${OUT_DIR:-}
INSTALL=${INSTALL:-1}
PORT_BASE=${PORT_BASE:-19300}
PY=${PYTHON:-/usr/bin/python3}   # Debian's python3: where apt puts python3-gi and python3-opencv

die() { echo "compare.sh: $*" >&2; exit 1; }
note() { echo "== $*" >&2; }

cd "$(dirname "$0")/.."
. benches/lib.sh
repo=$(pwd)
helpers=$repo/benches/compare

for s in $SIZES; do [[ $s =~ ^[0-9]+x[0-9]+$ ]] || die "SIZES: '$s' is not WIDTHxHEIGHT"; done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS: '$RUNS' is not a positive integer"
for t in $TOOLS; do
    case $t in framecast | gstreamer | gstreamer-queue | ffmpeg | opencv) ;;
    *) die "TOOLS: unknown tool '$t' (framecast gstreamer gstreamer-queue ffmpeg opencv)" ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# Peers: install what is missing (apt, as root), then check; a missing required tool is fatal.

gst_has() { gst-inspect-1.0 "$1" >/dev/null 2>&1; }
py_has() { [ -x "$PY" ] && "$PY" -c "$1" >/dev/null 2>&1; }
PY_GST='import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst'
PY_CV='import cv2, numpy'

missing_pkgs() {
    local p=()
    command -v gst-launch-1.0 >/dev/null || p+=(gstreamer1.0-tools)
    if command -v gst-inspect-1.0 >/dev/null; then
        gst_has tcpserversrc || p+=(gstreamer1.0-plugins-base)
        gst_has jpegenc || p+=(gstreamer1.0-plugins-good)
        { gst_has gdppay && gst_has y4mdec; } || p+=(gstreamer1.0-plugins-bad)
    else
        p+=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
    fi
    command -v ffmpeg >/dev/null || p+=(ffmpeg)
    [ -x /usr/bin/time ] || p+=(time)
    command -v ss >/dev/null || p+=(iproute2)
    [ -x "$PY" ] || p+=(python3)
    py_has "$PY_GST" || p+=(python3-gi gir1.2-gstreamer-1.0)
    py_has "$PY_CV" || p+=(python3-opencv python3-numpy)
    echo "${p[@]}"
}

pkgs=$(missing_pkgs)
if [ -n "$pkgs" ]; then
    if [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        note "installing: $pkgs"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 || die "apt-get update failed"
        # shellcheck disable=SC2086
        apt-get install -y -qq $pkgs >&2 || die "apt-get install $pkgs failed"
    else
        note "missing: $pkgs (install as root: apt-get update && apt-get install -y $pkgs)"
    fi
fi
fatal=()
command -v gst-launch-1.0 >/dev/null || fatal+=("gst-launch-1.0 (gstreamer1.0-tools)")
for e in filesrc y4mdec jpegenc jpegdec gdppay gdpdepay tcpserversrc tcpclientsink identity tee queue fakesink filesink; do
    gst_has "$e" || fatal+=("GStreamer element $e")
done
command -v ffmpeg >/dev/null || fatal+=("ffmpeg")
[ -x /usr/bin/time ] || fatal+=("/usr/bin/time (time)")
command -v ss >/dev/null || fatal+=("ss (iproute2)")
[ -x "$PY" ] || fatal+=("$PY (python3)")
[ ${#fatal[@]} -eq 0 ] || die "missing after install: ${fatal[*]}. Install them (Debian/Ubuntu: apt-get install -y gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad ffmpeg time iproute2 python3) or run as root."
gst_latency=1
if ! py_has "$PY_GST"; then
    gst_latency=0
    note "no GStreamer Python bindings ($PY: python3-gi, gir1.2-gstreamer-1.0): GStreamer latency is left out"
fi
if [[ " $TOOLS " == *" opencv "* ]] && ! py_has "$PY_CV"; then
    TOOLS=$(echo " $TOOLS " | sed 's/ opencv / /; s/^ *//; s/ *$//')
    note "no OpenCV for $PY (python3-opencv): the opencv rows are left out"
fi
[[ " $TOOLS " == *" framecast "* ]] || TOOLS="framecast $TOOLS" # its frame size calibrates FFmpeg's -q:v

# ---------------------------------------------------------------------------------------------
# framecast, work dir, cleanup.

if [ -z "${FRAMECAST:-}" ]; then
    note "cargo build --release"
    cargo build --quiet --release || die "cargo build --release failed"
    FRAMECAST=$(cargo_target_dir)/release/framecast
fi
[ -x "$FRAMECAST" ] || die "framecast binary not found at $FRAMECAST"

if [ -n "$OUT_DIR" ]; then
    mkdir -p "$OUT_DIR"
    work=$(cd "$OUT_DIR" && pwd)
else
    work=$(mktemp -d)
fi
# A private copy: a rebuild in the tree during the runs must not change what is measured.
cp "$FRAMECAST" "$work/framecast.bin"
FRAMECAST=$work/framecast.bin
mkdir -p "$CACHE_DIR"

pids=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    if [ ${#pids[@]} -gt 0 ]; then
        sleep 0.3
        for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    fi
    [ -n "$OUT_DIR" ] || rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'note "interrupted; stopping what this script started"; exit 130' INT
trap 'note "terminated; stopping what this script started"; exit 143' TERM

# Starts "$@" in the background under a timeout, timed by /usr/bin/time into $1.time, output
# into $1.log; sets $bg_pid (the timeout process: a TERM to it reaches the whole command).
bg_pid=
start() {
    local base=$1
    shift
    timeout -k 5 "$TIMEOUT" /usr/bin/time -f '%e %U %S' -o "$base.time" "$@" >"$base.log" 2>&1 &
    bg_pid=$!
    pids+=("$bg_pid")
}

# Waits for a background command; prints its log's tail and returns 1 if it failed.
finish() {
    local pid=$1 base=$2 what=$3 rc=0 p keep=()
    wait "$pid" || rc=$?
    for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done # never signal a reaped (reusable) pid
    pids=("${keep[@]}")
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ]; then echo "$what: timed out after ${TIMEOUT}s" >&2; else echo "$what: exit status $rc" >&2; fi
        tail -15 "$base.log" >&2
        return 1
    fi
}

port=$PORT_BASE
next_port() {
    port=$((port + 1))
    while ss -Htan "sport = :$port" | grep -q .; do port=$((port + 1)); done
}

wait_listen() {
    local i
    for i in $(seq 200); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.025
    done
    return 1
}

# busy seconds (user, nice, system, steal; not idle, iowait, irq, softirq) of all CPUs so far
clk_tck=$(getconf CLK_TCK)
busy_s() { awk -v hz="$clk_tck" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $9) / hz }' /proc/stat; }
load1() { cut -d' ' -f1 /proc/loadavg; }
cpu_of() { tail -1 "$1" | awk '{ printf "%.2f\n", $2 + $3 }'; } # user+sys from /usr/bin/time -f '%e %U %S'

# Waits until other processes use at most NOISE_MAX cores (over 0.5 s): at most QUIET_WAIT s
# per run and QUIET_BUDGET s in all (a machine that stays busy gets measured, and marked).
waited=0
wait_quiet() {
    local t0=$SECONDS b0 b1 x
    while :; do
        b0=$(busy_s)
        sleep 0.5
        b1=$(busy_s)
        x=$(awk -v a="$b0" -v b="$b1" 'BEGIN { printf "%.2f\n", (b - a) / 0.5 }')
        awk -v x="$x" -v m="$NOISE_MAX" 'BEGIN { exit !(x <= m) }' && break
        if [ $((SECONDS - t0)) -ge "$QUIET_WAIT" ] || [ $((waited + SECONDS - t0)) -ge "$QUIET_BUDGET" ]; then
            note "other processes use $x cores; measuring anyway (waited $((waited + SECONDS - t0)) s of QUIET_BUDGET=$QUIET_BUDGET)"
            break
        fi
        sleep 1
    done
    waited=$((waited + SECONDS - t0))
}

manifest=$work/manifest.tsv
: >"$manifest"
echo -e "size\ttool\tkind\trun\tattempt\tdir\twall_s\tload1\tothers_cores\tffmpeg_q" >"$manifest"

# ---------------------------------------------------------------------------------------------
# One measured run: $1 tool, $2 kind (tp|lat), $3 size, $4 clip, $5 dir. Sets $others.

others=0
measure() {
    local tool=$1 kind=$2 size=$3 clip=$4 dir=$5 rpid spid b0 b1 t0 t1 ok=1
    mkdir -p "$dir"
    wait_quiet
    next_port
    local addr=127.0.0.1:$port
    local fps=0 frames=0
    [ "$kind" = lat ] && fps=30 frames=$LAT_FRAMES
    case $tool in
    framecast)
        start "$dir/recv" "$FRAMECAST" recv --listen "$addr" --headless --once --stats-json "$dir/recv.jsonl"
        ;;
    gstreamer-queue)
        start "$dir/recv" gst-launch-1.0 -q tcpserversrc host=127.0.0.1 port="$port" ! gdpdepay ! queue max-size-buffers=2 ! \
            jpegdec ! fakesink sync=false
        ;;
    gstreamer)
        if [ "$kind" = tp ]; then
            start "$dir/recv" gst-launch-1.0 -q tcpserversrc host=127.0.0.1 port="$port" ! gdpdepay ! jpegdec ! fakesink sync=false
        else
            start "$dir/recv" "$PY" "$helpers/gst_latency.py" recv "$dir/recv.json" 0 \
                "tcpserversrc host=127.0.0.1 port=$port ! gdpdepay ! jpegdec name=probe ! fakesink sync=false"
        fi
        ;;
    ffmpeg)
        start "$dir/recv" ffmpeg -nostdin -hide_banner -loglevel info -stats -f mjpeg -i "tcp://$addr?listen=1" -f null -
        ;;
    opencv)
        start "$dir/recv" "$PY" "$helpers/cv_snippet.py" recv 127.0.0.1 "$port" "$dir/recv.json"
        ;;
    esac
    rpid=$bg_pid
    if ! wait_listen "$port"; then
        kill -TERM "$rpid" 2>/dev/null || true
        finish "$rpid" "$dir/recv" "$tool receiver" || true
        die "$tool receiver did not listen on $addr within 5 s"
    fi
    load1 >"$dir/load1"
    b0=$(busy_s)
    t0=$EPOCHREALTIME
    case $tool in
    framecast)
        local f=()
        [ "$frames" -gt 0 ] && f=(--frames "$frames")
        start "$dir/send" "$FRAMECAST" send --connect "$addr" --source "$clip" --fps "$fps" --quality "$QUALITY" \
            "${f[@]}" --stats-json "$dir/send.jsonl"
        ;;
    gstreamer-queue)
        start "$dir/send" gst-launch-1.0 -q filesrc location="$clip" ! y4mdec ! queue max-size-buffers=2 ! jpegenc quality="$QUALITY" ! \
            queue max-size-buffers=2 ! gdppay ! tcpclientsink host=127.0.0.1 port="$port" sync=false
        ;;
    gstreamer)
        if [ "$kind" = tp ]; then
            start "$dir/send" gst-launch-1.0 -q filesrc location="$clip" ! y4mdec ! jpegenc quality="$QUALITY" ! gdppay ! \
                tcpclientsink host=127.0.0.1 port="$port" sync=false
        else
            start "$dir/send" "$PY" "$helpers/gst_latency.py" send "$dir/send.json" "$frames" \
                "filesrc location=$clip ! y4mdec ! identity name=probe sync=true ! jpegenc quality=$QUALITY ! gdppay ! tcpclientsink host=127.0.0.1 port=$port sync=false"
        fi
        ;;
    ffmpeg)
        start "$dir/send" ffmpeg -nostdin -hide_banner -loglevel info -i "$clip" -c:v mjpeg -strict unofficial \
            -q:v "$ffq" -f mjpeg "tcp://$addr"
        ;;
    opencv)
        [ "$kind" = tp ] && frames=$OPENCV_FRAMES
        start "$dir/send" "$PY" "$helpers/cv_snippet.py" send 127.0.0.1 "$port" "$clip" "$fps" "$frames" "$QUALITY"
        ;;
    esac
    spid=$bg_pid
    finish "$spid" "$dir/send" "$tool $kind sender ($size)" || ok=0
    if [ $ok = 0 ]; then kill -TERM "$rpid" 2>/dev/null || true; fi
    finish "$rpid" "$dir/recv" "$tool $kind receiver ($size)" || ok=0
    t1=$EPOCHREALTIME
    b1=$(busy_s)
    [ $ok = 1 ] || return 1
    if [ "$tool" = gstreamer ] && [ "$kind" = lat ]; then
        "$PY" "$helpers/gst_latency.py" latency "$dir/send.json" "$dir/recv.json" >"$dir/latency.json"
    fi
    local wall ours
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }')
    ours=$(awk -v a="$(cpu_of "$dir/send.time")" -v b="$(cpu_of "$dir/recv.time")" 'BEGIN { print a + b }')
    others=$(awk -v b0="$b0" -v b1="$b1" -v o="$ours" -v w="$wall" 'BEGIN { x = (b1 - b0 - o) / w; printf "%.2f\n", x < 0 ? 0 : x }')
    echo "$wall" >"$dir/wall"
}

# Runs measure with retries while others > NOISE_MAX; records every attempt in the manifest.
run() {
    local tool=$1 kind=$2 size=$3 clip=$4 r=$5 a dir
    for a in $(seq 0 "$RETRIES"); do
        dir=$work/$size/$tool-$kind-$r-$a
        local tries=0
        until measure "$tool" "$kind" "$size" "$clip" "$dir"; do
            tries=$((tries + 1))
            [ $tries -lt 2 ] || die "$tool $kind at $size failed twice; logs in $dir (set OUT_DIR to keep them)"
            note "$tool $kind failed; once more"
        done
        echo -e "$size\t$tool\t$kind\t$r\t$a\t$dir\t$(cat "$dir/wall")\t$(cat "$dir/load1")\t$others\t${ffq:-}" >>"$manifest"
        printf '   %-9s %-3s run %d: wall %6.2f s, load %s, others %s cores%s\n' "$tool" "$kind" "$r" "$(cat "$dir/wall")" \
            "$(cat "$dir/load1")" "$others" "$(awk -v o="$others" -v m="$NOISE_MAX" 'BEGIN { if (o > m) print " (noisy)" }')" >&2
        awk -v o="$others" -v m="$NOISE_MAX" 'BEGIN { exit !(o > m) }' || break
        [ "$waited" -lt "$QUIET_BUDGET" ] || break # a machine that stays busy: no point repeating
    done
}

# ---------------------------------------------------------------------------------------------

machine=$work/machine.txt
{
    echo "host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "framecast $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?') (libjpeg-turbo 3.1 via the turbojpeg crate); $(gst-launch-1.0 --version | sed -n 2p) (jpegenc/jpegdec: libjpeg62-turbo $(dpkg-query -W -f='${Version}' libjpeg62-turbo 2>/dev/null || echo '?')); $(ffmpeg -version | head -1 | cut -d' ' -f1-3); OpenCV $("$PY" -c 'import cv2; print(cv2.__version__)' 2>/dev/null || echo none)"
} >"$machine"
cat "$machine" >&2
start_epoch=$(date +%s)

for size in $SIZES; do
    w=${size%x*} h=${size#*x}
    clip=$CACHE_DIR/testsrc2-${size}-30fps-${CLIP_SECONDS}s.y4m
    if [ ! -s "$clip" ]; then
        note "rendering $clip"
        timeout "$((TIMEOUT * 3))" ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=${size}:rate=30" -t "$CLIP_SECONDS" \
            -pix_fmt yuv420p -f yuv4mpegpipe "$clip.part" || die "rendering $clip failed"
        mv "$clip.part" "$clip"
    fi
    cat "$clip" >/dev/null # into the page cache
    clip_frames=$("$PY" -c '
import os, sys
path, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "rb") as f:
    header = len(f.readline())
print((os.path.getsize(path) - header) // (6 + w * h * 3 // 2))' "$clip" "$w" "$h")
    note "$size: $clip_frames frames"
    mkdir -p "$work/$size"
    echo "$clip_frames" >"$work/$size/clip_frames"

    # Warm-up (not counted): framecast once; its mean frame size is FFmpeg's -q:v target.
    ffq=
    measure framecast tp "$size" "$clip" "$work/$size/warmup" || die "framecast warm-up run failed"
    target=$("$PY" -c 'import json, sys; print([json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]["mean_frame_bytes"])' \
        "$work/$size/warmup/recv.jsonl")
    if [[ " $TOOLS " == *" ffmpeg "* ]]; then
        if [ -n "$FFMPEG_Q" ]; then
            ffq=$FFMPEG_Q
        else
            best=
            for q in 2 3 4 5 6 7 8 10 12; do
                timeout "$TIMEOUT" ffmpeg -nostdin -loglevel error -y -i "$clip" -frames:v 60 -c:v mjpeg -strict unofficial -q:v "$q" \
                    -f mjpeg "$work/$size/q$q.mjpeg" || die "ffmpeg -q:v $q calibration failed"
                d=$(awk -v s="$(stat -c %s "$work/$size/q$q.mjpeg")" -v t="$target" 'BEGIN { d = s / 60 - t; print d < 0 ? -d : d }')
                if [ -z "$best" ] || awk -v a="$d" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$d ffq=$q; fi
                rm -f "$work/$size/q$q.mjpeg"
            done
        fi
        note "$size: ffmpeg -q:v $ffq (framecast q$QUALITY: $(awk -v t="$target" 'BEGIN { printf "%.1f", t / 1000 }') KB/frame)"
    fi
    # GStreamer check (not timed): frames decoded and JPEG bytes that crossed the socket.
    if [[ " $TOOLS " == *" gstreamer"* ]]; then
        d=$work/$size/gst-check
        mkdir -p "$d"
        next_port
        start "$d/recv" gst-launch-1.0 -v tcpserversrc host=127.0.0.1 port="$port" ! gdpdepay ! tee name=t ! queue ! jpegdec ! \
            fakesink sync=false silent=false t. ! queue ! filesink location="$d/stream.mjpeg"
        rpid=$bg_pid
        wait_listen "$port" || die "GStreamer check: the receiver did not listen"
        start "$d/send" gst-launch-1.0 -q filesrc location="$clip" ! y4mdec ! jpegenc quality="$QUALITY" ! gdppay ! \
            tcpclientsink host=127.0.0.1 port="$port" sync=false
        finish "$bg_pid" "$d/send" "GStreamer check sender" || die "GStreamer check failed"
        finish "$rpid" "$d/recv" "GStreamer check receiver" || die "GStreamer check failed"
        n=$(grep -c 'last-message = chain' "$d/recv.log" || true)
        [ "$n" = "$clip_frames" ] || die "GStreamer check: $n frames decoded, the clip has $clip_frames"
        echo "$n $(stat -c %s "$d/stream.mjpeg")" >"$work/$size/gst_check"
        rm -f "$d/stream.mjpeg"
    fi

    read -r -a tools <<<"$TOOLS"
    for r in $(seq "$RUNS"); do
        note "$size round $r/$RUNS"
        n=${#tools[@]}
        for i in $(seq 0 $((n - 1))); do
            tool=${tools[$(((i + r - 1) % n))]}
            run "$tool" tp "$size" "$clip" "$r"
        done
        if [ "$LATENCY" = 1 ]; then
            for i in $(seq 0 $((n - 1))); do
                tool=${tools[$(((i + r - 1) % n))]}
                case $tool in ffmpeg | gstreamer-queue) continue ;; gstreamer) [ $gst_latency = 1 ] || continue ;; esac
                run "$tool" lat "$size" "$clip" "$r"
            done
        fi
    done
done

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(($(date +%s) - start_epoch)) s for the runs" >>"$machine"
"$PY" "$helpers/table.py" "$work" "$QUALITY" "$NOISE_MAX" "$CLIP_SECONDS" "$LAT_FRAMES" "$OPENCV_FRAMES"
[ -z "$OUT_DIR" ] || note "raw logs: $work"
