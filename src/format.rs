//! Pixel formats shared by capture, the codec and the wire: how a frame's chroma is sampled.
//!
//! Its own module so that a source or the codec can name a format without importing the
//! network protocol. The wire code of a [`Subsampling`] is the protocol's business:
//! `net::proto` adds `Subsampling::to_wire` and `Subsampling::from_wire`.

use std::fmt;

/// Chroma subsampling of a planar YCbCr frame or of a JPEG. The discriminants are
/// libjpeg-turbo's `TJSAMP` numbers, which the frame header's `subsampling` byte also uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subsampling {
    S444 = 0,
    S422 = 1,
    S420 = 2,
    Gray = 3,
}

impl Subsampling {
    /// Every subsampling, in `TJSAMP` order.
    pub const ALL: [Subsampling; 4] = [Self::S444, Self::S422, Self::S420, Self::Gray];

    /// The name used on the command line and in stats.
    pub fn name(self) -> &'static str {
        match self {
            Self::S444 => "444",
            Self::S422 => "422",
            Self::S420 => "420",
            Self::Gray => "gray",
        }
    }
}

impl fmt::Display for Subsampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_cli_values() {
        let names: Vec<String> = Subsampling::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["444", "422", "420", "gray"]);
    }
}
