//! The functions a template can call: Go's builtins (`len`, `index`, `printf`, `eq`, …) and
//! Docker's (`json`, `split`, `join`, `title`, `upper`, `lower`, `truncate`, `pad`).

use std::cmp::Ordering;

use serde_json::Value;

use super::printf::{go_type, sprint, sprintf, sprintln};

/// Every function name a template may use (`and` and `or` are evaluated lazily by the
/// executor, the rest here).
pub(super) const NAMES: &[&str] = &[
    "and", "or", "not", "len", "index", "slice", "printf", "print", "println", "eq", "ne", "lt",
    "le", "gt", "ge", "html", "js", "urlquery", "call", "json", "split", "join", "title", "lower",
    "upper", "truncate", "pad",
];

/// Why a call failed; the executor adds Go's context.
#[derive(Debug)]
pub(super) enum FuncError {
    /// `wrong number of args for NAME: want [at least] N got M`.
    Arity {
        want: usize,
        at_least: bool,
        got: usize,
    },
    /// `error calling NAME: …`.
    Call(String),
}

/// How a call is made: over a table header (Docker's header functions are the identity), and
/// whether `json` escapes `<`, `>` and `&` (as Go's `json.Marshal` does for a row context).
#[derive(Clone, Copy, Default)]
pub(super) struct Mode {
    pub header: bool,
    pub escape_html: bool,
}

fn arity(args: &[Value], want: usize, at_least: bool) -> Result<(), FuncError> {
    let ok = if at_least {
        args.len() >= want
    } else {
        args.len() == want
    };
    if ok {
        Ok(())
    } else {
        Err(FuncError::Arity {
            want,
            at_least,
            got: args.len(),
        })
    }
}

/// Go's truth: false, 0, nil and empty strings, arrays and maps are false.
pub(super) fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A string argument: strings as they are, a missing value as empty, others as `%v` prints them.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => super::printf::format_v(v),
    }
}

fn int_arg(v: &Value) -> Result<i64, FuncError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| {
                FuncError::Call(format!("cannot index slice/array with type {}", go_type(v)))
            }),
        v => Err(FuncError::Call(format!(
            "cannot index slice/array with type {}",
            go_type(v)
        ))),
    }
}

/// Calls function `name` (not `and`/`or`) with its evaluated arguments.
pub(super) fn call(name: &str, args: &[Value], mode: Mode) -> Result<Value, FuncError> {
    if mode.header {
        if let Some(v) = header_call(name, args)? {
            return Ok(v);
        }
    }
    let s = |v: String| Ok(Value::String(v));
    match name {
        "not" => arity(args, 1, false).map(|()| Value::Bool(!truth(&args[0]))),
        "len" => arity(args, 1, false).and_then(|()| len(&args[0])),
        "index" => arity(args, 1, true).and_then(|()| index(&args[0], &args[1..])),
        "slice" => arity(args, 1, true).and_then(|()| slice(&args[0], &args[1..])),
        "printf" => arity(args, 1, true).and_then(|()| s(sprintf(&text(&args[0]), &args[1..]))),
        "print" => s(sprint(args)),
        "println" => s(sprintln(args)),
        "eq" => arity(args, 1, true).and_then(|()| eq(args)),
        "ne" => arity(args, 2, false).and_then(|()| Ok(Value::Bool(!equal(&args[0], &args[1])?))),
        "lt" | "le" | "gt" | "ge" => {
            arity(args, 2, false).and_then(|()| compare(name, &args[0], &args[1]))
        }
        "html" => s(html(&escaper_arg(args))),
        "js" => s(js(&escaper_arg(args))),
        "urlquery" => s(urlquery(&escaper_arg(args))),
        "call" => Err(FuncError::Call("call of nil".into())),
        _ => docker_call(name, args, mode),
    }
}

