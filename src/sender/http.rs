//! The HTTP transport (`send --http ADDR:PORT`), run by the `http` thread and one `http-PEER`
//! thread per client:
//!
//! - `/`: a page with the live stream and live stats, usable on a phone;
//! - `/stream.mjpg`: `multipart/x-mixed-replace` MJPEG for browsers, VLC, ffmpeg, OpenCV;
//! - `/snapshot.jpg`: the newest frame;
//! - `/stats`: the sender's latest stats record as JSON (the `--stats-json` schema);
//! - `/metrics`: the stats for Prometheus (`metrics.rs`).
//!
//! The URLs other streamers serve, so that tools set up for them (OctoPrint, Mainsail,
//! Fluidd, crowsnest, Home Assistant) work with their defaults, answer exactly as framecast's
//! own: mjpg-streamer's `/?action=stream` and `/?action=snapshot`, µStreamer's `/stream`
//! and `/snapshot`. Query parameters other than `action`, `token` and `advance_headers` are
//! ignored (the cache-busters those tools add: `&cacheBust=`, `&bypassCache=`,
//! `&timestamp=`, a bare `&1700000000000`).
//!
//! Requests are parsed with `httparse`; this module only bounds them: at most 8 KiB of
//! request head (431 beyond), 10 s to send it (408 after), `GET`/`HEAD` only (405), 64
//! clients at once (503). Each MJPEG client is a hub viewer with its own newest-frame-wins
//! slot, so a slow client loses frames alone (see `transport.rs` for the contract).
//!
//! With a key (`--key-file`) every request needs the access token derived from it (a keyed
//! BLAKE2s hash of a fixed label, so the key itself never crosses plain HTTP): `?token=T` in
//! the URL, `Authorization: Bearer T`, or the `framecast_token` cookie that a page opened
//! with `?token=` sets, so the page's own requests carry it. Anything else gets 401. Plain
//! HTTP has no encryption: whoever can watch the network can copy the token (and the video).
//!
//! Chrome (and other Chromium-based browsers) shows a multipart part only once it has read
//! the next part's headers, which delays every frame by one frame interval. The remedy (as
//! µStreamer's `advance_headers`) is to send the next boundary and part headers right after
//! each JPEG: `/stream.mjpg?advance_headers=1`, which the page uses. Those parts carry no
//! `Content-Length`, so other clients get the plain stream.

use std::fmt::Write as _;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::RecvTimeoutError;
use tracing::{debug, info, warn};

use super::metrics::{wants_openmetrics, Metrics};
use super::transport::{Feed, Transport};
use crate::clock::now_us;
use crate::hub::{Shared, ViewerKind};
use crate::net::conn::{accept_loop, Next};
use crate::net::io::write_all_vectored;
use crate::stage::{self, Stage};

/// How HTTP viewers are named in the `links` stats.
pub const KIND: ViewerKind = ViewerKind::new("http");

/// The multipart boundary of `/stream.mjpg`.
pub const BOUNDARY: &str = "framecastframe";
/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once.
pub const MAX_CLIENTS: usize = 64;
/// Kernel send buffer of an MJPEG client (Linux doubles it): about two 720p frames.
const CLIENT_SNDBUF: usize = 32 * 1024;
/// How long a write to a client may block before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// What every client thread shares.
#[derive(Clone)]
struct Ctx {
    feed: Feed,
    metrics: Arc<Metrics>,
    /// The access token every request must carry (when the sender has a key).
    token: Option<Arc<str>>,
}

/// The cookie a page opened with `?token=` sets, so that its own requests carry the token.
pub const TOKEN_COOKIE: &str = "framecast_token";

/// The HTTP transport: a listening socket, and the access token when the sender has a key.
pub struct Http {
    listener: TcpListener,
    token: Option<String>,
}

impl Http {
    pub fn new(listener: TcpListener, token: Option<String>) -> Self {
        Http { listener, token }
    }
}

