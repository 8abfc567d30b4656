#!/usr/bin/python3
"""GStreamer capture->decoded latency probe for benches/compare.sh.

Runs one GStreamer pipeline (the same elements compare.sh gives gst-launch-1.0) inside Python
so that a pad probe can stamp each buffer with CLOCK_MONOTONIC, which both processes share on
one host (as framecast's sender and receiver do):

  send: stamps each frame as it leaves the element named `probe`, an `identity sync=true`
        that releases the file's frames at their 30 fps timestamps (the "capture" moment);
        after FRAMES frames it ends the stream (EOS travels to the receiver through gdppay).
  recv: stamps each frame as it leaves the element named `probe` (jpegdec: "decoded").

Frames are matched by their PTS, which gdppay/gdpdepay carry across. Each side writes
{"pts_ns": monotonic_ns, ...} as JSON to OUT; `latency` prints p50/p95/p99/max/n from a pair.

  gst_latency.py send OUT FRAMES 'PIPELINE'
  gst_latency.py recv OUT 0 'PIPELINE'
  gst_latency.py latency SEND.json RECV.json
"""
import json
import sys
import time


def percentile(sorted_values, p):
    """Nearest-rank percentile (the value at or below which p% of the values lie)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def latency(send_path, recv_path):
    sent, got = json.load(open(send_path)), json.load(open(recv_path))
    lat = sorted((got[k] - t) / 1e6 for k, t in sent.items() if k in got)
    out = {"n": len(lat), "sent": len(sent), "decoded": len(got)}
    for p in (50, 95, 99):
        out[f"p{p}"] = percentile(lat, p)
    out["max"] = lat[-1] if lat else None
    print(json.dumps(out))


def run(role, out_path, frames, description):
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import GLib, Gst

    Gst.init(None)
    pipeline = Gst.parse_launch(description)
    probe = pipeline.get_by_name("probe")
    if probe is None:
        sys.exit("gst_latency.py: the pipeline needs an element named 'probe'")
    stamps = {}
    state = {"ended": False}

    def on_buffer(pad, info):
        buf = info.get_buffer()
        if state["ended"]:
            return Gst.PadProbeReturn.DROP
        if role == "send" and frames and len(stamps) >= frames:
            state["ended"] = True
            pad.push_event(Gst.Event.new_eos())
            return Gst.PadProbeReturn.DROP
        stamps[str(buf.pts)] = time.monotonic_ns()
        return Gst.PadProbeReturn.OK

    probe.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_buffer)
    loop = GLib.MainLoop()
    result = {"error": None}

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.EOS:
            loop.quit()
        elif msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            result["error"] = f"{err.message} ({debug})"
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)
    with open(out_path, "w") as f:
        json.dump(stamps, f)
    if result["error"]:
        sys.exit(f"gst_latency.py {role}: {result['error']}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "latency":
        latency(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] in ("send", "recv"):
        run(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(__doc__)