/// Docker's functions (`cli/templates`).
fn docker_call(name: &str, args: &[Value], mode: Mode) -> Result<Value, FuncError> {
    let s = |v: String| Ok(Value::String(v));
    match name {
        "json" => arity(args, 1, false).and_then(|()| s(go_json(&args[0], mode.escape_html))),
        "split" => arity(args, 2, false).map(|()| split(&text(&args[0]), &text(&args[1]))),
        "join" => arity(args, 2, false).and_then(|()| s(join(&args[0], &text(&args[1])))),
        "title" => arity(args, 1, false).and_then(|()| s(title(&text(&args[0])))),
        "lower" => arity(args, 1, false).and_then(|()| s(text(&args[0]).to_lowercase())),
        "upper" => arity(args, 1, false).and_then(|()| s(text(&args[0]).to_uppercase())),
        "truncate" => arity(args, 2, false).and_then(|()| {
            let n = usize::try_from(int_arg(&args[1])?).unwrap_or(0);
            s(text(&args[0]).chars().take(n).collect())
        }),
        "pad" => arity(args, 3, false).and_then(|()| {
            let v = text(&args[0]);
            if v.is_empty() {
                return s(v);
            }
            let n = |a: &Value| int_arg(a).map(|n| " ".repeat(usize::try_from(n).unwrap_or(0)));
            s(format!("{}{v}{}", n(&args[1])?, n(&args[2])?))
        }),
        other => Err(FuncError::Call(format!("function {other:?} not defined"))),
    }
}

/// Docker's header functions: over a table header the text functions return their first
/// argument unchanged, so `{{upper .Names}}` heads its column `NAMES`.
fn header_call(name: &str, args: &[Value]) -> Result<Option<Value>, FuncError> {
    let want = match name {
        "json" | "title" | "lower" | "upper" => 1,
        "split" | "join" | "truncate" => 2,
        _ => return Ok(None),
    };
    arity(args, want, false)?;
    Ok(Some(Value::String(text(&args[0]))))
}

fn len(v: &Value) -> Result<Value, FuncError> {
    Ok(Value::from(match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        Value::Null => 0,
        v => return Err(FuncError::Call(format!("len of type {}", go_type(v)))),
    }))
}

fn index(item: &Value, keys: &[Value]) -> Result<Value, FuncError> {
    let mut cur = item.clone();
    for k in keys {
        cur = match &cur {
            Value::Array(a) => {
                let i = int_arg(k)?;
                usize::try_from(i)
                    .ok()
                    .and_then(|i| a.get(i))
                    .cloned()
                    .ok_or_else(|| FuncError::Call(format!("index out of range: {i}")))?
            }
            Value::String(s) => {
                let i = int_arg(k)?;
                let b = usize::try_from(i).ok().and_then(|i| s.as_bytes().get(i));
                Value::from(*b.ok_or_else(|| FuncError::Call(format!("index out of range: {i}")))?)
            }
            Value::Object(o) => match k {
                Value::String(key) => o.get(key).cloned().unwrap_or(Value::Null),
                k => {
                    return Err(FuncError::Call(format!(
                        "value has type {}; should be string",
                        go_type(k)
                    )))
                }
            },
            // A missing value indexes to a missing value: scripts never fail on absent keys.
            Value::Null => Value::Null,
            v => {
                return Err(FuncError::Call(format!(
                    "can't index item of type {}",
                    go_type(v)
                )))
            }
        };
    }
    Ok(cur)
}

fn slice(item: &Value, idx: &[Value]) -> Result<Value, FuncError> {
    let len = match item {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        v => {
            return Err(FuncError::Call(format!(
                "can't slice item of type {}",
                go_type(v)
            )))
        }
    };
    if idx.len() > 3 || (idx.len() == 3 && item.is_string()) {
        return Err(FuncError::Call(format!(
            "too many slice indexes: {}",
            idx.len()
        )));
    }
    let mut bounds = [0, len];
    for (i, v) in idx.iter().take(2).enumerate() {
        let n = int_arg(v)?;
        bounds[i] = usize::try_from(n)
            .ok()
            .filter(|n| *n <= len)
            .ok_or_else(|| FuncError::Call(format!("index out of range: {n}")))?;
    }
    if bounds[0] > bounds[1] {
        return Err(FuncError::Call(format!(
            "invalid slice index: {} > {}",
            bounds[0], bounds[1]
        )));
    }
    Ok(match item {
        Value::String(s) => Value::String(
            s.get(bounds[0]..bounds[1])
                .ok_or_else(|| FuncError::Call("slice splits a character".into()))?
                .to_owned(),
        ),
        Value::Array(a) => Value::Array(a[bounds[0]..bounds[1]].to_vec()),
        _ => Value::Null,
    })
}