impl Transport for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    /// Serves HTTP until the hub closes (the stream ended).
    fn serve(self: Box<Self>, feed: Feed) -> anyhow::Result<()> {
        let Http { listener, token } = *self;
        let addr = listener.local_addr().context("HTTP socket")?;
        match &token {
            None => {
                info!(%addr, "HTTP: page at http://{addr}/, MJPEG at /stream.mjpg, /snapshot.jpg, /stats, /metrics")
            }
            Some(t) => info!(
                %addr,
                "HTTP (key required): page at http://{addr}/?token={t}, MJPEG at /stream.mjpg?token={t}, \
                 /snapshot.jpg, /stats, /metrics (token in ?token=, a Bearer header or the page's cookie)"
            ),
        }
        let metrics = Arc::new(Metrics::new(feed.hub.clone(), feed.meter.clone(), feed.stats.clone()));
        let ctx = Ctx { feed, metrics, token: token.map(Arc::from) };
        let active = Arc::new(AtomicUsize::new(0));
        let mut clients: Vec<(Stage, TcpStream)> = Vec::new();
        accept_loop(&listener, &|| ctx.feed.hub.is_closed(), |stream, peer| {
            clients.retain(|(h, _)| !h.is_finished());
            match admit(stream, peer, &ctx, &active) {
                Ok(Some(client)) => clients.push(client),
                Ok(None) => {}
                Err(e) => warn!(%peer, error = format!("{e:#}"), "HTTP: cannot serve a client"),
            }
            Next::Accept
        })
        .context("HTTP socket")?;
        // The stream is over: end the clients still connected (a stalled one would otherwise
        // hold its thread until its write times out).
        for (h, stream) in clients {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let _ = h.join();
        }
        Ok(())
    }
}

/// Starts a client's thread, or refuses the client when too many are connected. Returns the
/// thread and a handle on its socket, to end it when the stream ends.
fn admit(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    active: &Arc<AtomicUsize>,
) -> anyhow::Result<Option<(Stage, TcpStream)>> {
    if active.load(Ordering::Relaxed) >= MAX_CLIENTS {
        warn!(%peer, "HTTP: too many clients; refusing one");
        let _ = respond(&mut stream, 503, "text/plain", b"too many clients\n", "", false);
        return Ok(None);
    }
    let Ok(keep) = stream.try_clone() else { return Ok(None) };
    active.fetch_add(1, Ordering::Relaxed);
    let (ctx, mine) = (ctx.clone(), active.clone());
    let spawned = stage::spawn(format!("http-{peer}"), move || {
        let fin = stream.try_clone();
        if let Err(e) = handle(stream, peer, &ctx) {
            debug!(%peer, error = %e, "HTTP client gone");
        }
        // `keep`, kept by the accept loop, holds the socket open until the next accept:
        // close the connection now.
        if let Ok(s) = fin {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        mine.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    });
    let h = spawned.inspect_err(|_| {
        active.fetch_sub(1, Ordering::Relaxed);
    })?;
    Ok(Some((h, keep)))
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    Closed,
    TooLarge,
    Timeout,
}

/// Reads a request head (through the blank line) into `buf`, within the size and time limits.
fn read_head(stream: &mut impl Read, buf: &mut [u8], deadline: Instant) -> Result<usize, HeadError> {
    let mut n = 0;
    loop {
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(n);
        }
        if n == buf.len() {
            return Err(HeadError::TooLarge);
        }
        match stream.read(&mut buf[n..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(k) => n += k,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Closed),
        }
        if Instant::now() >= deadline {
            return Err(HeadError::Timeout);
        }
    }
}

