//! Go-style durations (`1m30s`, `500ms`, `-1.5h`), as Docker and BuildKit take them from Go's
//! `time.ParseDuration`, with Go's acceptance rules and error wording
//! (`time: invalid duration "abc"`): flags such as `--health-interval`, `HEALTHCHECK
//! --interval`, `--filter until=` and `--since` all read this syntax.

use std::time::Duration;

/// Why a string is not a Go duration; the messages are Go's `time.ParseDuration`'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration at all, or one out of the range of an `i64` of nanoseconds.
    #[error("time: invalid duration {}", time_quote(.0))]
    Invalid(String),
    /// A number without a unit (`5`).
    #[error("time: missing unit in duration {}", time_quote(.0))]
    MissingUnit(String),
    /// A unit other than `ns us µs μs ms s m h`.
    #[error("time: unknown unit {} in duration {}", time_quote(.unit), time_quote(.input))]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole duration as written.
        input: String,
    },
}

/// Go's `time.ParseDuration`, returning signed nanoseconds.
///
/// Accepts `[-+]?([0-9]*(\.[0-9]*)?unit)+` with units `ns us µs μs ms s m h`, and a bare `0`.
pub fn parse_duration(s: &str) -> Result<i64, DurationError> {
    let orig = s;
    let invalid = || DurationError::Invalid(orig.to_string());
    let mut rest = s;
    let mut neg = false;
    if let Some(c) = rest.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            rest = &rest[1..];
        }
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    // Go accumulates in a u64 and allows exactly 1<<63 only for negative durations.
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let first = rest.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut whole: u64 = 0;
        for b in rest[..int_len].bytes() {
            if whole > LIMIT / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(b - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
        }
        rest = &rest[int_len..];
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_len = 0;
        if let Some(after) = rest.strip_prefix('.') {
            frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for b in after[..frac_len].bytes() {
                // Like Go, digits past what fits in the accumulator are consumed but ignored.
                if overflow || frac > i64::MAX as u64 / 10 {
                    overflow = true;
                    continue;
                }
                let next = frac * 10 + u64::from(b - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                frac = next;
                scale *= 10.0;
            }
            rest = &after[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(orig.to_string()));
        }
        let unit_text = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit: u64 = match unit_text {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit_text.to_string(),
                    input: orig.to_string(),
                })
            }
        };
        if whole > LIMIT / unit {
            return Err(invalid());
        }
        let mut v = whole * unit;
        if frac > 0 {
            // Go computes the fractional part in float64 and truncates.
            v += (frac as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        // total <= 1<<63 here, so the negation fits in an i64.
        return Ok((-(i128::from(total))) as i64);
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// A non-negative duration from signed nanoseconds.
pub fn nanos_to_duration(n: i64) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

/// Go's `time` package quoting (not `strconv.Quote`): bytes outside printable ASCII as `\xNN`.
fn time_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c < ' ' || !c.is_ascii() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go() {
        let ok: &[(&str, i64)] = &[
            ("0", 0),
            ("-0", 0),
            ("5s", 5_000_000_000),
            ("1m30s", 90_000_000_000),
            ("100ms", 100_000_000),
            ("1.5h", 5_400_000_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("50ns", 50),
            ("500us", 500_000),
            ("500\u{b5}s", 500_000),
            ("-1s", -1_000_000_000),
            ("+2ms", 2_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
        ];
        for (input, want) in ok {
            assert_eq!(parse_duration(input), Ok(*want), "input {input:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "time: invalid duration \"\""),
            ("abc", "time: invalid duration \"abc\""),
            ("1", "time: missing unit in duration \"1\""),
            ("1x", "time: unknown unit \"x\" in duration \"1x\""),
            (".s", "time: invalid duration \".s\""),
            ("-", "time: invalid duration \"-\""),
            ("1s ", "time: unknown unit \"s \" in duration \"1s \""),
            (
                "9223372036854775808ns",
                "time: invalid duration \"9223372036854775808ns\"",
            ),
            ("3000000h", "time: invalid duration \"3000000h\""),
            (
                "1é",
                "time: unknown unit \"\\xc3\\xa9\" in duration \"1\\xc3\\xa9\"",
            ),
        ];
        for (input, want) in bad {
            let got = parse_duration(input).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), Some(*want), "input {input:?}");
        }
    }

    #[test]
    fn duration_errors_are_typed_kinds() {
        assert_eq!(
            parse_duration("abc"),
            Err(DurationError::Invalid("abc".into()))
        );
        assert_eq!(
            parse_duration("-1"),
            Err(DurationError::MissingUnit("-1".into()))
        );
        assert!(matches!(
            parse_duration("2d"),
            Err(DurationError::UnknownUnit { unit, input }) if unit == "d" && input == "2d"
        ));
        assert!(matches!(
            parse_duration("3000000h"),
            Err(DurationError::Invalid(_))
        ));
    }
}
