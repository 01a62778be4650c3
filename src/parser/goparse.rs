//! Value syntaxes BuildKit takes from Go's standard library (durations, booleans, integers,
//! byte sizes, one CSV record), with Go's acceptance rules and error wording.
//!
//! BuildKit's messages embed these errors verbatim (`time: invalid duration "abc"`,
//! `strconv.ParseInt: parsing "x": invalid syntax`), so matching them needs Go's rules, not
//! Rust's `str::parse`, which accepts and rejects different inputs.

use std::time::Duration;

use super::dump::go_quote;

/// Go's `time.ParseDuration`, returning signed nanoseconds.
///
/// Accepts `[-+]?([0-9]*(\.[0-9]*)?unit)+` with units `ns us µs μs ms s m h`, and a bare `0`.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let orig = s;
    let invalid = || format!("time: invalid duration {}", time_quote(orig));
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
            return Err(format!(
                "time: missing unit in duration {}",
                time_quote(orig)
            ));
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
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    time_quote(unit_text),
                    time_quote(orig)
                ))
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
pub(crate) fn nanos_to_duration(n: i64) -> Duration {
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

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 10, 32)`, with its error text.
pub(crate) fn parse_int32(s: &str) -> Result<i64, String> {
    let syntax = || format!("strconv.ParseInt: parsing {}: invalid syntax", go_quote(s));
    let range = || {
        format!(
            "strconv.ParseInt: parsing {}: value out of range",
            go_quote(s)
        )
    };
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let mut v: i64 = 0;
    for b in digits.bytes() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(range)?;
    }
    let v = if neg { -v } else { v };
    if v < i64::from(i32::MIN) || v > i64::from(i32::MAX) {
        return Err(range());
    }
    Ok(v)
}

/// Go's `strconv.ParseUint(s, base, 32)` for base 8 or 10; `None` on any error.
pub(crate) fn parse_uint32(s: &str, base: u32) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for c in s.chars() {
        let d = c.to_digit(base)?;
        v = v * u64::from(base) + u64::from(d);
        if v > u64::from(u32::MAX) {
            return None;
        }
    }
    u32::try_from(v).ok()
}

/// Docker's `units.RAMInBytes`: `64m`, `1.5GiB`, `512 kb`, `1024`; multipliers are binary.
pub(crate) fn parse_ram_bytes(s: &str) -> Option<i64> {
    let num_len = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (num, mut suffix) = s.split_at(num_len);
    let int_part = num.split('.').next().unwrap_or("");
    // `\d+(\.\d+)?`: digits first, at most one dot, digits after it.
    if int_part.is_empty() || num.matches('.').count() > 1 || num.ends_with('.') {
        return None;
    }
    let size: f64 = num.parse().ok()?;
    suffix = suffix.strip_prefix(' ').unwrap_or(suffix);
    let mut chars = suffix.chars().peekable();
    let mut mult: f64 = 1.0;
    if let Some(&c) = chars.peek() {
        let m = match c.to_ascii_lowercase() {
            'k' => Some(1u64 << 10),
            'm' => Some(1 << 20),
            'g' => Some(1 << 30),
            't' => Some(1 << 40),
            'p' => Some(1 << 50),
            _ => None,
        };
        if let Some(m) = m {
            mult = m as f64;
            chars.next();
        }
    }
    if chars.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'i')) {
        chars.next();
    }
    if chars.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'b')) {
        chars.next();
    }
    if chars.next().is_some() {
        return None;
    }
    Some((size * mult) as i64)
}

/// Why a CSV record could not be read, worded like Go's `encoding/csv`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// The value was empty: Go's reader reports end of input.
    #[error("EOF")]
    Empty,
    /// A `"` inside a field that did not start with one.
    #[error("parse error on line 1, column {0}: bare \" in non-quoted-field")]
    BareQuote(usize),
    /// A quoted field not closed, or followed by something other than a comma.
    #[error("parse error on line 1, column {0}: extraneous or missing \" in quoted-field")]
    Quote(usize),
}

