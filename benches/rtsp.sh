#!/usr/bin/env bash
# RTSP against the native protocol, in one run (ratios only between figures of the same run):
#
#   bash benches/rtsp.sh            # 720p30 and 1080p30, 10 s a case; 1, 4 and 16 viewers
#   bash benches/rtsp.sh --quick    # 720p30 only, 4 s a case; 1 and 4 viewers
#   DURATION=20 RUNS=3 bash benches/rtsp.sh
#
# 1. Capture->decoded latency p50/p95 at each size, 30 fps, test pattern (release build),
#    sender and viewer on 127.0.0.1:
#      native        send --listen   + recv --connect HOST:PORT --headless --frame-log
#      rtsp-udp/tcp  send --rtsp     + recv --connect rtsp://HOST:PORT/stream (framecast's own
#                    RTSP client) over UDP and over TCP interleaved, --frame-log
#      gst-udp/tcp   send --rtsp     + GStreamer `rtspsrc ! rtpjpegdepay ! jpegdec` timed with
#                    pad probes (benches/rtsp_gst.py; capture time from framecast's RTP header
#                    extension, decoded time at jpegdec's source pad)
#    The first second of each run is left out. With RUNS > 1, medians of the runs' p50/p95.
# 2. Sender CPU per frame with 1, 4 and 16 RTSP viewers (UDP and TCP), 1280x720 at 30 fps:
#    the viewers are `ffmpeg -rtsp_transport X -i URL -c copy -f null -` (they read and
#    depayload, decode nothing); CPU is user+sys from /proc/PID/stat over the steady window,
#    divided by the frames encoded in it (the sender's --stats-json intervals). The native
#    protocol with 1 viewer is the reference. Packetising is once per frame, so each extra
#    viewer should add only its sends: (CPU at N - CPU at 1) / (N - 1) is printed.
# 3. Bytes per frame, what each transport carries: native TCP is the JPEG (the sender's stats)
#    and 60 bytes of message and frame header (docs/protocol.md); RTP is the packets and bytes
#    reaching GStreamer's depayloader (RTP headers, framecast's 16-byte header extension, RFC
#    2435 headers and tables, the scan with its restart markers), plus 4 bytes a packet
#    interleaved on TCP, or 28 (IPv4 + UDP headers) a packet on UDP. TCP/IP's own headers
#    (about 40 bytes per 1448-byte segment) are the same for native and RTSP over TCP and are
#    left out. The sender's own count for RTSP links (wire bytes) is printed beside it.
#
# Needs python3, ffmpeg, and /usr/bin/python3 with gi + GStreamer (scripts/setup.sh
# --test-deps). Prints a table per part and one JSON line with every figure at the end.
set -euo pipefail

QUICK=0
for a in "$@"; do
    case "$a" in
    --quick) QUICK=1 ;;
    *) echo "usage: bash benches/rtsp.sh [--quick]" >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    SIZES=${SIZES:-1280x720}
    DURATION=${DURATION:-4}
    VIEWERS=${VIEWERS:-1,4}
else
    SIZES=${SIZES:-1280x720,1920x1080}
    DURATION=${DURATION:-10}
    VIEWERS=${VIEWERS:-1,4,16}
fi
RUNS=${RUNS:-1}
PARTS=${PARTS:-latency,cpu}

for tool in python3 ffmpeg /usr/bin/python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found (scripts/setup.sh --test-deps)" >&2; exit 1; }
done

cd "$(dirname "$0")/.."
. benches/lib.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

measured_bin

python3 - "$bin" "$tmp" "$SIZES" "$DURATION" "$VIEWERS" "$RUNS" "$PARTS" <<'EOF'
import csv, json, os, re, signal, socket, statistics, subprocess, sys, time

BIN, TMP, SIZES, DURATION, VIEWERS, RUNS, PARTS = sys.argv[1:8]
SIZES = SIZES.split(",")
DURATION, RUNS = float(DURATION), int(RUNS)
VIEWERS = [int(v) for v in VIEWERS.split(",")]
PARTS = set(PARTS.split(","))
FPS = 30
WARM = 1.0
# The native frame message's header (8) and frame header (52), docs/protocol.md.
NATIVE_OVERHEAD = 60
TICK = os.sysconf("SC_CLK_TCK")
GST = os.path.join(os.getcwd(), "benches/rtsp_gst.py")
CHILDREN = []
RESULT = {"sizes": SIZES, "duration_s": DURATION, "runs": RUNS}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def spawn(argv, name, framecast=True):
    env = dict(os.environ, NO_COLOR="1", RUST_LOG="info")
    f = open(f"{TMP}/{name}.log", "wb")
    p = subprocess.Popen(([BIN] if framecast else []) + argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                         env=env, start_new_session=True)
    CHILDREN.append(p)
    return p


