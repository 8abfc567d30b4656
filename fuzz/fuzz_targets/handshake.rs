//! Arbitrary bytes as the peer's hello, for both roles.
//!
//! Checks, besides "never panics":
//! - every prefix gives "need more" until a decision, and the decision never changes as more
//!   bytes arrive (an error stays the same error, an accepted hello the same hello);
//! - an accepted hello announces the expected role and this version, and re-encodes to the
//!   24 bytes it came from;
//! - a bad magic shows only bytes that were sent, ending at the first wrong one;
//! - `MessageReader::read_hello` gives the same result over one read and over one byte per
//!   read, and reads no byte past the one that decided (the first wrong magic byte, the end
//!   of the version field, or the end of the hello).

#![no_main]

use std::time::Duration;

use framecast::net::io::{MessageReader, NetError};
use framecast::net::proto::{Hello, ProtocolError, Role, HELLO_LEN, MAGIC, VERSION};
use framecast::testutil::Script;
use framecast_fuzz::normalize;
use libfuzzer_sys::fuzz_target;

/// The decision on a prefix, with `BadMagic::got` cut after the first wrong byte.
fn judge(data: &[u8], role: Role) -> Result<Option<Hello>, ProtocolError> {
    Hello::decode(data, role).map_err(|e| normalize(e, data))
}

/// Bytes the reader must have read before it could decide `r`.
fn decided_after(r: &Result<Option<Hello>, ProtocolError>) -> usize {
    match r {
        Err(ProtocolError::BadMagic { got, .. }) => got.len(),
        Err(ProtocolError::Version { .. }) => 6,
        _ => HELLO_LEN,
    }
}

fuzz_target!(|data: &[u8]| {
    for role in [Role::Sender, Role::Receiver] {
        let whole = judge(data, role);
        let mut decided: Option<(usize, Result<Option<Hello>, ProtocolError>)> = None;
        for n in 0..=data.len().min(HELLO_LEN + 8) {
            let r = judge(&data[..n], role);
            match (&decided, &r) {
                (None, Ok(None)) => {}
                (None, _) => decided = Some((n, r)),
                (Some((_, first)), _) => assert_eq!(first, &r, "decision changed at {n} bytes"),
            }
        }
        match &decided {
            Some((n, first)) => {
                assert_eq!(first, &whole);
                assert_eq!(*n, decided_after(first), "{first:?} decided after {n} bytes");
            }
            None => {
                assert!(data.len() < HELLO_LEN);
                assert_eq!(whole, Ok(None));
            }
        }
        match &whole {
            Ok(Some(h)) => {
                assert_eq!((h.role, h.version), (role, VERSION));
                let mut b = Vec::new();
                h.encode(&mut b);
                assert_eq!(b, data[..HELLO_LEN]);
            }
            Err(ProtocolError::BadMagic { got, .. }) => assert_ne!(got[..], MAGIC[..got.len()]),
            Err(ProtocolError::Version { ours, theirs }) => assert!(*ours == VERSION && *theirs != VERSION),
            Err(ProtocolError::WrongRole { expected, got, .. }) => assert!(*expected == role && *got != role),
            Err(ProtocolError::Malformed { offset, .. }) => assert!(*offset == 6 || *offset == 7),
            Err(e) => panic!("not a handshake error: {e:?}"),
            Ok(None) => {}
        }

        // Through the reader: one read, and one byte per read.
        let mut outcomes = Vec::new();
        for (bytewise, pieces) in [(false, Script::whole(data)), (true, Script::bytewise(data))] {
            let mut r = MessageReader::new(pieces);
            let got = match r.read_hello(role, Duration::from_secs(1)) {
                Ok(h) => Ok(Some(h)),
                Err(NetError::Protocol { error, .. }) => Err(normalize(error, data)),
                Err(NetError::ClosedInHandshake { have }) => {
                    assert_eq!(have, data.len());
                    Ok(None)
                }
                Err(e) => panic!("unexpected error from an in-memory stream: {e:?}"),
            };
            assert_eq!(got, whole);
            if bytewise && whole != Ok(None) {
                assert_eq!(r.get_ref().handed_out(), decided_after(&whole), "read past the decision");
            }
            outcomes.push(got);
        }
        assert_eq!(outcomes[0], outcomes[1]);
    }
});
