//! The physical-line layer: directives, comments, continuation lines and heredoc bodies,
//! turning Dockerfile text into instruction nodes with line spans.

use super::ast::{Directive, Dockerfile, Location, Warning};
use super::error::ParseError;
use super::{grammar, heredoc, node};

/// BuildKit's limit on one physical line (its scanner buffer).
pub const MAX_LINE_LEN: usize = 65535;

struct Line<'a> {
    /// The line with its own `\n` (heredoc bodies keep it).
    raw: &'a str,
    /// The line without trailing `\r` and `\n`.
    text: &'a str,
}

fn split_lines(src: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut rest = src;
    while !rest.is_empty() {
        let end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let raw = &rest[..end];
        out.push(Line {
            raw,
            text: raw.trim_end_matches(['\r', '\n']),
        });
        rest = &rest[end..];
    }
    out
}

fn is_comment(text: &str) -> bool {
    text.trim_start().starts_with('#')
}

/// Remove a continuation escape at the end of `s`. Returns the text and whether the logical
/// line ends here. `foo \\` (an escaped escape) does not continue.
fn trim_continuation(s: &str, escape: char) -> (&str, bool) {
    let body = s.trim_end_matches([' ', '\t']);
    if let Some(before) = body.strip_suffix(escape) {
        if !before.ends_with(escape) {
            return (before, false);
        }
    }
    (s, true)
}

struct Directives {
    active: bool,
    escape: char,
    seen: Vec<Directive>,
}

impl Directives {
    /// Look at one line while directives are still allowed; true when it was a directive.
    fn check(&mut self, text: &str, line: usize) -> Result<bool, ParseError> {
        if !self.active {
            return Ok(false);
        }
        let Some((name, value)) = grammar::directive(text) else {
            self.active = false;
            return Ok(false);
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.active = false;
            return Ok(false);
        }
        if self.seen.iter().any(|d| d.name == name) {
            return Err(ParseError::new(
                format!("only one {name} parser directive can be used"),
                line,
                1,
            ));
        }
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(ParseError::new(
                        format!("invalid escape token '{value}' does not match ` or \\"),
                        line,
                        1,
                    ))
                }
            };
        }
        self.seen.push(Directive {
            name,
            value: value.to_string(),
            line,
        });
        Ok(true)
    }
}

/// Parse Dockerfile text. Errors carry BuildKit's wording and the line they refer to.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let lines = split_lines(src);
    let mut directives = Directives {
        active: true,
        escape: '\\',
        seen: Vec::new(),
    };
    let mut children = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut i = 0;
    let check_len = |idx: usize, l: &Line<'_>| -> Result<(), ParseError> {
        let len = l.raw.strip_suffix('\n').unwrap_or(l.raw).len();
        if len > MAX_LINE_LEN {
            return Err(ParseError::new(
                format!("dockerfile line greater than max allowed size of {MAX_LINE_LEN}"),
                idx + 1,
                MAX_LINE_LEN + 1,
            ));
        }
        Ok(())
    };
    while i < lines.len() {
        let line = &lines[i];
        check_len(i, line)?;
        let first = line.text.trim_start();
        let is_directive = directives.check(first, i + 1)?;
        if first.starts_with('#') && !is_directive {
            let comment = first[1..].trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_string());
            }
        }
        i += 1;
        let start_line = i;
        let column = line.text.chars().count() - first.chars().count() + 1;
        let first = if first.starts_with('#') { "" } else { first };
        let escape = directives.escape;
        let (text, mut eol) = trim_continuation(first, escape);
        if eol && text.is_empty() {
            continue;
        }
        let mut logical = text.to_string();
        let first_len = logical.len();
        let mut empty_continuation = false;
        while !eol && i < lines.len() {
            let l = &lines[i];
            check_len(i, l)?;
            i += 1;
            if is_comment(l.text) {
                continue;
            }
            if l.text.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (t, e) = trim_continuation(l.text, escape);
            eol = e;
            logical.push_str(t);
        }
        if empty_continuation {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {logical}"),
                location: Location {
                    line: start_line,
                    column,
                },
            });
        }
        let place = node::Place {
            line: start_line,
            end_line: i,
            column,
            first_len,
        };
        let mut n = node::from_line(&logical, escape, &place, 0)?;
        n.start_line = start_line;
        n.column = column;
        n.prev_comment = std::mem::take(&mut comments);
        if heredoc::allowed(&n) && logical.contains("<<") {
            for mut doc in heredoc::from_line(&logical, &place)? {
                let mut terminated = false;
                while i < lines.len() {
                    let l = &lines[i];
                    check_len(i, l)?;
                    i += 1;
                    let candidate = if doc.chomp {
                        l.text.trim_start_matches('\t')
                    } else {
                        l.text
                    };
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(l.raw);
                }
                if !terminated {
                    return Err(ParseError::new("unterminated heredoc", start_line, column)
                        .with_end_line(i));
                }
                n.heredocs.push(doc);
            }
        }
        n.end_line = i;
        children.push(n);
    }
    if children.is_empty() {
        return Err(ParseError::new(
            "file with no instructions",
            lines.len().max(1),
            1,
        ));
    }
    Ok(Dockerfile {
        children,
        escape: directives.escape,
        directives: directives.seen,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\ \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }
}
