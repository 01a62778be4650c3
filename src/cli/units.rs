//! Human-readable sizes and durations exactly as Docker prints them (`github.com/docker/go-units`).

/// Go's `fmt.Sprintf("%.*g", precision, v)` for a non-negative `v`.
fn go_g(v: f64, precision: usize) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    let p = precision.max(1);
    let sci = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s.to_owned()
        }
    };
    if exp < -4 || exp >= p as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{v:.decimals$}"))
    }
}

/// `units.HumanSizeWithPrecision`: decimal units (`4.27MB`, `512kB`, `0B`).
pub fn human_size_precision(size: u64, precision: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = size as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g(v, precision), UNITS[i])
}

/// `units.BytesSize`: binary units, 4 significant digits (`1.523MiB`), as `docker stats`.
pub fn bytes_size(size: u64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut v = size as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", go_g(v, 4), UNITS[i])
}

/// `units.HumanSizeWithPrecision(size, 3)`, what `docker images` shows.
pub fn human_size(size: u64) -> String {
    human_size_precision(size, 3)
}

/// `units.HumanDuration`: `Less than a second`, `2 minutes`, `About an hour`, `3 weeks`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds as i64;
    if s < 1 {
        return "Less than a second".to_owned();
    }
    if s == 1 {
        return "1 second".to_owned();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let minutes = (seconds / 60.0) as i64;
    if minutes == 1 {
        return "About a minute".to_owned();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (seconds / 3600.0 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".to_owned();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", (seconds / 3600.0) as i64 / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker() {
        let cases = [
            (0, "0B"),
            (999, "999B"),
            (1000, "1kB"),
            (1024, "1.02kB"),
            (1_984_172, "1.98MB"),
            (4_270_000, "4.27MB"),
            (999_950, "1e+03kB"),
            (12_345_678_901, "12.3GB"),
            (100_000_000, "100MB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_size(n), want, "{n}");
        }
        assert_eq!(human_size_precision(1_984_172, 4), "1.984MB");
    }

    #[test]
    fn durations_as_docker() {
        let cases = [
            (0.2, "Less than a second"),
            (1.0, "1 second"),
            (59.0, "59 seconds"),
            (60.0, "About a minute"),
            (119.0, "About a minute"),
            (120.0, "2 minutes"),
            (3599.0, "59 minutes"),
            (3600.0, "About an hour"),
            (5400.0, "2 hours"),
            (47.0 * 3600.0, "47 hours"),
            (48.0 * 3600.0, "2 days"),
            (14.0 * 86400.0, "2 weeks"),
            (60.0 * 86400.0, "2 months"),
            (800.0 * 86400.0, "2 years"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }
}
