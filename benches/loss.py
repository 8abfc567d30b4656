#!/usr/bin/env python3
"""Helper of benches/loss.sh.

  loss.py sink ADDR PORT SKIP SECS     TCP sink: prints {"mbps": ...} for SECS s after SKIP s
  loss.py source ADDR PORT SECS        TCP bulk sender for SECS s
  loss.py report OUT WARMUP STREAMS TRANSPORTS CASES
                                       tables, goals with pass/fail, OUT/loss.svg; exit 1 if a
                                       run failed or is missing
"""
import csv
import json
import math
import os
import re
import signal
import socket
import sys
import time

LOSS_CASES = ["none", "random2", "random5", "outage", "burst"]
LABELS = {
    "none": "none",
    "random2": "2 % random",
    "random5": "5 % random",
    "outage": "2 % of the time, in outages of mean 50 ms",
    "burst": "2 % in runs of mean 4 packets",
    "recovery": "20 % for 10 s, then none",
    "bulk": "none, with a TCP bulk transfer",
}
SHORT = {"none": "none", "random2": "2% rand", "random5": "5% rand", "outage": "outages", "burst": "runs of 4"}
LINK_MBPS = 5.0
LOSS_START, LOSS_END = 10.0, 20.0  # --loss-schedule 10s:0%,10s:20%,0%, on the link's clock


def sink(addr, port, skip, secs):
    """Counts what arrives from SKIP s after the connection to SKIP + SECS s, and prints it at
    the end, or when stopped with SIGTERM (the bench stops everything at the run's end)."""
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(1)
    srv.settimeout(30)
    conn, _ = srv.accept()
    conn.settimeout(0.2)
    t0 = time.time()
    start, end = t0 + float(skip), t0 + float(skip) + float(secs)
    counted = 0
    while time.time() < end and not stopped:
        try:
            n = len(conn.recv(1 << 16))
        except (socket.timeout, InterruptedError):
            continue
        if n == 0:
            break
        if time.time() >= start:
            counted += n
    span = max(1e-9, min(time.time(), end) - start)
    print(json.dumps({"bytes": counted, "secs": span, "mbps": counted * 8 / span / 1e6}), flush=True)


def source(addr, port, secs):
    end = time.time() + float(secs)
    for _ in range(50):
        try:
            s = socket.create_connection((addr, int(port)), timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit("bulk source: cannot connect")
    s.settimeout(1)
    block = b"x" * 65536
    while time.time() < end:
        try:
            s.send(block)
        except socket.timeout:
            pass
        except OSError:
            break


def pct(v, p):
    v = sorted(v)
    if not v:
        return math.nan
    k = max(1, math.ceil(len(v) * p / 100))
    return v[k - 1]


def median(v):
    return pct(v, 50)


def load_frames(path):
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["capture_to_displayed_ms"]]
    return [(float(r["t_s"]), float(r["capture_to_displayed_ms"]), int(r["quality"])) for r in rows]


def figures(frames, warmup):
    """fps shown, latency percentiles and longest freeze after the warm-up."""
    if not frames:
        return None
    steady = [f for f in frames if f[0] >= warmup]
    if len(steady) < 2:
        return None
    before = [f for f in frames if f[0] < warmup]
    times = ([before[-1][0]] if before else []) + [f[0] for f in steady]
    span = steady[-1][0] - warmup
    lat = [f[1] for f in steady]
    return {
        "fps": len(steady) / span if span > 0 else math.nan,
        "p50": pct(lat, 50),
        "p95": pct(lat, 95),
        "p99": pct(lat, 99),
        "max": max(lat),
        "freeze": max(b - a for a, b in zip(times, times[1:])) * 1000,
        "quality": median([f[2] for f in steady]),
    }


def longest_outage(log_path, recv_start, start, end, direction="a-to-b"):
    """The longest outage (ms) the packet link drew on `direction` (sender to receiver)
    within [start, end] s of the receiver's clock, clipped to it, from netsim's log line
    `netsim packet link outages` (`START_MS+LENGTH_MS` on the link's clock, whose start is
    `epoch_unix`); `recv_start` is the receiver's start in Unix seconds. NaN if the log has
    no such line (a netsim without it) or no receiver start."""
    if math.isnan(recv_start):
        return math.nan
    try:
        text = open(log_path, errors="replace").read()
    except OSError:
        return math.nan
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for line in text.splitlines():
        if "netsim packet link outages" not in line or not re.search(rf'dir="?{direction}"?\b', line):
            continue
        epoch = re.search(r"epoch_unix=([0-9.]+)", line)
        listed = re.search(r"outages=([0-9.+,]*)", line)
        if not epoch or listed is None:
            return math.nan
        best = 0.0
        for item in filter(None, listed.group(1).split(",")):
            at, length = (float(x) / 1000 for x in item.split("+"))
            a = float(epoch.group(1)) + at - recv_start
            lo, hi = max(a, start), min(a + length, end)
            best = max(best, (hi - lo) * 1000)
        return best
    return math.nan


