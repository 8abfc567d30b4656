//! Restart markers: pure code over JPEG bytes, no I/O and no threads.
//!
//! [`stitch`] joins JPEGs that are horizontal bands of one image into one baseline JPEG;
//! [`split`] cuts a JPEG with restart markers into pieces of whole MCU rows that decode on
//! their own ([`write_piece`]). Both touch only markers and headers: the entropy-coded data
//! between restart markers is copied as it is, and libjpeg-turbo does all the coding.
//!
//! Every error names the byte offset of what is wrong; no input makes these functions panic,
//! and nothing is allocated from a size the input claims (only per marker actually found).

use std::ops::Range;

const SOI: u8 = 0xd8;
const EOI: u8 = 0xd9;
const SOS: u8 = 0xda;
const DQT: u8 = 0xdb;
const DRI: u8 = 0xdd;
const DHT: u8 = 0xc4;
const RST0: u8 = 0xd0;

/// A JPEG that cannot be stitched or split as it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    #[error("not a JPEG: no SOI marker at byte 0")]
    NoSoi,
    #[error("the JPEG ends at byte {at} inside its headers (a {what})")]
    Truncated { at: usize, what: &'static str },
    #[error("bad {what} at byte {at}")]
    BadSegment { at: usize, what: &'static str },
    #[error("restart marker out of sequence at byte {at}: expected RST{want}, got RST{got}")]
    OutOfSequence { at: usize, want: u8, got: u8 },
    #[error(
        "restart marker at byte {at} is past the image's end: a DRI of {interval} MCUs over {mcus} MCUs makes {want} intervals"
    )]
    PastEnd { at: usize, interval: u16, mcus: u64, want: u64 },
    #[error(
        "the scan ends at byte {at} after {got} restart intervals, but a DRI of {interval} MCUs over {mcus} MCUs makes {want}: the DRI does not match or a slice ended early"
    )]
    EndsEarly { at: usize, got: u64, interval: u16, mcus: u64, want: u64 },
    #[error("unexpected marker 0xFF{marker:02X} in the entropy-coded data at byte {at}")]
    UnexpectedMarker { at: usize, marker: u8 },
    #[error("no bands to stitch")]
    NoBands,
    #[error("band {band} cannot be stitched: {why}")]
    BandMismatch { band: usize, why: String },
    #[error("stitched image is {height} rows high, more than a JPEG can say (65535)")]
    TooHigh { height: u64 },
}

impl RestartError {
    /// True for an error in the headers (before the entropy-coded data), which the serial
    /// decoder reports in its own words.
    pub fn in_header(&self) -> bool {
        matches!(self, RestartError::NoSoi | RestartError::Truncated { .. } | RestartError::BadSegment { .. })
    }
}

/// What the headers of a baseline JPEG say, with the offsets `split` and `stitch` need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub width: u16,
    pub height: u16,
    /// Offset of the SOF's two height bytes.
    pub height_at: usize,
    /// MCU size in pixels.
    pub mcu_w: u16,
    pub mcu_h: u16,
    /// Restart interval in MCUs (0: no DRI, or a DRI of 0).
    pub interval: u16,
    /// Offset of the first entropy-coded byte (just after the SOS segment).
    pub scan_at: usize,
    /// Why the JPEG cannot be split on rows (a progressive or multi-scan JPEG), if so.
    pub serial: Option<&'static str>,
    /// The DQT, DHT and SOF segments, as byte ranges (compared by `stitch`).
    tables: Vec<(u8, Range<usize>)>,
}

impl Header {
    pub fn mcus_per_row(&self) -> u64 {
        u64::from(self.width).div_ceil(u64::from(self.mcu_w.max(1)))
    }

    pub fn mcu_rows(&self) -> u64 {
        u64::from(self.height).div_ceil(u64::from(self.mcu_h.max(1)))
    }

