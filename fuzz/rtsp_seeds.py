#!/usr/bin/python3
"""Seeds for the `rtsp_request` fuzz target: the requests real RTSP clients send.

    /usr/bin/python3 fuzz/rtsp_seeds.py OUT_DIR

Runs ffmpeg and GStreamer's rtspsrc, over TCP and UDP, against a stand-in server on
127.0.0.1 that answers just enough (OPTIONS, DESCRIBE with a JPEG SDP, SETUP, PLAY, and a
401 Digest challenge first when the URL has credentials) and records each client's bytes.
After PLAY the stand-in hangs up; a GET_PARAMETER keep-alive and a TEARDOWN in the client's
own style are appended. Each seed is the target's input (fuzz/fuzz_targets/rtsp_request.rs):
one flags byte (bit 0: the server has the token "tok", so the Digest answers to realm
"framecast" and nonce "n" are ones the target accepts), then the bytes.

Debian's ffmpeg and gstreamer1.0-tools (scripts/setup.sh --test-deps). Every client is
killed after at most 10 s.
"""

import hashlib
import os
import re
import socket
import struct
import subprocess
import sys
import threading

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=framecast\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 26\r\na=control:track0\r\na=framerate:30\r\n"
)


def serve(listener, auth, record):
    """Answers one client's requests until PLAY, recording what it sent."""
    conn, _ = listener.accept()
    conn.settimeout(10)
    buf = b""
    challenged = False
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            record.append(head + b"\r\n\r\n")
            text = head.decode("latin-1")
            method = text.split(" ", 1)[0]
            cseq = re.search(r"(?im)^cseq:\s*(\d+)", text).group(1)
            lines = [f"CSeq: {cseq}"]
            if auth and not challenged and "authorization:" not in text.lower():
                challenged = True
                lines.append('WWW-Authenticate: Digest realm="framecast", nonce="n"')
                status = "401 Unauthorized"
            else:
                status = "200 OK"
            body = ""
            if status.startswith("200"):
                if method == "OPTIONS":
                    lines.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
                elif method == "DESCRIBE":
                    url = text.split(" ")[1]
                    lines += ["Content-Type: application/sdp", f"Content-Base: {url}/"]
                    body = SDP
                elif method == "SETUP":
                    transport = re.search(r"(?im)^transport:\s*(.*)$", text).group(1).strip()
                    lines += [f"Transport: {transport};server_port=50000-50001", "Session: S;timeout=60"]
                elif method == "PLAY":
                    lines.append("Session: S")
            if body:
                lines.append(f"Content-Length: {len(body)}")
            conn.sendall((f"RTSP/1.0 {status}\r\n" + "\r\n".join(lines) + "\r\n\r\n" + body).encode())
            if method == "PLAY" and status.startswith("200"):
                return


def keepalive_and_teardown(record):
    """A GET_PARAMETER and a TEARDOWN written like the client's PLAY (its headers kept)."""
    play = next((r for r in record if r.startswith(b"PLAY ")), None)
    if play is None:
        return []
    n = max(int(m) for m in re.findall(rb"(?im)^cseq:\s*(\d+)", b"".join(record)))
    out = []
    for i, method in enumerate((b"GET_PARAMETER", b"TEARDOWN")):
        r = method + play[len(b"PLAY"):]
        r = re.sub(rb"(?im)^(cseq:\s*)\d+", lambda m: m.group(1) + str(n + 1 + i).encode(), r)
        out.append(re.sub(rb'response="[0-9a-f]+"', lambda m: digest(method, r), r))
    return out


def digest(method, request):
    """The Digest response for `request` under method `method` (RFC 2617 without qop)."""
    uri = re.search(rb'uri="([^"]*)"', request).group(1)
    md5 = lambda b: hashlib.md5(b).hexdigest().encode()  # noqa: E731
    ha1, ha2 = md5(b"u:framecast:tok"), md5(method + b":" + uri)
    return b'response="' + md5(ha1 + b":n:" + ha2) + b'"'


def rtcp_receiver_report():
    """An interleaved RTCP receiver report on channel 1, as a TCP client sends after PLAY."""
    rr = struct.pack(">BBHI", 0x81, 201, 7, 0x1234) + struct.pack(">IIIIII", 0x5678, 0, 1, 0, 0, 0)
    return b"$\x01" + struct.pack(">H", len(rr)) + rr


def capture(client, transport, auth):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    cred = "u:tok@" if auth else ""
    url = f"rtsp://{cred}127.0.0.1:{port}/stream"
    if client == "ffmpeg":
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "quiet", "-rtsp_transport", transport, "-i", url,
               "-frames:v", "1", "-f", "null", "-"]
    else:
        cmd = ["gst-launch-1.0", "-q", "rtspsrc", f"location={url}", f"protocols={transport}", "!", "fakesink"]
    record = []
    server = threading.Thread(target=lambda: serve(listener, auth, record), daemon=True)
    server.start()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server.join(10)
    proc.kill()
    proc.wait()
    listener.close()
    extra = keepalive_and_teardown(record)
    if transport == "tcp" and extra:
        extra.insert(0, rtcp_receiver_report())
    return record + extra


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    count = 0
    for client in ("ffmpeg", "gst"):
        for transport in ("tcp", "udp"):
            for auth in (False, True):
                record = capture(client, transport, auth)
                if not record:
                    print(f"{client} over {transport}: no requests captured", file=sys.stderr)
                    continue
                name = f"{client}-{transport}{'-auth' if auth else ''}"
                with open(os.path.join(out_dir, name), "wb") as f:
                    f.write(bytes([1 if auth else 0]) + b"".join(record))
                count += 1
    print(f"wrote {count} rtsp_request seeds from ffmpeg and rtspsrc under {out_dir}")


if __name__ == "__main__":
    main()
