#!/usr/bin/env bash
# Many viewers on one sender: what each viewer gets, what the sender pays, how fast a new
# viewer sees its first frame, and whether Chrome shows the newest frame (the boundary-after-
# the-frame remedy in src/http.rs).
#
#   bash benches/viewers.sh                        # 1280x720, 30 fps, 10 s per run
#   DURATION=20 SIZE=640x480 bash benches/viewers.sh
#   PARTS=viewers,first bash benches/viewers.sh    # any of: viewers, first, chrome (default all)
#
# Runs, each with one `framecast send --listen ... --http ...` (release build, test pattern):
#   1 native           one `framecast recv --headless`
#   1 http             one HTTP MJPEG reader (Python, reads as fast as it can)
#   8 mixed            4 native + 4 HTTP
# For each: fps per viewer over its steady state (after its first second; native from the
# receiver's interval records, HTTP from parts counted by the reader), the sender's CPU over
# the steady window (user+sys from /proc/PID/stat, seconds and % of one core), and its
# encoded/captured/sent counts (each frame is encoded once whatever the number of viewers).
#
# First frame: an HTTP client joins a running stream (one native viewer keeps it running)
# and times connect -> first complete JPEG part; and the same with nobody watching
# (encoding paused, so the frame is captured/encoded on demand). Median of RUNS_FIRST joins.
#
# Chrome remedy (needs chromium and ImageMagick's /usr/bin/convert): headless Chromium opens
# the page through a small proxy that forwards K frames of /stream.mjpg and then holds the
# connection open: (A) with the boundary the server sends right after the K-th frame, (B)
# without it, as a server that sends each boundary only before the next part would, or (C)
# with the boundary and the next part's headers (µStreamer's "advance headers"). The
# screenshot's burned-in frame counter is matched against the forwarded frames. Blink's
# MultipartImageResourceParser finishes a part only when the NEXT part's headers have been
# parsed, so only (C) shows frame K; (A) and (B) show frame K-1.
#
# Screenshots are kept as target/viewers-chrome-{A,B,C}-K.png. Needs python3; the Chrome part needs chromium (Debian: chromium) and imagemagick.
set -euo pipefail

SIZE=${SIZE:-1280x720}
FPS=${FPS:-30}
DURATION=${DURATION:-10}
RUNS_FIRST=${RUNS_FIRST:-9}
PARTS=${PARTS:-viewers,first,chrome}

command -v python3 >/dev/null || { echo "python3 not found; install it with: apt-get install -y python3" >&2; exit 1; }

cd "$(dirname "$0")/.."
. benches/lib.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

release_build

python3 - "$bin" "$tmp" "$SIZE" "$FPS" "$DURATION" "$RUNS_FIRST" "$PARTS" "$target_dir" <<'EOF'
import json, os, re, shutil, signal, socket, statistics, subprocess, sys, threading, time

BIN, TMP, SIZE, FPS, DURATION, RUNS_FIRST, PARTS, OUT = sys.argv[1:9]
PARTS = set(PARTS.split(","))
FPS, DURATION, RUNS_FIRST = int(FPS), float(DURATION), int(RUNS_FIRST)
TICK = os.sysconf("SC_CLK_TCK")
CHILDREN = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def spawn(args, name):
    env = dict(os.environ, NO_COLOR="1", RUST_LOG="info")
    f = open(f"{TMP}/{name}.log", "wb")
    p = subprocess.Popen([BIN] + args, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=env)
    CHILDREN.append(p)
    return p


def stop_all():
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listens on {port}")


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK  # utime, stime (fields 14, 15)


def records(path, kind):
    return [r for r in (json.loads(l) for l in open(path) if l.strip()) if r.get("type") == kind]