    /// How many restart intervals the scan must hold (1 without a DRI).
    pub fn intervals(&self) -> u64 {
        let mcus = self.mcus_per_row() * self.mcu_rows();
        if self.interval == 0 {
            return 1;
        }
        mcus.div_ceil(u64::from(self.interval))
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

/// Reads the headers from SOI to the end of the first SOS segment.
pub fn parse_header(jpeg: &[u8]) -> Result<Header, RestartError> {
    if jpeg.get(..2) != Some(&[0xff, SOI][..]) {
        return Err(RestartError::NoSoi);
    }
    let mut h = Header::default();
    let mut at = 2;
    let mut components = 0u8;
    loop {
        let (marker, seg) = next_segment(jpeg, &mut at)?;
        match marker {
            0xc0 | 0xc1 => components = read_sof(jpeg, seg.clone(), &mut h)?,
            0xc2 | 0xc3 | 0xc5..=0xc7 | 0xc9..=0xcb | 0xcd..=0xcf => {
                components = read_sof(jpeg, seg.clone(), &mut h)?;
                h.serial = Some("not a baseline or extended sequential Huffman JPEG");
            }
            DRI => {
                let ok = seg.len() == 4;
                h.interval = be16(jpeg, seg.start + 2)
                    .filter(|_| ok)
                    .ok_or(RestartError::BadSegment { at: seg.start, what: "DRI segment (its length is not 4)" })?;
            }
            SOS => return read_sos(jpeg, seg, components, h),
            _ => {}
        }
        if matches!(marker, DQT | DHT | 0xc0 | 0xc1) {
            h.tables.push((marker, seg));
        }
    }
}

/// The next marker segment at `*at` (fill bytes skipped): its marker and the byte range of
/// its length field and body. Moves `*at` past it.
fn next_segment(jpeg: &[u8], at: &mut usize) -> Result<(u8, Range<usize>), RestartError> {
    let start = *at;
    if jpeg.get(start) != Some(&0xff) {
        return Err(match jpeg.get(start) {
            None => RestartError::Truncated { at: start, what: "marker" },
            Some(_) => RestartError::BadSegment { at: start, what: "marker (no 0xFF where a segment should start)" },
        });
    }
    let mut m = start + 1;
    while jpeg.get(m) == Some(&0xff) {
        m += 1;
    }
    let marker = *jpeg.get(m).ok_or(RestartError::Truncated { at: m, what: "marker" })?;
    if marker == EOI || marker == 0 || (RST0..RST0 + 8).contains(&marker) || marker == 0x01 {
        return Err(RestartError::BadSegment { at: start, what: "marker before the scan header" });
    }
    let len = usize::from(be16(jpeg, m + 1).ok_or(RestartError::Truncated { at: m + 1, what: "segment length" })?);
    let end = m + 1 + len;
    if len < 2 {
        return Err(RestartError::BadSegment { at: m + 1, what: "segment length (less than 2)" });
    }
    if end > jpeg.len() {
        return Err(RestartError::Truncated { at: jpeg.len(), what: "segment" });
    }
    *at = end;
    Ok((marker, m + 1..end))
}

/// Reads a SOF segment into `h`; returns its component count.
fn read_sof(jpeg: &[u8], seg: Range<usize>, h: &mut Header) -> Result<u8, RestartError> {
    let bad = |what| RestartError::BadSegment { at: seg.start, what };
    let body = &jpeg[seg.clone()];
    let n = *body.get(7).ok_or(bad("SOF segment (too short)"))?;
    if !(1..=4).contains(&n) || body.len() != 8 + 3 * usize::from(n) {
        return Err(bad("SOF segment (component count or length)"));
    }
    h.height = be16(body, 3).unwrap_or(0);
    h.width = be16(body, 5).unwrap_or(0);
    h.height_at = seg.start + 3;
    if h.width == 0 || h.height == 0 {
        h.serial = Some("the SOF has no width or no height (DNL)");
    }
    let (mut hmax, mut vmax) = (1u16, 1u16);
    for c in body[8..].chunks_exact(3) {
        let (hs, vs) = (u16::from(c[1] >> 4), u16::from(c[1] & 15));
        if !(1..=4).contains(&hs) || !(1..=4).contains(&vs) {
            return Err(bad("SOF segment (sampling factor)"));
        }
        (hmax, vmax) = (hmax.max(hs), vmax.max(vs));
    }
    (h.mcu_w, h.mcu_h) = if n == 1 { (8, 8) } else { (8 * hmax, 8 * vmax) };
    Ok(n)
}

fn read_sos(jpeg: &[u8], seg: Range<usize>, components: u8, mut h: Header) -> Result<Header, RestartError> {
    if components == 0 {
        return Err(RestartError::BadSegment { at: seg.start, what: "SOS before any SOF" });
    }
    let ns = *jpeg.get(seg.start + 2).ok_or(RestartError::BadSegment { at: seg.start, what: "SOS segment" })?;
    if ns != components {
        h.serial.get_or_insert("the first scan does not hold every component");
    }
    h.scan_at = seg.end;
    Ok(h)
}

/// The entropy-coded data of each restart interval of the scan starting at `h.scan_at`,
/// markers and fill bytes excluded, checked against what the header says: RST numbers in
/// sequence, as many intervals as the DRI and image size make, then EOI.
pub fn intervals(jpeg: &[u8], h: &Header) -> Result<Vec<Range<usize>>, RestartError> {
    let want = h.intervals();
    let mcus = h.mcus_per_row() * h.mcu_rows();
    let mut out = Vec::new();
    let (mut start, mut at) = (h.scan_at, h.scan_at);
    while let Some(ff) = jpeg.get(at..).and_then(|rest| rest.iter().position(|&b| b == 0xff)).map(|p| at + p) {
        let mut m = ff + 1;
        while jpeg.get(m) == Some(&0xff) {
            m += 1;
        }
        let Some(&marker) = jpeg.get(m) else { break };
        at = m + 1;
        if marker == 0 {
            continue;
        }
        let got = out.len() as u64;
        if (RST0..RST0 + 8).contains(&marker) {
            if got + 1 >= want {
                return Err(RestartError::PastEnd { at: ff, interval: h.interval, mcus, want });
            }
            let want_n = (got % 8) as u8;
            if marker - RST0 != want_n {
                return Err(RestartError::OutOfSequence { at: ff, want: want_n, got: marker - RST0 });
            }
            out.push(start..ff);
            start = at;
        } else if marker == EOI {
            out.push(start..ff);
            if got + 1 != want {
                return Err(RestartError::EndsEarly { at: ff, got: got + 1, interval: h.interval, mcus, want });
            }
            return Ok(out);
        } else {
            return Err(RestartError::UnexpectedMarker { at: ff, marker });
        }
    }
    let got = out.len() as u64;
    Err(RestartError::EndsEarly { at: jpeg.len(), got, interval: h.interval, mcus, want })
}

/// One piece of a split JPEG: whole restart intervals covering whole MCU rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// First pixel row of the piece in the image, and its number of rows.
    pub first_row: usize,
    pub rows: usize,
    /// The restart intervals it holds (indexes into [`Pieces::intervals`]).
    pub intervals: Range<usize>,
}

/// A JPEG cut on restart boundaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pieces {
    pub header: Header,
    /// Every restart interval's entropy-coded data (see [`intervals`]).
    pub intervals: Vec<Range<usize>>,
    pub pieces: Vec<Piece>,
    /// Pixel rows in each restart interval (the last may have fewer).
    pub rows_per_interval: usize,
}