fn handle(mut stream: TcpStream, peer: SocketAddr, ctx: &Ctx) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(250)))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; MAX_HEAD];
    let n = match read_head(&mut stream, &mut buf, Instant::now() + HEAD_TIMEOUT) {
        Ok(n) => n,
        Err(HeadError::Closed) => return Ok(()),
        Err(HeadError::TooLarge) => {
            debug!(%peer, "HTTP: request head over {MAX_HEAD} bytes");
            return respond(&mut stream, 431, "text/plain", b"request head too large\n", "", false);
        }
        Err(HeadError::Timeout) => {
            debug!(%peer, "HTTP: no complete request within {HEAD_TIMEOUT:?}");
            return respond(&mut stream, 408, "text/plain", b"request timeout\n", "", false);
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..n]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return respond(&mut stream, 400, "text/plain", b"incomplete request\n", "", false);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return respond(&mut stream, 431, "text/plain", b"too many headers\n", "", false);
        }
        Err(e) => {
            debug!(%peer, error = %e, "HTTP: bad request");
            return respond(&mut stream, 400, "text/plain", format!("bad request: {e}\n").as_bytes(), "", false);
        }
    }
    request(&mut stream, peer, ctx, &req)
}

/// Answers a parsed request: checks the method and the access token, then routes it.
fn request(stream: &mut TcpStream, peer: SocketAddr, ctx: &Ctx, req: &httparse::Request) -> io::Result<()> {
    let method = req.method.unwrap_or("");
    let (path, query) = req.path.unwrap_or("/").split_once('?').unwrap_or((req.path.unwrap_or("/"), ""));
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return respond(stream, 405, "text/plain", b"only GET and HEAD\n", "Allow: GET, HEAD\r\n", false);
        }
    };
    debug!(%peer, method, path, "HTTP request");
    let page_headers = match authorize(ctx, req.headers, query) {
        Ok(h) => h,
        Err(why) => {
            info!(%peer, path, "HTTP: {why}; refused (401)");
            return respond(
                stream,
                401,
                "text/plain",
                b"this stream needs its access token: add ?token=TOKEN to the URL (the sender logs the \
                  URL at start), or send Authorization: Bearer TOKEN\n",
                "WWW-Authenticate: Bearer realm=\"framecast\"\r\n",
                head_only,
            );
        }
    };
    match route(path, query) {
        Route::Page => respond(stream, 200, "text/html; charset=utf-8", PAGE.as_bytes(), &page_headers, head_only),
        Route::Stream { advance } => stream_mjpeg(stream, peer, ctx, head_only, advance),
        Route::Snapshot => snapshot(stream, peer, ctx, head_only),
        Route::Stats => match ctx.feed.stats.get() {
            Some(json) => respond(stream, 200, "application/json", json.as_bytes(), "", head_only),
            None => respond(stream, 503, "application/json", b"{\"error\":\"no stats yet\"}", "", head_only),
        },
        Route::Metrics => {
            let accept = header(req.headers, "accept").unwrap_or("");
            let (body, content_type) = ctx.metrics.render(wants_openmetrics(accept));
            respond(stream, 200, content_type, body.as_bytes(), "", head_only)
        }
        Route::NotFound => respond(
            stream,
            404,
            "text/plain",
            b"not found: try /, /stream.mjpg, /snapshot.jpg, /stats or /metrics (also /stream, /snapshot, \
              /?action=stream and /?action=snapshot)\n",
            "",
            head_only,
        ),
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Page,
    /// MJPEG; `advance`: each part's headers sent right after the previous JPEG.
    Stream {
        advance: bool,
    },
    Snapshot,
    Stats,
    Metrics,
    NotFound,
}

/// Routes a path and its query string: framecast's URLs, and mjpg-streamer's and µStreamer's.
fn route(path: &str, query: &str) -> Route {
    let params = || query.split('&');
    let advance = params().any(|kv| kv == "advance_headers=1");
    match path {
        "/" | "/index.html" => match params().find_map(|kv| kv.strip_prefix("action=")) {
            None => Route::Page,
            Some("stream") => Route::Stream { advance },
            Some("snapshot") => Route::Snapshot,
            Some(_) => Route::NotFound,
        },
        "/stream.mjpg" | "/stream" => Route::Stream { advance },
        "/snapshot.jpg" | "/snapshot" => Route::Snapshot,
        "/stats" => Route::Stats,
        "/metrics" => Route::Metrics,
        _ => Route::NotFound,
    }
}

