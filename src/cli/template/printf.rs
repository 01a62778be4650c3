//! Go's `fmt` as templates reach it: `%v` of JSON values (`map[k:v]`, `[a b]`, `<nil>`),
//! `print`, `println`, and `printf` with Go's verbs, flags, widths and error forms.

use serde_json::{Number, Value};

/// `%v` of a value: what `{{.X}}` prints (except a top-level null, which is `<no value>`).
pub(super) fn format_v(v: &Value) -> String {
    fmt_value(v, 'v', &Spec::default())
}

/// Go's `fmt.Sprint`: a space between two operands when neither is a string.
pub(super) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !a.is_string() && !args[i - 1].is_string() {
            out.push(' ');
        }
        out.push_str(&format_v(a));
    }
    out
}

/// Go's `fmt.Sprintln`: operands separated by spaces, then a newline.
pub(super) fn sprintln(args: &[Value]) -> String {
    let mut s = args.iter().map(format_v).collect::<Vec<_>>().join(" ");
    s.push('\n');
    s
}

/// Flags, width and precision of one verb.
#[derive(Default, Clone)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    zero: bool,
    space: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's `fmt.Sprintf`.
pub(super) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = take_num(&mut chars, args, &mut next);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(take_num(&mut chars, args, &mut next).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(next) {
            None => out.push_str(&format!("%!{verb}(MISSING)")),
            Some(a) => out.push_str(&fmt_value(a, verb, &spec)),
        }
        next += 1;
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| match a {
                Value::Null => "<nil>".to_owned(),
                a => format!("{}={}", go_type(a), format_v(a)),
            })
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn take_num(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    args: &[Value],
    next: &mut usize,
) -> Option<usize> {
    if chars.peek() == Some(&'*') {
        chars.next();
        let n = args.get(*next).and_then(Value::as_u64).map(|n| n as usize);
        *next += 1;
        return n;
    }
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
        chars.next();
    }
    n
}

/// Go's name of a JSON value's type, as `%!d(string=x)` shows it.
pub(super) fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn bad_verb(verb: char, v: &Value) -> String {
    match v {
        Value::Null => format!("%!{verb}(<nil>)"),
        v => format!("%!{verb}({}={})", go_type(v), format_v(v)),
    }
}

fn fmt_value(v: &Value, verb: char, spec: &Spec) -> String {
    match v {
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(|i| fmt_value(i, verb, spec)).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        fmt_value(&Value::String(k.clone()), verb, spec),
                        fmt_value(v, verb, spec)
                    )
                })
                .collect();
            format!("map[{}]", inner.join(" "))
        }
        Value::Null if verb == 'v' => pad("<nil>", spec, false),
        Value::Null => bad_verb(verb, v),
        Value::Bool(b) if matches!(verb, 'v' | 't') => pad(&b.to_string(), spec, false),
        Value::Bool(_) => bad_verb(verb, v),
        Value::String(s) => fmt_string(s, verb, spec).unwrap_or_else(|| bad_verb(verb, v)),
        Value::Number(n) => fmt_number(n, verb, spec).unwrap_or_else(|| bad_verb(verb, v)),
    }
}

/// Pads to the width: spaces on the left (right with `-`), or zeros after the sign.
fn pad(s: &str, spec: &Spec, numeric: bool) -> String {
    let Some(w) = spec.width else {
        return s.to_owned();
    };
    let len = s.chars().count();
    if len >= w {
        return s.to_owned();
    }
    let fill = w - len;
    if spec.minus {
        return format!("{s}{}", " ".repeat(fill));
    }
    if spec.zero {
        let sign_len = if numeric && s.starts_with(['+', '-', ' ']) {
            1
        } else {
            0
        };
        return format!("{}{}{}", &s[..sign_len], "0".repeat(fill), &s[sign_len..]);
    }
    format!("{}{s}", " ".repeat(fill))
}

fn fmt_string(s: &str, verb: char, spec: &Spec) -> Option<String> {
    let cut = |s: &str| match spec.prec {
        Some(p) => s.chars().take(p).collect::<String>(),
        None => s.to_owned(),
    };
    let text = match verb {
        'v' | 's' => cut(s),
        'q' => go_quote(&cut(s)),
        'x' => s.bytes().map(|b| format!("{b:02x}")).collect(),
        'X' => s.bytes().map(|b| format!("{b:02X}")).collect(),
        _ => return None,
    };
    Some(pad(&text, spec, false))
}

