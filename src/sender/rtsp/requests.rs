//! One RTSP connection's requests and their answers, pure code: no sockets (the UDP ports a
//! SETUP needs come through [`Env`]), no threads, so the fuzz target `rtsp_request` drives it
//! with bytes alone. Run by each connection's `rtsp-PEER` thread (`session.rs`), which acts on
//! the [`Action`] each answer carries.
//!
//! One connection holds at most one session with one stream (the video), served at
//! `rtsp://HOST:PORT/stream` and `rtsp://HOST:PORT/` (the SDP names it `track0` below
//! either). Refused, logged and followed by closing the connection: a missing or bad CSeq,
//! an unknown method, PLAY before SETUP, a SETUP whose ports are absurd (below 1024, odd, not
//! a pair) or whose destination is another host (RTP goes only to the address that asked: a
//! server must never become a reflector), interleaved channels out of range, a session id
//! that is not this connection's, and any request after TEARDOWN but OPTIONS.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rtsp_types::headers::{self, RtpLowerTransport, RtpProfile, Transport as TransportSpec, Transports};
use rtsp_types::{Method, Request, Response, StatusCode, Version};
use sdp_types::{Attribute, Connection, Media, Origin, Session, Time};

use crate::rtp::packetize::RtpStream;
use crate::rtp::{capture_time, MAX_HEADER_DIMENSION, PAYLOAD_TYPE};
use crate::rtsp::{basic_credentials, digest_matches, parse_auth};

/// A session without a request (or RTCP) for this long is closed.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// The Digest realm.
pub const REALM: &str = "framecast";
/// The stream's control name in the SDP (`a=control`), relative to the Content-Base.
pub const TRACK: &str = "track0";
/// The methods this server answers.
const PUBLIC: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// What every connection's requests share.
#[derive(Clone, Debug)]
pub struct Context {
    /// The access token (the password of Basic or Digest auth) when the sender has a key.
    pub token: Option<String>,
    /// The Digest nonce of this run.
    pub nonce: String,
    /// The sender's clock id (hex), for `a=x-framecast-clock`.
    pub clock_id: String,
    /// The stream's frame rate, thousandths (0: as fast as possible).
    pub fps_milli: u32,
}

/// Where a session's RTP goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP to the RTSP peer's address: its RTP and RTCP ports, and ours.
    Udp { client: (u16, u16), server: (u16, u16) },
    /// `$`-interleaved on the RTSP connection: the RTP and RTCP channels.
    Tcp { channels: (u8, u8) },
}

/// A session set up by SETUP.
#[derive(Clone, Debug)]
pub struct Setup {
    pub transport: Transport,
    /// Its RTP stream (SSRC, first sequence number, timestamp offset).
    pub stream: RtpStream,
}

/// What the session thread does after sending the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// Start (or resume) sending the set-up stream.
    Play,
    Pause,
    /// Stop sending and forget the session.
    Teardown,
    /// Close the connection: the request was refused for good (`why`, for the log).
    Close(String),
    /// Refused (`why`, for the log), but the client may ask again on the same connection (a
    /// 401 before the client sends its credentials).
    Refused(String),
}

/// What a SETUP needs from the outside world.
pub trait Env {
    /// Binds a pair of UDP sockets for a session's RTP and RTCP; returns their ports.
    fn udp_ports(&mut self) -> io::Result<(u16, u16)>;
    /// The size of the frames now (for the SDP).
    fn frame_size(&self) -> (u32, u32);
}

/// One connection's request state.
pub struct Requests {
    ctx: Arc<Context>,
    session_id: String,
    setup: Option<Setup>,
    torn_down: bool,
}

/// A response and what to do after it.
pub struct Reply {
    pub response: Response<Vec<u8>>,
    pub action: Action,
}

impl Requests {
    pub fn new(ctx: Arc<Context>, session_id: String) -> Self {
        Requests { ctx, session_id, setup: None, torn_down: false }
    }

