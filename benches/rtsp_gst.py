#!/usr/bin/python3
"""GStreamer as an RTSP viewer of framecast, timed with pad probes, for benches/rtsp.sh.

  rtsp_gst.py URL udp|tcp SECONDS OUT.json

Plays `rtspsrc location=URL protocols=P latency=0 ! rtpjpegdepay ! jpegdec ! fakesink` for
SECONDS and writes, per decoded frame, capture->decoded in ms: the capture time comes from
framecast's RTP header extension (urn:x-framecast:capture-time, id 1, one-byte form: NTP-format
64-bit seconds on the sender's CLOCK_MONOTONIC), read by a probe on the depayloader's sink pad
from each frame's last packet (marker bit), keyed by the buffer's PTS; a probe on jpegdec's
source pad stamps CLOCK_MONOTONIC when the frame comes out decoded and looks its PTS up. Both
processes run on one host, so the clocks are the same. Also counts the RTP packets and their
bytes (header, extension, payload) reaching the depayloader, for bytes-on-the-wire per frame.

Run with /usr/bin/python3 (Debian's, which has gi).
"""
import json
import struct
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

EXT_ID = 1
ONE_BYTE = 0xBEDE


def capture_us(rtp):
    """framecast's capture time (µs) from an RTP packet's one-byte header extension, or None."""
    if len(rtp) < 12 or not rtp[0] & 0x10:
        return None
    off = 12 + 4 * (rtp[0] & 0x0F)
    if len(rtp) < off + 4:
        return None
    profile, words = struct.unpack_from("!HH", rtp, off)
    if profile != ONE_BYTE:
        return None
    block = rtp[off + 4 : off + 4 + 4 * words]
    i = 0
    while i < len(block):
        b = block[i]
        if b == 0:
            i += 1
            continue
        eid, n = b >> 4, (b & 0x0F) + 1
        if eid == 15:
            return None
        if eid == EXT_ID and n == 8 and i + 9 <= len(block):
            ntp = struct.unpack_from("!Q", block, i + 1)[0]
            return (ntp * 1_000_000 + (1 << 31)) >> 32
        i += 1 + n
    return None


def main():
    url, proto, seconds, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    Gst.init(None)
    pipe = Gst.parse_launch(
        f"rtspsrc location={url} protocols={proto} latency=0 ! rtpjpegdepay name=depay "
        "! jpegdec name=dec ! fakesink sync=false"
    )
    by_pts = {}
    lat = []
    state = {"frames": 0, "unknown": 0, "rtp_packets": 0, "rtp_bytes": 0, "rtp_frames": 0}

    def on_rtp(pad, info):
        buf = info.get_buffer()
        ok, m = buf.map(Gst.MapFlags.READ)
        if ok:
            data = bytes(m.data)
            buf.unmap(m)
            state["rtp_packets"] += 1
            state["rtp_bytes"] += len(data)
            if len(data) > 1 and data[1] & 0x80:  # marker: the frame's last packet
                state["rtp_frames"] += 1
                c = capture_us(data)
                if c is not None:
                    by_pts[buf.pts] = c
        return Gst.PadProbeReturn.OK

    def on_decoded(pad, info):
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        buf = info.get_buffer()
        c = by_pts.pop(buf.pts, None)
        state["frames"] += 1
        if c is None:
            state["unknown"] += 1
        else:
            lat.append((now - c) / 1000.0)
        if len(by_pts) > 1000:
            by_pts.clear()
        return Gst.PadProbeReturn.OK

    pipe.get_by_name("depay").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_rtp)
    pipe.get_by_name("dec").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_decoded)
    loop = GLib.MainLoop()
    bus = pipe.get_bus()
    bus.add_signal_watch()

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"rtsp_gst.py: {err.message} ({dbg})", file=sys.stderr)
            loop.quit()
        elif msg.type == Gst.MessageType.EOS:
            loop.quit()

    bus.connect("message", on_message)
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    pipe.set_state(Gst.State.PLAYING)
    loop.run()
    pipe.set_state(Gst.State.NULL)
    json.dump(dict(state, latency_ms=lat), open(out, "w"))


if __name__ == "__main__":
    main()
