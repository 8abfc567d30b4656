#!/usr/bin/env bash
# framecast next to GStreamer, FFmpeg and the classic OpenCV socket snippet: the same clip
# (FFmpeg's testsrc2, 4:2:0, N_HI frames) JPEG-encoded, sent over TCP on 127.0.0.1, decoded,
# with every peer in its fastest configuration.
#
#   bash benches/compare.sh                      # 640x480, 1280x720, 1920x1080; 3 rounds
#   bash benches/compare.sh --quick              # one size, one round, no latency: checks that
#                                                # the script works; its figures are not results
#   SIZES=1280x720 RUNS=5 TOOLS="framecast gstreamer" LATENCY=0 bash benches/compare.sh
#
# It installs nothing: `scripts/setup.sh --bench-deps` installs the peers (Debian/Ubuntu).
#
# Throughput is the steady-state rate. Each tool streams the first N_LO (30) frames of the
# clip in one run and the first N_HI (300) in another, each as fast as it can, and
#     fps = (N_HI - N_LO) / (wall(N_HI) - wall(N_LO))
# where wall runs from starting the sender to the receiver's exit: process start-up,
# connection set-up, the first frames' warm-up and shut-down are in both runs and cancel.
# CPU per frame likewise: (user+sys(N_HI) - user+sys(N_LO)) / (N_HI - N_LO), both processes
# (/usr/bin/time). Each round runs every tool's pair once, the order of the tools rotating from
# round to round (so slow drifts in the machine's load spread over all tools) and the order
# within a pair alternating; the table gives the median of the rounds' rates.
#
#   throughput  every frame, as fast as possible, nothing dropped:
#     framecast  recv --listen --headless --once  <-  send --connect --source CLIP.y4m --fps 0 --frames N
#                (framecast's fastest source for a file: Y4M frames are read straight into the
#                frame buffer; it has no raw-file source)
#     gstreamer  tcpserversrc ! gdpdepay ! jpegdec ! fakesink
#                  <-  filesrc location=CLIP.yuv blocksize=FRAME_BYTES num-buffers=N !
#                      rawvideoparse ! jpegenc ! gdppay ! tcpclientsink          (gst-launch-1.0)
#                (rawvideoparse on the raw I420 clip: y4mdec is much slower and would
#                measure GStreamer's Y4M parser rather than its JPEG pipeline)
#     gstreamer-queue  the same with a queue before jpegdec, jpegenc and gdppay: one more
#                streaming thread per stage, so reading, coding and the socket overlap
#     ffmpeg     ffmpeg -f mjpeg -i tcp://...?listen=1 -f null -
#                  <-  ffmpeg -f rawvideo -pix_fmt yuv420p -i CLIP.yuv -frames:v N -c:v mjpeg -q:v Q -f mjpeg tcp://...
#     opencv     benches/compare/cv_snippet.py: cv2.VideoCapture(CLIP.y4m) -> imencode -> sendall |
#                  data += recv(4096) -> imdecode (the snippet as it is usually written)
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
# The receiver always listens and the sender connects. KB = 1000 bytes of JPEG per frame.
# Quality: JPEG quality QUALITY for framecast, jpegenc and OpenCV (all libjpeg scaling);
# FFmpeg's mjpeg takes a quantiser (-q:v) instead, so it is calibrated per size to the -q:v
# whose frames come closest in size to framecast's (FFMPEG_Q overrides).
# Differences that favour the peers: framecast and OpenCV decode to RGB (what a window
# shows), GStreamer's jpegdec and FFmpeg stop at planar YUV (their display sinks convert
# later, often on the GPU); jpegenc and jpegdec default to libjpeg's fast, less accurate
# integer DCT (idct-method=ifast), framecast uses the accurate one (islow).
#
# A --quick run took 19 s of runs on a loaded 2-core machine (plus the release build); a
# default run does 3 sizes x 3 rounds and the latency runs: several minutes.
#
# Noise: before each run the script waits (up to QUIET_WAIT s per run, QUIET_BUDGET s in
# all) until other processes use at most NOISE_MAX cores over half a second. It reads
# /proc/stat around every run: CPU time spent by other processes during the run (in cores)
# is "others". A run with others > NOISE_MAX is repeated (up to RETRIES times, while the
# budget lasts) and the quietest attempt kept; rows that stay noisy are marked.
#
# Environment: SIZES, RUNS (3), TOOLS, N_LO (30), N_HI (300), LAT_FRAMES (150), QUALITY (75),
# LATENCY (1), FFMPEG_Q, NOISE_MAX (0.25 cores), QUIET_WAIT (20 s), QUIET_BUDGET (180 s),
# RETRIES (2), TIMEOUT (120 s per process), CACHE_DIR (rendered clips; about 1.8 GB for the
# three sizes), OUT_DIR (keep raw logs there), PORT_BASE (19300), FRAMECAST (binary; default:
# build). --quick sets the defaults SIZES=640x480 RUNS=1 LATENCY=0 QUIET_BUDGET=0 RETRIES=0.
set -euo pipefail

