#!/usr/bin/python3
"""A foreign RTSP server for framecast's tests: GStreamer's gst-rtsp-server, from Debian's
python3-gi (run it with /usr/bin/python3; another python3 on PATH may lack gi).

  gst_rtsp.py serve  --port P [--path /cam] [--size 640x480] [--fps 30] [--quality 75] [--pattern smpte]
                     [--jpeg-dir DIR] [--user U --password PW] [--protocols udp|tcp]
      serves `videotestsrc ! jpegenc ! rtpjpegpay` at rtsp://127.0.0.1:P/cam, as an IP camera
      or a media server would. With --jpeg-dir it loops DIR/00000.jpg, 00001.jpg, ... instead
      (jpegenc cannot make restart markers; JPEGs with them, written by the test, make
      rtpjpegpay send types 64/65). --protocols offers RTP over that lower transport only
      (a camera that answers SETUP over the other with 461 Unsupported Transport).

  gst_rtsp.py record --port P [--path /cam] --out DIR [--user U --password PW]
      takes RECORD (ANNOUNCE + SETUP + RECORD, as MediaMTX does) of an RTP/JPEG stream at
      rtsp://127.0.0.1:P/cam and writes each received frame, depayloaded and still JPEG, to
      DIR/frame-NNNNN.jpg. With --relay-path /view it also serves what it receives at
      rtsp://127.0.0.1:P/view, as a media server relays a published stream to readers (each
      depayloaded frame handed to an appsrc ! rtpjpegpay media per reader).

Prints "READY rtsp://127.0.0.1:P/path" on stdout once it listens; runs until killed
(SIGTERM or SIGINT end it cleanly).
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def serve_launch(a):
    w, h = a.size.split("x")
    enc = f"jpegenc quality={a.quality}"
    caps = f"video/x-raw,width={w},height={h},framerate={a.fps}/1,format=I420"
    src = f"videotestsrc is-live=true pattern={a.pattern} ! {caps}"
    return f"( {src} ! {enc} ! rtpjpegpay name=pay0 pt=26 mtu=1400 )"


def files_launch(a):
    # JPEG files (e.g. with restart markers, which jpegenc cannot make) looped at --fps.
    loc = f"{a.jpeg_dir}/%05d.jpg"
    return (
        f"( multifilesrc location={loc} loop=true caps=image/jpeg,framerate={a.fps}/1 "
        f"! jpegparse ! rtpjpegpay name=pay0 pt=26 mtu=1400 )"
    )


def record_launch(a):
    files = f"multifilesink location={a.out}/frame-%05d.jpg sync=false async=false"
    if not a.relay_path:
        return f"( rtpjpegdepay name=depay0 ! {files} )"
    relay = "appsink name=relay emit-signals=true sync=false async=false drop=true max-buffers=2"
    return f"( rtpjpegdepay name=depay0 ! tee name=t ! queue ! {files} t. ! queue ! {relay} )"


def add_relay(server, record, a):
    """Serves what `record` receives at a.relay_path: each frame its appsink gets is pushed
    into the appsrc of every reader's media (shared: one per relay)."""
    readers = []

    def on_sample(sink):
        sample = sink.emit("pull-sample")
        for src in list(readers):
            buf = sample.get_buffer().copy()
            buf.pts = buf.dts = Gst.CLOCK_TIME_NONE  # do-timestamp: stamped on arrival
            if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                readers.remove(src)  # that media has stopped
        return Gst.FlowReturn.OK

    record.connect(
        "media-configure", lambda _f, m: m.get_element().get_by_name("relay").connect("new-sample", on_sample)
    )
    view = GstRtspServer.RTSPMediaFactory()
    view.set_shared(True)
    view.set_launch(
        "( appsrc name=src is-live=true do-timestamp=true format=time caps=image/jpeg "
        "! jpegparse ! rtpjpegpay name=pay0 pt=26 mtu=1400 )"
    )
    view.connect("media-configure", lambda _f, m: readers.append(m.get_element().get_by_name("src")))
    add_auth(server, view, a, False)
    server.get_mount_points().add_factory(a.relay_path, view)


def add_auth(server, factory, a, record):
    if not a.user:
        return
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
    server.set_auth(auth)
    perms = GstRtspServer.RTSPPermissions()
    perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    factory.set_permissions(perms)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["serve", "record"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/cam")
    p.add_argument("--size", default="640x480")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--quality", type=int, default=75)
    # smpte has a corner of noise; smpte75 is the same picture every frame.
    p.add_argument("--pattern", default="smpte", help="serve: videotestsrc's pattern")
    p.add_argument("--jpeg-dir", help="serve: loop DIR/00000.jpg, 00001.jpg, ... instead of videotestsrc")
    p.add_argument("--out", help="record: where to write the received frames")
    p.add_argument("--relay-path", help="record: also serve the received frames at this path")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--protocols", choices=["udp", "tcp"], help="serve: offer only this transport")
    a = p.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    # One thread per client: with the default of one, a reader's media stalls the recording.
    server.get_thread_pool().set_max_threads(16)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_shared(True)
    if a.mode == "serve":
        factory.set_launch(files_launch(a) if a.jpeg_dir else serve_launch(a))
        if a.protocols:
            lower = {"udp": GstRtsp.RTSPLowerTrans.UDP, "tcp": GstRtsp.RTSPLowerTrans.TCP}
            factory.set_protocols(lower[a.protocols])
    else:
        if not a.out:
            p.error("record needs --out DIR")
        factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        factory.set_launch(record_launch(a))
        factory.set_latency(0)
        # On TEARDOWN, push EOS through the pipeline and wait for it before stopping: else
        # frames still queued (in the jitterbuffer or the tee's queue, behind a stall) are
        # thrown away, and the last frames a publisher sent are never written.
        factory.set_eos_shutdown(True)
        if a.relay_path:
            add_relay(server, factory, a)
    add_auth(server, factory, a, a.mode == "record")
    server.get_mount_points().add_factory(a.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{a.port}", file=sys.stderr)
        sys.exit(1)

    loop = GLib.MainLoop()
    for s in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, s, loop.quit)
    print(f"READY rtsp://127.0.0.1:{a.port}{a.path}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