class MjpegReader(threading.Thread):
    """Reads /stream.mjpg as fast as it can; records each complete part's arrival time and seq."""

    def __init__(self, port, seconds, keep=False, path="/stream.mjpg"):
        super().__init__(daemon=True)
        self.port, self.seconds, self.keep, self.path = port, seconds, keep, path
        self.parts, self.jpegs, self.error, self.t0 = [], {}, None, None
        self.stop = threading.Event()

    def run(self):
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - reported with the results
            self.error = repr(e)

    def _run(self):
        s = socket.create_connection(("127.0.0.1", self.port), 5)
        self.t0 = time.monotonic()
        end = self.t0 + self.seconds
        s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        buf = b""
        head_done = False
        part = None  # (length, seq) once a part's headers are read
        while True:
            now = time.monotonic()
            if now >= end or self.stop.is_set():
                break
            s.settimeout(max(0.01, min(0.2, end - now)))
            try:
                chunk = s.recv(1 << 16)
            except socket.timeout:
                continue
            if not chunk:
                break
            buf += chunk
            while True:
                if not head_done:
                    i = buf.find(b"\r\n\r\n")
                    if i < 0:
                        break
                    buf, head_done = buf[i + 4:], True
                elif part is None:
                    i = buf.find(b"\r\n\r\n")
                    if i < 0:
                        break
                    hdr = buf[:i].decode("latin-1")
                    m = re.search(r"(?i)content-length:\s*(\d+)", hdr)
                    length = int(m.group(1)) if m else None
                    m = re.search(r"(?i)x-framecast-seq:\s*(\d+)", hdr)
                    part, buf = (length, int(m.group(1)) if m else None), buf[i + 4:]
                else:
                    length, seq = part
                    if length is None:  # headers sent ahead of their frame: ends at the delimiter
                        length = buf.find(BOUNDARY[:-2])
                        if length < 0:
                            break
                    elif len(buf) < length:
                        break
                    self.parts.append((time.monotonic() - self.t0, seq))
                    if self.keep:
                        self.jpegs[seq] = buf[:length]
                    buf, part = buf[length:], None
        s.close()

    def fps_after(self, start=1.0):
        n = sum(1 for t, _ in self.parts if t >= start)
        return n / max(self.seconds - start, 1e-9)


def run_viewers(native, http):
    """One sender, `native` recv processes and `http` readers; returns a result dict."""
    nport, hport = free_port(), free_port()
    tag = f"{native}n{http}h"
    sjson = f"{TMP}/send-{tag}.jsonl"
    send = spawn(["send", "--listen", f"127.0.0.1:{nport}", "--http", f"127.0.0.1:{hport}", "--size", SIZE,
                  "--fps", str(FPS), "--duration", str(DURATION + 2.5), "--stats-json", sjson], f"send-{tag}")
    wait_port(hport)
    wait_port(nport)
    load = open("/proc/loadavg").read().split()[0]
    recvs = []
    for i in range(native):
        rjson = f"{TMP}/recv-{tag}-{i}.jsonl"
        recvs.append((spawn(["recv", "--connect", f"127.0.0.1:{nport}", "--headless", "--duration",
                             str(DURATION), "--stats-json", rjson], f"recv-{tag}-{i}"), rjson))
    readers = [MjpegReader(hport, DURATION) for _ in range(http)]
    for r in readers:
        r.start()
    # The sender's CPU over the steady window, from 2 s after the viewers joined to 1 s
    # before they leave.
    time.sleep(2.0)
    c0, t0 = cpu_seconds(send.pid), time.monotonic()
    time.sleep(DURATION - 3.0)
    c1, t1 = cpu_seconds(send.pid), time.monotonic()
    for r in readers:
        r.join(DURATION + 10)
    fps = []
    for i, (p, rjson) in enumerate(recvs):
        p.wait(timeout=30)
        iv = [r for r in records(rjson, "interval")][1:]
        iv = [r for r in iv if r["seconds"] > 0.5]
        f = sum(r["frames"] for r in iv) / max(sum(r["seconds"] for r in iv), 1e-9)
        fps.append((f"native{i}", f, min((r["fps"] for r in iv), default=0.0)))
    for i, r in enumerate(readers):
        per_sec = [sum(1 for t, _ in r.parts if k <= t < k + 1) for k in range(1, int(DURATION))]
        fps.append((f"http{i}", r.fps_after(1.0), float(min(per_sec, default=0))))
        if r.error:
            log(f"http{i}: {r.error}")
    send.wait(timeout=30)
    s = records(sjson, "summary")[-1]
    return {"tag": tag, "load": load, "fps": fps, "cpu_s": c1 - c0, "window": t1 - t0, "summary": s}


def first_frame(port, runs):
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        r = MjpegReader(port, 3.0)
        r.start()
        while not r.parts and r.is_alive() and time.monotonic() - t0 < 3.0:
            time.sleep(0.0005)
        if r.parts and r.t0:
            times.append((r.parts[0][0] + (r.t0 - t0)) * 1000)
        r.stop.set()
        r.join(5)
        time.sleep(0.15)
    return times


def first_frame_phase():
    nport, hport = free_port(), free_port()
    send = spawn(["send", "--listen", f"127.0.0.1:{nport}", "--http", f"127.0.0.1:{hport}", "--size", SIZE,
                  "--fps", str(FPS), "--duration", "60"], "send-first")
    wait_port(hport)
    time.sleep(1.0)
    paused = first_frame(hport, RUNS_FIRST)
    recv = spawn(["recv", "--connect", f"127.0.0.1:{nport}", "--headless", "--duration", "60"], "recv-first")
    time.sleep(1.5)
    running = first_frame(hport, RUNS_FIRST)
    recv.kill()
    recv.wait()
    send.kill()
    send.wait()
    return running, paused


