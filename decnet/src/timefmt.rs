//! Wall-clock timestamps for journal records.
//!
//! The kernel stamps events with CLOCK_MONOTONIC (`bpf_ktime_get_ns`); records carry RFC 3339
//! UTC with nanoseconds. [`WallClock`] holds the offset between the two clocks and formats
//! without allocation, because it runs once per event at millions of events per second.
//! Nanoseconds since the epoch fit an `i64` until the year 2262; i128 division cost more
//! than the rest of the timestamp.

use std::io::Write;

pub(crate) fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Converts monotonic kernel timestamps to wall-clock nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WallClock {
    offset_ns: i64,
}

impl WallClock {
    /// Samples both clocks now. Call again to follow NTP steps (cheap: two vDSO calls).
    pub(crate) fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// A clock whose "monotonic" times are already Unix times (a replay's capture clock).
    pub(crate) fn unix() -> Self {
        Self { offset_ns: 0 }
    }

    pub(crate) fn to_unix_ns(self, mono_ns: u64) -> i64 {
        mono_ns as i64 + self.offset_ns
    }
}

/// Current wall-clock time in ns since the epoch.
pub(crate) fn unix_now_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (30 bytes) into `out`.
pub(crate) fn write_rfc3339_ns(out: &mut Vec<u8>, unix_ns: i64) {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
    if !(0..=9999).contains(&y) {
        // Outside RFC 3339's four-digit years; never happens for real clocks.
        let _ = write!(
            out,
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{nanos:09}Z"
        );
        return;
    }
    // Fixed-width digits by hand: `write!` costs more than all other fields of a record.
    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, v: u64| {
        let mut v = v;
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, mo as u64);
    put(8, 2, d as u64);
    put(11, 2, h as u64);
    put(14, 2, mi as u64);
    put(17, 2, s as u64);
    put(20, 9, nanos as u64);
    out.extend_from_slice(&buf);
}

pub fn rfc3339_ns(unix_ns: i64) -> String {
    let mut v = Vec::with_capacity(30);
    write_rfc3339_ns(&mut v, unix_ns);
    String::from_utf8_lossy(&v).into_owned()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses RFC 3339 (`2026-11-26T20:07:54.123Z`, any fraction length, `Z` or `+hh:mm`) to
/// ns since the epoch. `None` for anything else: journal lines come from any writer.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start).min(9)..9 {
            nanos *= 10;
        }
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        // 2026-11-26T20:07:54.123456789Z
        assert_eq!(
            rfc3339_ns(1_795_723_674_123_456_789),
            "2026-11-26T20:07:54.123456789Z"
        );
        // leap day
        assert_eq!(
            rfc3339_ns(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(rfc3339_ns(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn parses_what_it_formats_and_common_variants() {
        for ns in [0i64, 1_795_723_674_123_456_789, 951_782_400_000_000_001] {
            assert_eq!(parse_rfc3339_ns(&rfc3339_ns(ns)), Some(ns));
        }
        assert_eq!(
            parse_rfc3339_ns("2026-11-26T20:07:54Z"),
            Some(1_795_723_674_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2026-11-26T20:07:54.5Z"),
            Some(1_795_723_674_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2026-11-26T21:07:54+01:00"),
            Some(1_795_723_674_000_000_000)
        );
        for bad in [
            "",
            "t1",
            "2026-13-01T00:00:00Z",
            "2026-11-26T20:07:54",
            "2026-11-26T20:07:54.Z",
            "2026-11-26T20:07:54Zjunk",
        ] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn wall_clock_maps_monotonic_now_to_about_now() {
        let wc = WallClock::now();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let diff = (wc.to_unix_ns(mono) - unix_now_ns()).abs();
        assert!(diff < 1_000_000_000, "offset off by {diff} ns");
    }
}