    /// The session, once SETUP has made one.
    pub fn setup(&self) -> Option<&Setup> {
        self.setup.as_ref()
    }

    /// Answers `req` from `peer`.
    pub fn handle(&mut self, req: &Request<Vec<u8>>, peer: IpAddr, env: &mut dyn Env) -> Reply {
        let Some(cseq) = req.header(&headers::CSEQ).and_then(|v| v.as_str().trim().parse::<u32>().ok()) else {
            let why = match req.header(&headers::CSEQ) {
                None => "no CSeq header (expected a number)".to_string(),
                Some(v) => {
                    format!("bad CSeq {:?} (expected a number)", v.as_str().chars().take(32).collect::<String>())
                }
            };
            return close(reply(StatusCode::BadRequest, None), why);
        };
        let r = |status| reply(status, Some(cseq));
        if req.version() != Version::V1_0 {
            return close(r(StatusCode::RTSPVersionNotSupported), format!("RTSP version {:?}", req.version()));
        }
        if self.torn_down && *req.method() != Method::Options {
            return close(r(StatusCode::SessionNotFound), format!("{} after TEARDOWN", method_name(req)));
        }
        if let Some(why) = self.unauthorized(req) {
            let mut resp = r(StatusCode::Unauthorized);
            let challenge = format!("Digest realm=\"{REALM}\", nonce=\"{}\"", self.ctx.nonce);
            resp.response.insert_header(headers::WWW_AUTHENTICATE, challenge);
            resp.action = Action::Refused(why);
            return resp;
        }
        if !path_ok(req) {
            let path = req.request_uri().map_or("*".to_string(), |u| u.path().to_string());
            return close(r(StatusCode::NotFound), format!("no stream at {path} (try /stream or /)"));
        }
        if let Some(why) = self.wrong_session(req) {
            return close(r(StatusCode::SessionNotFound), why);
        }
        match req.method() {
            Method::Options => {
                let mut resp = r(StatusCode::Ok);
                resp.response.insert_header(headers::PUBLIC, PUBLIC);
                resp
            }
            Method::Describe => self.describe(req, cseq, env),
            Method::Setup => self.setup_request(req, cseq, peer, env),
            Method::Play => self.play(req, cseq),
            Method::Pause if self.setup.is_some() => self.with_session(r(StatusCode::Ok), Action::Pause),
            Method::Teardown => {
                self.setup = None;
                self.torn_down = true;
                Reply { action: Action::Teardown, ..r(StatusCode::Ok) }
            }
            Method::GetParameter => self.with_session(r(StatusCode::Ok), Action::None),
            Method::SetParameter if req.body().is_empty() => self.with_session(r(StatusCode::Ok), Action::None),
            Method::SetParameter => r(StatusCode::ParameterNotUnderstood),
            Method::Pause => close(r(StatusCode::MethodNotValidInThisState), "PAUSE before SETUP".into()),
            Method::Announce | Method::Record => {
                let mut resp = r(StatusCode::MethodNotAllowed);
                resp.response.insert_header(headers::ALLOW, PUBLIC);
                resp
            }
            _ => {
                let mut resp = r(StatusCode::NotImplemented);
                resp.response.insert_header(headers::PUBLIC, PUBLIC);
                close(resp, format!("unknown method {}", method_name(req)))
            }
        }
    }

    /// With a token: why `req` is not authorised, if it is not.
    fn unauthorized(&self, req: &Request<Vec<u8>>) -> Option<String> {
        let token = self.ctx.token.as_deref()?;
        let Some(value) = req.header(&headers::AUTHORIZATION) else {
            return Some("no credentials".into());
        };
        let Some(p) = parse_auth(value.as_str()) else {
            return Some("an Authorization header that cannot be read".into());
        };
        let ok = if p.scheme.eq_ignore_ascii_case("basic") {
            basic_credentials(&p).is_some_and(|(_, pw)| crate::net::secure::token_matches(&pw, token))
        } else if p.scheme.eq_ignore_ascii_case("digest") {
            digest_matches(&p, method_name(req), REALM, &self.ctx.nonce, token)
        } else {
            false
        };
        (!ok).then(|| format!("wrong credentials ({} auth)", p.scheme))
    }