# -- Chrome remedy ------------------------------------------------------------------------

BOUNDARY = b"\r\n--framecastframe\r\n"


def proxy(listen_port, upstream_port, k, mode, saved, stop):
    """Forwards connections to upstream; /stream.mjpg responses are cut after K parts, then held
    open until `stop`. After the K-th JPEG: mode A forwards the boundary the server sent, B
    withholds it, C adds the next part's headers after it (µStreamer's advance headers)."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(16)
    ls.settimeout(0.1)

    def pump(src, dst):
        try:
            while not stop.is_set():
                try:
                    b = src.recv(65536)
                except socket.timeout:
                    continue
                if not b:
                    break
                dst.sendall(b)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle(c):
        c.settimeout(0.1)
        u = socket.create_connection(("127.0.0.1", upstream_port), 5)
        u.settimeout(0.1)
        req = b""
        while b"\r\n\r\n" not in req and not stop.is_set():
            try:
                b = c.recv(65536)
            except socket.timeout:
                continue
            if not b:
                return
            req += b
        u.sendall(req)
        if b" /stream.mjpg" not in req.split(b"\r\n", 1)[0]:
            threading.Thread(target=pump, args=(c, u), daemon=True).start()
            pump(u, c)
            return
        # Hold the stream back until K parts are complete (a part is complete once the
        # delimiter after it has arrived), then forward what the server sent, at once.
        held, freeze_at = b"", None
        u.settimeout(0.005)  # wake up in time to freeze within the grace period
        while not stop.is_set():
            if freeze_at and time.monotonic() >= freeze_at:
                head_end = held.find(b"\r\n\r\n") + 4
                body = held[head_end:]
                delims = [m.start() for m in re.finditer(b"--framecastframe", body)]
                for n, (d0, d1) in enumerate(zip(delims, delims[1:])):
                    h = body.find(b"\r\n\r\n", d0)
                    m = re.search(rb"(?i)x-framecast-seq:\s*(\d+)", body[d0:h])
                    seq = int(m.group(1)) if m else n
                    saved[seq] = body[h + 4:d1 - 2]
                    saved["last"] = seq  # the newest complete part (K, or more if frames bunched)
                # Cut after the last complete part: (B) at the end of its JPEG; (A) after the
                # delimiter line that follows it, and after a complete header block following
                # that line (headers sent ahead), but before any byte of a next JPEG.
                d = delims[-1]
                line_end = body.find(b"\r\n", d) + 2
                h = body.find(b"\r\n\r\n", line_end)
                cut = h + 4 if h >= 0 and h + 2 != line_end else line_end
                out = held[:head_end + (d - 2 if mode == "B" else cut)]
                if mode == "C" and not out.endswith(b"\r\n\r\n"):
                    out += b"Content-Type: image/jpeg\r\n\r\n"
                c.sendall(out)
                while not stop.is_set():  # hold the connection open, forward nothing
                    time.sleep(0.05)
                return
            try:
                b = u.recv(65536)
            except socket.timeout:
                continue
            if not b:
                break
            held += b
            if freeze_at is None and held.count(b"--framecastframe") - 1 >= k:
                freeze_at = time.monotonic() + 0.03
        c.close()

    while not stop.is_set():
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(c,), daemon=True).start()
    ls.close()


def ppm(path_or_bytes, crop=None):
    """RGB pixels (w, h, bytes) through ImageMagick."""
    args = ["/usr/bin/convert", "-" if isinstance(path_or_bytes, bytes) else path_or_bytes]
    if crop:
        args += ["-crop", crop, "+repage"]
    out = subprocess.run(args + ["ppm:-"], input=path_or_bytes if isinstance(path_or_bytes, bytes) else None,
                         capture_output=True, check=True, timeout=30).stdout
    fields, i = [], 0
    while len(fields) < 4:
        while out[i:i + 1].isspace():
            i += 1
        j = i
        while not out[j:j + 1].isspace():
            j += 1
        fields.append(out[i:j])
        i = j
    w, h = int(fields[1]), int(fields[2])
    return w, h, out[i + 1:i + 1 + w * h * 3]


def chrome_remedy():
    if not shutil.which("chromium") or not os.path.exists("/usr/bin/convert"):
        return "skipped: needs chromium and /usr/bin/convert (apt-get install -y chromium imagemagick)"
    # 640x480 shows 1:1 in an 800-wide window: the counter band is the image's bottom 1/6.
    hport = free_port()
    send = spawn(["send", "--http", f"127.0.0.1:{hport}", "--size", "640x480", "--fps", "10",
                  "--duration", "120"], "send-chrome")
    wait_port(hport)
    lines = []
    try:
        for mode, label in (("A", "A: boundary right after the frame (as served)"),
                            ("B", "B: boundary withheld until the next part (a plain server)"),
                            ("C", "C: boundary and the next part's headers (advance headers)")):
            for k in (3, 5):
                pport, saved, stop = free_port(), {}, threading.Event()
                th = threading.Thread(target=proxy, args=(pport, hport, k, mode, saved, stop), daemon=True)
                th.start()
                wait_port(pport)
                prof = f"{TMP}/chrome-{k}-{mode}"
                os.makedirs(prof)
                png = f"{TMP}/chrome-{k}-{mode}.png"
                # Chromium exits after the screenshot; the proxy holds the stream frozen by then
                # (K parts at 10 fps take under 0.6 s; the screenshot comes after ~1 s).
                subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={prof}",
                                "--window-size=800,700", "--virtual-time-budget=4000", f"--screenshot={png}",
                                f"http://127.0.0.1:{pport}/"],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=60, start_new_session=True)
                stop.set()
                th.join(5)
                if "last" not in saved or not os.path.exists(png):
                    lines.append(f"  {label}, K={k}: no result (frames forwarded: {len(saved)})")
                    continue
                # Digits band: image rows 400..480 at x 80..720 of the screenshot.
                _, _, shot = ppm(png, "640x80+80+400")
                scores = {}
                for seq, jpeg in saved.items():
                    if seq == "last":
                        continue
                    _, _, ref = ppm(jpeg, "640x80+0+400")
                    scores[seq] = sum(abs(a - b) for a, b in zip(shot, ref)) / len(ref)
                shown = min(scores, key=scores.get)
                last = saved["last"]
                verdict = "the newest frame" if shown == last else f"{last - shown} frame(s) behind the newest"
                diffs = ", ".join(f"{s}:{v:.1f}" for s, v in sorted(scores.items()))
                lines.append(f"  {label}, K={k}: last forwarded seq {last}, Chrome shows seq {shown}: {verdict}"
                             f"  (mean abs diff per seq: {diffs})")
                shutil.copy(png, f"{OUT}/viewers-chrome-{mode}-{k}.png")
    finally:
        send.kill()
        send.wait()
    return "\n".join(lines)


results, running, paused, chrome = [], None, None, None
try:
    if "viewers" in PARTS:
        for native, http in ((1, 0), (0, 1), (4, 4)):
            log(f"== run: {native} native + {http} HTTP viewers, {SIZE} at {FPS} fps, {DURATION:.0f} s")
            results.append(run_viewers(native, http))
    if "first" in PARTS:
        log("== first-frame times")
        running, paused = first_frame_phase()
    if "chrome" in PARTS:
        log("== Chrome remedy")
        chrome = chrome_remedy()
finally:
    stop_all()

print()
print(f"framecast send --listen --http, test pattern {SIZE} at {FPS} fps, {DURATION:.0f} s per run, "
      f"{os.cpu_count()} cores")
print("fps: per viewer over its steady state (after its first second); min: worst whole second")
print("sender CPU: user+sys of the sender process over the steady window, and % of one core")
for r in results:
    s = r["summary"]
    cpu_pct = 100 * r["cpu_s"] / r["window"]
    print(f"\n{r['tag']}: load before {r['load']}; sender CPU {r['cpu_s']:.2f} s in {r['window']:.1f} s = "
          f"{cpu_pct:.1f}% of a core; captured {s.get('captured')} encoded {s.get('encoded')} "
          f"sent {s['frames']} drops {s['drops']}")
    for name, f, mn in r["fps"]:
        print(f"  {name:<8} {f:6.1f} fps  (min {mn:.0f} in a second)")
print()


def stats_line(v):
    if not v:
        return "no frame"
    q = sorted(v)
    return (f"median {statistics.median(v):.1f} ms, min {q[0]:.1f}, max {q[-1]:.1f} "
            f"over {len(v)} joins")


if running is not None:
    print("first complete frame for a new HTTP viewer (connect -> last byte of its first JPEG part):")
    print(f"  stream running (1 native viewer): {stats_line(running)}")
    print(f"  nobody watching (encoding paused): {stats_line(paused)}")
    print()
if chrome is not None:
    print("Chrome remedy (headless Chromium through a proxy that freezes /stream.mjpg after K parts):")
    print(chrome)
    print()
print(f"load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
EOF