impl Pieces {
    /// The pixel rows of `intervals`, clipped to the image.
    pub fn rows(&self, intervals: &Range<usize>) -> Range<usize> {
        let h = usize::from(self.header.height);
        let row = |i: usize| i.saturating_mul(self.rows_per_interval).min(h);
        row(intervals.start)..row(intervals.end)
    }

    /// Piece `i`'s intervals with one more on each side where there is one: the rows whose
    /// chroma a smooth upsampler reads beside the piece's own (see [`write_intervals`]).
    pub fn with_context(&self, i: usize) -> Range<usize> {
        let Some(p) = self.pieces.get(i) else { return 0..0 };
        p.intervals.start.saturating_sub(1)..(p.intervals.end + 1).min(self.intervals.len())
    }
}

/// What [`split`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Split {
    /// Decode the JPEG whole, as a JPEG without restart markers always was; the reason.
    Serial(&'static str),
    Pieces(Pieces),
}

/// Cuts `jpeg` into at most `max_pieces` pieces of nearly equal whole restart intervals, each
/// a whole number of MCU rows (the last possibly shorter). A JPEG without restart markers,
/// or whose interval is not a whole number of MCU rows, or that is not a single baseline
/// scan, is [`Split::Serial`]; markers out of sequence or in the wrong number are errors.
pub fn split(jpeg: &[u8], max_pieces: usize) -> Result<Split, RestartError> {
    split_shared(jpeg, &vec![1.0; max_pieces.max(1)])
}

