#!/usr/bin/python3
"""Reads the run directories benches/compare.sh wrote and prints its tables.

  table.py WORK_DIR QUALITY NOISE_MAX CLIP_SECONDS LAT_FRAMES OPENCV_FRAMES
"""
import csv
import json
import re
import statistics
import sys

work, quality, noise_max, clip_seconds, lat_frames, opencv_frames = sys.argv[1:7]
noise_max = float(noise_max)
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


def throughput(tool, d, size):
    clip_frames = int(open(f"{work}/{size}/clip_frames").read())
    out = {"own_fps": None}
    if tool == "framecast":
        r = summary(f"{d}/recv.jsonl")
        s = summary(f"{d}/send.jsonl")
        out.update(frames=r["frames"], bytes_per_frame=r["mean_frame_bytes"], own_fps=r["fps"],
                   enc_ms=s.get("encode_ms"), dec_ms=r.get("decode_ms"), expected=clip_frames)
    elif tool in ("gstreamer", "gstreamer-queue"):
        n, b = map(int, open(f"{work}/{size}/gst_check").read().split())
        out.update(frames=n, bytes_per_frame=b / n, expected=clip_frames)  # from the check pass
    elif tool == "ffmpeg":
        frames = [int(x) for x in re.findall(r"frame=\s*(\d+)", read_text(f"{d}/recv.log"))]
        kb = re.findall(r"video:(\d+)kB", read_text(f"{d}/send.log"))
        n = frames[-1] if frames else 0
        out.update(frames=n, bytes_per_frame=int(kb[-1]) * 1024 / n if kb and n else None, expected=clip_frames)
    elif tool == "opencv":
        j = json.load(open(f"{d}/recv.json"))
        out.update(frames=j["frames"], bytes_per_frame=j["bytes"] / max(j["frames"], 1),
                   expected=min(clip_frames, int(opencv_frames)) if int(opencv_frames) else clip_frames)
    return out


def latency(tool, d):
    if tool == "framecast":
        r = summary(f"{d}/recv.jsonl")
        l = r.get("latency_capture_decoded_ms") or {}
        return {"frames": r["frames"], "p50": l.get("p50"), "p95": l.get("p95"), "clock": (r.get("clock") or {}).get("source")}
    if tool == "gstreamer":
        j = json.load(open(f"{d}/latency.json"))
        return {"frames": j["n"], "p50": j["p50"], "p95": j["p95"]}
    if tool == "opencv":
        j = json.load(open(f"{d}/recv.json"))
        return {"frames": j["frames"], "p50": j["latency_ms"]["p50"], "p95": j["latency_ms"]["p95"]}
    return None


rows = list(csv.DictReader(open(f"{work}/manifest.tsv"), delimiter="\t"))
best = {}  # (size, tool, kind, run) -> the quietest attempt
for r in rows:
    k = (r["size"], r["tool"], r["kind"], r["run"])
    if k not in best or float(r["others_cores"]) < float(best[k]["others_cores"]):
        best[k] = r
sizes = list(dict.fromkeys(r["size"] for r in rows))
tools = [t for t in TOOL_ORDER if any(r["tool"] == t for r in rows)]
retried = sum(1 for r in rows if r["attempt"] != "0")

runs = {}  # (size, tool) -> {"tp": [...], "lat": [...]}
warnings = []
for (size, tool, kind, run), r in sorted(best.items()):
    d, wall = r["dir"], float(r["wall_s"])
    rec = {"run": int(run), "wall": wall, "load1": float(r["load1"]), "others": float(r["others_cores"]),
           "attempt": int(r["attempt"]), "ffmpeg_q": r.get("ffmpeg_q") or ""}
    if kind == "tp":
        rec.update(throughput(tool, d, size))
        rec["send_cpu"], rec["recv_cpu"] = cpu(f"{d}/send.time"), cpu(f"{d}/recv.time")
        n = max(rec["frames"], 1)
        rec["fps"] = rec["frames"] / wall
        rec["cpu_ms"] = 1000 * (rec["send_cpu"] + rec["recv_cpu"]) / n
        rec["send_ms"], rec["recv_ms"] = 1000 * rec["send_cpu"] / n, 1000 * rec["recv_cpu"] / n
        if rec["frames"] != rec["expected"]:
            warnings.append(f"{size} {tool} run {run}: {rec['frames']} frames decoded, expected {rec['expected']}")
    else:
        rec.update(latency(tool, d))
        if rec["frames"] != int(lat_frames):
            warnings.append(f"{size} {tool} latency run {run}: {rec['frames']} frames measured, expected {lat_frames}")
    runs.setdefault((size, tool), {"tp": [], "lat": []})[kind].append(rec)


