//! The native protocol: [`proto`] is the pure wire format, [`io`] reads and writes it on
//! sockets, [`conn`] accepts and makes connections (one accept loop, connect policies).
//! `docs/protocol.md` is the spec.

pub mod conn;
pub mod io;
pub mod proto;
pub mod secure;
pub mod udp;

pub use io::{Event, MessageReader, MessageWriter, NetError};
pub use proto::{Ack, Decoder, FrameHeader, Hello, Message, ProtocolError, Role, StreamInfo};