/// The first value of a header, if it is text.
fn header<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a str> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
}

/// With a key: the token the request carries must match. Returns the headers a page
/// response adds (the cookie, when the token came in the URL), or why it is refused.
fn authorize(ctx: &Ctx, headers: &[httparse::Header], query: &str) -> Result<String, &'static str> {
    let Some(token) = &ctx.token else { return Ok(String::new()) };
    match presented_token(headers, query) {
        Some((t, true)) if crate::net::secure::token_matches(t, token) => {
            Ok(format!("Set-Cookie: {TOKEN_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict\r\n"))
        }
        Some((t, false)) if crate::net::secure::token_matches(t, token) => Ok(String::new()),
        Some(_) => Err("wrong access token"),
        None => Err("no access token"),
    }
}

/// The token a request carries, and whether it came in the query string: `?token=`, then
/// `Authorization: Bearer`, then the page's cookie.
fn presented_token<'a>(headers: &'a [httparse::Header<'a>], query: &'a str) -> Option<(&'a str, bool)> {
    if let Some(t) = query.split('&').find_map(|kv| kv.strip_prefix("token=")) {
        return Some((t, true));
    }
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    if let Some(t) = values("authorization").find_map(|v| v.trim().strip_prefix("Bearer ")) {
        return Some((t.trim(), false));
    }
    values("cookie")
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE).and_then(|r| r.strip_prefix('=')))
        .map(|t| (t, false))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra_headers: &str,
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Access-Control-Allow-Origin: *\r\nConnection: close\r\n{extra_headers}\r\n",
        reason(status),
        body.len()
    );
    let body = if head_only { &[][..] } else { body };
    write_all_vectored(stream, &mut [IoSlice::new(head.as_bytes()), IoSlice::new(body)])?;
    stream.flush()
}

/// `X-Timestamp`: the capture time, seconds on the sender's monotonic clock.
fn timestamp(f: &Shared) -> String {
    format!("{}.{:06}", f.header.capture_us / 1_000_000, f.header.capture_us % 1_000_000)
}

/// `X-Framecast-Clock`: which clock `X-Timestamp` is on ([`crate::clock::clock_id`] in hex),
/// so a framecast reading this stream on the same host can use the timestamp as it is.
fn clock_hex() -> String {
    crate::clock::clock_id().iter().map(|b| format!("{b:02x}")).collect()
}

fn stream_mjpeg(stream: &mut TcpStream, peer: SocketAddr, ctx: &Ctx, head_only: bool, advance: bool) -> io::Result<()> {
    // A small send buffer: a client that reads slowly holds a frame or two in the kernel,
    // not seconds of video; its newest-wins slot drops the rest.
    let _ = socket2::SockRef::from(&*stream).set_send_buffer_size(CLIENT_SNDBUF);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
         Cache-Control: no-store, no-cache, must-revalidate, max-age=0\r\nPragma: no-cache\r\nExpires: 0\r\n\
         Access-Control-Allow-Origin: *\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n--{BOUNDARY}\r\n{}",
        if advance { "Content-Type: image/jpeg\r\n\r\n" } else { "" }
    );
    stream.write_all(head.as_bytes())?;
    stream.flush()?;
    if head_only {
        return Ok(());
    }
    let sub = ctx.feed.hub.subscribe(KIND, peer.to_string());
    info!(%peer, viewer = sub.id, advance_headers = advance, "HTTP viewer joined /stream.mjpg");
    // With advance headers the next part's headers follow each frame at once: Chrome shows
    // a part only when it has read the next part's headers. Those cannot carry the next
    // frame's length, so it is opt-in (the page uses it); other clients get Content-Length.
    let tail = if advance {
        format!("\r\n--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n")
    } else {
        format!("\r\n--{BOUNDARY}\r\n")
    };
    let mut part = String::with_capacity(200);
    let clock = clock_hex();
    loop {
        let f = match sub.rx.recv_timeout(POLL) {
            Ok(f) => f,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let jpeg = f.jpeg.as_slice();
        part.clear();
        if !advance {
            let _ = write!(
                part,
                "Content-Type: image/jpeg\r\nContent-Length: {}\r\nX-Timestamp: {}\r\nX-Framecast-Seq: {}\r\n\
                 X-Framecast-Clock: {clock}\r\n\r\n",
                jpeg.len(),
                timestamp(&f),
                f.header.seq
            );
        }
        let res = write_all_vectored(
            stream,
            &mut [IoSlice::new(part.as_bytes()), IoSlice::new(jpeg), IoSlice::new(tail.as_bytes())],
        )
        .and_then(|()| stream.flush());
        if let Err(e) = res {
            info!(%peer, viewer = sub.id, reason = %e, "HTTP viewer left");
            return Ok(());
        }
        ctx.feed.sent_captured(&sub, jpeg.len() as u64, f.header.capture_us);
    }
}

