//! Value syntaxes BuildKit takes from Go's standard library (booleans, integers, byte sizes,
//! one CSV record), with Go's acceptance rules and error wording. Durations are
//! [`crate::common::duration`].
//!
//! BuildKit's messages embed these errors verbatim (`time: invalid duration "abc"`,
//! `strconv.ParseInt: parsing "x": invalid syntax`), so matching them needs Go's rules, not
//! Rust's `str::parse`, which accepts and rejects different inputs.

use super::dump::go_quote;

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Why Go's `strconv.ParseInt` refuses a value, in its words. The input is kept, quoted the
/// Go way in the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseIntError {
    /// Not an optionally signed run of decimal digits.
    #[error("strconv.ParseInt: parsing {}: invalid syntax", go_quote(.0))]
    Syntax(String),
    /// Digits that do not fit the integer's size.
    #[error("strconv.ParseInt: parsing {}: value out of range", go_quote(.0))]
    OutOfRange(String),
}

/// Go's `strconv.ParseInt(s, 10, 32)`, with its error text.
pub(crate) fn parse_int32(s: &str) -> Result<i64, ParseIntError> {
    let range = || ParseIntError::OutOfRange(s.to_string());
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseIntError::Syntax(s.to_string()));
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
    fn bools_and_ints_like_go() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(parse_int32("-1"), Ok(-1));
        assert_eq!(parse_int32("+7"), Ok(7));
        let syntax = parse_int32("x").unwrap_err();
        assert_eq!(syntax, ParseIntError::Syntax("x".to_string()));
        assert_eq!(
            syntax.to_string(),
            "strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        let range = parse_int32("2147483648").unwrap_err();
        assert_eq!(range, ParseIntError::OutOfRange("2147483648".to_string()));
        assert_eq!(
            range.to_string(),
            "strconv.ParseInt: parsing \"2147483648\": value out of range"
        );
        // Past i64 too: still out of range, not a panic or a syntax error.
        assert_eq!(
            parse_int32("-99999999999999999999"),
            Err(ParseIntError::OutOfRange(
                "-99999999999999999999".to_string()
            ))
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
