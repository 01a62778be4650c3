//! One logical line to one instruction node: keyword, flags, and arguments shaped per keyword.

use super::ast::Node;
use super::error::ParseError;
use super::grammar;

/// Nested `ONBUILD ONBUILD ...` deeper than this is refused rather than recursed into.
const MAX_DEPTH: usize = 16;

/// Where a logical line sits in the file, for error positions.
pub(crate) struct Place {
    /// First physical line.
    pub line: usize,
    /// Last physical line consumed so far.
    pub end_line: usize,
    /// Column of the keyword.
    pub column: usize,
    /// Bytes of the logical line that come from its first physical line.
    pub first_len: usize,
}

impl Place {
    /// An error pointing at byte `offset` of the logical line (trimmed at its start), when
    /// that byte is on the first physical line; at the keyword otherwise.
    pub fn error(&self, logical: &str, offset: usize, message: impl Into<String>) -> ParseError {
        let column = if offset <= self.first_len {
            self.column + logical.get(..offset).map_or(0, |s| s.chars().count())
        } else {
            self.column
        };
        ParseError::new(message, self.line, column).with_end_line(self.end_line)
    }
}

/// JSON-array text of exec form, if `rest` is one. `Err` when it is valid JSON but not all
/// strings; `Ok(None)` when it is not valid JSON (Docker then falls back to the shell form).
fn json_array(rest: &str) -> Result<Option<Vec<String>>, ()> {
    let trimmed = rest.trim_start();
    if !trimmed.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        // Valid JSON that is not an array cannot start with `[`; anything else is invalid.
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// Build the node for one logical line. `depth` counts ONBUILD nesting.
pub(crate) fn from_line(
    logical: &str,
    escape: char,
    place: &Place,
    depth: usize,
) -> Result<Node, ParseError> {
    let line = logical.trim();
    let lead = logical.len() - logical.trim_start().len();
    let parts = grammar::instruction(line, escape);
    let rest = parts.rest;
    let rest_at = lead + parts.rest_offset;
    let mut node = Node {
        keyword: parts.keyword.to_string(),
        flags: parts.flags,
        original: logical.to_string(),
        start_line: place.line,
        end_line: place.end_line,
        column: place.column,
        ..Default::default()
    };
    let err = |msg: &str| place.error(logical, rest_at, msg);
    let blank_list = |r: &str| -> Vec<String> {
        grammar::blank_list(r)
            .into_iter()
            .map(|(_, s)| s.to_string())
            .collect()
    };
    match node.instruction().as_str() {
        "from" | "expose" => node.args = blank_list(rest),
        "add" | "copy" | "volume" => match json_array(rest) {
            Ok(Some(a)) => {
                node.args = a;
                node.json = true;
            }
            Ok(None) => node.args = blank_list(rest),
            Err(()) => return Err(err(NOT_STRINGS)),
        },
        "run" | "cmd" | "entrypoint" | "shell" => {
            let (args, json) = maybe_json(rest).map_err(|()| err(NOT_STRINGS))?;
            node.args = args;
            node.json = json;
        }
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !rest.is_empty() {
                node.args = vec![rest.to_string()];
            }
        }
        "healthcheck" => {
            let (typ, cmd) = grammar::health(rest);
            if !typ.is_empty() {
                let (args, json) = maybe_json(cmd).map_err(|()| err(NOT_STRINGS))?;
                node.args = std::iter::once(typ.to_string()).chain(args).collect();
                node.json = json;
            }
        }
        "env" => node.args = name_val(rest, "ENV", escape).map_err(|e| err(&e.to_string()))?,
        "label" => node.args = name_val(rest, "LABEL", escape).map_err(|e| err(&e.to_string()))?,
        "arg" => node.args = grammar::words(rest, escape),
        "onbuild" => {
            if !rest.is_empty() {
                if depth >= MAX_DEPTH {
                    return Err(err("too many nested ONBUILD instructions"));
                }
                let inner = Place {
                    column: place.column + logical[..rest_at].chars().count(),
                    first_len: place.first_len.saturating_sub(rest_at),
                    ..*place
                };
                node.next = Some(Box::new(from_line(rest, escape, &inner, depth + 1)?));
            }
        }
        // Unknown instructions parse; the instruction layer reports them with a suggestion.
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

fn maybe_json(rest: &str) -> Result<(Vec<String>, bool), ()> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match json_array(rest)? {
        Some(a) => (a, true),
        None => (vec![rest.to_string()], false),
    })
}

/// Why ENV or LABEL arguments are not name/value pairs (BuildKit's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameValError {
    /// The old `k v` form with only a name.
    #[error("{0} must have two arguments")]
    MissingValue(&'static str),
    /// A word of the `k=v` form without `=`.
    #[error("Syntax error - can't find = in {}. Must be of the form: name=value", super::dump::go_quote(.0))]
    MissingEquals(String),
}

/// ENV and LABEL arguments as (key, value, separator) triples: `k v` (old form, separator
/// empty) or `k=v ...` (separator `=`).
fn name_val(rest: &str, keyword: &'static str, escape: char) -> Result<Vec<String>, NameValError> {
    let words = grammar::words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let items = grammar::blank_list(rest);
        let Some(&(_, key)) = items.first() else {
            return Ok(Vec::new());
        };
        if items.len() < 2 {
            return Err(NameValError::MissingValue(keyword));
        }
        // The value is the rest of the text verbatim after the first blank run.
        let after_key = &rest[key.len()..];
        let value = after_key.trim_start_matches([' ', '\t', '\u{b}', '\u{c}', '\r']);
        return Ok(vec![key.to_string(), value.to_string(), String::new()]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for w in &words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(NameValError::MissingEquals(w.clone()));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_value_errors_are_typed_kinds() {
        assert_eq!(
            name_val("k", "ENV", '\\'),
            Err(NameValError::MissingValue("ENV"))
        );
        assert_eq!(
            name_val("a=1 b", "LABEL", '\\'),
            Err(NameValError::MissingEquals("b".to_string()))
        );
        assert_eq!(
            name_val("a=1 b", "LABEL", '\\').unwrap_err().to_string(),
            "Syntax error - can't find = in \"b\". Must be of the form: name=value"
        );
        assert_eq!(name_val("k  v w", "ENV", '\\').unwrap(), ["k", "v w", ""]);
    }
}
