#!/usr/bin/env bash
# The pipe source (issue #15): what `framecast send --source -` costs and adds, at 1280x720
# and 30 fps, with one viewer on the sender's /stream.mjpg (a Python client):
#
#   cpu       sender CPU (user + system, from wait4's rusage of the sender alone: the
#             producer's and the viewer's CPU are not in it) per frame sent, for
#             `ffmpeg -re -f lavfi -i testsrc2 ... -f mjpeg - | framecast send --source -`
#             forwarding ffmpeg's JPEGs as they are (passthrough) against `--quality 75`
#             (each image decoded and encoded again);
#   latency   the pipe source's added latency: a Python producer writes ffmpeg's JPEGs into
#             the sender's standard input at 30 fps and notes CLOCK_MONOTONIC when it began
#             writing each image and when the write of its last byte returned; a viewer (a
#             process of its own) reads each part's X-Timestamp (the sender's capture time,
#             CLOCK_MONOTONIC once the capture thread had read the image's last byte and
#             split it) and X-Framecast-Seq; latency = capture time - producer's time of the
#             same image. From "write began" it is what the pipe (64 KiB: an image crosses it
#             in pieces), the reads and the splitter add; from "write returned" it is about 0
#             or below (the reader has the last byte before the writer is scheduled again:
#             nothing waits in a buffer). The encoder and the network come after capture and
#             are in the stats' capture-to-* figures instead.
#
#   bash benches/pipe.sh                         # 10 s runs, 3 of each
#   DURATION=5 RUNS=1 bash benches/pipe.sh        # quick
#   FRAMECAST=/path/to/framecast bash benches/pipe.sh   # measure that binary, build nothing
#
# SIZE (default 1280x720), DURATION (seconds per run, default 10), RUNS (default 3). Medians
# over the runs are quoted, and each run is listed. Needs ffmpeg and python3; installs
# nothing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
. benches/lib.sh

SIZE=${SIZE:-1280x720}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
for tool in ffmpeg python3; do
    command -v "$tool" >/dev/null || { echo "benches/pipe.sh needs $tool (scripts/setup.sh --test-deps)" >&2; exit 2; }
done
measured_bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

frames=$((DURATION * 30))
echo "== ffmpeg: $frames frames of testsrc2 at $SIZE as JPEG files (the latency producer's)" >&2
ffmpeg -loglevel error -f lavfi -i "testsrc2=size=$SIZE:rate=30" -frames:v "$frames" -q:v 3 -f image2 "$tmp/f%05d.jpg"

python3 - "$bin" "$tmp" "$SIZE" "$DURATION" "$RUNS" <<'PY'
import glob, multiprocessing, os, socket, statistics, subprocess, sys, time

BIN, TMP, SIZE, DURATION, RUNS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
FILES = sorted(glob.glob(os.path.join(TMP, "f*.jpg")))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def viewer(port, out, stop):
    """Reads /stream.mjpg, noting (seq, capture time in us) of every part; sends them to `out`
    at the end. A process of its own: in the producer's process, the GIL would delay the
    producer's timestamps."""
    parts = []
    try:
        watch(port, parts, stop)
    finally:
        out.send(parts)

def watch(port, parts, stop):
    deadline = time.monotonic() + 20
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1); break
        except OSError:
            if time.monotonic() > deadline or stop.is_set(): return
            time.sleep(0.02)
    s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(1)
    buf = b""; head = True
    while not stop.is_set():
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk: return
        buf += chunk
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0: break
            if head:
                buf = buf[end + 4:]; head = False; continue
            fields = {}
            for line in buf[:end].decode("latin1").split("\r\n"):
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            n = int(fields.get("content-length", "-1"))
            if n < 0 or len(buf) < end + 4 + n: break
            sec, _, us = fields["x-timestamp"].partition(".")
            parts.append((int(fields["x-framecast-seq"]), int(sec) * 1_000_000 + int(us)))
            buf = buf[end + 4 + n:]

def run_sender(args, feed):
    """Starts the sender on a pipe, a viewer, and `feed(write_fd)`; returns (cpu s, frames sent, parts)."""
    port = free_port()
    # The viewer first: a process forked later would hold the pipe's write end open.
    stop = multiprocessing.Event()
    rx, tx = multiprocessing.Pipe(duplex=False)
    v = multiprocessing.Process(target=viewer, args=(port, tx, stop)); v.start()
    r, w = os.pipe()
    stats = os.path.join(TMP, "stats.json")
    cmd = [BIN, "send", "--source", "-", "--http", f"127.0.0.1:{port}", "--stats-json", stats] + args
    p = subprocess.Popen(cmd, stdin=r, stderr=open(os.path.join(TMP, "send.log"), "w"), env=dict(os.environ, NO_COLOR="1"))
    os.close(r)
    feed(w)
    _, status, ru = os.wait4(p.pid, 0)
    stop.set()
    parts = rx.recv(); v.join()
    if status != 0:
        sys.exit(f"sender exited {status}: see {TMP}/send.log")
    import json
    summaries = [json.loads(l) for l in open(stats) if '"summary"' in l]
    if not summaries:
        log = open(os.path.join(TMP, "send.log")).read()
        sys.exit(f"no summary in {stats}; the sender's log:\n{log[-3000:]}")
    return ru.ru_utime + ru.ru_stime, summaries[-1]["frames"], parts

def ffmpeg_feed(w):
    ff = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate=30",
                           "-t", str(DURATION), "-q:v", "3", "-f", "mjpeg", "-"], stdout=w)
    os.close(w)
    ff.wait()

written = {}
def timed_feed(w):
    """Writes the JPEG files at 30 fps, noting when each write of a whole image returned."""
    start = time.monotonic()
    for k, f in enumerate(FILES):
        data = memoryview(open(f, "rb").read())
        at = start + k / 30
        time.sleep(max(0, at - time.monotonic()))
        began = time.monotonic_ns() // 1000
        while data:
            data = data[os.write(w, data):]
        written[k] = (began, time.monotonic_ns() // 1000)
    os.close(w)

cpu = {"passthrough": [], "--quality 75": []}
lat = {"write began": [], "write returned": []}
for run in range(RUNS):
    for name, args in (("passthrough", []), ("--quality 75", ["--quality", "75"])):
        s, n, _ = run_sender(args, ffmpeg_feed)
        cpu[name].append((s / max(n, 1) * 1000, n, s))
        print(f"run {run + 1} cpu {name:>13}: {n} frames, {s:.2f} s CPU, {s / max(n, 1) * 1000:.3f} ms/frame", flush=True)
    written.clear()
    _, n, parts = run_sender([], timed_feed)
    for i, what in enumerate(("write began", "write returned")):
        ms = sorted((cap - written[seq][i]) / 1000 for seq, cap in parts if seq in written)
        lat[what].append(statistics.median(ms))
        print(f"run {run + 1} latency from {what}: {len(ms)} frames, median {statistics.median(ms):.3f} ms, "
              f"p90 {ms[int(len(ms) * 0.9)]:.3f} ms, max {ms[-1]:.3f} ms", flush=True)

print(f"\n== {SIZE} at 30 fps, {DURATION} s runs, medians of {RUNS}")
for name, v in cpu.items():
    print(f"sender CPU per frame, {name:>13}: {statistics.median(x[0] for x in v):.3f} ms")
for what, v in lat.items():
    print(f"pipe source latency, producer's {what} -> capture time: {statistics.median(v):.3f} ms")
PY
