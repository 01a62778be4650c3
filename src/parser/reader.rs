//! The physical-line layer: directives, comments, continuation lines and heredoc bodies,
//! turning Dockerfile text into instruction nodes with line spans.

use super::ast::{Directive, Dockerfile, Location, Node, Warning};
use super::error::ParseError;
use super::{grammar, heredoc, node};

/// BuildKit's limit on one physical line (its scanner buffer).
pub const MAX_LINE_LEN: usize = 65535;

#[derive(Clone, Copy)]
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
    let mut reader = Reader {
        lines: split_lines(src),
        next: 0,
        directives: Directives {
            active: true,
            escape: '\\',
            seen: Vec::new(),
        },
        comments: Vec::new(),
        warnings: Vec::new(),
    };
    let mut children = Vec::new();
    while let Some(line) = reader.next_line()? {
        if let Some(n) = reader.instruction(line)? {
            children.push(n);
        }
    }
    if children.is_empty() {
        return Err(ParseError::new(
            "file with no instructions",
            reader.lines.len().max(1),
            1,
        ));
    }
    Ok(Dockerfile {
        children,
        escape: reader.directives.escape,
        directives: reader.directives.seen,
        warnings: reader.warnings,
    })
}

/// Reads physical lines in order, gathering what lies between instructions: directives,
/// the comments before the next instruction, warnings.
struct Reader<'a> {
    lines: Vec<Line<'a>>,
    /// Index of the next line to read, so also the 1-based number of the last line read.
    next: usize,
    directives: Directives,
    /// Comments since the last instruction or blank comment line.
    comments: Vec<String>,
    warnings: Vec<Warning>,
}

/// An instruction's text with its continuation lines joined.
struct Logical {
    text: String,
    /// Length of the part on the instruction's first line.
    first_len: usize,
    /// Whether an empty line was skipped inside it (BuildKit warns).
    empty_continuation: bool,
}

impl<'a> Reader<'a> {
    /// The next physical line, refused when longer than BuildKit's scanner allows.
    fn next_line(&mut self) -> Result<Option<Line<'a>>, ParseError> {
        let Some(&line) = self.lines.get(self.next) else {
            return Ok(None);
        };
        let len = line.raw.strip_suffix('\n').unwrap_or(line.raw).len();
        if len > MAX_LINE_LEN {
            return Err(ParseError::new(
                format!("dockerfile line greater than max allowed size of {MAX_LINE_LEN}"),
                self.next + 1,
                MAX_LINE_LEN + 1,
            ));
        }
        self.next += 1;
        Ok(Some(line))
    }

    /// The instruction that starts at `line` (just read), with its continuation lines and
    /// heredoc bodies; `None` when the line holds none (blank, comment, directive).
    fn instruction(&mut self, line: Line<'a>) -> Result<Option<Node>, ParseError> {
        let first = line.text.trim_start();
        let start_line = self.next;
        let is_directive = self.directives.check(first, start_line)?;
        if first.starts_with('#') && !is_directive {
            self.note_comment(first[1..].trim());
        }
        let column = line.text.chars().count() - first.chars().count() + 1;
        let first = if first.starts_with('#') { "" } else { first };
        let escape = self.directives.escape;
        let Some(logical) = self.join_continuations(first, escape)? else {
            return Ok(None);
        };
        if logical.empty_continuation {
            self.warnings.push(Warning {
                message: format!("Empty continuation line found in: {}", logical.text),
                location: Location {
                    line: start_line,
                    column,
                },
            });
        }
        let place = node::Place {
            line: start_line,
            end_line: self.next,
            column,
            first_len: logical.first_len,
        };
        let mut n = node::from_line(&logical.text, escape, &place, 0)?;
        n.start_line = start_line;
        n.column = column;
        n.prev_comment = std::mem::take(&mut self.comments);
        if heredoc::allowed(&n) && logical.text.contains("<<") {
            self.read_heredocs(&mut n, &logical.text, &place)?;
        }
        n.end_line = self.next;
        Ok(Some(n))
    }

    /// A comment line: an empty one ends the comment block before an instruction.
    fn note_comment(&mut self, comment: &str) {
        if comment.is_empty() {
            self.comments.clear();
        } else {
            self.comments.push(comment.to_string());
        }
    }

    /// `first` (the first line's text) with the lines it continues onto, skipping comment
    /// and empty lines between them; `None` when the first line holds nothing.
    fn join_continuations(
        &mut self,
        first: &str,
        escape: char,
    ) -> Result<Option<Logical>, ParseError> {
        let (text, mut eol) = trim_continuation(first, escape);
        if eol && text.is_empty() {
            return Ok(None);
        }
        let mut logical = Logical {
            text: text.to_string(),
            first_len: text.len(),
            empty_continuation: false,
        };
        while !eol {
            let Some(l) = self.next_line()? else {
                break;
            };
            if is_comment(l.text) {
                continue;
            }
            if l.text.trim_start().is_empty() {
                logical.empty_continuation = true;
                continue;
            }
            let (t, e) = trim_continuation(l.text, escape);
            eol = e;
            logical.text.push_str(t);
        }
        Ok(Some(logical))
    }

    /// The bodies of the heredocs `logical` opens, read from the lines after it.
    fn read_heredocs(
        &mut self,
        n: &mut Node,
        logical: &str,
        place: &node::Place,
    ) -> Result<(), ParseError> {
        for mut doc in heredoc::from_line(logical, place)? {
            let mut terminated = false;
            while let Some(l) = self.next_line()? {
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
                return Err(
                    ParseError::new("unterminated heredoc", place.line, place.column)
                        .with_end_line(self.next),
                );
            }
            n.heredocs.push(doc);
        }
        Ok(())
    }
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
