//! Arbitrary bytes through the RTSP server's request path with no sockets: the message reader
//! (`rtsp::decode`, with its caps) cuts the bytes into messages and interleaved frames, and
//! each request goes to one connection's `Requests::handle` (SETUP's UDP ports come from a
//! fake environment), as the `rtsp-PEER` thread would do.
//!
//! Checks, besides "never panics": every message consumes at least one byte and no more than
//! the caps allow; a response always carries the request's CSeq when it had a numeric one;
//! after a `Close` answer nothing more is handled (the session thread closes the connection).
//! Run with `-malloc_limit_mb=64`: nothing may be allocated from a length the input claims.

#![no_main]

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use framecast::rtsp::{decode, Decoded, MAX_BODY, MAX_HEAD, MAX_INTERLEAVED};
use framecast::sender::rtsp::requests::{Action, Context, Env, Requests};
use libfuzzer_sys::fuzz_target;
use rtsp_types::Message;

struct FakeEnv;

impl Env for FakeEnv {
    fn udp_ports(&mut self) -> io::Result<(u16, u16)> {
        Ok((40_000, 40_001))
    }
    fn frame_size(&self) -> (u32, u32) {
        (2560, 1440)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let token = (flags & 1 == 1).then(|| "tok".to_string());
    let ctx = Arc::new(Context { token, nonce: "n".into(), clock_id: "00".into(), fps_milli: 30_000 });
    let mut requests = Requests::new(ctx, "S".into());
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut at = 0u64;
    while let Ok(Some(d)) = decode(rest, at) {
        let n = match d {
            Decoded::Skip(n) => n,
            Decoded::Message(m, n) => {
                assert!(n <= MAX_HEAD + MAX_BODY || n <= MAX_INTERLEAVED, "a message of {n} bytes");
                if let Message::Request(req) = m {
                    let cseq = req.header(&rtsp_types::headers::CSEQ).and_then(|v| v.as_str().trim().parse::<u32>().ok());
                    let reply = requests.handle(&req, peer, &mut FakeEnv);
                    if let Some(c) = cseq {
                        let got = reply.response.header(&rtsp_types::headers::CSEQ).map(|v| v.as_str().to_string());
                        assert_eq!(got, Some(c.to_string()));
                    }
                    let mut out = Vec::new();
                    reply.response.write(&mut out).expect("a response writes");
                    if matches!(reply.action, Action::Close(_)) {
                        return;
                    }
                }
                n
            }
        };
        assert!(n > 0 && n <= rest.len());
        rest = &rest[n..];
        at += n as u64;
    }
});
