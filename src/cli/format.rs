//! `--format` as Docker's CLI applies a template: list commands (`ps`, `images`, `history`,
//! `stats`) take the `table` directive, `\t`/`\n` escapes, one line per row and an aligned
//! header; single documents (`inspect`, `version`, `info`) run the template as written. The
//! template language itself is [`super::template`], the one engine every command uses.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::template::{Data, Methods, NoMethods, Template, TemplateError};

/// A `--format` value that failed, worded as Docker words it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    /// The template does not parse.
    #[error("template parsing error: {0}")]
    Parse(#[source] TemplateError),
    /// The template failed on a row (Docker's list commands call this a parsing error too).
    #[error("template parsing error: {0}")]
    Exec(#[source] TemplateError),
}

/// Which of Docker's commands' wording and exit codes a template error gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Report {
    /// `images`, `history`, `stats`, `volume ls`: `template parsing error: …`, exit 1.
    List,
    /// `ps`: `failed to parse template: …` / `failed to execute template: …`, exit 1.
    Ps,
    /// `inspect`: `template parsing error: …`; exit 64 (usage) when it does not parse.
    Inspect,
    /// `version` and `info`: as inspect, but an execution error is printed bare.
    Version,
}

impl FormatError {
    /// Prints the error on standard error as Docker does and returns Docker's exit code.
    pub(crate) fn report(&self, how: Report) -> i32 {
        let (msg, code) = match (self, how) {
            (FormatError::Parse(e), Report::Ps) => (format!("failed to parse template: {e}"), 1),
            (FormatError::Exec(e), Report::Ps) => (format!("failed to execute template: {e}"), 1),
            (FormatError::Parse(_), Report::Inspect | Report::Version) => (self.to_string(), 64),
            (FormatError::Exec(e), Report::Version) => (e.to_string(), 1),
            _ => (self.to_string(), 1),
        };
        eprintln!("{msg}");
        code
    }
}

/// One row of a list command: its fields, and the labels `{{.Label "k"}}` reads when the
/// row has them (Docker's `ps` rows do).
pub(crate) struct Row {
    pub data: Value,
    pub labels: Option<BTreeMap<String, String>>,
}

impl From<Value> for Row {
    fn from(data: Value) -> Row {
        Row { data, labels: None }
    }
}

/// `.Label "k"` of a row: the label's value, empty when it is not set.
struct LabelMethod<'a>(&'a BTreeMap<String, String>);

impl Methods for LabelMethod<'_> {
    fn arity(&self, name: &str) -> Option<usize> {
        (name == "Label").then_some(1)
    }
    fn call(&self, _: &str, args: &[Value]) -> Value {
        let key = args.first().and_then(Value::as_str).unwrap_or_default();
        Value::String(self.0.get(key).cloned().unwrap_or_default())
    }
}

/// `.Label "com.example.some-thing"` in a header: Docker heads the column with the last part
/// of the key, `-` and `_` as spaces (`some thing`).
struct HeaderLabel;

impl Methods for HeaderLabel {
    fn arity(&self, name: &str) -> Option<usize> {
        (name == "Label").then_some(1)
    }
    fn call(&self, _: &str, args: &[Value]) -> Value {
        let key = args.first().and_then(Value::as_str).unwrap_or_default();
        let last = key.rsplit('.').next().unwrap_or_default();
        Value::String(last.replace(['-', '_'], " "))
    }
}

/// A parsed `--format` of a list command.
pub(crate) struct Format {
    template: Template,
    table: bool,
}

