#!/usr/bin/python3
"""Seeds for the `rtp_jpeg` fuzz target from a foreign payloader: GStreamer's rtpjpegpay.

    /usr/bin/python3 fuzz/gst_seeds.py OUT_DIR [JPEG_DIR]

Writes inputs in the target's format (fuzz/fuzz_targets/rtp_jpeg.rs): one byte of SDP
settings, then each RTP packet as a 2-byte big-endian length and its bytes. The packets are
rtpjpegpay's, from `videotestsrc ! jpegenc` at 64x48 in 4:2:0 and 4:2:2 (types 0 and 1,
in-band tables) and, when JPEG_DIR holds JPEGs with restart markers (the `split` seeds of
gen_corpus, whose first byte is not JPEG and is skipped), from those (types 64 and 65).
Each stream is also written with the packets of each frame reversed, and with one packet
dropped, so the fuzzer starts next to the reordering and loss paths.

Debian's python3 (gi, GStreamer 1.x with plugins good), not a venv's; see scripts/setup.sh.
"""

import os
import struct
import sys
import tempfile

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def packets(pipeline_desc):
    """Runs a pipeline ending in `appsink name=out` and returns the RTP packets it made."""
    pipe = Gst.parse_launch(pipeline_desc)
    sink = pipe.get_by_name("out")
    pipe.set_state(Gst.State.PLAYING)
    out = []
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if ok:
            out.append(bytes(info.data))
            buf.unmap(info)
    bus = pipe.get_bus()
    msg = bus.timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.ERROR | Gst.MessageType.EOS)
    pipe.set_state(Gst.State.NULL)
    if msg is not None and msg.type == Gst.MessageType.ERROR:
        err, _ = msg.parse_error()
        raise RuntimeError(f"{pipeline_desc}: {err.message}")
    return out


def frames(pkts):
    """Groups packets by RTP timestamp, in order."""
    groups = []
    for p in pkts:
        ts = struct.unpack(">I", p[4:8])[0]
        if groups and groups[-1][0] == ts:
            groups[-1][1].append(p)
        else:
            groups.append((ts, [p]))
    return [g for _, g in groups]


def encode(settings, pkts):
    b = bytearray([settings])
    for p in pkts:
        b += struct.pack(">H", len(p)) + p
    return bytes(b)


def write_variants(out_dir, name, pkts, count):
    fr = frames(pkts)
    variants = {
        "": pkts,
        "-reversed": [p for f in fr for p in reversed(f)],
        "-one-lost": [p for i, p in enumerate(pkts) if i != len(fr[0]) // 2 + len(fr[0])],
    }
    for suffix, v in variants.items():
        # 0: no x-dimensions, no capture-time extension; 2: with the extension id 1.
        for settings in (0, 2):
            with open(os.path.join(out_dir, f"{name}{suffix}-s{settings}"), "wb") as f:
                f.write(encode(settings, v))
            count += 1
    return count


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    jpeg_dir = sys.argv[2] if len(sys.argv) == 3 else None
    os.makedirs(out_dir, exist_ok=True)
    Gst.init(None)
    count = 0
    for fmt in ("I420", "Y42B"):
        for quality, mtu in ((50, 200), (85, 400), (95, 1400)):
            desc = (
                f"videotestsrc num-buffers=3 pattern=smpte ! video/x-raw,width=64,height=48,format={fmt} "
                f"! jpegenc quality={quality} ! rtpjpegpay mtu={mtu} ! appsink name=out sync=false"
            )
            count = write_variants(out_dir, f"gst-{fmt}-q{quality}-mtu{mtu}", packets(desc), count)
    if jpeg_dir:
        with tempfile.TemporaryDirectory() as tmp:
            for name in sorted(os.listdir(jpeg_dir)):
                # rtpjpegpay carries 4:2:0 and 4:2:2 only; one frame size per stream.
                if not (name.startswith("420-rst") or name.startswith("422-rst")) or not name.endswith("-k3.jpg"):
                    continue
                with open(os.path.join(jpeg_dir, name), "rb") as f:
                    jpeg = f.read()[1:]
                for i in range(2):
                    with open(os.path.join(tmp, f"{i:05d}.jpg"), "wb") as f:
                        f.write(jpeg)
                desc = (
                    f"multifilesrc location={tmp}/%05d.jpg index=0 stop-index=1 caps=image/jpeg,framerate=25/1 "
                    "! jpegparse ! rtpjpegpay mtu=300 ! appsink name=out sync=false"
                )
                count = write_variants(out_dir, "gst-" + name.removesuffix("-k3.jpg"), packets(desc), count)
    print(f"wrote {count} rtp_jpeg seeds from rtpjpegpay under {out_dir}")


if __name__ == "__main__":
    main()