quick=0
for arg in "$@"; do
    case $arg in
    --quick) quick=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "compare.sh: unknown argument '$arg' (--quick, --help)" >&2
        exit 2
        ;;
    esac
done
if [ $quick = 1 ]; then
    SIZES=${SIZES:-640x480} RUNS=${RUNS:-1} LATENCY=${LATENCY:-0} QUIET_BUDGET=${QUIET_BUDGET:-0} RETRIES=${RETRIES:-0}
fi

SIZES=${SIZES:-"640x480 1280x720 1920x1080"}
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-"framecast gstreamer gstreamer-queue ffmpeg opencv"}
N_LO=${N_LO:-30}
N_HI=${N_HI:-300}
LAT_FRAMES=${LAT_FRAMES:-150}
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
[[ $N_LO =~ ^[1-9][0-9]*$ && $N_HI =~ ^[1-9][0-9]*$ ]] || die "N_LO, N_HI: '$N_LO', '$N_HI' are not positive integers"
[ "$N_LO" -lt "$N_HI" ] || die "N_LO=$N_LO must be below N_HI=$N_HI (the rate is their difference over the time difference)"
if ! [[ $LAT_FRAMES =~ ^[1-9][0-9]*$ ]] || [ "$LAT_FRAMES" -gt "$N_HI" ]; then
    die "LAT_FRAMES=$LAT_FRAMES: expected 1..=N_HI ($N_HI, the clip's length)"
fi
for t in $TOOLS; do
    case $t in framecast | gstreamer | gstreamer-queue | ffmpeg | opencv) ;;
    *) die "TOOLS: unknown tool '$t' (framecast gstreamer gstreamer-queue ffmpeg opencv)" ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# Peers: check; a missing required tool is fatal, with what to install.

gst_has() { gst-inspect-1.0 "$1" >/dev/null 2>&1; }
py_has() { [ -x "$PY" ] && "$PY" -c "$1" >/dev/null 2>&1; }
PY_GST='import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst'
PY_CV='import cv2, numpy'

fatal=()
if command -v gst-launch-1.0 >/dev/null && command -v gst-inspect-1.0 >/dev/null; then
    for e in filesrc rawvideoparse jpegenc jpegdec gdppay gdpdepay tcpserversrc tcpclientsink identity tee queue fakesink filesink; do
        gst_has "$e" || fatal+=("GStreamer element $e")
    done
else
    fatal+=("gst-launch-1.0 and gst-inspect-1.0")
fi
command -v ffmpeg >/dev/null || fatal+=("ffmpeg")
[ -x /usr/bin/time ] || fatal+=("/usr/bin/time")
command -v ss >/dev/null || fatal+=("ss")
[ -x "$PY" ] || fatal+=("$PY")
[ ${#fatal[@]} -eq 0 ] || die "missing: ${fatal[*]}. Install the peers with: scripts/setup.sh --bench-deps"
gst_latency=1
if [ "$LATENCY" = 1 ] && ! py_has "$PY_GST"; then
    gst_latency=0
    note "no GStreamer Python bindings for $PY (scripts/setup.sh --bench-deps): GStreamer latency is left out"
fi
if [[ " $TOOLS " == *" opencv "* ]] && ! py_has "$PY_CV"; then
    TOOLS=$(echo " $TOOLS " | sed 's/ opencv / /; s/^ *//; s/ *$//')
    note "no OpenCV for $PY (scripts/setup.sh --bench-deps): the opencv rows are left out"
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
echo -e "size\ttool\tkind\tframes\trun\tattempt\tdir\twall_s\tload1\tothers_cores\tffmpeg_q" >"$manifest"

# ---------------------------------------------------------------------------------------------
# The clip of the size being measured: $w, $h, $y4m, $yuv (the same frames, raw I420), $frame_bytes.
w='' h='' y4m='' yuv='' frame_bytes='' ffq=''

# Starts the receiver of $1 tool for $2 kind (tp|lat) into $3 dir, listening on $port.
start_receiver() {
    local tool=$1 kind=$2 dir=$3
    case $tool in
    framecast)
        start "$dir/recv" "$FRAMECAST" recv --listen "127.0.0.1:$port" --headless --once --stats-json "$dir/recv.jsonl"
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
        start "$dir/recv" ffmpeg -nostdin -hide_banner -loglevel info -stats -f mjpeg -i "tcp://127.0.0.1:$port?listen=1" -f null -
        ;;
    opencv)
        start "$dir/recv" "$PY" "$helpers/cv_snippet.py" recv 127.0.0.1 "$port" "$dir/recv.json"
        ;;
    esac
}