impl Format {
    /// Parses a list command's format as Docker does: a leading `table` turns on the header
    /// and alignment, spaces around the rest are dropped, and `\t` and `\n` become a tab and
    /// a newline.
    pub(crate) fn parse(src: &str) -> Result<Format, FormatError> {
        let (table, body) = match src.strip_prefix("table") {
            Some(rest) => (true, rest),
            None => (false, src),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let template = Template::parse("", &body).map_err(FormatError::Parse)?;
        Ok(Format { template, table })
    }

    /// Renders the rows, one line each (after a header row, aligned, for `table`).
    /// `title` names a field's column (`ID` → `CONTAINER ID`).
    pub(crate) fn render(
        &self,
        rows: &[Row],
        title: &dyn Fn(&str) -> String,
    ) -> Result<String, FormatError> {
        let mut text = String::new();
        if self.table {
            text.push_str(&self.header(title));
            text.push('\n');
        }
        for r in rows {
            let labels = r.labels.as_ref().map(LabelMethod);
            let methods: &dyn Methods = match &labels {
                Some(l) => l,
                None => &NoMethods,
            };
            let data = Data {
                value: &r.data,
                methods,
                header: false,
                marshal_escapes_html: true,
            };
            text.push_str(&self.template.execute(&data).map_err(FormatError::Exec)?);
            text.push('\n');
        }
        Ok(if self.table { tabulate(&text) } else { text })
    }

    /// The header row: the template run over a map of each field it reads to its title, with
    /// Docker's header functions (`{{upper .Names}}` stays `NAMES`). As in Docker, a template
    /// that fails on the titles heads the table with what it printed before failing.
    fn header(&self, title: &dyn Fn(&str) -> String) -> String {
        let mut map = Map::new();
        for chain in self.template.fields() {
            insert_title(&mut map, &chain, title);
        }
        let value = Value::Object(map);
        let data = Data {
            value: &value,
            methods: &HeaderLabel,
            header: true,
            marshal_escapes_html: false,
        };
        self.template.execute_partial(&data)
    }
}

fn insert_title(map: &mut Map<String, Value>, chain: &[String], title: &dyn Fn(&str) -> String) {
    let Some((first, rest)) = chain.split_first() else {
        return;
    };
    if rest.is_empty() {
        map.entry(first.clone())
            .or_insert_with(|| Value::String(title(first)));
        return;
    }
    let entry = map
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(inner) = entry {
        insert_title(inner, rest, title);
    }
}

/// Renders list rows with a `--format` value and prints them; a template error is reported
/// as Docker reports it (`how`). Returns the exit code.
pub(crate) fn print_rows(
    template: &str,
    rows: &[Row],
    title: &dyn Fn(&str) -> String,
    how: Report,
) -> i32 {
    match Format::parse(template).and_then(|f| f.render(rows, title)) {
        Ok(text) => {
            super::out(&text);
            0
        }
        Err(e) => e.report(how),
    }
}

#[cfg(test)]
/// Renders list rows with a `--format` value (see [`Format::render`]).
pub(crate) fn render(
    template: &str,
    rows: &[Value],
    title: &dyn Fn(&str) -> String,
) -> Result<String, FormatError> {
    let rows: Vec<Row> = rows.iter().cloned().map(Row::from).collect();
    Format::parse(template)?.render(&rows, title)
}

/// A parsed `--format` of a single-document command (`inspect`, `version`, `info`): the
/// template exactly as written, each document followed by a newline.
pub(crate) struct DocFormat(Template);

impl DocFormat {
    /// Parses `src`; `name` is the template's name in messages (`version` for `version`).
    pub(crate) fn parse(name: &str, src: &str) -> Result<DocFormat, FormatError> {
        Template::parse(name, src)
            .map(DocFormat)
            .map_err(FormatError::Parse)
    }

    /// The format of an `inspect`: `None` for the default (and Docker's `json`), which prints
    /// the documents as an indented JSON array.
    pub(crate) fn parse_option(src: Option<&str>) -> Result<Option<DocFormat>, FormatError> {
        match src {
            None | Some("") | Some("json") => Ok(None),
            Some(f) => DocFormat::parse("", f).map(Some),
        }
    }

    /// Prints each document rendered, one after the other. When one fails, what was rendered
    /// before it is printed (a lone newline when nothing was, as Docker's inspector flushes)
    /// and the error returned.
    pub(crate) fn print_all<T: serde::Serialize>(&self, docs: &[T]) -> Result<(), FormatError> {
        let mut text = String::new();
        for d in docs {
            // Serializing kiln's own documents to a value cannot fail (string keys only).
            let v = serde_json::to_value(d).unwrap_or_default();
            match self.render(&v) {
                Ok(s) => text.push_str(&s),
                Err(e) => {
                    super::out(if text.is_empty() { "\n" } else { &text });
                    return Err(e);
                }
            }
        }
        super::out(&text);
        Ok(())
    }