def recovery(frames, offset, warmup):
    """Seconds from the end of the 20 % loss until every 1-s window has the frame rate and
    quality of before the loss; `offset` is the recv's start on the link's clock."""
    start, end = LOSS_START - offset, LOSS_END - offset
    pre = [f for f in frames if warmup <= f[0] < start]
    if len(pre) < 10 or not frames or frames[-1][0] < end + 5:
        return math.nan
    pre_fps = len(pre) / (start - warmup)
    pre_q = median([f[2] for f in pre])
    last = frames[-1][0]
    windows = []
    t = end
    while t + 1 <= last:
        w = [f for f in frames if t <= f[0] < t + 1]
        ok = len(w) >= min(27, 0.9 * pre_fps) and w and median([f[2] for f in w]) >= pre_q - 2
        windows.append((t, ok))
        t += 0.25
    bad = [t for t, ok in windows if not ok]
    return 0.0 if not bad else bad[-1] + 0.25 - end


def report(out, warmup, streams, transports, cases):
    warmup = float(warmup)
    runs, failed = {}, []
    for s in streams:
        for t in transports:
            for c in cases:
                tag = f"{s}-{t}-{c}"
                base = os.path.join(out, tag)
                if os.path.exists(base + ".failed") or not os.path.exists(base + ".frames.csv"):
                    failed.append(tag)
                    continue
                frames = load_frames(base + ".frames.csv")
                fig = figures(frames, warmup)
                if fig is None:
                    failed.append(tag)
                    continue
                if c == "recovery":
                    offset = float(open(base + ".recv-start").read()) - float(open(base + ".link-start").read())
                    fig["recovery"] = recovery(frames, offset, warmup)
                if c == "outage":
                    try:
                        recv_start = float(open(base + ".recv-start").read())
                    except (OSError, ValueError):
                        recv_start = math.nan
                    fig["outage"] = longest_outage(base + ".netsim.log", recv_start, warmup, frames[-1][0])
                if c == "bulk":
                    try:
                        fig["bulk"] = json.load(open(base + ".bulk.json"))["mbps"]
                    except (OSError, ValueError, KeyError):
                        fig["bulk"] = math.nan
                runs[(s, t, c)] = fig
    for s in streams:
        for t in transports:
            print(f"\n### {s} over {t}\n")
            print("| loss on the link | fps shown | capture→displayed p50 / p95 / p99 / max ms | longest freeze | notes |")
            print("|---|---:|---|---:|---|")
            for c in cases:
                f = runs.get((s, t, c))
                if f is None:
                    print(f"| {LABELS[c]} | FAILED | | | see {out}/{s}-{t}-{c}.* |")
                    continue
                note = f"quality {f['quality']}"
                if "recovery" in f:
                    note += f"; back to full rate and quality {f['recovery']:.2f} s after the loss ended"
                if "bulk" in f:
                    note += f"; bulk TCP got {f['bulk']:.2f} Mbit/s"
                if not math.isnan(f.get("outage", math.nan)):
                    note += f"; longest outage on the link in the window {f['outage']:.0f} ms"
                print(f"| {LABELS[c]} | {f['fps']:.1f} | {f['p50']:.0f} / {f['p95']:.0f} / {f['p99']:.0f} / "
                      f"{f['max']:.0f} | {f['freeze']:.0f} ms | {note} |")
    goals(runs, streams, transports)
    svg(runs, streams, transports, os.path.join(out, "loss.svg"))
    print(f"\n(after the first {warmup:.0f} s; logs and {out}/loss.svg in {out})")
    if failed:
        print(f"\nFAILED runs: {' '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def goals(runs, streams, transports):
    def g(s, t, c, key):
        f = runs.get((s, t, c))
        return f.get(key, math.nan) if f else math.nan

    def verdict(ok, text):
        return ("n/a" if ok is None else "PASS" if ok else "FAIL") + f" ({text})"

    checks = []
    for s in streams:
        for t in transports:
            def nolos():
                if t == "tcp":
                    return None, "the reference"
                d50 = g(s, t, "none", "p50") - g(s, "tcp", "none", "p50")
                d95 = g(s, t, "none", "p95") - g(s, "tcp", "none", "p95")
                dfps = g(s, t, "none", "fps") - g(s, "tcp", "none", "fps")
                if any(math.isnan(x) for x in (d50, d95, dfps)):
                    return None, "needs both runs"
                # Within 5 ms of TCP means no more than 5 ms worse; same fps, no more than 1 fewer.
                return d50 <= 5 and d95 <= 5 and dfps >= -1, f"p50 {d50:+.1f}, p95 {d95:+.1f} ms, fps {dfps:+.1f} vs TCP"
            o = [g(s, t, "outage", k) for k in ("freeze", "p99", "fps")]
            drawn = g(s, t, "outage", "outage")
            drawn = "" if math.isnan(drawn) else f" (longest outage drawn {drawn:.0f} ms)"
            b = g(s, t, "burst", "freeze")
            r5 = [g(s, t, "random5", k) for k in ("fps", "p99")]
            rec = g(s, t, "recovery", "recovery")
            bulk = g(s, t, "bulk", "bulk")
            nan = lambda *v: None if any(math.isnan(x) for x in v) else True
            rows = [
                ("no loss: p50/p95 at most 5 ms over TCP's, same fps", *nolos()),
                ("outages: freeze ≤ 150 ms, p99 ≤ 150 ms, ≥ 27 fps",
                 nan(*o) and (o[0] <= 150 and o[1] <= 150 and o[2] >= 27), f"{o[0]:.0f} ms{drawn}, {o[1]:.0f} ms, {o[2]:.1f} fps"),
                ("runs of 4: freeze ≤ 200 ms", nan(b) and b <= 200, f"{b:.0f} ms"),
                ("5 % random: ≥ 27 fps, p99 ≤ 150 ms", nan(*r5) and (r5[0] >= 27 and r5[1] <= 150),
                 f"{r5[0]:.1f} fps, {r5[1]:.0f} ms"),
                ("20 % for 10 s: full rate and quality ≤ 3 s after", nan(rec) and rec <= 3, f"{rec:.2f} s"),
                ("bulk TCP gets ≥ 1/3 of the link", nan(bulk) and bulk >= LINK_MBPS / 3, f"{bulk:.2f} Mbit/s"),
            ]
            for goal, ok, text in rows:
                checks.append((s, t, goal, verdict(ok, text)))
    print("\n### goals\n")
    print("| stream | transport | goal | result |")
    print("|---|---|---|---|")
    for s, t, goal, v in checks:
        print(f"| {s} | {t} | {goal} | {v} |")


def nice_top(v):
    """The smallest of 4 x (1, 2, 2.5 or 5 x 10^k) at or above v: round axis ticks."""
    step = 10 ** math.floor(math.log10(v / 4))
    for m in (1, 2, 2.5, 5, 10):
        if 4 * m * step >= v:
            return 4 * m * step
    return v


def svg(runs, streams, transports, path):
    """Latency p50 (solid) and p99 (dashed), and the longest freeze, against loss case."""
    colours = {"tcp": "#d95f02", "udp": "#1b9e77"}
    pw, ph, ml, mt, gap = 360, 220, 60, 40, 70
    width = ml + 2 * (pw + gap)
    height = len(streams) * (ph + mt + 60) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for row, s in enumerate(streams):
        y0 = 30 + row * (ph + mt + 60) + mt
        for col, (title, keys) in enumerate([("capture→displayed ms (p50 solid, p99 dashed)", ["p50", "p99"]),
                                             ("longest freeze ms", ["freeze"])]):
            x0 = ml + col * (pw + gap)
            vals = [runs[(s, t, c)][k] for t in transports for c in LOSS_CASES for k in keys if (s, t, c) in runs]
            top = nice_top(max(vals + [100]))
            parts.append(f'<text x="{x0}" y="{y0 - 12}" font-weight="bold">{s}: {title}</text>')
            parts.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
            for i in range(5):
                v = top * i / 4
                yy = y0 + ph - ph * i / 4
                parts.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
                parts.append(f'<text x="{x0 - 5}" y="{yy + 4:.1f}" text-anchor="end">{v:.0f}</text>')
            xs = [x0 + pw * (i + 0.5) / len(LOSS_CASES) for i in range(len(LOSS_CASES))]
            for x, c in zip(xs, LOSS_CASES):
                parts.append(f'<text x="{x:.1f}" y="{y0 + ph + 15}" text-anchor="middle">{SHORT[c]}</text>')
            for t in transports:
                for k in keys:
                    pts = [(x, runs[(s, t, c)][k]) for x, c in zip(xs, LOSS_CASES) if (s, t, c) in runs]
                    if not pts:
                        continue
                    dash = ' stroke-dasharray="5,3"' if k == "p99" else ""
                    line = " ".join(f"{x:.1f},{y0 + ph - ph * v / top:.1f}" for x, v in pts)
                    parts.append(f'<polyline points="{line}" fill="none" stroke="{colours.get(t, "#000")}" stroke-width="2"{dash}/>')
                    for x, v in pts:
                        parts.append(f'<circle cx="{x:.1f}" cy="{y0 + ph - ph * v / top:.1f}" r="3" fill="{colours.get(t, "#000")}"/>')
        for i, t in enumerate(transports):
            lx = ml + i * 80
            parts.append(f'<rect x="{lx}" y="{y0 + ph + 28}" width="12" height="4" fill="{colours.get(t, "#000")}"/>')
            parts.append(f'<text x="{lx + 16}" y="{y0 + ph + 33}">{t.upper()}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sink":
        sink(*args)
    elif cmd == "source":
        source(*args)
    elif cmd == "report":
        out, warmup, streams, transports, cases = args
        report(out, warmup, streams.split(), transports.split(), cases.split())
    else:
        sys.exit(__doc__)