#[derive(PartialEq)]
enum Basic<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

fn basic(v: &Value) -> Result<Basic<'_>, FuncError> {
    Ok(match v {
        Value::Null => Basic::Null,
        Value::Bool(b) => Basic::Bool(*b),
        Value::Number(n) if n.is_f64() => Basic::Float(n.as_f64().unwrap_or(0.0)),
        Value::Number(n) => Basic::Int(
            n.as_i64()
                .map(i128::from)
                .or(n.as_u64().map(i128::from))
                .unwrap_or(0),
        ),
        Value::String(s) => Basic::Str(s),
        _ => return Err(FuncError::Call("non-comparable type".into())),
    })
}

fn incompatible() -> FuncError {
    FuncError::Call("incompatible types for comparison".into())
}

fn equal(a: &Value, b: &Value) -> Result<bool, FuncError> {
    match (basic(a)?, basic(b)?) {
        (Basic::Null, Basic::Null) => Ok(true),
        (Basic::Null, _) | (_, Basic::Null) => Ok(false),
        (Basic::Bool(x), Basic::Bool(y)) => Ok(x == y),
        (Basic::Int(x), Basic::Int(y)) => Ok(x == y),
        (Basic::Float(x), Basic::Float(y)) => Ok(x == y),
        (Basic::Str(x), Basic::Str(y)) => Ok(x == y),
        _ => Err(incompatible()),
    }
}

fn eq(args: &[Value]) -> Result<Value, FuncError> {
    for b in &args[1..] {
        if equal(&args[0], b)? {
            return Ok(Value::Bool(true));
        }
    }
    // `eq x` alone compares with nothing: Go says false.
    Ok(Value::Bool(false))
}

fn compare(name: &str, a: &Value, b: &Value) -> Result<Value, FuncError> {
    let ord = match (basic(a)?, basic(b)?) {
        (Basic::Int(x), Basic::Int(y)) => x.cmp(&y),
        (Basic::Float(x), Basic::Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Basic::Str(x), Basic::Str(y)) => x.cmp(y),
        (Basic::Bool(_), _) | (_, Basic::Bool(_)) | (Basic::Null, _) | (_, Basic::Null) => {
            return Err(FuncError::Call("invalid type for comparison".into()))
        }
        _ => return Err(incompatible()),
    };
    Ok(Value::Bool(match name {
        "lt" => ord == Ordering::Less,
        "le" => ord != Ordering::Greater,
        "gt" => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    }))
}

/// What `html`, `js` and `urlquery` escape: one string as it is, else `print` of the arguments.
fn escaper_arg(args: &[Value]) -> String {
    match args {
        [Value::String(s)] => s.clone(),
        args => sprint(args),
    }
}

fn html(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn js(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' | '>' | '&' | '=' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if (c as u32) < 0x20 || c.is_control() => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

fn urlquery(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn split(s: &str, sep: &str) -> Value {
    if sep.is_empty() {
        return Value::Array(s.chars().map(|c| Value::String(c.to_string())).collect());
    }
    Value::Array(s.split(sep).map(|p| Value::String(p.to_owned())).collect())
}

fn join(list: &Value, sep: &str) -> String {
    match list {
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(sep),
        v => text(v),
    }
}

/// Go's `strings.Title`: a letter after a separator (anything but a letter, digit or `_`)
/// becomes upper case; the rest is left as it is.
fn title(s: &str) -> String {
    let mut out = String::new();
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_');
    }
    out
}

/// JSON as Go's encoder writes it: U+2028 and U+2029 always escaped, `<`, `>` and `&` when
/// `escape_html` (`json.Marshal`), integral floats without a fraction.
pub(super) fn go_json(v: &Value, escape_html: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, v, escape_html);
    out
}

fn write_json(out: &mut String, v: &Value, escape_html: bool) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_f64() => out.push_str(&json_float(n.as_f64().unwrap_or(0.0))),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_string(out, s, escape_html),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, e, escape_html);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, e)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, k, escape_html);
                out.push(':');
                write_json(out, e, escape_html);
            }
            out.push('}');
        }
    }
}