/// One CSV record split into fields, as BuildKit's `csvvalue.Fields` does it: comma
/// separators, `"` quoting with `""` for a literal quote, no trimming.
pub(crate) fn csv_fields(line: &str) -> Result<Vec<String>, CsvError> {
    let line = line
        .strip_suffix("\r\n")
        .or_else(|| line.strip_suffix('\n'))
        .unwrap_or(line);
    if line.is_empty() {
        return Err(CsvError::Empty);
    }
    let mut fields = Vec::new();
    let mut rest = line;
    // Byte position in `line`, for Go's 1-based column in errors.
    let mut pos = 0;
    loop {
        if !rest.starts_with('"') {
            let end = rest.find(',');
            let field = &rest[..end.unwrap_or(rest.len())];
            if let Some(j) = field.find('"') {
                return Err(CsvError::BareQuote(pos + j + 1));
            }
            fields.push(field.to_string());
            match end {
                Some(i) => {
                    rest = &rest[i + 1..];
                    pos += i + 1;
                    continue;
                }
                None => break,
            }
        }
        rest = &rest[1..];
        pos += 1;
        let mut field = String::new();
        loop {
            let Some(i) = rest.find('"') else {
                return Err(CsvError::Quote(pos + 1));
            };
            field.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            pos += i + 1;
            if rest.starts_with('"') {
                field.push('"');
                rest = &rest[1..];
                pos += 1;
            } else if rest.starts_with(',') {
                fields.push(std::mem::take(&mut field));
                rest = &rest[1..];
                pos += 1;
                break;
            } else if rest.is_empty() {
                fields.push(std::mem::take(&mut field));
                return Ok(fields);
            } else {
                return Err(CsvError::Quote(pos));
            }
        }
    }
    Ok(fields)
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
            assert_eq!(
                parse_duration(input),
                Err(want.to_string()),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn bools_and_ints_like_go() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(parse_int32("-1"), Ok(-1));
        assert_eq!(parse_int32("+7"), Ok(7));
        assert_eq!(
            parse_int32("x"),
            Err("strconv.ParseInt: parsing \"x\": invalid syntax".to_string())
        );
        assert_eq!(
            parse_int32("2147483648"),
            Err("strconv.ParseInt: parsing \"2147483648\": value out of range".to_string())
        );
        assert_eq!(parse_uint32("0755", 8), Some(0o755));
        assert_eq!(parse_uint32("8", 8), None);
        assert_eq!(parse_uint32("4294967295", 10), Some(u32::MAX));
        assert_eq!(parse_uint32("4294967296", 10), None);
        assert_eq!(parse_uint32("-1", 10), None);
    }

    #[test]
    fn ram_sizes_like_docker_units() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1024", Some(1024)),
            ("64m", Some(64 << 20)),
            ("64M", Some(64 << 20)),
            ("1.5g", Some(3 << 29)),
            ("2 GiB", Some(2 << 30)),
            ("10kb", Some(10 << 10)),
            ("1b", Some(1)),
            ("", None),
            ("m", None),
            ("1.2.3m", None),
            ("1x", None),
            ("-1", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_ram_bytes(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn csv_like_go() {
        let ok: &[(&str, &[&str])] = &[
            ("a,b", &["a", "b"]),
            ("type=bind,target=/x", &["type=bind", "target=/x"]),
            ("a,", &["a", ""]),
            ("\"a,b\",c", &["a,b", "c"]),
            ("\"a\"\"b\"", &["a\"b"]),
            ("x\n", &["x"]),
            (",", &["", ""]),
        ];
        for (input, want) in ok {
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(csv_fields(input), Ok(want), "input {input:?}");
        }
        assert_eq!(csv_fields(""), Err(CsvError::Empty));
        assert_eq!(csv_fields("a\"b"), Err(CsvError::BareQuote(2)));
        assert_eq!(csv_fields("\"ab"), Err(CsvError::Quote(2)));
        assert_eq!(csv_fields("\"a\"b"), Err(CsvError::Quote(3)));
        assert_eq!(
            csv_fields("x,a\"").map_err(|e| e.to_string()),
            Err("parse error on line 1, column 4: bare \" in non-quoted-field".to_string())
        );
    }
}
