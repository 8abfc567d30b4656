#!/usr/bin/python3
"""Reads the run directories benches/compare.sh wrote and prints its tables.

  table.py WORK_DIR QUALITY NOISE_MAX N_LO N_HI LAT_FRAMES

Throughput is the steady-state rate of each round: (N_HI - N_LO) frames over the difference of
the wall times of the round's N_HI and N_LO runs, so that start-up and shut-down cancel; CPU per
frame likewise. The table gives the median over rounds.
"""
import csv
import json
import re
import statistics
import sys

work, quality, noise_max, n_lo, n_hi, lat_frames = sys.argv[1:7]
noise_max, n_lo, n_hi, lat_frames = float(noise_max), int(n_lo), int(n_hi), int(lat_frames)
TOOL_ORDER = ["framecast", "gstreamer", "gstreamer-queue", "ffmpeg", "opencv"]


def summary(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r for r in rows if r.get("type") == "summary"][-1]


def cpu(path):
    """user + sys seconds from /usr/bin/time -f '%e %U %S' (last line)."""
    e, u, s = open(path).read().split("\n")[-2].split()
    return float(u) + float(s)


def read_text(path):
    return open(path, errors="replace").read()


def frames_and_bytes(tool, d, size):
    """Frames the receiver decoded in the run in `d`, and JPEG bytes per frame (None if unknown)."""
    if tool == "framecast":
        r = summary(f"{d}/recv.jsonl")
        return r["frames"], r["mean_frame_bytes"]
    if tool in ("gstreamer", "gstreamer-queue"):
        n, b = map(int, open(f"{work}/{size}/gst_check").read().split())
        return None, b / n  # gst-launch -q counts nothing; the check pass verified the count
    if tool == "ffmpeg":
        frames = [int(x) for x in re.findall(r"frame=\s*(\d+)", read_text(f"{d}/recv.log"))]
        kb = re.findall(r"video:(\d+)kB", read_text(f"{d}/send.log"))
        n = frames[-1] if frames else 0
        return n, (int(kb[-1]) * 1024 / n if kb and n else None)
    j = json.load(open(f"{d}/recv.json"))  # opencv
    return j["frames"], j["bytes"] / max(j["frames"], 1)


def latency(tool, d):
    if tool == "framecast":
        r = summary(f"{d}/recv.jsonl")
        l = r.get("latency_capture_decoded_ms") or {}
        return {"frames": r["frames"], "p50": l.get("p50"), "p95": l.get("p95")}
    if tool == "gstreamer":
        j = json.load(open(f"{d}/latency.json"))
        return {"frames": j["n"], "p50": j["p50"], "p95": j["p95"]}
    j = json.load(open(f"{d}/recv.json"))  # opencv
    return {"frames": j["frames"], "p50": j["latency_ms"]["p50"], "p95": j["latency_ms"]["p95"]}


cores = int(re.search(r"host: (\d+) cores", read_text(f"{work}/machine.txt")).group(1))
rows = list(csv.DictReader(open(f"{work}/manifest.tsv"), delimiter="\t"))
best = {}  # (size, tool, kind, frames, round) -> the quietest attempt
for r in rows:
    k = (r["size"], r["tool"], r["kind"], int(r["frames"]), int(r["run"]))
    if k not in best or float(r["others_cores"]) < float(best[k]["others_cores"]):
        best[k] = r
sizes = list(dict.fromkeys(r["size"] for r in rows))
tools = [t for t in TOOL_ORDER if any(r["tool"] == t for r in rows)]
retried = sum(1 for r in rows if r["attempt"] != "0")

warnings = []
per_run = []  # every kept run, for the second table
for (size, tool, kind, frames, rnd), r in sorted(best.items()):
    d = r["dir"]
    rec = {"size": size, "tool": tool, "kind": kind, "n": frames, "round": rnd, "dir": d, "wall": float(r["wall_s"]),
           "load1": float(r["load1"]), "others": float(r["others_cores"]), "attempt": int(r["attempt"]),
           "ffmpeg_q": r.get("ffmpeg_q") or ""}
    if kind == "tp":
        rec["decoded"], rec["bytes_per_frame"] = frames_and_bytes(tool, d, size)
        rec["send_cpu"], rec["recv_cpu"] = cpu(f"{d}/send.time"), cpu(f"{d}/recv.time")
        if rec["decoded"] is not None and rec["decoded"] != frames:
            warnings.append(f"{size} {tool} round {rnd}: {rec['decoded']} frames decoded of {frames} sent")
    else:
        rec.update(latency(tool, d))
        rec["decoded"] = rec["frames"]
        if rec["frames"] != lat_frames:
            warnings.append(f"{size} {tool} latency round {rnd}: {rec['frames']} frames measured, expected {lat_frames}")
    per_run.append(rec)