/// [`split`] into at most `shares.len()` pieces, piece `i` about `shares[i]` of the
/// intervals ([`apportion`]).
pub fn split_shared(jpeg: &[u8], shares: &[f32]) -> Result<Split, RestartError> {
    let header = parse_header(jpeg)?;
    if let Some(why) = header.serial {
        return Ok(Split::Serial(why));
    }
    if header.interval == 0 {
        return Ok(Split::Serial("no restart interval (DRI)"));
    }
    if u64::from(header.interval) % header.mcus_per_row() != 0 {
        return Ok(Split::Serial("the restart interval is not a whole number of MCU rows"));
    }
    let intervals = intervals(jpeg, &header)?;
    let rows_per = u64::from(header.interval) / header.mcus_per_row() * u64::from(header.mcu_h);
    let rows_per_interval = usize::try_from(rows_per).unwrap_or(usize::MAX);
    let runs = apportion(intervals.len(), shares);
    let mut p = Pieces { header, intervals, pieces: Vec::with_capacity(runs.len()), rows_per_interval };
    for run in runs {
        let rows = p.rows(&run);
        p.pieces.push(Piece { first_row: rows.start, rows: rows.len(), intervals: run });
    }
    Ok(Split::Pieces(p))
}

/// Cuts `n` items into `min(shares.len(), n)` (at least one) contiguous runs of at least one
/// item each, run `i` about `shares[i]` of the whole (relative weights; equal weights give
/// runs of `n / k` rounded down, the longer ones last). Shares that are not positive
/// finite numbers count as equal ones.
pub fn apportion(n: usize, shares: &[f32]) -> Vec<Range<usize>> {
    let k = shares.len().clamp(1, n.max(1));
    let ok = |x: f32| x.is_finite() && x > 0.0;
    let weights: Vec<f64> = if shares.len() == k && shares.iter().all(|&x| ok(x)) {
        shares.iter().map(|&x| f64::from(x)).collect()
    } else {
        vec![1.0; k]
    };
    let total: f64 = weights.iter().sum();
    let mut runs = Vec::with_capacity(k);
    let (mut first, mut cum) = (0usize, 0.0f64);
    for (i, w) in weights.iter().enumerate() {
        cum += w;
        let left = k - i - 1;
        let end = if left == 0 {
            n
        } else {
            // The same rounding as integer n * i / k when the weights are equal.
            let at = (n as f64 * cum / total + 1e-9).floor() as usize;
            at.clamp((first + 1).min(n), n.saturating_sub(left).max(first))
        };
        runs.push(first..end);
        first = end;
    }
    runs
}

/// Writes piece `i` of `p` (split from `jpeg`) into `out` as a standalone JPEG: the headers
/// with the piece's height, its intervals with restart markers renumbered from RST0, EOI.
pub fn write_piece(jpeg: &[u8], p: &Pieces, i: usize, out: &mut Vec<u8>) {
    let intervals = p.pieces.get(i).map_or(0..0, |piece| piece.intervals.clone());
    write_intervals(jpeg, p, intervals, out);
}

/// Writes the restart intervals `intervals` of `p` (split from `jpeg`) into `out` as a
/// standalone JPEG as tall as they are ([`Pieces::rows`]).
pub fn write_intervals(jpeg: &[u8], p: &Pieces, intervals: Range<usize>, out: &mut Vec<u8>) {
    out.clear();
    let Some(head) = jpeg.get(..p.header.scan_at) else { return };
    out.extend_from_slice(head);
    let rows = u16::try_from(p.rows(&intervals).len()).unwrap_or(u16::MAX).to_be_bytes();
    out[p.header.height_at..p.header.height_at + 2].copy_from_slice(&rows);
    let ranges = p.intervals.get(intervals).unwrap_or(&[]);
    push_intervals(jpeg, ranges, 0, out);
    out.extend_from_slice(&[0xff, EOI]);
}