    /// A Session header naming another session.
    fn wrong_session(&self, req: &Request<Vec<u8>>) -> Option<String> {
        let got = req.header(&headers::SESSION)?.as_str().split(';').next().unwrap_or("").trim().to_string();
        match &self.setup {
            Some(_) if got == self.session_id => None,
            Some(_) => Some(format!("unknown session {got:?}")),
            None if *req.method() == Method::Setup || *req.method() == Method::Options => None,
            None => Some(format!("session {got:?} before SETUP")),
        }
    }

    fn with_session(&self, mut reply: Reply, action: Action) -> Reply {
        if self.setup.is_some() {
            reply.response.insert_header(headers::SESSION, self.session_header());
        }
        reply.action = action;
        reply
    }

    fn session_header(&self) -> String {
        format!("{};timeout={}", self.session_id, SESSION_TIMEOUT.as_secs())
    }

    fn describe(&self, req: &Request<Vec<u8>>, cseq: u32, env: &dyn Env) -> Reply {
        let base = req.request_uri().map(|u| u.as_str().trim_end_matches('/').to_string()).unwrap_or_default();
        let host = req.request_uri().and_then(|u| u.host_str()).unwrap_or("0.0.0.0").to_string();
        let sdp = sdp(&self.ctx, env.frame_size(), &host);
        let mut body = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = sdp.write(&mut body);
        let resp = Response::builder(Version::V1_0, StatusCode::Ok)
            .header(headers::CSEQ, cseq.to_string())
            .header(headers::CONTENT_TYPE, "application/sdp")
            .header(headers::CONTENT_BASE, format!("{base}/"))
            .header(headers::SERVER, format!("framecast/{}", env!("CARGO_PKG_VERSION")));
        Reply { response: resp.build(body), action: Action::None }
    }

    fn setup_request(&mut self, req: &Request<Vec<u8>>, cseq: u32, peer: IpAddr, env: &mut dyn Env) -> Reply {
        let r = |status| reply(status, Some(cseq));
        if self.setup.is_some() {
            return r(StatusCode::AggregateOperationNotAllowed);
        }
        let transports = match req.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            Ok(None) => return close(r(StatusCode::BadRequest), "SETUP without a Transport header".into()),
            Err(_) => {
                let got = req.header(&headers::TRANSPORT).map(|v| v.as_str().to_string()).unwrap_or_default();
                return close(
                    r(StatusCode::BadRequest),
                    format!("SETUP with a Transport header that cannot be read: {got:?}"),
                );
            }
        };
        let transport = match choose(&transports, peer) {
            Ok(t) => t,
            Err(why) => return close(r(StatusCode::UnsupportedTransport), why),
        };
        let transport = match transport {
            Transport::Udp { client, .. } => match env.udp_ports() {
                Ok(server) => Transport::Udp { client, server },
                Err(e) => return close(r(StatusCode::InternalServerError), format!("cannot bind UDP ports: {e}")),
            },
            tcp => tcp,
        };
        let stream = RtpStream::random();
        let spec = match transport {
            Transport::Udp { client, server } => format!(
                "RTP/AVP;unicast;client_port={}-{};server_port={}-{};ssrc={:08X}",
                client.0, client.1, server.0, server.1, stream.ssrc
            ),
            Transport::Tcp { channels } => {
                format!("RTP/AVP/TCP;unicast;interleaved={}-{};ssrc={:08X}", channels.0, channels.1, stream.ssrc)
            }
        };
        self.setup = Some(Setup { transport, stream });
        let mut resp = r(StatusCode::Ok);
        resp.response.insert_header(headers::TRANSPORT, spec);
        resp.response.insert_header(headers::SESSION, self.session_header());
        resp
    }

    fn play(&self, req: &Request<Vec<u8>>, cseq: u32) -> Reply {
        let Some(setup) = &self.setup else {
            return close(reply(StatusCode::MethodNotValidInThisState, Some(cseq)), "PLAY before SETUP".into());
        };
        let mut resp = self.with_session(reply(StatusCode::Ok, Some(cseq)), Action::Play);
        let url = req.request_uri().map(|u| u.as_str().trim_end_matches('/').to_string()).unwrap_or_default();
        let s = &setup.stream;
        let rtptime = s.timestamp(crate::clock::now_us());
        resp.response.insert_header(headers::RTP_INFO, format!("url={url};seq={};rtptime={rtptime}", s.seq));
        resp.response.insert_header(headers::RANGE, "npt=now-");
        resp
    }
}

