//! The `Range` request header (RFC 9110 §14.1–14.2), for one representation of `len`
//! bytes. Pure: no I/O.
//!
//! Only single byte ranges are served. A header that does not parse, uses another unit, or
//! asks for several ranges is ignored and the whole file is sent with 200: RFC 9110 §14.2
//! lets a server ignore `Range`, every client handles a 200, and it spares the gateway
//! `multipart/byteranges` (several ranges are rare outside PDF readers, and a client asking
//! for overlapping ranges cannot make the node send more than the file).

use std::ops::Range;

/// What to send for a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole file, 200 (no header, or one the gateway ignores).
    Whole,
    /// These bytes, 206 with `Content-Range: bytes START-END/LEN` (never empty).
    Part(Range<u64>),
    /// No byte of the file satisfies the range: 416 with `Content-Range: bytes */LEN`.
    Unsatisfiable,
}

/// Answers the `Range` header value `header` (`None`: absent) for a file of `len` bytes.
///
/// Forms: `bytes=A-B` (inclusive, B clipped to the end), `bytes=A-` (from A to the end),
/// `bytes=-N` (the last N bytes; the whole file if N ≥ `len`). A range starting at or
/// after `len`, and `bytes=-0`, are unsatisfiable (so is every range of an empty file).
pub fn answer(header: Option<&[u8]>, len: u64) -> RangeAnswer {
    let Some(h) = header else { return RangeAnswer::Whole };
    let Ok(h) = std::str::from_utf8(h) else { return RangeAnswer::Whole };
    let h = h.trim();
    // The unit is case-insensitive (RFC 9110 §14.1).
    let Some(spec) = h.get(..6).filter(|u| u.eq_ignore_ascii_case("bytes=")).map(|_| &h[6..])
    else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAnswer::Whole };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        // Digits only: `u64::from_str` would take a leading `+`.
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if a.is_empty() {
        // bytes=-N: a suffix.
        let Some(n) = num(b) else { return RangeAnswer::Whole };
        if n == 0 || len == 0 {
            return RangeAnswer::Unsatisfiable;
        }
        return RangeAnswer::Part(len - n.min(len)..len);
    }
    let Some(start) = num(a) else { return RangeAnswer::Whole };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match num(b) {
            // bytes=5-2 is invalid, not unsatisfiable: ignored (RFC 9110 §14.1.1).
            Some(e) if e >= start => e.saturating_add(1),
            _ => return RangeAnswer::Whole,
        }
    };
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Part(start..end.min(len))
}

#[cfg(test)]
mod tests {
    use super::RangeAnswer::{Part, Unsatisfiable, Whole};
    use super::*;

    fn a(h: &str, len: u64) -> RangeAnswer {
        answer(Some(h.as_bytes()), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(answer(None, 10), Whole);
        assert_eq!(a("bytes=0-0", 10), Part(0..1));
        assert_eq!(a("bytes=2-5", 10), Part(2..6));
        assert_eq!(a("bytes=9-9", 10), Part(9..10));
        assert_eq!(a("bytes=4-", 10), Part(4..10));
        assert_eq!(a("bytes=4-100", 10), Part(4..10));
        assert_eq!(a("bytes=-3", 10), Part(7..10));
        assert_eq!(a("bytes=-30", 10), Part(0..10));
        assert_eq!(a("Bytes= 1-2 ", 10), Part(1..3));
        assert_eq!(a("bytes=0-18446744073709551615", 10), Part(0..10));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(a("bytes=10-", 10), Unsatisfiable);
        assert_eq!(a("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(a("bytes=-0", 10), Unsatisfiable);
        assert_eq!(a("bytes=0-", 0), Unsatisfiable);
        assert_eq!(a("bytes=-1", 0), Unsatisfiable);
    }

    #[test]
    fn ignored_headers_give_the_whole_file() {
        for h in [
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=5-2",
            "bytes=1",
            "bytes=99999999999999999999999-",
            "bytes",
        ] {
            assert_eq!(a(h, 10), Whole, "{h}");
        }
        assert_eq!(answer(Some(&[0xff, 0xfe]), 10), Whole);
    }
}