def stop(p, timeout=10):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def stop_all():
    for p in CHILDREN:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def pct(v, p):
    v = sorted(v)
    if not v:
        return None
    return v[max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def frame_log_latency(path):
    """capture->decoded ms of each frame shown after the first WARM seconds."""
    out = []
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["capture_to_decoded_ms"] and float(row["t_s"]) >= WARM:
                out.append(float(row["capture_to_decoded_ms"]))
    return out


def summary(path):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    return [l for l in lines if l.get("type") == "summary"][-1], lines


RECV_HELP = subprocess.run([BIN, "recv", "--help"], capture_output=True, text=True).stdout


def rtsp_transport_args(proto):
    """How framecast's RTSP client is told the transport (whatever flag this build has)."""
    for flag in ("--rtsp-transport", "--transport"):
        if flag in RECV_HELP:
            return [flag, proto]
    return None


def send_args(size, extra, stats):
    return ["send", "--size", size, "--fps", str(FPS), "--duration", str(DURATION + 3), "--stats-json", stats] + extra


def latency_case(size, case, run):
    """One latency run; returns {p50, p95, n, ...} or None when the case cannot run here."""
    port = free_port()
    tag = f"{case}-{size}-{run}"
    stats = f"{TMP}/send-{tag}.jsonl"
    native = case == "native"
    send = spawn(send_args(size, ["--listen" if native else "--rtsp", f"127.0.0.1:{port}"], stats), f"send-{tag}")
    wait_port(port)
    res = {}
    if case.startswith("gst"):
        out = f"{TMP}/gst-{tag}.json"
        g = spawn([GST, f"rtsp://127.0.0.1:{port}/stream", case.split("-")[1], str(DURATION + WARM), out],
                  f"gst-{tag}", framecast=False)
        g.wait(DURATION + 30)
        if not os.path.exists(out):
            log(f"  {case}: GStreamer wrote nothing; see {TMP}/gst-{tag}.log")
            stop(send)
            return None
        d = json.load(open(out))
        lat = d["latency_ms"][int(FPS * WARM):]
        res.update(rtp_bytes_per_frame=d["rtp_bytes"] / max(1, d["rtp_frames"]),
                   rtp_packets_per_frame=d["rtp_packets"] / max(1, d["rtp_frames"]), unknown=d["unknown"])
    else:
        flog = f"{TMP}/frames-{tag}.csv"
        url = f"127.0.0.1:{port}" if native else f"rtsp://127.0.0.1:{port}/stream"
        extra = [] if native else rtsp_transport_args(case.split("-")[1])
        if extra is None:
            log(f"  {case}: this build's recv has no transport flag; skipped")
            stop(send)
            return None
        recv = spawn(["recv", "--connect", url, "--headless", "--frame-log", flog, "--duration", str(DURATION + WARM)]
                     + extra, f"recv-{tag}")
        recv.wait(DURATION + 30)
        lat = frame_log_latency(flog) if os.path.exists(flog) else []
    stop(send)
    s, _ = summary(stats)
    # Native: JPEG bytes. RTSP: what the server counts per frame sent (RTP, interleaving).
    res["sender_bytes_per_frame"] = s.get("mean_frame_bytes")
    res.update(n=len(lat), p50=pct(lat, 50), p95=pct(lat, 95))
    return res


def summary_now(path):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    return lines[-1] if lines else None, lines


def latency_part():
    cases = ["native", "rtsp-udp", "rtsp-tcp", "gst-udp", "gst-tcp"]
    table = {}
    for size in SIZES:
        for case in cases:
            runs = []
            for run in range(RUNS):
                log(f"== latency {size} {case} run {run + 1}/{RUNS}")
                r = latency_case(size, case, run)
                if r:
                    runs.append(r)
                    log(f"   p50 {r['p50']} p95 {r['p95']} ms, {r['n']} frames")
            if runs:
                med = lambda k: statistics.median(r[k] for r in runs if r.get(k) is not None) \
                    if any(r.get(k) is not None for r in runs) else None
                table[(size, case)] = {k: med(k) for k in runs[0]}
    print(f"\ncapture->decoded latency, 30 fps, {DURATION:g} s a case (first {WARM:g} s left out), ms")
    print(f"{'size':>10} {'case':>9} {'p50':>7} {'p95':>7} {'p50/native':>10} {'frames':>7}")
    for (size, case), r in table.items():
        base = table.get((size, "native"), {}).get("p50")
        ratio = f"{r['p50'] / base:.2f}" if base and r.get("p50") else "-"
        fmt = lambda v: f"{v:.1f}" if v is not None else "-"
        print(f"{size:>10} {case:>9} {fmt(r.get('p50')):>7} {fmt(r.get('p95')):>7} {ratio:>10} {r.get('n', 0):>7.0f}")
    print("\nbytes per frame (what the transport carries)")
    for size in SIZES:
        n = table.get((size, "native"), {})
        jpeg = n.get("sender_bytes_per_frame")
        if not jpeg:
            continue
        native = jpeg + NATIVE_OVERHEAD
        print(f"{size:>10} native TCP: JPEG {jpeg:.0f} + {NATIVE_OVERHEAD} = {native:.0f}")
        for proto, extra in (("udp", 28), ("tcp", 4)):
            g = table.get((size, f"gst-{proto}"), {})
            if not g.get("rtp_bytes_per_frame"):
                continue
            rtp, pk = g["rtp_bytes_per_frame"], g["rtp_packets_per_frame"]
            wire = rtp + extra * pk
            own = table.get((size, f"rtsp-{proto}"), {}).get("sender_bytes_per_frame")
            print(f"{size:>10} RTP/{proto.upper()}: {pk:.1f} packets, {rtp:.0f} RTP bytes, {wire:.0f} with "
                  f"{'IPv4+UDP headers' if proto == 'udp' else 'interleaving'} = {wire / native:.4f}x native "
                  f"(the sender counts {own or 0:.0f})")
            RESULT.setdefault("bytes", {})[f"{size} {proto}"] = {"wire": wire, "native": native, "ratio": wire / native}
    RESULT["latency"] = {f"{s} {c}": r for (s, c), r in table.items()}


def cpu_case(proto, n, size="1280x720"):
    port = free_port()
    tag = f"cpu-{proto}-{n}"
    stats = f"{TMP}/send-{tag}.jsonl"
    native = proto == "native"
    send = spawn(send_args(size, ["--listen" if native else "--rtsp", f"127.0.0.1:{port}"], stats), f"send-{tag}")
    wait_port(port)
    viewers = []
    for i in range(n):
        if native:
            argv = ["recv", "--connect", f"127.0.0.1:{port}", "--headless"]
            viewers.append(spawn(argv, f"{tag}-v{i}"))
        else:
            argv = ["ffmpeg", "-v", "error", "-rtsp_transport", proto, "-i", f"rtsp://127.0.0.1:{port}/stream",
                    "-c", "copy", "-f", "null", "-"]
            viewers.append(spawn(argv, f"{tag}-v{i}", framecast=False))
    time.sleep(WARM + 1.0)
    c0, t0 = cpu_s(send.pid), time.time()
    _, lines0 = summary_now(stats)
    time.sleep(DURATION)
    c1, t1 = cpu_s(send.pid), time.time()
    _, lines1 = summary_now(stats)
    window = [l for l in lines1[len(lines0):] if l.get("type") != "summary"]
    # Encoded, not sent: the sender counts a frame sent once per viewer.
    frames = sum(l.get("encoded") or 0 for l in window)
    secs = sum(l.get("seconds", 0) for l in window)
    links = (lines1[-1].get("links") or []) if lines1 else []
    for v in viewers:
        stop(v)
    stop(send)
    fps = frames / secs if secs else 0
    ms = (c1 - c0) * 1e3 / (fps * (t1 - t0)) if fps else None
    return {"cpu_ms_per_frame": ms, "fps": fps, "links": len(links), "cpu_pct": (c1 - c0) * 100 / (t1 - t0)}


def cpu_part():
    rows = {}
    log("== cpu native 1")
    rows[("native", 1)] = cpu_case("native", 1)
    for proto in ("udp", "tcp"):
        for n in VIEWERS:
            log(f"== cpu rtsp-{proto} {n}")
            rows[(proto, n)] = cpu_case(proto, n)
    print(f"\nsender CPU per frame, 1280x720 at {FPS} fps, {DURATION:g} s steady window")
    print(f"{'transport':>10} {'viewers':>7} {'ms/frame':>9} {'% core':>7} {'fps':>6} {'per extra viewer':>17}")
    for (proto, n), r in rows.items():
        one = rows.get((proto, 1), {}).get("cpu_ms_per_frame")
        extra = "-"
        if n > 1 and one is not None and r["cpu_ms_per_frame"] is not None:
            extra = f"{(r['cpu_ms_per_frame'] - one) / (n - 1):.3f} ms"
        ms = f"{r['cpu_ms_per_frame']:.3f}" if r["cpu_ms_per_frame"] is not None else "-"
        print(f"{proto:>10} {n:>7} {ms:>9} {r['cpu_pct']:>7.1f} {r['fps']:>6.1f} {extra:>17}")
    RESULT["cpu"] = {f"{p} {n}": r for (p, n), r in rows.items()}


try:
    if "latency" in PARTS:
        latency_part()
    if "cpu" in PARTS:
        cpu_part()
    RESULT["load_average"] = os.getloadavg()
    print(json.dumps(RESULT))
finally:
    stop_all()
EOF
