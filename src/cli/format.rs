//! Docker-style `--format` templates (a Go text/template subset) and tab-aligned tables.
//!
//! Supported: literal text with `\t` / `\n` escapes, `{{.Field}}` and nested `{{.A.B}}`,
//! `{{json .}}` / `{{json .Field}}`, `{{upper x}}`, `{{lower x}}`, `{{title x}}`,
//! `{{join .List ", "}}`, `{{truncate .Field N}}`, `{{println ...}}`, and the `table` prefix
//! that adds a header row and aligns columns as Docker's tabwriter does.

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Action(Vec<Arg>),
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Field(Vec<String>),
    Ident(String),
    Str(String),
    Num(i64),
}

impl Template {
    /// Parse a `--format` value. `table` at the start turns on the header and alignment.
    pub fn parse(src: &str) -> Result<Template, String> {
        let (table, body) = match src.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, src),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("template parsing error: unclosed action in {src:?}"))?;
            let action = after[..end]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-');
            parts.push(Part::Action(parse_action(action.trim())?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { table, parts })
    }

    /// True when the template started with `table`.
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Render one row.
    pub fn render(&self, row: &Value) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(args) => out.push_str(&eval(args, row)?),
            }
        }
        Ok(out)
    }

    /// Render the header row of a table: each `{{.Field}}` becomes its column title.
    pub fn render_header(&self, title: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(args) => {
                    let field = args.iter().find_map(|a| match a {
                        Arg::Field(path) => path.last().cloned(),
                        _ => None,
                    });
                    out.push_str(&title(&field.unwrap_or_default()));
                }
            }
        }
        out
    }
}

fn parse_action(s: &str) -> Result<Vec<Arg>, String> {
    let mut args = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        if let Some(r) = rest.strip_prefix('"') {
            let end = r
                .find('"')
                .ok_or_else(|| format!("template parsing error: unterminated string in {s:?}"))?;
            args.push(Arg::Str(r[..end].to_string()));
            rest = &r[end + 1..];
            continue;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        if word == "." {
            args.push(Arg::Field(Vec::new()));
        } else if let Some(path) = word.strip_prefix('.') {
            args.push(Arg::Field(path.split('.').map(str::to_string).collect()));
        } else if let Ok(n) = word.parse::<i64>() {
            args.push(Arg::Num(n));
        } else {
            args.push(Arg::Ident(word.to_string()));
        }
    }
    if args.is_empty() {
        return Err("template parsing error: empty action".to_string());
    }
    Ok(args)
}

fn lookup<'a>(row: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    let mut v = row;
    for key in path {
        v = v
            .get(key)
            .ok_or_else(|| format!("template: can't evaluate field {key}"))?;
    }
    Ok(v)
}

fn value(arg: &Arg, row: &Value) -> Result<Value, String> {
    match arg {
        Arg::Field(path) => lookup(row, path).cloned(),
        Arg::Str(s) => Ok(Value::String(s.clone())),
        Arg::Num(n) => Ok(Value::from(*n)),
        Arg::Ident(i) => Err(format!("template: function {i:?} not defined here")),
    }
}

/// JSON as Go's `json.Marshal` writes it, which Docker's `{{json}}` uses: `<`, `>` and `&`
/// (and U+2028, U+2029) escaped as `\u003c` and so on. They can only occur inside strings, so
/// replacing them in the encoded text is exact.
fn go_json(v: &Value) -> Result<String, String> {
    let s = serde_json::to_string(v).map_err(|e| e.to_string())?;
    Ok(s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029"))
}

/// Text of a value as Go's template prints it.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(text).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

fn eval(args: &[Arg], row: &Value) -> Result<String, String> {
    let Some(Arg::Ident(func)) = args.first() else {
        return Ok(text(&value(&args[0], row)?));
    };
    let vals = args[1..]
        .iter()
        .map(|a| value(a, row))
        .collect::<Result<Vec<_>, _>>()?;
    let one = || {
        vals.first()
            .map(text)
            .ok_or_else(|| format!("template: {func} needs an argument"))
    };
    Ok(match func.as_str() {
        "json" => go_json(vals.first().unwrap_or(&Value::Null))?,
        "upper" => one()?.to_uppercase(),
        "lower" => one()?.to_lowercase(),
        "title" => {
            let s = one()?;
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
        "println" => format!("{}\n", vals.iter().map(text).collect::<Vec<_>>().join(" ")),
        "join" => match (vals.first(), vals.get(1)) {
            (Some(Value::Array(a)), Some(sep)) => {
                a.iter().map(text).collect::<Vec<_>>().join(&text(sep))
            }
            _ => return Err("template: join needs a list and a separator".to_string()),
        },
        "truncate" => match (vals.first(), vals.get(1).and_then(Value::as_u64)) {
            (Some(v), Some(n)) => text(v).chars().take(n as usize).collect(),
            _ => return Err("template: truncate needs a value and a length".to_string()),
        },
        other => return Err(format!("template: function {other:?} not defined")),
    })
}

/// Align tab-separated cells into columns as Go's tabwriter does with Docker's settings
/// (minimum width 10, padding 3); the last cell of each line is not padded.
pub fn tabulate(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max((c.chars().count() + 3).max(10));
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.chars().count();
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_and_functions() {
        let row = json!({"Repository": "busybox", "Tag": "local", "Labels": ["a", "b"], "Html": "<none> &",
                         "Config": {"User": "app"}});
        let cases = [
            ("{{.Repository}}:{{.Tag}}", "busybox:local"),
            ("{{ .Config.User }}", "app"),
            ("{{json .Tag}}", "\"local\""),
            ("{{json .Html}}", "\"\\u003cnone\\u003e \\u0026\""),
            ("{{upper .Tag}}", "LOCAL"),
            ("{{join .Labels \",\"}}", "a,b"),
            ("{{truncate .Repository 4}}", "busy"),
            ("{{.Repository}}\\t{{.Tag}}", "busybox\tlocal"),
        ];
        for (t, want) in cases {
            let got = Template::parse(t).unwrap().render(&row).unwrap();
            assert_eq!(got, want, "template {t}");
        }
        assert!(Template::parse("{{.Missing}}")
            .unwrap()
            .render(&row)
            .is_err());
        assert!(Template::parse("{{.Tag").is_err());
    }

    #[test]
    fn table_header_and_alignment() {
        let t = Template::parse("table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}").unwrap();
        assert!(t.is_table());
        let header = t.render_header(|f| f.to_uppercase());
        let row = t
            .render(&json!({"Repository": "busybox", "Tag": "latest", "ID": "0123456789ab"}))
            .unwrap();
        let out = tabulate(&[header, row]);
        assert_eq!(
            out,
            "REPOSITORY   TAG       ID\nbusybox      latest    0123456789ab\n"
        );
    }
}