/// The oldest frame `/snapshot.jpg` serves as it is; an older one (encoding pauses while
/// nobody streams) wakes the encoder for the next captured frame instead.
const SNAPSHOT_MAX_AGE_US: u64 = 200_000;

fn snapshot(stream: &mut TcpStream, peer: SocketAddr, ctx: &Ctx, head_only: bool) -> io::Result<()> {
    // Younger than SNAPSHOT_MAX_AGE: a poller (another framecast's `--source .../snapshot.jpg`,
    // Home Assistant) gets a picture at most that old, and repeats only when it polls faster.
    let fresh = |f: &Shared| now_us().saturating_sub(f.header.capture_us) < SNAPSHOT_MAX_AGE_US;
    let frame = match ctx.feed.hub.latest().filter(fresh) {
        Some(f) => Some(f),
        None => {
            // Nothing recent (encoding pauses while nobody watches): watch for one frame.
            let sub = ctx.feed.hub.subscribe(KIND, format!("{peer} (snapshot)"));
            sub.rx.recv_timeout(Duration::from_secs(3)).ok()
        }
    };
    match frame {
        Some(f) => {
            let extra = format!(
                "X-Timestamp: {}\r\nX-Framecast-Seq: {}\r\nX-Framecast-Clock: {}\r\n",
                timestamp(&f),
                f.header.seq,
                clock_hex()
            );
            respond(stream, 200, "image/jpeg", f.jpeg.as_slice(), &extra, head_only)
        }
        None => respond(stream, 503, "text/plain", b"no frame yet\n", "Retry-After: 1\r\n", head_only),
    }
}

