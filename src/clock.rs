//! Timestamps: microseconds on the host's monotonic clock, comparable between processes on
//! the same host, plus an identifier of that clock for the handshake.

/// Microseconds on `CLOCK_MONOTONIC`. Processes on one host (one boot) share this clock.
pub fn now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC exists on every supported unix.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Identifies the clock behind [`now_us`]: on Linux the kernel's boot id, so two peers with
/// equal ids share a monotonic clock. Elsewhere (or if it cannot be read) a value unique to
/// this process, so no shared clock is ever assumed by mistake.
pub fn clock_id() -> [u8; 16] {
    static ID: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| parse_uuid(s.trim()))
            .unwrap_or_else(process_unique_id)
    })
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn process_unique_id() -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&now_us().to_be_bytes());
    out[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    out[12] = 0xff; // never a valid boot id version nibble pattern from the kernel
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_microseconds() {
        let a = now_us();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = now_us();
        assert!(b >= a + 4_000 && b < a + 1_000_000, "{a} {b}");
    }

    #[test]
    fn parses_boot_id_format() {
        let id = parse_uuid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").unwrap();
        assert_eq!(id[0], 0x0f);
        assert_eq!(id[15], 0xf0);
        assert!(parse_uuid("not-a-uuid").is_none());
    }

    #[test]
    fn clock_id_is_stable_within_a_boot() {
        assert_eq!(clock_id(), clock_id());
    }
}