# Steady state per round: the N_HI run minus the N_LO run of the same round.
rounds = {}  # (size, tool) -> [ {fps, cpu_ms, send_ms, recv_ms, kb, others} ]
lat = {}  # (size, tool) -> [ {p50, p95, others} ]
by_key = {(x["size"], x["tool"], x["kind"], x["n"], x["round"]): x for x in per_run}
for x in per_run:
    if x["kind"] == "lat":
        lat.setdefault((x["size"], x["tool"]), []).append(x)
        continue
    if x["n"] != n_hi:
        continue
    lo = by_key.get((x["size"], x["tool"], "tp", n_lo, x["round"]))
    if lo is None:
        warnings.append(f"{x['size']} {x['tool']} round {x['round']}: no {n_lo}-frame run to subtract")
        continue
    dn, dt = n_hi - n_lo, x["wall"] - lo["wall"]
    if dt <= 0:
        warnings.append(f"{x['size']} {x['tool']} round {x['round']}: the {n_hi}-frame run was not slower than "
                        f"the {n_lo}-frame one ({x['wall']:.3f} s, {lo['wall']:.3f} s); round left out")
        continue
    send_ms = 1000 * (x["send_cpu"] - lo["send_cpu"]) / dn
    recv_ms = 1000 * (x["recv_cpu"] - lo["recv_cpu"]) / dn
    if (send_ms + recv_ms) * dn / dt / 1000 > cores * 1.05:
        warnings.append(f"{x['size']} {x['tool']} round {x['round']}: {dn / dt:.0f} fps at {send_ms + recv_ms:.2f} ms "
                        f"CPU a frame needs more than {cores} cores: the two runs' start-up times differed (noise)")
    rounds.setdefault((x["size"], x["tool"]), []).append({
        "fps": dn / dt, "send_ms": send_ms, "recv_ms": recv_ms, "cpu_ms": send_ms + recv_ms,
        "kb": x["bytes_per_frame"] / 1000 if x["bytes_per_frame"] else None, "others": max(x["others"], lo["others"]),
        "ffmpeg_q": x["ffmpeg_q"]})


def med(recs, key):
    v = [r[key] for r in recs if r.get(key) is not None]
    return statistics.median(v) if v else None


def f(v, fmt):
    return "-" if v is None else fmt.format(v)


print()
for line in open(f"{work}/machine.txt"):
    print(line.rstrip())
n_rounds = max((len(v) for v in rounds.values()), default=0)
print(f"clip: FFmpeg testsrc2, 4:2:0, {n_hi} frames per size; JPEG quality {quality}; TCP on 127.0.0.1; "
      f"medians of {n_rounds} round{'s' if n_rounds != 1 else ''}")
print()
hdr = ["size", "tool", "fps", "CPU ms/frame", "(send + recv)", "KB/frame", "latency p50/p95 ms", "others"]
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(hdr))) + "|")
for size in sizes:
    for tool in tools:
        tp, lt = rounds.get((size, tool), []), lat.get((size, tool), [])
        if not tp and not lt:
            continue
        name = f"ffmpeg (-q:v {tp[0]['ffmpeg_q']})" if tool == "ffmpeg" and tp else tool
        p50, p95 = med(lt, "p50"), med(lt, "p95")
        noisy = max([r["others"] for r in tp + lt], default=0)
        cells = [size, name, f(med(tp, "fps"), "{:.0f}"), f(med(tp, "cpu_ms"), "{:.2f}"),
                 f"{f(med(tp, 'send_ms'), '{:.2f}')} + {f(med(tp, 'recv_ms'), '{:.2f}')}",
                 f(med(tp, "kb"), "{:.1f}"),
                 f"{f(p50, '{:.1f}')} / {f(p95, '{:.1f}')}" if lt else "not measured",
                 f"{noisy:.2f}" + (" (noisy)" if noisy > noise_max else "")]
        print("| " + " | ".join(cells) + " |")
print()
print(f"fps: steady state, ({n_hi} - {n_lo}) frames / (wall time of the {n_hi}-frame run - that of the {n_lo}-frame")
print("run), wall time from starting the sender to the receiver's exit: start-up and shut-down cancel. CPU: user+sys")
print(f"of sender and receiver, the same difference per frame. KB: 1000 bytes of JPEG. latency: capture -> decoded at")
print(f"a live 30 fps, {lat_frames} frames, CLOCK_MONOTONIC on both ends. others: the most CPU (in cores) that other")
print(f"processes used during any of the row's runs; runs above {noise_max} were repeated ({retried} repeats) and the")
print("quietest attempt kept.")

print()
print("Per run (the attempt kept):")
print(f"{'size':<10} {'tool':<15} {'kind':<4} {'frames':>6} {'round':>5} {'wall s':>8} {'decoded':>7} {'send cpu s':>10} "
      f"{'recv cpu s':>10} {'p50':>6} {'p95':>6} {'load1':>6} {'others':>6} {'try':>3}")
for x in per_run:
    print(f"{x['size']:<10} {x['tool']:<15} {x['kind']:<4} {x['n']:>6} {x['round']:>5} {x['wall']:>8.3f} "
          f"{f(x.get('decoded'), '{}'):>7} {f(x.get('send_cpu'), '{:.2f}'):>10} {f(x.get('recv_cpu'), '{:.2f}'):>10} "
          f"{f(x.get('p50'), '{:.1f}'):>6} {f(x.get('p95'), '{:.1f}'):>6} {x['load1']:>6.2f} {x['others']:>6.2f} "
          f"{x['attempt']:>3}")
print("decoded: frames the receiver reports (GStreamer's are counted once, in an untimed check pass). load1: the")
print("1-minute load average as the run started (it includes this script's own previous runs; others is the")
print("measure of interference). try: 0 = first attempt.")
for w in warnings:
    print("WARNING: " + w)