    /// The document rendered, with a newline.
    pub(crate) fn render(&self, doc: &Value) -> Result<String, FormatError> {
        let data = Data {
            value: doc,
            methods: &NoMethods,
            header: false,
            marshal_escapes_html: false,
        };
        let mut s = self.0.execute(&data).map_err(FormatError::Exec)?;
        s.push('\n');
        Ok(s)
    }
}

/// Aligns tab-separated cells into columns as Go's tabwriter does with Docker's settings
/// (minimum width 10, padding 3); the last cell of each line is not padded.
pub(crate) fn tabulate(text: &str) -> String {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let rows: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
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

    fn upper(f: &str) -> String {
        f.to_uppercase()
    }

    #[test]
    fn list_rows_render_one_line_each() {
        let rows = [
            json!({"Repository": "busybox", "Tag": "local", "Html": "<none> &"}),
            json!({"Repository": "a", "Tag": "b", "Html": ""}),
        ];
        let cases = [
            ("{{.Repository}}:{{.Tag}}", "busybox:local\na:b\n"),
            ("  {{.Tag}}  ", "local\nb\n"),
            ("{{.Repository}}\\t{{.Tag}}", "busybox\tlocal\na\tb\n"),
            // A row's own JSON is escaped as Go's json.Marshal escapes it; a field's is not.
            ("{{json .Html}}", "\"<none> &\"\n\"\"\n"),
        ];
        for (t, want) in cases {
            assert_eq!(render(t, &rows, &upper).unwrap(), want, "template {t}");
        }
        assert_eq!(
            render("{{json .}}", &rows[..1], &upper).unwrap(),
            "{\"Html\":\"\\u003cnone\\u003e \\u0026\",\"Repository\":\"busybox\",\"Tag\":\"local\"}\n"
        );
    }

    #[test]
    fn table_header_and_alignment() {
        let rows = [json!({"Repository": "busybox", "Tag": "latest", "ID": "0123456789ab"})];
        let out = render("table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}", &rows, &upper).unwrap();
        assert_eq!(
            out,
            "REPOSITORY   TAG       ID\nbusybox      latest    0123456789ab\n"
        );
        // The header runs the template over the titles, with Docker's header functions.
        let out = render(
            "table {{.Repository | lower}}\\t{{len .Tag}}|{{printf \"%-8s|\" .ID}}",
            &rows,
            &upper,
        )
        .unwrap();
        assert_eq!(
            out,
            "REPOSITORY   3|ID      |\nbusybox      6|0123456789ab|\n"
        );
        // A template that fails over the titles (range over a string) heads the table with
        // what it printed first.
        let out = render("table {{.Tag}}\\t{{range .ID}}x{{end}}", &[], &upper).unwrap();
        assert_eq!(out, "TAG\n");
        // No rows: the header alone.
        assert_eq!(render("table {{.Tag}}", &[], &upper).unwrap(), "TAG\n");
    }

    #[test]
    fn label_method_on_rows_and_headers() {
        let labels: BTreeMap<String, String> = [("com.x".to_owned(), "yes".to_owned())].into();
        let rows = [Row {
            data: json!({"Names": "c1", "Labels": "com.x=yes"}),
            labels: Some(labels),
        }];
        let f = Format::parse(
            "table {{.Names}}\\t{{.Label \"com.x\"}}|{{.Label \"no-such_label\"}}|{{.Labels}}",
        )
        .unwrap();
        assert_eq!(
            f.render(&rows, &upper).unwrap(),
            "NAMES     x|no such label|LABELS\nc1        yes||com.x=yes\n"
        );
    }

    #[test]
    fn errors_are_worded_as_docker() {
        let e = Format::parse("{{.Foo").err().unwrap();
        assert_eq!(
            e.to_string(),
            "template parsing error: template: :1: unclosed action"
        );
        let e = render("{{index .A 5}}", &[json!({"A": [1]})], &upper).unwrap_err();
        assert_eq!(
            e.to_string(),
            "template parsing error: template: :1:2: executing \"\" at <index .A 5>: error calling index: index out of range: 5"
        );
        assert!(matches!(e, FormatError::Exec(_)));
    }

    #[test]
    fn documents_use_the_template_as_written() {
        let f = DocFormat::parse("", "{{.Os}}\\t{{json .Config}}").unwrap();
        assert_eq!(
            f.render(&json!({"Os": "linux", "Config": {"A": "<b>"}}))
                .unwrap(),
            "linux\\t{\"A\":\"<b>\"}\n"
        );
        let v = DocFormat::parse("version", "{{.Foo").err().unwrap();
        assert_eq!(
            v.to_string(),
            "template parsing error: template: version:1: unclosed action"
        );
    }
}
