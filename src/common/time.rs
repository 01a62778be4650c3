//! Points in time and kiln's one calendar: RFC 3339 and HTTP-date parsing and formatting in
//! UTC, without a calendar crate. Every date kiln writes or reads goes through [`Timestamp`].
//!
//! Image configs record `created` as RFC 3339 text (Go's `time.RFC3339Nano`:
//! `2024-05-01T12:00:00.123456789Z`, offsets allowed). Listing, filtering and
//! `history` need it as a point in time; writing a config needs the reverse.
//! The civil-date arithmetic is Howard Hinnant's `days_from_civil`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// English month abbreviations, January first (HTTP dates, `ps`'s STIME).
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A point in time: seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

/// Why a string is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: expected RFC 3339 (2006-01-02T15:04:05Z)")]
pub struct TimeError {
    /// The rejected input (truncated).
    pub input: String,
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            // A clock before 1970: report the epoch rather than fail.
            Err(_) => Timestamp::from_secs(0),
        }
    }

    /// Whole seconds since the epoch.
    pub fn from_secs(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    /// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`), as Go's
    /// `time.Parse(time.RFC3339Nano, …)` accepts it.
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimeError> {
        parse(s.as_bytes()).ok_or_else(|| TimeError {
            input: s.chars().take(64).collect(),
        })
    }

    /// Formats as Go's `time.RFC3339Nano` in UTC: fraction without trailing
    /// zeros, none when zero (`2024-05-01T12:00:00.5Z`).
    pub fn to_rfc3339(&self) -> String {
        let (date, time) = self.civil();
        let mut s = format!("{date}T{time}");
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            s.push('.');
            s.push_str(frac.trim_end_matches('0'));
        }
        s.push('Z');
        s
    }

    /// Formats as Go's `time.RFC3339` in UTC (whole seconds).
    pub fn to_rfc3339_secs(&self) -> String {
        let (date, time) = self.civil();
        format!("{date}T{time}Z")
    }

    /// Formats as Go's `time.Time.String()` of whole seconds in UTC, what
    /// `docker images --format '{{.CreatedAt}}'` shows:
    /// `2024-05-01 12:00:00 +0000 UTC`.
    pub fn to_go_string(&self) -> String {
        let (date, time) = self.civil();
        format!("{date} {time} +0000 UTC")
    }

    /// Seconds from `self` until `later` (negative if `later` is earlier).
    pub fn seconds_until(&self, later: Timestamp) -> f64 {
        (later.secs - self.secs) as f64 + (f64::from(later.nanos) - f64::from(self.nanos)) / 1e9
    }

    /// The UTC calendar date: year, month (1–12) and day of the month.
    pub fn date(&self) -> (i64, u32, u32) {
        let CivilDate { y, m, d } = self.civil().0;
        (y, m, d)
    }

    fn civil(&self) -> (CivilDate, CivilTime) {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        (
            civil_from_days(days),
            CivilTime {
                h: (rem / 3600) as u32,
                m: (rem / 60 % 60) as u32,
                s: (rem % 60) as u32,
            },
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

struct CivilDate {
    y: i64,
    m: u32,
    d: u32,
}

impl fmt::Display for CivilDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.y, self.m, self.d)
    }
}

struct CivilTime {
    h: u32,
    m: u32,
    s: u32,
}

impl fmt::Display for CivilTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}:{:02}", self.h, self.m, self.s)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> CivilDate {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    CivilDate { y, m, d }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &c| {
        acc.checked_mul(10)?.checked_add(u32::from(c - b'0'))
    })
}