fn method_name(req: &Request<Vec<u8>>) -> &str {
    <&str>::from(req.method())
}

fn reply(status: StatusCode, cseq: Option<u32>) -> Reply {
    let mut b = Response::builder(Version::V1_0, status);
    if let Some(c) = cseq {
        b = b.header(headers::CSEQ, c.to_string());
    }
    Reply { response: b.build(Vec::new()), action: Action::None }
}

fn close(mut r: Reply, why: String) -> Reply {
    r.action = Action::Close(why);
    r
}

/// `/`, `/stream`, and the stream's control URL under either; `*` for OPTIONS.
fn path_ok(req: &Request<Vec<u8>>) -> bool {
    let Some(uri) = req.request_uri() else { return true };
    let path = uri.path().trim_end_matches('/');
    let path = path.strip_suffix(TRACK).map_or(path, |p| p.trim_end_matches('/'));
    matches!(path, "" | "/stream")
}

/// The first transport of the client's list this server can serve, or why there is none.
fn choose(transports: &Transports, peer: IpAddr) -> Result<Transport, String> {
    let mut why = "no RTP/AVP transport offered".to_string();
    for t in transports.iter() {
        let TransportSpec::Rtp(rtp) = t else { continue };
        if rtp.profile != RtpProfile::Avp {
            why = format!("RTP profile {:?} (only RTP/AVP)", rtp.profile);
            continue;
        }
        let p = &rtp.params;
        if p.multicast {
            why = "multicast (only unicast)".into();
            continue;
        }
        if let Some(dest) = &p.destination {
            if dest.parse::<IpAddr>().ok() != Some(peer) {
                return Err(format!("destination={dest} is not the RTSP client's address {peer}: RTP goes only there"));
            }
        }
        return match rtp.lower_transport {
            Some(RtpLowerTransport::Tcp) => tcp_channels(p.interleaved),
            None | Some(RtpLowerTransport::Udp) => udp_ports(p.client_port),
            Some(RtpLowerTransport::Other(ref o)) => Err(format!("lower transport {o:?}")),
        };
    }
    Err(why)
}

fn tcp_channels(interleaved: Option<(u8, Option<u8>)>) -> Result<Transport, String> {
    match interleaved {
        None => Ok(Transport::Tcp { channels: (0, 1) }),
        Some((a, b)) if a < 255 && b.unwrap_or(a + 1) == a + 1 => Ok(Transport::Tcp { channels: (a, a + 1) }),
        Some((a, b)) => {
            let shown = b.map_or(a.to_string(), |b| format!("{a}-{b}"));
            Err(format!("interleaved={shown}: expected two consecutive channels below 256"))
        }
    }
}

fn udp_ports(client_port: Option<(u16, Option<u16>)>) -> Result<Transport, String> {
    let Some((rtp, rtcp)) = client_port else {
        return Err("UDP without client_port".into());
    };
    let rtcp = rtcp.unwrap_or(rtp.wrapping_add(1));
    if rtp < 1024 || rtp % 2 != 0 || rtcp != rtp + 1 {
        return Err(format!(
            "client_port={rtp}-{rtcp}: expected an even RTP port from 1024 up and the next one for RTCP"
        ));
    }
    Ok(Transport::Udp { client: (rtp, rtcp), server: (0, 0) })
}