/// Go's float encoding: plain decimal between 1e-6 and 1e21, exponent form outside.
fn json_float(f: f64) -> String {
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        return format!(
            "{m}e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.unsigned_abs()
        );
    }
    format!("{f}")
}

fn write_json_string(out: &mut String, s: &str, escape_html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '<' | '>' | '&' if escape_html => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(name: &str, args: Value) -> Value {
        call(name, args.as_array().unwrap(), Mode::default()).unwrap()
    }

    #[test]
    fn docker_functions_as_docker_prints_them() {
        // Expected values are Docker 28's output for the same calls.
        assert_eq!(
            c("title", json!(["hello wORLD-foo bar_baz"])),
            "Hello WORLD-Foo Bar_baz"
        );
        assert_eq!(c("pad", json!(["ab", 2, 3])), "  ab   ");
        assert_eq!(c("pad", json!(["", 2, 3])), "");
        assert_eq!(c("truncate", json!(["abcdef", 3])), "abc");
        assert_eq!(c("truncate", json!(["ab", 3])), "ab");
        assert_eq!(c("split", json!(["a,b", ","])), json!(["a", "b"]));
        assert_eq!(c("split", json!(["", ","])), json!([""]));
        assert_eq!(c("join", json!([["a", 1], "+"])), "a+1");
        assert_eq!(c("json", json!(["<a&b>"])), "\"<a&b>\"");
        assert_eq!(
            go_json(&json!({"b": "<x>", "a": [1, 2.5, 3.0, null]}), true),
            r#"{"a":[1,2.5,3,null],"b":"\u003cx\u003e"}"#
        );
        assert_eq!(c("upper", json!(["abc"])), "ABC");
        assert_eq!(c("lower", json!(["ABC"])), "abc");
    }

    #[test]
    fn go_builtins() {
        assert_eq!(c("html", json!(["<'\"&>"])), "&lt;&#39;&#34;&amp;&gt;");
        assert_eq!(c("js", json!(["a'b<"])), "a\\'b\\u003C");
        assert_eq!(c("urlquery", json!(["é/? &"])), "%C3%A9%2F%3F+%26");
        assert_eq!(c("len", json!(["héllo"])), 6);
        assert_eq!(c("index", json!(["abc", 1])), 98);
        assert_eq!(c("index", json!([{"a": [{"b": 1}]}, "a", 0, "b"])), 1);
        assert_eq!(c("index", json!([{"a": 1}, "zz"])), Value::Null);
        assert_eq!(c("slice", json!([["a", "b", "c"], 1])), json!(["b", "c"]));
        assert_eq!(c("slice", json!(["abcdef", 1, 3])), "bc");
        assert_eq!(c("eq", json!([1, 2, 1])), true);
        assert_eq!(c("eq", json!(["a", "b", "c"])), false);
        assert_eq!(c("ne", json!([1, 2])), true);
        assert_eq!(c("le", json!([2, 2])), true);
        assert_eq!(c("lt", json!(["a", "b"])), true);
        assert_eq!(c("not", json!([""])), true);
        assert_eq!(c("print", json!([1, 2, "a"])), "1 2a");
        let err =
            |name: &str, args: Value| match call(name, args.as_array().unwrap(), Mode::default()) {
                Err(FuncError::Call(m)) => m,
                other => panic!("{other:?}"),
            };
        assert_eq!(
            err("eq", json!([1, "a"])),
            "incompatible types for comparison"
        );
        assert_eq!(
            err("gt", json!([1.5, 1])),
            "incompatible types for comparison"
        );
        assert_eq!(err("index", json!([["a"], 99])), "index out of range: 99");
        assert_eq!(err("len", json!([3])), "len of type int");
        assert!(matches!(
            call("printf", &[], Mode::default()),
            Err(FuncError::Arity {
                want: 1,
                at_least: true,
                got: 0
            })
        ));
    }

    #[test]
    fn header_mode_keeps_titles() {
        let h = Mode {
            header: true,
            escape_html: false,
        };
        assert_eq!(call("upper", &[json!("Names")], h).unwrap(), "Names");
        assert_eq!(
            call("join", &[json!("NAMES"), json!(",")], h).unwrap(),
            "NAMES"
        );
        assert_eq!(call("len", &[json!("NAMES")], h).unwrap(), 5);
    }
}