/// Appends the intervals of `jpeg` at `ranges`, each but the first preceded by a restart
/// marker numbered on from `count` (the number of intervals already written). Returns the
/// new count.
fn push_intervals(jpeg: &[u8], ranges: &[Range<usize>], mut count: u64, out: &mut Vec<u8>) -> u64 {
    for r in ranges {
        if count > 0 {
            out.extend_from_slice(&[0xff, RST0 + ((count - 1) % 8) as u8]);
        }
        out.extend_from_slice(jpeg.get(r.clone()).unwrap_or(&[]));
        count += 1;
    }
    count
}

/// Joins `bands`, JPEGs of horizontal bands of one image from top to bottom, into `out`: the
/// first band's headers with the whole image's height, each band's intervals with restart
/// markers numbered on across bands, one EOI. Every band must have the same width, tables,
/// sampling and DRI, and every band but the last a whole number of restart intervals.
pub fn stitch(bands: &[&[u8]], out: &mut Vec<u8>) -> Result<(), RestartError> {
    out.clear();
    let first = parse_header(bands.first().ok_or(RestartError::NoBands)?)?;
    let mut height = 0u64;
    let mut scans = Vec::with_capacity(bands.len());
    for (i, band) in bands.iter().enumerate() {
        let h = parse_header(band)?;
        check_band(i, band, &h, bands[0], &first, i + 1 == bands.len())?;
        height += u64::from(h.height);
        scans.push(intervals(band, &h)?);
    }
    let height16 = u16::try_from(height).map_err(|_| RestartError::TooHigh { height })?;
    out.extend_from_slice(&bands[0][..first.scan_at]);
    out[first.height_at..first.height_at + 2].copy_from_slice(&height16.to_be_bytes());
    let mut count = 0;
    for (band, ranges) in bands.iter().zip(&scans) {
        count = push_intervals(band, ranges, count, out);
    }
    out.extend_from_slice(&[0xff, EOI]);
    Ok(())
}