# Starts the sender of $1 tool for $2 kind into $3 dir: $4 frames, at 30 fps (lat) or as fast
# as it can (tp), each tool reading the clip the fastest way it can.
start_sender() {
    local tool=$1 kind=$2 dir=$3 n=$4 fps=0
    [ "$kind" = lat ] && fps=30
    local raw=(filesrc location="$yuv" blocksize="$frame_bytes" num-buffers="$n" ! rawvideoparse width="$w" height="$h"
        format=i420 framerate=30/1)
    local sink=(tcpclientsink host=127.0.0.1 port="$port" sync=false)
    case $tool in
    framecast)
        # --input-range full: the clip's samples are encoded as they are, as GStreamer's jpegenc
        # does (framecast would otherwise stretch ffmpeg's limited-range YUV to JPEG's range).
        start "$dir/send" "$FRAMECAST" send --connect "127.0.0.1:$port" --source "$y4m" --fps "$fps" --quality "$QUALITY" \
            --input-range full --frames "$n" --stats-json "$dir/send.jsonl"
        ;;
    gstreamer-queue)
        start "$dir/send" gst-launch-1.0 -q "${raw[@]}" ! queue max-size-buffers=2 ! jpegenc quality="$QUALITY" ! \
            queue max-size-buffers=2 ! gdppay ! "${sink[@]}"
        ;;
    gstreamer)
        if [ "$kind" = tp ]; then
            start "$dir/send" gst-launch-1.0 -q "${raw[@]}" ! jpegenc quality="$QUALITY" ! gdppay ! "${sink[@]}"
        else
            start "$dir/send" "$PY" "$helpers/gst_latency.py" send "$dir/send.json" "$n" \
                "${raw[*]} ! identity name=probe sync=true ! jpegenc quality=$QUALITY ! gdppay ! ${sink[*]}"
        fi
        ;;
    ffmpeg)
        start "$dir/send" ffmpeg -nostdin -hide_banner -loglevel info -f rawvideo -pix_fmt yuv420p -video_size "${w}x$h" \
            -framerate 30 -i "$yuv" -frames:v "$n" -c:v mjpeg -strict unofficial -q:v "$ffq" -f mjpeg "tcp://127.0.0.1:$port"
        ;;
    opencv)
        start "$dir/send" "$PY" "$helpers/cv_snippet.py" send 127.0.0.1 "$port" "$y4m" "$fps" "$n" "$QUALITY"
        ;;
    esac
}

# One measured run: $1 tool, $2 kind (tp|lat), $3 frames, $4 dir. Writes $4/wall; sets $others.
others=0
measure() {
    local tool=$1 kind=$2 n=$3 dir=$4 rpid spid b0 b1 t0 t1 ok=1
    mkdir -p "$dir"
    wait_quiet
    next_port
    start_receiver "$tool" "$kind" "$dir"
    rpid=$bg_pid
    if ! wait_listen "$port"; then
        kill -TERM "$rpid" 2>/dev/null || true
        finish "$rpid" "$dir/recv" "$tool receiver" || true
        die "$tool receiver did not listen on 127.0.0.1:$port within 5 s"
    fi
    load1 >"$dir/load1"
    b0=$(busy_s)
    t0=$EPOCHREALTIME
    start_sender "$tool" "$kind" "$dir" "$n"
    spid=$bg_pid
    finish "$spid" "$dir/send" "$tool $kind sender (${w}x$h, $n frames)" || ok=0
    if [ $ok = 0 ]; then kill -TERM "$rpid" 2>/dev/null || true; fi
    finish "$rpid" "$dir/recv" "$tool $kind receiver (${w}x$h, $n frames)" || ok=0
    t1=$EPOCHREALTIME
    b1=$(busy_s)
    [ $ok = 1 ] || return 1
    if [ "$tool" = gstreamer ] && [ "$kind" = lat ]; then
        "$PY" "$helpers/gst_latency.py" latency "$dir/send.json" "$dir/recv.json" >"$dir/latency.json"
    fi
    local wall ours
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }')
    ours=$(awk -v a="$(cpu_of "$dir/send.time")" -v b="$(cpu_of "$dir/recv.time")" 'BEGIN { print a + b }')
    others=$(awk -v b0="$b0" -v b1="$b1" -v o="$ours" -v w="$wall" 'BEGIN { x = (b1 - b0 - o) / w; printf "%.2f\n", x < 0 ? 0 : x }')
    echo "$wall" >"$dir/wall"
}