def med(recs, key):
    v = [r[key] for r in recs if r.get(key) is not None]
    return statistics.median(v) if v else None


def f(v, fmt):
    return "-" if v is None else fmt.format(v)


print()
for line in open(f"{work}/machine.txt"):
    print(line.rstrip())
print(f"clip: FFmpeg testsrc2, 4:2:0, 30 fps, {clip_seconds} s per size; JPEG quality {quality}; TCP on 127.0.0.1; "
      f"medians of {max((len(v['tp']) for v in runs.values()), default=0)} runs")
print()
hdr = ["size", "tool", "fps", "CPU ms/frame", "(send + recv)", "KB/frame", "latency p50/p95 ms", "others"]
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(hdr))) + "|")
for size in sizes:
    for tool in tools:
        v = runs.get((size, tool))
        if not v:
            continue
        tp, lat = v["tp"], v["lat"]
        name = tool
        if tool == "ffmpeg" and tp:
            name = f"ffmpeg (-q:v {tp[0]['ffmpeg_q']})"
        if tool == "opencv" and tp and tp[0]["expected"] < int(open(f"{work}/{size}/clip_frames").read()):
            name = f"opencv ({tp[0]['expected']} frames)"
        kb = med(tp, "bytes_per_frame")
        p50, p95 = med(lat, "p50"), med(lat, "p95")
        noisy = max([r["others"] for r in tp + lat], default=0)
        cells = [size, name, f(med(tp, "fps"), "{:.0f}"), f(med(tp, "cpu_ms"), "{:.2f}"),
                 f"{f(med(tp, 'send_ms'), '{:.2f}')} + {f(med(tp, 'recv_ms'), '{:.2f}')}",
                 f(kb / 1000 if kb else None, "{:.1f}"),
                 f"{f(p50, '{:.1f}')} / {f(p95, '{:.1f}')}" if lat else "not measured",
                 f"{noisy:.2f}" + (" (noisy)" if noisy > noise_max else "")]
        print("| " + " | ".join(cells) + " |")
print()
print("fps: decoded frames / wall time from starting the sender to the receiver's exit. CPU: user+sys of")
print("sender and receiver processes per decoded frame. KB: 1000 bytes of JPEG. latency: capture -> decoded at a")
print(f"live 30 fps, {lat_frames} frames, CLOCK_MONOTONIC on both ends. others: the most CPU (in cores) that other")
print(f"processes used during any of the row's runs; runs above {noise_max} were repeated ({retried} repeats) and the")
print("quietest attempt kept.")

print()
print("Per run (the attempt kept):")
print(f"{'size':<10} {'tool':<15} {'kind':<4} {'run':>3} {'wall s':>7} {'frames':>6} {'fps':>7} {'own fps':>8} {'send ms':>8} "
      f"{'recv ms':>8} {'enc ms':>7} {'dec ms':>7} {'p50':>6} {'p95':>6} {'load1':>6} {'others':>6} {'try':>3}")
for size in sizes:
    for tool in tools:
        v = runs.get((size, tool))
        if not v:
            continue
        for kind in ("tp", "lat"):
            for r in v[kind]:
                print(f"{size:<10} {tool:<15} {kind:<4} {r['run']:>3} {r['wall']:>7.2f} {r['frames']:>6} "
                      f"{f(r.get('fps'), '{:.1f}'):>7} {f(r.get('own_fps'), '{:.1f}'):>8} {f(r.get('send_ms'), '{:.2f}'):>8} "
                      f"{f(r.get('recv_ms'), '{:.2f}'):>8} {f(r.get('enc_ms'), '{:.2f}'):>7} {f(r.get('dec_ms'), '{:.2f}'):>7} "
                      f"{f(r.get('p50'), '{:.1f}'):>6} {f(r.get('p95'), '{:.1f}'):>6} {r['load1']:>6.2f} {r['others']:>6.2f} {r['attempt']:>3}")
print("own fps: framecast's receiver summary (frames / time since the receiver started, including the wait")
print("for the sender). send/recv ms: CPU ms per frame of each process. enc/dec ms: framecast's own codec timers.")
print("load1: the 1-minute load average as the run started (it includes this script's own previous runs;")
print("others is the measure of interference). try: 0 = first attempt.")
for w in warnings:
    print("WARNING: " + w)
