//! Pipes and files: `--source -` (standard input) and `--source PATH` (a FIFO, a character
//! device or a file). The format is recognised from the first bytes ([`InputFormat::Auto`]) or
//! named by `--input-format`, and stated in the log: MJPEG (forwarded without re-encoding),
//! Y4M, or raw frames ([`super::raw`]).

use std::path::PathBuf;

use super::raw::InputFormat;
use super::{CaptureError, FrameSource};

/// What to open.
#[derive(Clone, Debug)]
pub struct PipeSpec {
    /// `None`: standard input.
    pub path: Option<PathBuf>,
    pub format: InputFormat,
    /// `--size`, if given (needed for raw frames; else it only sets the size cap).
    pub size: Option<(u32, u32)>,
    /// `--loop`: a regular file starts over at its end.
    pub looping: bool,
}

/// Opens the pipe or file and recognises its format.
pub fn open(spec: &PipeSpec) -> Result<Box<dyn FrameSource>, CaptureError> {
    let _ = spec;
    unimplemented!()
}