/// The page at `/`: the stream, and stats refreshed every second from `/stats`.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>framecast</title>
<style>
  body { margin: 0; background: #111; color: #ddd; font: 14px/1.4 system-ui, sans-serif; }
  main { max-width: 100vw; display: flex; flex-direction: column; align-items: center; }
  img { display: block; max-width: 100%; height: auto; background: #000; }
  #stats { padding: 6px 10px; font-variant-numeric: tabular-nums; }
  #stats span { margin-right: 1.2em; white-space: nowrap; }
</style>
</head>
<body>
<main>
  <img id="video" src="stream.mjpg?advance_headers=1" alt="live stream">
  <div id="stats"><span>connecting...</span></div>
</main>
<script>
  const box = document.getElementById("stats");
  function show(s) {
    const parts = [
      ["fps", s.fps.toFixed(1)],
      ["kbit/s", Math.round(s.kbps)],
      ["KB/frame", (s.mean_frame_bytes / 1000).toFixed(1)],
      ["quality", s.quality == null ? "-" : s.quality === 0 ? "camera" : s.quality],
      ["viewers", s.viewers === undefined ? "-" : s.viewers],
    ];
    box.innerHTML = parts.map(([k, v]) => `<span>${k} <b>${v}</b></span>`).join("");
  }
  async function poll() {
    try {
      const r = await fetch("stats", { cache: "no-store" });
      if (r.ok) show(await r.json());
    } catch (e) { box.textContent = "stats unavailable"; }
  }
  poll();
  setInterval(poll, 1000);
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Script;

    #[test]
    fn head_split_across_reads() {
        let mut buf = [0u8; 64];
        let mut r =
            Script::chunks(&[&b"GET / HT"[..], b"TP/1.1\r\nHost: x\r", b"\n\r\n"]).then_fail(io::ErrorKind::WouldBlock);
        let n = read_head(&mut r, &mut buf, Instant::now() + Duration::from_secs(1)).unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[test]
    fn oversized_and_slow_heads_are_refused() {
        let mut buf = [0u8; 16];
        let mut r = Script::whole(&[b'a'; 40]).then_fail(io::ErrorKind::WouldBlock);
        assert_eq!(read_head(&mut r, &mut buf, Instant::now() + Duration::from_secs(1)), Err(HeadError::TooLarge));
        let mut r = Script::whole(b"GET / HTTP/1.1\r\n").then_fail(io::ErrorKind::WouldBlock);
        let mut big = [0u8; 64];
        assert_eq!(read_head(&mut r, &mut big, Instant::now()), Err(HeadError::Timeout));
        let mut r: &[u8] = b"GET /";
        assert_eq!(read_head(&mut r, &mut big, Instant::now() + Duration::from_secs(1)), Err(HeadError::Closed));
    }

    #[test]
    fn tokens_are_found_in_the_query_a_bearer_header_or_the_cookie() {
        let h = |name: &'static str, value: &'static [u8]| httparse::Header { name, value };
        assert_eq!(presented_token(&[], "advance_headers=1&token=abc"), Some(("abc", true)));
        assert_eq!(presented_token(&[h("Authorization", b"Bearer xyz")], ""), Some(("xyz", false)));
        assert_eq!(presented_token(&[h("cookie", b"a=b; framecast_token=t1")], ""), Some(("t1", false)));
        assert_eq!(
            presented_token(&[h("Cookie", b"framecast_tokenx=t1"), h("Authorization", b"Basic Zm9v")], ""),
            None
        );
        assert_eq!(presented_token(&[], "tokens=1"), None);
    }

    #[test]
    fn compatibility_urls_route_as_framecasts_own() {
        assert_eq!(route("/", ""), Route::Page);
        assert_eq!(route("/index.html", "token=abc"), Route::Page);
        let plain = Route::Stream { advance: false };
        for (path, query) in [
            ("/stream.mjpg", ""),
            ("/stream", ""),
            ("/", "action=stream"),
            ("/index.html", "action=stream"),
            ("/", "action=stream&1700000000000"),
            ("/", "action=stream&cacheBust=1700000000000"),
            ("/", "action=stream&timestamp=1700000000000"),
            ("/", "token=t&action=stream"),
        ] {
            assert_eq!(route(path, query), plain, "{path}?{query}");
        }
        assert_eq!(route("/stream", "advance_headers=1"), Route::Stream { advance: true });
        assert_eq!(route("/", "action=stream&advance_headers=1"), Route::Stream { advance: true });
        for (path, query) in [
            ("/snapshot.jpg", ""),
            ("/snapshot", ""),
            ("/", "action=snapshot"),
            ("/", "action=snapshot&bypassCache=1700000000000"),
            ("/snapshot", "_=1700000000000"),
        ] {
            assert_eq!(route(path, query), Route::Snapshot, "{path}?{query}");
        }
        assert_eq!(route("/metrics", ""), Route::Metrics);
        assert_eq!(route("/stats", ""), Route::Stats);
        for (path, query) in [("/", "action=static"), ("/streams", ""), ("/stream/", ""), ("/webcam/", "action=stream")]
        {
            assert_eq!(route(path, query), Route::NotFound, "{path}?{query}");
        }
    }

    #[test]
    fn page_polls_stats_and_shows_the_stream() {
        assert!(PAGE.contains(r#"src="stream.mjpg?advance_headers=1""#));
        assert!(PAGE.contains(r#"fetch("stats""#));
        assert!(PAGE.contains("viewport"));
    }
}