# Runs measure with retries while others > NOISE_MAX; records every attempt in the manifest.
# $1 tool, $2 kind, $3 frames, $4 round.
run() {
    local tool=$1 kind=$2 n=$3 r=$4 size=${w}x$h a dir
    for a in $(seq 0 "$RETRIES"); do
        dir=$work/$size/$tool-$kind-$n-$r-$a
        local tries=0
        until measure "$tool" "$kind" "$n" "$dir"; do
            tries=$((tries + 1))
            [ $tries -lt 2 ] || die "$tool $kind ($n frames) at $size failed twice; logs in $dir (set OUT_DIR to keep them)"
            note "$tool $kind failed; once more"
        done
        echo -e "$size\t$tool\t$kind\t$n\t$r\t$a\t$dir\t$(cat "$dir/wall")\t$(cat "$dir/load1")\t$others\t${ffq:-}" >>"$manifest"
        printf '   %-15s %-3s %4d frames, round %d: wall %7.3f s, load %s, others %s cores%s\n' "$tool" "$kind" "$n" "$r" \
            "$(cat "$dir/wall")" "$(cat "$dir/load1")" "$others" \
            "$(awk -v o="$others" -v m="$NOISE_MAX" 'BEGIN { if (o > m) print " (noisy)" }')" >&2
        awk -v o="$others" -v m="$NOISE_MAX" 'BEGIN { exit !(o > m) }' || break
        [ "$waited" -lt "$QUIET_BUDGET" ] || break # a machine that stays busy: no point repeating
    done
}

# Renders the clip of the current size once into CACHE_DIR: N_HI frames as Y4M, and the same
# frames as raw I420 (the Y4M without its headers).
render_clip() {
    local base=$CACHE_DIR/testsrc2-${w}x$h-30fps-${N_HI}f
    y4m=$base.y4m yuv=$base.yuv frame_bytes=$((w * h * 3 / 2))
    if [ ! -s "$y4m" ]; then
        note "rendering $y4m"
        timeout "$((TIMEOUT * 3))" ffmpeg -nostdin -loglevel error -y -f lavfi -i "testsrc2=size=${w}x$h:rate=30" \
            -frames:v "$N_HI" -pix_fmt yuv420p -f yuv4mpegpipe "$y4m.part" || die "rendering $y4m failed"
        mv "$y4m.part" "$y4m"
    fi
    if [ ! -s "$yuv" ]; then
        timeout "$((TIMEOUT * 3))" ffmpeg -nostdin -loglevel error -y -f yuv4mpegpipe -i "$y4m" -f rawvideo -pix_fmt yuv420p \
            "$yuv.part" || die "converting $y4m to raw I420 failed"
        mv "$yuv.part" "$yuv"
    fi
    [ "$(stat -c %s "$yuv")" -eq $((frame_bytes * N_HI)) ] || die "$yuv: expected $N_HI frames of $frame_bytes bytes"
    cat "$y4m" "$yuv" >/dev/null # into the page cache
}

# FFmpeg's -q:v whose frames come closest in size to $1 bytes (framecast's mean frame).
calibrate_ffmpeg() {
    local target=$1 best='' q d
    for q in 2 3 4 5 6 7 8 10 12; do
        timeout "$TIMEOUT" ffmpeg -nostdin -loglevel error -y -f rawvideo -pix_fmt yuv420p -video_size "${w}x$h" -framerate 30 \
            -i "$yuv" -frames:v 60 -c:v mjpeg -strict unofficial -q:v "$q" -f mjpeg "$work/q$q.mjpeg" ||
            die "ffmpeg -q:v $q calibration failed"
        d=$(awk -v s="$(stat -c %s "$work/q$q.mjpeg")" -v t="$target" 'BEGIN { d = s / 60 - t; print d < 0 ? -d : d }')
        if [ -z "$best" ] || awk -v a="$d" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$d ffq=$q; fi
        rm -f "$work/q$q.mjpeg"
    done
}

