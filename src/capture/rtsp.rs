//! RTSP cameras: `--source rtsp://[user:pass@]host[:port]/path`, an M-JPEG (RTP/JPEG, RFC
//! 2435) stream played with the receiver's RTSP client ([`crate::rtsp::client`]) and
//! depacketised into JPEG images ([`crate::rtp::depacketize`]).

use super::{CaptureError, FrameSource};

/// Connects, plays the stream and waits for its first frame.
pub fn open(url: &str, max_frame: usize) -> Result<Box<dyn FrameSource>, CaptureError> {
    let _ = (url, max_frame);
    unimplemented!()
}
