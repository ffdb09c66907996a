//! RFC 3339 times as the gateway reads them: device timestamps in payloads
//! (`"2026-11-26T20:00:00.123Z"`, `"…+08:00"`) and the config's alert silence windows.
//! One parser for every crate, so a time the config accepts is one a decoder accepts.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch of an RFC 3339 time (any offset; a fraction below a
/// millisecond is dropped), or `None` when `s` is not one.
pub fn parse_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_offsets_and_fractions() {
        assert_eq!(parse_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_ms("2026-11-26T20:00:00.123Z"),
            Some(1_795_723_200_123)
        );
        assert_eq!(
            parse_ms("2026-11-27T04:00:00.123+08:00"),
            Some(1_795_723_200_123)
        );
        assert_eq!(parse_ms("1969-12-31T23:59:59.998Z"), Some(-2));
        for bad in [
            "",
            "tomorrow",
            "2026-11-26",
            "2026-11-26T20:00:00",
            "1700000000000",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad}");
        }
    }
}