# GStreamer check (not timed): N_HI frames decoded, and the JPEG bytes that crossed the socket.
check_gstreamer() {
    local d=$work/${w}x$h/gst-check rpid n
    mkdir -p "$d"
    next_port
    start "$d/recv" gst-launch-1.0 -v tcpserversrc host=127.0.0.1 port="$port" ! gdpdepay ! tee name=t ! queue ! jpegdec ! \
        fakesink sync=false silent=false t. ! queue ! filesink location="$d/stream.mjpeg"
    rpid=$bg_pid
    wait_listen "$port" || die "GStreamer check: the receiver did not listen"
    start_sender gstreamer tp "$d" "$N_HI"
    finish "$bg_pid" "$d/send" "GStreamer check sender" || die "GStreamer check failed"
    finish "$rpid" "$d/recv" "GStreamer check receiver" || die "GStreamer check failed"
    n=$(grep -c 'last-message = chain' "$d/recv.log" || true)
    [ "$n" = "$N_HI" ] || die "GStreamer check: $n frames decoded, $N_HI sent"
    echo "$n $(stat -c %s "$d/stream.mjpeg")" >"$work/${w}x$h/gst_check"
    rm -f "$d/stream.mjpeg"
}

# ---------------------------------------------------------------------------------------------

machine=$work/machine.txt
{
    [ $quick = 0 ] || echo "QUICK MODE (--quick): one round, not quiet-gated; a check that the script works, not a result"
    echo "host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "framecast $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?') (libjpeg-turbo 3.1 via the turbojpeg crate); $(gst-launch-1.0 --version | sed -n 2p) (jpegenc/jpegdec: libjpeg62-turbo $(dpkg-query -W -f='${Version}' libjpeg62-turbo 2>/dev/null || echo '?')); $(ffmpeg -version | head -1 | cut -d' ' -f1-3); OpenCV $("$PY" -c 'import cv2; print(cv2.__version__)' 2>/dev/null || echo none)"
} >"$machine"
cat "$machine" >&2
start_epoch=$(date +%s)

for size in $SIZES; do
    w=${size%x*} h=${size#*x}
    render_clip
    mkdir -p "$work/$size"

    # Warm-up (not counted): framecast once; its mean frame size is FFmpeg's -q:v target.
    ffq=
    measure framecast tp "$N_HI" "$work/$size/warmup" || die "framecast warm-up run failed"
    target=$("$PY" -c 'import json, sys; print([json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]["mean_frame_bytes"])' \
        "$work/$size/warmup/recv.jsonl")
    if [[ " $TOOLS " == *" ffmpeg "* ]]; then
        if [ -n "$FFMPEG_Q" ]; then ffq=$FFMPEG_Q; else calibrate_ffmpeg "$target"; fi
        note "$size: ffmpeg -q:v $ffq (framecast q$QUALITY: $(awk -v t="$target" 'BEGIN { printf "%.1f", t / 1000 }') KB/frame)"
    fi
    [[ " $TOOLS " != *" gstreamer"* ]] || check_gstreamer

    read -r -a tools <<<"$TOOLS"
    for r in $(seq "$RUNS"); do
        note "$size round $r/$RUNS"
        n=${#tools[@]}
        pair=("$N_LO" "$N_HI")
        [ $((r % 2)) = 1 ] || pair=("$N_HI" "$N_LO")
        for i in $(seq 0 $((n - 1))); do
            tool=${tools[$(((i + r - 1) % n))]}
            for frames in "${pair[@]}"; do run "$tool" tp "$frames" "$r"; done
        done
        if [ "$LATENCY" = 1 ]; then
            for i in $(seq 0 $((n - 1))); do
                tool=${tools[$(((i + r - 1) % n))]}
                case $tool in ffmpeg | gstreamer-queue) continue ;; gstreamer) [ $gst_latency = 1 ] || continue ;; esac
                run "$tool" lat "$LAT_FRAMES" "$r"
            done
        fi
    done
done

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(($(date +%s) - start_epoch)) s for the runs" >>"$machine"
"$PY" "$helpers/table.py" "$work" "$QUALITY" "$NOISE_MAX" "$N_LO" "$N_HI" "$LAT_FRAMES"
[ -z "$OUT_DIR" ] || note "raw logs: $work"