fn parse(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't') {
        return None;
    }
    let y = i64::from(digits(&b[0..4])?);
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    let h = digits(&b[11..13])?;
    let mi = digits(&b[14..16])?;
    let s = digits(&b[17..19])?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(&frac[..n])? * 10u32.pow(9 - n as u32);
        rest = &frac[n..];
    }
    let offset: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), hh1, hh2, b':', mm1, mm2] => {
            let oh = i64::from(digits(&[*hh1, *hh2])?);
            let om = i64::from(digits(&[*mm1, *mm2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400
        + i64::from(h) * 3600
        + i64::from(mi) * 60
        + i64::from(s)
        - offset;
    Some(Timestamp { secs, nanos })
}

/// Why a `--since`/`--until` value is no time: neither RFC 3339, a Unix time nor a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {input:?}: expected RFC 3339, a Unix time or a duration like 10m")]
pub struct TimeFilterError {
    /// The value given.
    pub input: String,
    /// Why it is not a duration either, the last form tried.
    #[source]
    pub source: super::duration::DurationError,
}

/// A `--since`/`--until` value of `logs` (and other filters), as Docker reads it: an RFC 3339
/// time, a Unix time (`1700000000`, `1700000000.5`), or a Go duration (`10m`, `1h30m`)
/// meaning that long before `now`.
pub fn parse_time_filter(s: &str, now: Timestamp) -> Result<Timestamp, TimeFilterError> {
    if let Ok(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    if let Some((secs, frac)) = s.split_once('.').or(Some((s, ""))) {
        if let (Ok(secs), true) = (
            secs.parse::<i64>(),
            frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()),
        ) {
            let nanos = if frac.is_empty() {
                0
            } else {
                format!("{frac:0<9}").parse::<u32>().unwrap_or(0)
            };
            return Ok(Timestamp { secs, nanos });
        }
    }
    let d = super::duration::parse_duration(s).map_err(|source| TimeFilterError {
        input: s.to_string(),
        source,
    })?;
    let total = i128::from(now.secs) * 1_000_000_000 + i128::from(now.nanos) - i128::from(d);
    Ok(Timestamp {
        secs: total.div_euclid(1_000_000_000) as i64,
        nanos: total.rem_euclid(1_000_000_000) as u32,
    })
}

/// Seconds since the epoch of an HTTP date in its IMF-fixdate form
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7), as in `Last-Modified`.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let rest = s.trim().split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let d: u32 = parts.next()?.parse().ok()?;
    let mon = parts.next()?;
    let mo = MONTHS.iter().position(|m| *m == mon)? as u32 + 1;
    let y: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|x| x.parse::<u32>().ok());
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(
        days_from_civil(y, mo, d) * 86_400
            + i64::from(h) * 3600
            + i64::from(mi) * 60
            + i64::from(sec),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_time_filters() {
        let now = Timestamp::from_secs(1_000_000);
        assert_eq!(
            parse_time_filter("10m", now).unwrap(),
            Timestamp::from_secs(999_400)
        );
        assert_eq!(
            parse_time_filter("1700000000", now).unwrap(),
            Timestamp::from_secs(1_700_000_000)
        );
        assert_eq!(
            parse_time_filter("1.5", now).unwrap(),
            Timestamp {
                secs: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            parse_time_filter("1970-01-01T00:00:10Z", now).unwrap(),
            Timestamp::from_secs(10)
        );
        assert!(parse_time_filter("yesterday", now).is_err());
    }

    #[test]
    fn time_filter_errors_keep_the_duration_error() {
        let now = Timestamp::from_secs(1_000_000);
        let err = parse_time_filter("10x", now).unwrap_err();
        assert_eq!(err.input, "10x");
        assert!(matches!(
            &err.source,
            crate::common::duration::DurationError::UnknownUnit { unit, .. } if unit == "x"
        ));
        let cause = std::error::Error::source(&err).expect("a source");
        assert_eq!(cause.to_string(), err.source.to_string());
        assert!(matches!(
            parse_time_filter("yesterday", now),
            Err(TimeFilterError {
                source: crate::common::duration::DurationError::Invalid(_),
                ..
            })
        ));
    }

    #[test]
    fn parses_http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("garbage"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn parses_and_formats_rfc3339() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0, 0, "1970-01-01T00:00:00Z"),
            (
                "2026-11-28T16:09:28.505765548Z",
                1_795_882_168,
                505_765_548,
                "2026-11-28T16:09:28.505765548Z",
            ),
            (
                "2024-02-29T23:59:59.5Z",
                1_709_251_199,
                500_000_000,
                "2024-02-29T23:59:59.5Z",
            ),
            (
                "2024-03-01T01:00:00+01:00",
                1_709_251_200,
                0,
                "2024-03-01T00:00:00Z",
            ),
            ("1969-12-31T23:59:59Z", -1, 0, "1969-12-31T23:59:59Z"),
            (
                "2000-01-01t00:00:00-00:30",
                946_686_600,
                0,
                "2000-01-01T00:30:00Z",
            ),
        ];
        for (text, secs, nanos, back) in cases {
            let t = Timestamp::parse_rfc3339(text).unwrap();
            assert_eq!((t.secs, t.nanos), (secs, nanos), "{text}");
            assert_eq!(t.to_rfc3339(), back, "{text}");
        }
        assert_eq!(
            Timestamp::from_secs(1_795_882_168).to_go_string(),
            "2026-11-28 16:09:28 +0000 UTC"
        );
        // Whole seconds, as a build writes `created` (a leap day, and before the epoch).
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
        ] {
            assert_eq!(Timestamp::from_secs(secs).to_rfc3339_secs(), text);
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01 00:00:00Z",
            "２024-01-01T00:00:00Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for days in (-800_000i64..800_000).step_by(997) {
            let c = civil_from_days(days);
            assert_eq!(days_from_civil(c.y, c.m, c.d), days);
        }
    }

    #[test]
    fn dates_in_utc() {
        assert_eq!(Timestamp::from_secs(0).date(), (1970, 1, 1));
        assert_eq!(Timestamp::from_secs(-1).date(), (1969, 12, 31));
        // 2024-02-29 23:59:59 UTC, then the next second.
        assert_eq!(Timestamp::from_secs(1_709_251_199).date(), (2024, 2, 29));
        assert_eq!(Timestamp::from_secs(1_709_251_200).date(), (2024, 3, 1));
    }
}
