//! BuildKit's AST dump format (`(run "echo hi")`), byte for byte, for conformance checks.

use std::fmt::Write;

use super::ast::{Dockerfile, Node};

/// Dump a parsed Dockerfile: one `(...)` line per instruction, each ending in a newline.
pub fn dump(df: &Dockerfile) -> String {
    let mut out = String::new();
    for child in &df.children {
        out.push('(');
        out.push_str(&dump_node(child));
        out.push_str(")\n");
    }
    out
}

/// Dump one instruction without the surrounding parentheses.
pub fn dump_node(node: &Node) -> String {
    let mut s = lower(&node.keyword);
    if !node.flags.is_empty() {
        s.push_str(" [");
        for (i, f) in node.flags.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            // BuildKit scans flags byte by byte and turns each byte into the code point of the
            // same value, so non-ASCII text in flags comes out re-encoded as Latin-1.
            let latin1: String = f.bytes().map(char::from).collect();
            s.push_str(&go_quote(&latin1));
        }
        s.push(']');
    }
    if let Some(next) = &node.next {
        s.push_str(" (");
        s.push_str(&dump_node(next));
        s.push(')');
    }
    for a in &node.args {
        s.push(' ');
        s.push_str(&go_quote(a));
    }
    s
}

// Go's strings.ToLower maps each code point on its own (U+0130 becomes a plain `i`).
fn lower(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let mut l = c.to_lowercase();
            let first = if c == '\u{130}' { Some('i') } else { l.next() };
            let rest: Vec<char> = if c == '\u{130}' {
                Vec::new()
            } else {
                l.collect()
            };
            first.into_iter().chain(rest)
        })
        .collect()
}

/// Quote a string exactly as Go's `strconv.Quote` does.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
fn is_go_printable(c: char) -> bool {
    use pest::unicode::{LETTER, MARK, NUMBER, PUNCTUATION, SYMBOL};
    c == ' ' || LETTER(c) || MARK(c) || NUMBER(c) || PUNCTUATION(c) || SYMBOL(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        let cases = [
            ("a", "\"a\""),
            ("\"\\", "\"\\\"\\\\\""),
            ("\u{7}\u{8}\t\n\u{b}\u{c}\r", "\"\\a\\b\\t\\n\\v\\f\\r\""),
            ("\0\u{1f}\u{7f}", "\"\\x00\\x1f\\x7f\""),
            ("é♥😀", "\"é♥😀\""),
            ("\u{a0}\u{200b}\u{feff}", "\"\\u00a0\\u200b\\ufeff\""),
            ("\u{e0001}", "\"\\U000e0001\""),
        ];
        for (input, want) in cases {
            assert_eq!(go_quote(input), want, "input {input:?}");
        }
    }
}