fn fmt_number(n: &Number, verb: char, spec: &Spec) -> Option<String> {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
        return fmt_float(f, verb, spec);
    }
    let (neg, mag) = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => (i < 0, i.unsigned_abs()),
        (None, Some(u)) => (false, u),
        _ => return None,
    };
    let digits = match verb {
        'v' | 'd' => mag.to_string(),
        'b' => format!("{mag:b}"),
        'o' | 'O' => format!("{mag:o}"),
        'x' => format!("{mag:x}"),
        'X' => format!("{mag:X}"),
        'c' => return Some(pad(&char_of(mag).to_string(), spec, false)),
        'q' => return Some(pad(&quote_rune(char_of(mag)), spec, false)),
        'U' => return Some(pad(&format!("U+{mag:04X}"), spec, false)),
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' => return None,
        _ => return None,
    };
    let digits = match spec.prec {
        Some(p) if digits.len() < p => format!("{}{digits}", "0".repeat(p - digits.len())),
        _ => digits,
    };
    let prefix = match (verb, spec.sharp) {
        ('x', true) => "0x",
        ('X', true) => "0X",
        ('o', true) => "0",
        ('O', _) => "0o",
        ('b', true) => "0b",
        _ => "",
    };
    let sign = sign_of(neg, spec);
    Some(pad(&format!("{sign}{prefix}{digits}"), spec, true))
}

fn sign_of(neg: bool, spec: &Spec) -> &'static str {
    match (neg, spec.plus, spec.space) {
        (true, _, _) => "-",
        (false, true, _) => "+",
        (false, false, true) => " ",
        _ => "",
    }
}

fn char_of(n: u64) -> char {
    u32::try_from(n)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{FFFD}')
}

fn fmt_float(f: f64, verb: char, spec: &Spec) -> Option<String> {
    let body = if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        "Inf".to_owned()
    } else {
        match verb {
            'v' | 'g' => fmt_g(f.abs(), spec.prec, 'e'),
            'G' => fmt_g(f.abs(), spec.prec, 'E'),
            'e' => fmt_e(f.abs(), spec.prec.unwrap_or(6), 'e'),
            'E' => fmt_e(f.abs(), spec.prec.unwrap_or(6), 'E'),
            'f' | 'F' => format!("{:.*}", spec.prec.unwrap_or(6), f.abs()),
            _ => return None,
        }
    };
    let neg = f.is_sign_negative() && !f.is_nan();
    let sign = if f.is_infinite() && !neg {
        "+"
    } else {
        sign_of(neg, spec)
    };
    Some(pad(&format!("{sign}{body}"), spec, f.is_finite()))
}

/// Shortest (or `prec`-digit) decimal digits of `f` (non-negative) and its decimal exponent.
fn digits_exp(f: f64, prec: Option<usize>) -> (String, i32) {
    let e = match prec {
        None => format!("{f:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, f),
    };
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let mut digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, exp.parse().unwrap_or(0))
}

