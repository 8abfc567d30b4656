#!/usr/bin/python3
"""The classic OpenCV socket snippet, as a baseline for benches/compare.sh.

What everyone copies: cv2 capture (BGR frames), cv2.imencode to JPEG, a length prefix,
sendall; on the other side `data += conn.recv(4096)` until the frame is complete, then
cv2.imdecode (to BGR, like a window would need). Two changes so that it can be measured:
the length is 32-bit (the usual struct.pack("H") breaks on frames over 64 KiB, i.e. any
1920x1080 frame here) and each frame also carries its CLOCK_MONOTONIC capture time, so the
receiver (on the same host) can report capture->decoded latency like framecast does.

  cv_snippet.py recv HOST PORT OUT.json          # listen for one sender, exit when it leaves
  cv_snippet.py send HOST PORT CLIP FPS FRAMES QUALITY   # FPS 0: as fast as possible; FRAMES 0: all

The receiver writes {"frames", "bytes", "latency_ms": {p50, p95, p99, max}} to OUT.json.
"""
import json
import socket
import struct
import sys
import time

import cv2
import numpy as np

HEADER = struct.Struct(">LQ")  # JPEG length, capture time (ns, CLOCK_MONOTONIC)


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def send(host, port, clip, fps, frames, quality):
    cap = cv2.VideoCapture(clip)
    if not cap.isOpened():
        sys.exit(f"cv_snippet.py: cannot open {clip}")
    sock = socket.create_connection((host, port))
    period = 1.0 / fps if fps > 0 else 0.0
    next_at = time.monotonic()
    n = 0
    while frames == 0 or n < frames:
        if period:
            now = time.monotonic()
            if next_at > now:
                time.sleep(next_at - now)
            next_at += period
        ok, frame = cap.read()
        if not ok:
            break
        t = time.monotonic_ns()
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        data = jpeg.tobytes()
        sock.sendall(HEADER.pack(len(data), t) + data)
        n += 1
    sock.close()


def recv(host, port, out):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1)
    conn, _ = srv.accept()
    data = b""
    frames = total = 0
    lat = []
    while True:
        while len(data) < HEADER.size:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        if len(data) < HEADER.size:
            break
        size, t = HEADER.unpack(data[: HEADER.size])
        data = data[HEADER.size :]
        while len(data) < size:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        if len(data) < size:
            break
        jpeg, data = data[:size], data[size:]
        frame = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            sys.exit("cv_snippet.py: a frame did not decode")
        lat.append((time.monotonic_ns() - t) / 1e6)
        frames += 1
        total += size
    lat.sort()
    summary = {"frames": frames, "bytes": total,
               "latency_ms": {f"p{p}": percentile(lat, p) for p in (50, 95, 99)} | {"max": lat[-1] if lat else None}}
    with open(out, "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) == 4 and a[0] == "recv":
        recv(a[1], int(a[2]), a[3])
    elif len(a) == 7 and a[0] == "send":
        send(a[1], int(a[2]), a[3], float(a[4]), int(a[5]), int(a[6]))
    else:
        sys.exit(__doc__)