/// The session description: one JPEG video stream, its rate, its size above 2040 pixels
/// (GStreamer's `a=x-dimensions`), framecast's capture-time extension and clock id.
pub fn sdp(ctx: &Context, (width, height): (u32, u32), host: &str) -> Session {
    let origin = Origin::new(
        "0",
        1,
        sdp_types::NetType::In,
        sdp_types::AddrType::Ip4,
        host.parse::<std::net::Ipv4Addr>().map_or("0.0.0.0".to_string(), |a| a.to_string()),
    );
    let mut s = Session::new(origin, "framecast");
    s.connection = Some(Connection::new(sdp_types::NetType::In, sdp_types::AddrType::Ip4, "0.0.0.0"));
    s.times.push(Time::new(0, 0));
    s.attributes.push(Attribute::with_value("control", "*"));
    s.attributes.push(Attribute::with_value("range", "npt=now-"));
    let mut m = Media::new(sdp_types::MediaType::Video, 0, sdp_types::TransportProto::RtpAvp, PAYLOAD_TYPE);
    m.attributes.push(Attribute::with_value("rtpmap", format!("{PAYLOAD_TYPE} JPEG/90000")));
    m.attributes.push(Attribute::with_value("control", TRACK));
    if ctx.fps_milli > 0 {
        let fps = f64::from(ctx.fps_milli) / 1000.0;
        m.attributes.push(Attribute::with_value("framerate", format!("{fps}")));
    }
    if width > MAX_HEADER_DIMENSION || height > MAX_HEADER_DIMENSION {
        m.attributes.push(Attribute::with_value("x-dimensions", format!("{width},{height}")));
    }
    m.attributes.push(Attribute::with_value("extmap", format!("{} {}", capture_time::ID, capture_time::URI)));
    m.attributes.push(Attribute::with_value(capture_time::CLOCK_ATTRIBUTE, &ctx.clock_id));
    s.medias.push(m);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtsp::{basic_authorization, digest_response, DigestInput};

    struct FakeEnv;

    impl Env for FakeEnv {
        fn udp_ports(&mut self) -> io::Result<(u16, u16)> {
            Ok((50_000, 50_001))
        }
        fn frame_size(&self) -> (u32, u32) {
            (2560, 1440)
        }
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn ctx(token: Option<&str>) -> Arc<Context> {
        Arc::new(Context {
            token: token.map(Into::into),
            nonce: "n0nce".into(),
            clock_id: "ab".into(),
            fps_milli: 30_000,
        })
    }

    fn req(text: &str) -> Request<Vec<u8>> {
        let text = text.replace('\n', "\r\n") + "\r\n";
        match rtsp_types::Message::<Vec<u8>>::parse(text.as_bytes()).unwrap().0 {
            rtsp_types::Message::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn ask(r: &mut Requests, text: &str) -> Reply {
        r.handle(&req(text), PEER, &mut FakeEnv)
    }

    fn status(reply: &Reply) -> u16 {
        u16::from(reply.response.status())
    }

    #[test]
    fn a_udp_session_from_options_to_teardown() {
        let mut r = Requests::new(ctx(None), "S1".into());
        let o = ask(&mut r, "OPTIONS rtsp://127.0.0.1:8554/stream RTSP/1.0\nCSeq: 1\n");
        assert_eq!(status(&o), 200);
        assert!(o.response.header(&headers::PUBLIC).unwrap().as_str().contains("DESCRIBE"));
        let d = ask(&mut r, "DESCRIBE rtsp://127.0.0.1:8554/stream RTSP/1.0\nCSeq: 2\n");
        let sdp = String::from_utf8(d.response.body().clone()).unwrap();
        for want in [
            "m=video 0 RTP/AVP 26",
            "a=control:track0",
            "a=x-dimensions:2560,1440",
            "a=framerate:30",
            "a=extmap:1 urn:x-framecast:capture-time",
            "a=x-framecast-clock:ab",
        ] {
            assert!(sdp.contains(want), "{want} in {sdp}");
        }
        sdp_types::Session::parse(sdp.as_bytes()).unwrap();
        let s = ask(&mut r, "SETUP rtsp://127.0.0.1:8554/stream/track0 RTSP/1.0\nCSeq: 3\nTransport: RTP/AVP;unicast;client_port=5000-5001\n");
        assert_eq!(status(&s), 200);
        let t = s.response.header(&headers::TRANSPORT).unwrap().as_str().to_string();
        assert!(t.contains("client_port=5000-5001;server_port=50000-50001"), "{t}");
        assert_eq!(r.setup().unwrap().transport, Transport::Udp { client: (5000, 5001), server: (50_000, 50_001) });
        let p = ask(&mut r, "PLAY rtsp://127.0.0.1:8554/stream RTSP/1.0\nCSeq: 4\nSession: S1\n");
        assert_eq!((status(&p), p.action), (200, Action::Play));
        assert!(p
            .response
            .header(&headers::RTP_INFO)
            .unwrap()
            .as_str()
            .starts_with("url=rtsp://127.0.0.1:8554/stream;seq="));
        assert_eq!(
            status(&ask(&mut r, "GET_PARAMETER rtsp://127.0.0.1:8554/stream RTSP/1.0\nCSeq: 5\nSession: S1\n")),
            200
        );
        let t = ask(&mut r, "TEARDOWN rtsp://127.0.0.1:8554/stream RTSP/1.0\nCSeq: 6\nSession: S1\n");
        assert_eq!((status(&t), t.action), (200, Action::Teardown));
        let after = ask(&mut r, "PLAY rtsp://127.0.0.1:8554/stream RTSP/1.0\nCSeq: 7\nSession: S1\n");
        assert_eq!(status(&after), 454);
        assert!(matches!(after.action, Action::Close(ref w) if w.contains("after TEARDOWN")));
    }

    #[test]
    fn tcp_interleaved_channels() {
        let mut r = Requests::new(ctx(None), "S".into());
        let s = ask(&mut r, "SETUP rtsp://h/ RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3\n");
        assert_eq!(r.setup().unwrap().transport, Transport::Tcp { channels: (2, 3) });
        assert!(s.response.header(&headers::TRANSPORT).unwrap().as_str().contains("interleaved=2-3"));
        let mut r = Requests::new(ctx(None), "S".into());
        let bad =
            ask(&mut r, "SETUP rtsp://h/ RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP/TCP;unicast;interleaved=255-256\n");
        assert!(status(&bad) == 461 || status(&bad) == 400, "{}", status(&bad));
        assert!(matches!(bad.action, Action::Close(_)));
    }

    #[test]
    fn bad_requests_are_refused_and_close() {
        let cases = [
            ("OPTIONS * RTSP/1.0\nUser-Agent: x\n", 400, "no CSeq header (expected a number)"),
            ("OPTIONS * RTSP/1.0\nCSeq: one\n", 400, "bad CSeq \"one\" (expected a number)"),
            ("SETUP rtsp://h/ RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP/TCP;unicast;interleaved=4-6\n", 461, "interleaved=4-6: expected"),
            ("FROB rtsp://h/stream RTSP/1.0\nCSeq: 1\n", 501, "unknown method FROB"),
            ("PLAY rtsp://h/stream RTSP/1.0\nCSeq: 1\n", 455, "PLAY before SETUP"),
            ("DESCRIBE rtsp://h/other RTSP/1.0\nCSeq: 1\n", 404, "/other"),
            ("SETUP rtsp://h/stream RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP;unicast;client_port=5001-5002\n", 461, "client_port=5001-5002"),
            ("SETUP rtsp://h/stream RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP;unicast;client_port=53-54\n", 461, "from 1024"),
            ("SETUP rtsp://h/stream RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP;unicast;client_port=6000-6001;destination=10.1.2.3\n", 461, "10.1.2.3"),
            ("SETUP rtsp://h/stream RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP;multicast\n", 461, "multicast"),
            ("GET_PARAMETER rtsp://h/stream RTSP/1.0\nCSeq: 1\nSession: nope\n", 454, "nope"),
        ];
        for (text, want, why) in cases {
            let mut r = Requests::new(ctx(None), "S".into());
            let got = ask(&mut r, text);
            assert_eq!(status(&got), want, "{text}");
            assert!(matches!(&got.action, Action::Close(w) if w.contains(why)), "{text}: {:?}", got.action);
        }
    }

    #[test]
    fn with_a_token_requests_need_basic_or_digest() {
        let mut r = Requests::new(ctx(Some("tok")), "S".into());
        let no = ask(&mut r, "OPTIONS rtsp://h/stream RTSP/1.0\nCSeq: 1\n");
        assert_eq!(status(&no), 401);
        assert!(matches!(no.action, Action::Refused(_)), "the client may try again on the same connection");
        let challenge = no.response.header(&headers::WWW_AUTHENTICATE).unwrap().as_str().to_string();
        assert!(challenge.starts_with("Digest realm=\"framecast\", nonce=\"n0nce\""), "{challenge}");
        let basic = |pw| {
            format!("OPTIONS rtsp://h/stream RTSP/1.0\nCSeq: 2\nAuthorization: {}\n", basic_authorization("u", pw))
        };
        assert_eq!(status(&ask(&mut r, &basic("tok"))), 200);
        assert_eq!(status(&ask(&mut r, &basic("bad"))), 401);
        let response = digest_response(&DigestInput {
            user: "u",
            realm: REALM,
            password: "tok",
            method: "DESCRIBE",
            uri: "rtsp://h/stream",
            nonce: "n0nce",
            qop_auth: None,
        });
        let digest = format!(
            "DESCRIBE rtsp://h/stream RTSP/1.0\nCSeq: 3\nAuthorization: Digest username=\"u\", realm=\"framecast\", nonce=\"n0nce\", uri=\"rtsp://h/stream\", response=\"{response}\"\n"
        );
        assert_eq!(status(&ask(&mut r, &digest)), 200);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]
        /// Requests made of real methods, paths and transports in any order and any mix never
        /// panic, and every numeric CSeq comes back.
        #[test]
        fn any_request_sequence_is_answered(
            steps in proptest::collection::vec((0usize..10, 0usize..4, 0usize..6, proptest::prelude::any::<u16>()), 1..12)
        ) {
            let methods = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER", "RECORD", "X"];
            let paths = ["rtsp://h/stream", "rtsp://h/", "rtsp://h/stream/track0", "rtsp://h/x"];
            let transports = [
                "RTP/AVP;unicast;client_port=5000-5001",
                "RTP/AVP/TCP;unicast;interleaved=0-1",
                "RTP/AVP;unicast;client_port=5001",
                "RTP/AVP/TCP;interleaved=254-255",
                "RTP/SAVP;unicast",
                "garbage;;;==",
            ];
            let mut r = Requests::new(ctx(Some("tok")), "S".into());
            for (m, p, t, cseq) in steps {
                let text = format!(
                    "{} {} RTSP/1.0\nCSeq: {cseq}\nSession: S\nTransport: {}\nAuthorization: {}\n",
                    methods[m], paths[p], transports[t], basic_authorization("u", "tok")
                );
                let reply = ask(&mut r, &text);
                let got = reply.response.header(&headers::CSEQ).map(|v| v.as_str().to_string());
                proptest::prop_assert_eq!(got, Some(cseq.to_string()));
                if matches!(reply.action, Action::Close(_)) {
                    break;
                }
            }
        }
    }
}