fn exp_text(exp: i32, e: char) -> String {
    format!(
        "{e}{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    )
}

/// Go's `%e`: `d.dddddde±XX`.
fn fmt_e(f: f64, prec: usize, e: char) -> String {
    let s = format!("{f:.prec$e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    format!("{mant}{}", exp_text(exp.parse().unwrap_or(0), e))
}

/// Go's `%g` (and `%v` of a float): shortest digits, exponent form when the exponent is
/// below -4 or at least the precision (6 for the shortest form).
fn fmt_g(f: f64, prec: Option<usize>, e: char) -> String {
    if f == 0.0 {
        return "0".to_owned();
    }
    let (digits, exp) = digits_exp(f, prec);
    let nd = digits.len() as i32;
    let eprec = match prec {
        None => 6,
        Some(p) => {
            let p = p.max(1) as i32;
            if p > nd && nd > exp {
                nd
            } else {
                p
            }
        }
    };
    if exp < -4 || exp >= eprec {
        let rest = &digits[1..];
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        return format!("{}{dot}{}", &digits[..1], exp_text(exp, e));
    }
    if exp < 0 {
        return format!("0.{}{digits}", "0".repeat((-exp - 1) as usize));
    }
    let int_len = (exp + 1) as usize;
    if digits.len() <= int_len {
        format!("{digits}{}", "0".repeat(int_len - digits.len()))
    } else {
        format!("{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

/// Go's `strconv.Quote`.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        push_escaped(&mut out, c, '"');
    }
    out.push('"');
    out
}

fn quote_rune(c: char) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, c, '\'');
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, quote: char) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_print_as_go_prints_them() {
        for (v, want) in [
            (
                json!({"b": [1, "x"], "a": null, "c": {"d": true}}),
                "map[a:<nil> b:[1 x] c:map[d:true]]",
            ),
            (json!(["a", "b"]), "[a b]"),
            (json!([]), "[]"),
            (json!({}), "map[]"),
            (json!(1.5), "1.5"),
            (json!(2.0), "2"),
            (json!(1e6), "1e+06"),
            (json!(123456.0), "123456"),
            (json!(123456789.0), "1.23456789e+08"),
            (json!(0.0001), "0.0001"),
            (json!(0.00001), "1e-05"),
            (json!(-3), "-3"),
            (json!(u64::MAX), "18446744073709551615"),
        ] {
            assert_eq!(format_v(&v), want, "{v}");
        }
    }

    #[test]
    fn printf_verbs_match_go() {
        let s = |f: &str, args: Value| sprintf(f, args.as_array().unwrap());
        // Each expected string is what Docker 28 (Go 1.24) printed for the same call.
        assert_eq!(
            s(
                "%5s|%-5s|%q|%d|%x|%X|%o|%t|%v|%5.2f|%e|%03d|%+d|%c|%U|%%",
                json!([
                    "a", "b", "c\"d", 42, 255, 255, 8, true, 1.5, 3.14158, 1234.5, 7, 5, 65, 65
                ])
            ),
            "    a|b    |\"c\\\"d\"|42|ff|FF|10|true|1.5| 3.14|1.234500e+03|007|+5|A|U+0041|%"
        );
        assert_eq!(
            s("%s|%d|%s", json!([42, "x"])),
            "%!s(int=42)|%!d(string=x)|%!s(MISSING)"
        );
        assert_eq!(s("%s", json!([1, 2])), "%!s(int=1)%!(EXTRA int=2)");
        assert_eq!(
            s("%v|%q|%5v", json!([["a", "b"], ["a", "b"], ["a"]])),
            "[a b]|[\"a\" \"b\"]|[    a]"
        );
        assert_eq!(
            s("%6.2f|%-8.3s|%8q", json!([3.14158, "abcdef", "x"])),
            "  3.14|abc     |     \"x\""
        );
        assert_eq!(s("%x %X", json!(["hi", "hi"])), "6869 6869");
        assert_eq!(
            s("%5d|%-5d|%05.1f|%x", json!([42, 42, 3.14158, -255])),
            "   42|42   |003.1|-ff"
        );
        assert_eq!(s("%v|%s", json!([true, true])), "true|%!s(bool=true)");
        assert_eq!(s("%q", json!([65])), "'A'");
        assert_eq!(
            s(
                "%8.3f|%g|%v|%v",
                json!([2.0, 100000000.0, 1e21, 123456789.0])
            ),
            "   2.000|1e+08|1e+21|1.23456789e+08"
        );
        assert_eq!(s("%v %s", json!([null])), "<nil> %!s(MISSING)");
        assert_eq!(
            s("%.3g|%.2e|%G", json!([100.0, 1234.5, 1e-7])),
            "100|1.23e+03|1E-07"
        );
        assert_eq!(s("%!", json!([])), "%!!(MISSING)");
    }

    #[test]
    fn print_and_println_space_as_go() {
        assert_eq!(
            sprint(&[json!("a"), json!(1), json!(2), json!("b")]),
            "a1 2b"
        );
        assert_eq!(sprint(&[json!(1), json!("a"), json!(2)]), "1a2");
        assert_eq!(sprint(&[json!(true), json!(false)]), "true false");
        assert_eq!(sprintln(&[json!("a"), json!(1)]), "a 1\n");
        assert_eq!(sprintln(&[]), "\n");
        assert_eq!(go_quote("a\"b\\\n\u{1}é"), "\"a\\\"b\\\\\\n\\x01é\"");
    }
}