fn check_band(i: usize, band: &[u8], h: &Header, band0: &[u8], first: &Header, last: bool) -> Result<(), RestartError> {
    let mismatch = |why: String| Err(RestartError::BandMismatch { band: i, why });
    if let Some(why) = h.serial {
        return mismatch(why.to_string());
    }
    if h.interval == 0 || h.interval != first.interval || h.width != first.width {
        return mismatch(format!(
            "it is {} wide with a restart interval of {} MCUs, band 0 {} wide with {}",
            h.width, h.interval, first.width, first.interval
        ));
    }
    if h.tables.len() != first.tables.len() {
        return mismatch(format!("it has {} table segments, band 0 has {}", h.tables.len(), first.tables.len()));
    }
    for ((m, r), (_, r0)) in h.tables.iter().zip(&first.tables) {
        let (a, b) = (&band[r.clone()], &band0[r0.clone()]);
        let same =
            if *m == DQT || *m == DHT { a == b } else { a.len() == b.len() && a[..3] == b[..3] && a[5..] == b[5..] };
        if !same {
            let what = match *m {
                DQT => "quantisation table (DQT)",
                DHT => "Huffman table (DHT)",
                _ => "frame header (SOF) other than its height",
            };
            return mismatch(format!("its {what} at byte {} differs from band 0's", r.start));
        }
    }
    let mcus = h.mcus_per_row() * h.mcu_rows();
    if !last && (mcus % u64::from(h.interval) != 0 || u64::from(h.height) % u64::from(h.mcu_h) != 0) {
        return mismatch(format!(
            "it is {} rows high, not a whole number of restart intervals of {} MCUs (and not the last band)",
            h.height, h.interval
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Subsampling;
    use crate::testutil::{pattern_jpeg, restart_jpeg};
    use proptest::prelude::*;

    fn pieces(jpeg: &[u8], k: usize) -> Pieces {
        match split(jpeg, k).unwrap() {
            Split::Pieces(p) => p,
            Split::Serial(why) => panic!("serial: {why}"),
        }
    }

    /// Offsets of the restart markers in `jpeg`'s scan.
    fn rst_offsets(jpeg: &[u8]) -> Vec<usize> {
        let h = parse_header(jpeg).unwrap();
        intervals(jpeg, &h).unwrap().windows(2).map(|w| w[0].end).collect()
    }

    #[test]
    fn split_cuts_whole_mcu_rows() {
        // 100x70 4:2:0: 7 MCUs a row, 5 MCU rows, one interval each.
        let jpeg = restart_jpeg((100, 70), Subsampling::S420, 75, 1, 1).unwrap();
        let p = pieces(&jpeg, 3);
        assert_eq!((p.header.width, p.header.height, p.header.interval), (100, 70, 7));
        assert_eq!(p.intervals.len(), 5);
        let rows: Vec<_> = p.pieces.iter().map(|x| (x.first_row, x.rows, x.intervals.clone())).collect();
        assert_eq!(rows, vec![(0, 16, 0..1), (16, 32, 1..3), (48, 22, 3..5)]);
        assert_eq!(pieces(&jpeg, 99).pieces.len(), 5, "no more pieces than intervals");
        let mut out = Vec::new();
        write_piece(&jpeg, &p, 1, &mut out);
        let h = parse_header(&out).unwrap();
        assert_eq!((h.width, h.height), (100, 32));
        assert_eq!(intervals(&out, &h).unwrap().len(), 2, "a standalone JPEG with RST0 only");
        assert_eq!(turbojpeg::read_header(&out).unwrap().height, 32);
    }

    #[test]
    fn jpegs_without_whole_row_intervals_are_serial() {
        let plain = pattern_jpeg(64, 48, Subsampling::S420, 75, 0).unwrap();
        assert_eq!(split(&plain, 4).unwrap(), Split::Serial("no restart interval (DRI)"));
        // A DRI of 3 MCUs in rows of 4: the markers cannot be cut on rows.
        let mut odd = restart_jpeg((64, 48), Subsampling::S420, 75, 1, 1).unwrap();
        let h = parse_header(&odd).unwrap();
        let dri = find(&odd, &[0xff, DRI, 0, 4]) + 4;
        assert_eq!(u16::from_be_bytes([odd[dri], odd[dri + 1]]), h.interval);
        odd[dri + 1] = 3;
        assert_eq!(split(&odd, 4).unwrap(), Split::Serial("the restart interval is not a whole number of MCU rows"));
    }

    fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).position(|w| w == needle).expect("found")
    }

    #[test]
    fn corrupt_restart_markers_are_clear_errors() {
        let jpeg = restart_jpeg((64, 64), Subsampling::S420, 75, 1, 1).unwrap();
        let rst = rst_offsets(&jpeg);
        assert_eq!(rst.len(), 3);
        let mut wrong = jpeg.clone();
        wrong[rst[1] + 1] = RST0 + 5;
        let e = split(&wrong, 2).unwrap_err();
        assert_eq!(e, RestartError::OutOfSequence { at: rst[1], want: 1, got: 5 });
        assert!(e.to_string().contains(&format!("at byte {}: expected RST1, got RST5", rst[1])), "{e}");
        // A DRI of two rows where the encoder put a marker every row.
        let mut dri = jpeg.clone();
        let at = find(&dri, &[0xff, DRI, 0, 4]) + 5;
        dri[at] = 8;
        let e = split(&dri, 2).unwrap_err();
        assert!(matches!(e, RestartError::PastEnd { interval: 8, want: 2, .. }), "{e}");
        // A slice that ends early: EOI after the second interval.
        let mut short = jpeg[..rst[1]].to_vec();
        short.extend_from_slice(&[0xff, EOI]);
        let e = split(&short, 2).unwrap_err();
        assert_eq!(e, RestartError::EndsEarly { at: rst[1], got: 2, interval: 4, mcus: 16, want: 4 });
        assert!(e.to_string().contains("the DRI does not match or a slice ended early"), "{e}");
        let e = split(&jpeg[..rst[2] + 10], 2).unwrap_err();
        assert!(matches!(e, RestartError::EndsEarly { got: 3, .. }), "data end: {e}");
        let mut other = jpeg.clone();
        other[rst[0] + 1] = 0xc4;
        assert!(matches!(split(&other, 2), Err(RestartError::UnexpectedMarker { marker: 0xc4, .. })));
    }

    #[test]
    fn stuffed_and_fill_bytes_are_not_markers() {
        let jpeg = restart_jpeg((64, 64), Subsampling::S420, 75, 1, 1).unwrap();
        let rst = rst_offsets(&jpeg);
        // Fill bytes before a marker are skipped; 0xFF00 is data.
        let mut filled = jpeg[..rst[0]].to_vec();
        filled.extend_from_slice(&[0xff, 0xff, 0xff]);
        filled.extend_from_slice(&jpeg[rst[0] + 1..]);
        assert_eq!(pieces(&filled, 2).intervals.len(), 4);
        let h = parse_header(&jpeg).unwrap();
        let ivs = intervals(&jpeg, &h).unwrap();
        let stuffed = jpeg[h.scan_at..].windows(2).any(|w| w == [0xff, 0]);
        assert!(stuffed, "the pattern's scan has stuffed bytes");
        assert_eq!(ivs.len(), 4);
    }

    #[test]
    fn bad_headers_are_errors_with_offsets() {
        assert_eq!(split(b"", 2), Err(RestartError::NoSoi));
        assert_eq!(split(&[0xff, SOI], 2), Err(RestartError::Truncated { at: 2, what: "marker" }));
        assert_eq!(split(&[0xff, SOI, 0xff, DQT, 0, 9, 1], 2), Err(RestartError::Truncated { at: 7, what: "segment" }));
        assert_eq!(
            split(&[0xff, SOI, 0xff, DQT, 0, 1], 2),
            Err(RestartError::BadSegment { at: 4, what: "segment length (less than 2)" })
        );
        assert!(split(&[0xff, SOI, 0xff, SOS, 0, 3, 1], 2).unwrap_err().to_string().contains("SOS before any SOF"));
        assert!(split(&[0xff, SOI, 0xff, DRI, 0, 3, 1], 2).unwrap_err().to_string().contains("DRI"));
    }

    #[test]
    fn stitched_bands_equal_one_whole_encode() {
        for sub in [Subsampling::S420, Subsampling::S422, Subsampling::S444, Subsampling::Gray] {
            // framecast's planar frames are even-sized with chroma subsampling (libjpeg-turbo's
            // YUV planes are padded to whole chroma samples).
            let size = if matches!(sub, Subsampling::S420 | Subsampling::S422) { (78, 94) } else { (77, 93) };
            let whole = restart_jpeg(size, sub, 75, 2, 1).unwrap();
            for threads in [2, 3, 16] {
                let sliced = restart_jpeg(size, sub, 75, 2, threads).unwrap();
                assert!(sliced == whole, "{sub} {threads} slices: the stitched JPEG is the whole encode's");
            }
        }
    }

    fn band(sub: Subsampling, quality: u8, height: u32) -> Vec<u8> {
        restart_jpeg((64, height), sub, quality, 1, 1).unwrap()
    }

    #[test]
    fn bands_that_differ_are_named() {
        let mut out = Vec::new();
        let (a, b) = (band(Subsampling::S420, 75, 32), band(Subsampling::S420, 50, 32));
        let e = stitch(&[&a, &b], &mut out).unwrap_err();
        assert!(e.to_string().contains("band 1 cannot be stitched: its quantisation table (DQT)"), "{e}");
        let c = band(Subsampling::S420, 75, 24);
        let e = stitch(&[&c, &a], &mut out).unwrap_err();
        assert!(e.to_string().contains("band 0 cannot be stitched: it is 24 rows high"), "{e}");
        stitch(&[&a, &c], &mut out).expect("the last band may be shorter");
        assert_eq!(turbojpeg::read_header(&out).unwrap().height, 56);
        let g = band(Subsampling::Gray, 75, 32);
        assert!(stitch(&[&a, &g], &mut out).is_err());
        let plain = pattern_jpeg(64, 32, Subsampling::S420, 75, 0).unwrap();
        assert!(stitch(&[&plain, &a], &mut out).unwrap_err().to_string().contains("restart interval of 0"));
        assert_eq!(stitch(&[], &mut out), Err(RestartError::NoBands));
    }

    /// Equal shares cut as `n * i / k` rounded down (the longer runs last); other shares in
    /// proportion; every run at least one item; bad shares count as equal.
    #[test]
    fn apportion_cuts_in_proportion_with_at_least_one_each() {
        for n in 0..60usize {
            for k in 1..20usize {
                let runs = apportion(n, &vec![1.0; k]);
                let kk = k.clamp(1, n.max(1));
                let ends: Vec<usize> = runs.iter().map(|r| r.end).collect();
                let want: Vec<usize> = (1..=kk).map(|i| n * i / kk).collect();
                assert_eq!(ends, want, "n {n} k {k}");
            }
        }
        let len = |runs: Vec<Range<usize>>| runs.iter().map(|r| r.len()).collect::<Vec<_>>();
        assert_eq!(len(apportion(68, &[1.0, 3.0])), vec![17, 51]);
        assert_eq!(len(apportion(68, &[0.6, 0.4])), vec![40, 28]);
        assert_eq!(len(apportion(10, &[1000.0, 1.0, 1.0])), vec![8, 1, 1], "at least one each");
        assert_eq!(len(apportion(10, &[1.0, 1.0, 1000.0])), vec![1, 1, 8]);
        assert_eq!(len(apportion(2, &[1.0, 1.0, 1.0])), vec![1, 1], "no more runs than items");
        assert_eq!(len(apportion(9, &[f32::NAN, 1.0, -1.0])), vec![3, 3, 3]);
        assert_eq!(len(apportion(9, &[f32::INFINITY, 1.0, 0.0])), vec![3, 3, 3]);
        assert_eq!(apportion(0, &[]), vec![0..0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn split_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600), k in 0usize..20) {
            let _ = split(&data, k);
        }

        #[test]
        fn apportion_covers_every_item_in_order(n in 0usize..5000, shares in proptest::collection::vec(any::<f32>(), 0..17)) {
            let runs = apportion(n, &shares);
            prop_assert_eq!(runs.len(), shares.len().clamp(1, n.max(1)));
            prop_assert_eq!(runs[0].start, 0);
            prop_assert_eq!(runs[runs.len() - 1].end, n);
            for w in runs.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
            }
            if n > 0 {
                prop_assert!(runs.iter().all(|r| !r.is_empty()), "{:?}", runs);
            }
        }

        #[test]
        fn split_of_mutated_jpeg_never_panics(at in any::<proptest::sample::Index>(), v in any::<u8>(), cut in any::<proptest::sample::Index>()) {
            let jpeg = restart_jpeg((48, 40), Subsampling::S420, 60, 1, 1).unwrap();
            let mut m = jpeg[..cut.index(jpeg.len()) + 1].to_vec();
            let i = at.index(m.len());
            m[i] = v;
            if let Ok(Split::Pieces(p)) = split(&m, 3) {
                let mut out = Vec::new();
                for i in 0..p.pieces.len() {
                    write_piece(&m, &p, i, &mut out);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn split_undoes_stitch(w in 1u32..90, h in 1u32..120, threads in 1usize..6, rows in 1u16..3, s in 0usize..4) {
            let sub = [Subsampling::S420, Subsampling::S422, Subsampling::S444, Subsampling::Gray][s];
            let (w, h) = if matches!(sub, Subsampling::S420 | Subsampling::S422) { (w.div_ceil(2) * 2, h.div_ceil(2) * 2) } else { (w, h) };
            let mcu_h = if sub == Subsampling::S420 { 16 } else { 8 };
            let step = mcu_h * u32::from(rows);
            let heights = crate::codec::slices::band_rows(h as usize, sub, rows, threads);
            let bands: Vec<Vec<u8>> = heights.iter().map(|&bh| {
                let frame = crate::testutil::pattern_frame(w, bh as u32, sub, 1);
                let mut out = crate::codec::JpegBuf::default();
                let mut enc = crate::codec::Encoder::new(70, sub, false).unwrap();
                enc.set_restart_rows(rows).unwrap();
                enc.encode(&frame, &mut out).unwrap();
                out.as_slice().to_vec()
            }).collect();
            let refs: Vec<&[u8]> = bands.iter().map(|b| b.as_slice()).collect();
            let mut joined = Vec::new();
            stitch(&refs, &mut joined).unwrap();
            prop_assert_eq!(u32::from(parse_header(&joined).unwrap().height), h);
            if bands.len() == 1 {
                prop_assert_eq!(&joined, &bands[0]);
            }
            if h > step || bands.len() > 1 {
                let p = pieces(&joined, bands.len());
                prop_assert_eq!(p.pieces.len(), bands.len());
                let mut out = Vec::new();
                for (i, b) in bands.iter().enumerate() {
                    write_piece(&joined, &p, i, &mut out);
                    prop_assert!(&out == b, "piece {} of {} is band {}", i, bands.len(), i);
                }
            }
        }
    }
}
