//! The lexer of Go's text/template: source text → text runs and action tokens.
//!
//! Like Go's, it knows the trim markers (`{{- ` and ` -}}`, which remove the white space next
//! to the action), comments (`{{/* … */}}`), and every literal Go accepts in an action.

use super::TemplateError;

/// The kinds of token inside and between actions.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    /// Literal text between actions (after trimming).
    Text(String),
    /// `{{`
    LeftDelim,
    /// `}}`
    RightDelim,
    /// A run of white space inside an action: it separates arguments.
    Space,
    /// `.Name` (the name without the dot).
    Field(String),
    /// `.` alone.
    Dot,
    /// `$` or `$name` (with the dollar).
    Variable(String),
    /// A function name.
    Ident(String),
    /// `if`, `else`, `end`, `range`, `with`, `define`, `template`, `block`, `break`, `continue`.
    Keyword(&'static str),
    /// `true` or `false`.
    Bool(bool),
    /// `nil`.
    Nil,
    /// A quoted or raw string, unquoted; the source text is kept for messages.
    Str { value: String, quoted: String },
    /// A number or character constant, as written.
    Number(String),
    /// `|`
    Pipe,
    /// `(`
    LeftParen,
    /// `)`
    RightParen,
    /// `:=`
    Declare,
    /// `=`
    Assign,
    /// `,` (in `range $i, $e :=`).
    Comma,
    /// The end of the input.
    Eof,
}

/// One token with where it starts (byte offset into the source, and line).
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub kind: Kind,
    pub pos: usize,
    pub line: usize,
}

const KEYWORDS: [&str; 10] = [
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
];

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `src` into tokens, or fails with Go's message for the first lexical error.
pub(super) fn lex(name: &str, src: &str) -> Result<Vec<Token>, TemplateError> {
    let mut l = Lexer {
        name,
        src,
        pos: 0,
        line: 1,
        tokens: Vec::new(),
        parens: 0,
    };
    l.run()?;
    Ok(l.tokens)
}

struct Lexer<'a> {
    name: &'a str,
    src: &'a str,
    pos: usize,
    line: usize,
    tokens: Vec<Token>,
    parens: i32,
}

impl Lexer<'_> {
    fn err(&self, msg: impl Into<String>) -> TemplateError {
        TemplateError::Parse {
            name: self.name.to_owned(),
            line: self.line,
            msg: msg.into(),
        }
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn push(&mut self, kind: Kind, pos: usize, line: usize) {
        self.tokens.push(Token { kind, pos, line });
    }

    /// Moves to `to`, counting the newlines passed.
    fn advance(&mut self, to: usize) {
        self.line += self.src[self.pos..to].matches('\n').count();
        self.pos = to;
    }

    fn run(&mut self) -> Result<(), TemplateError> {
        loop {
            let Some(at) = self.rest().find("{{").map(|i| i + self.pos) else {
                let text = self.rest().to_owned();
                self.push_text(text, self.pos);
                let end = self.src.len();
                self.advance(end);
                self.push(Kind::Eof, self.pos, self.line);
                return Ok(());
            };
            let after = &self.src[at + 2..];
            let trim_left =
                after.len() >= 2 && after.as_bytes()[0] == b'-' && is_space(after.as_bytes()[1]);
            let mut text = self.src[self.pos..at].to_owned();
            if trim_left {
                text.truncate(text.trim_end_matches([' ', '\t', '\r', '\n']).len());
            }
            let text_pos = self.pos;
            self.push_text(text, text_pos);
            self.advance(at);
            let marker = if trim_left { 2 } else { 0 };
            if self.src[at + 2 + marker..].starts_with("/*") {
                self.comment(at + 2 + marker)?;
            } else {
                self.push(Kind::LeftDelim, at, self.line);
                self.advance(at + 2 + marker);
                self.action()?;
            }
        }
    }

    fn push_text(&mut self, text: String, pos: usize) {
        if !text.is_empty() {
            let line = self.line;
            self.push(Kind::Text(text), pos, line);
        }
    }

    /// `{{/* … */}}`: nothing is emitted; the trim markers still apply.
    fn comment(&mut self, start: usize) -> Result<(), TemplateError> {
        let Some(end) = self.src[start + 2..].find("*/").map(|i| i + start + 4) else {
            return Err(self.err("unclosed comment"));
        };
        self.advance(end);
        let (len, trim) = self
            .at_right_delim()
            .ok_or_else(|| self.err("comment ends before closing delimiter"))?;
        let to = self.pos + len;
        self.advance(to);
        if trim {
            self.skip_leading_space();
        }
        Ok(())
    }

    /// At `}}` or ` -}}`: the length to skip and whether it trims.
    fn at_right_delim(&self) -> Option<(usize, bool)> {
        let r = self.rest().as_bytes();
        if r.len() >= 4 && is_space(r[0]) && &r[1..4] == b"-}}" {
            return Some((4, true));
        }
        if r.starts_with(b"}}") {
            return Some((2, false));
        }
        None
    }

    fn skip_leading_space(&mut self) {
        let n = self.rest().len()
            - self
                .rest()
                .trim_start_matches([' ', '\t', '\r', '\n'])
                .len();
        let to = self.pos + n;
        self.advance(to);
    }

    /// Tokens up to and including the closing delimiter.
    fn action(&mut self) -> Result<(), TemplateError> {
        loop {
            if let Some((len, trim)) = self.at_right_delim() {
                if self.parens > 0 {
                    return Err(self.err("unclosed left paren"));
                }
                self.push(Kind::RightDelim, self.pos, self.line);
                let to = self.pos + len;
                self.advance(to);
                if trim {
                    self.skip_leading_space();
                }
                return Ok(());
            }
            let Some(c) = self.rest().chars().next() else {
                return Err(self.err("unclosed action"));
            };
            self.action_token(c)?;
        }
    }

    fn action_token(&mut self, c: char) -> Result<(), TemplateError> {
        let (pos, line) = (self.pos, self.line);
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                let b = self.rest().as_bytes();
                let mut n = 1;
                // Stop before ` -}}` so the delimiter sees its trim marker.
                while n < b.len() && is_space(b[n]) && !b[n + 1..].starts_with(b"-}}") {
                    n += 1;
                }
                self.advance(pos + n);
                self.push(Kind::Space, pos, line);
                Ok(())
            }
            '=' => self.single(Kind::Assign, 1),
            ':' if self.rest().starts_with(":=") => self.single(Kind::Declare, 2),
            ':' => Err(self.err("expected :=")),
            '|' => self.single(Kind::Pipe, 1),
            ',' => self.single(Kind::Comma, 1),
            '(' => {
                self.parens += 1;
                self.single(Kind::LeftParen, 1)
            }
            ')' => {
                self.parens -= 1;
                if self.parens < 0 {
                    return Err(self.err("unexpected right paren"));
                }
                self.single(Kind::RightParen, 1)
            }
            '"' => self.quoted(),
            '`' => self.raw(),
            '\'' => self.char_constant(),
            '$' => {
                let name = self.word(1);
                self.push(Kind::Variable(name), pos, line);
                self.terminator()
            }
            '.' if self.rest()[1..].starts_with(|c: char| c.is_ascii_digit()) => self.number(),
            '.' => {
                let name = self.word(1);
                let kind = if name.len() == 1 {
                    Kind::Dot
                } else {
                    Kind::Field(name[1..].to_owned())
                };
                self.push(kind, pos, line);
                self.terminator()
            }
            '+' | '-' | '0'..='9' => self.number(),
            c if is_alnum(c) => {
                let word = self.word(0);
                let kind = match word.as_str() {
                    "true" => Kind::Bool(true),
                    "false" => Kind::Bool(false),
                    "nil" => Kind::Nil,
                    w => match KEYWORDS.iter().find(|k| **k == w) {
                        Some(k) => Kind::Keyword(k),
                        None => Kind::Ident(word),
                    },
                };
                self.push(kind, pos, line);
                self.terminator()
            }
            c => Err(self.err(format!("unrecognized character in action: {}", go_char(c)))),
        }
    }

    fn single(&mut self, kind: Kind, len: usize) -> Result<(), TemplateError> {
        let (pos, line) = (self.pos, self.line);
        self.push(kind, pos, line);
        self.advance(pos + len);
        Ok(())
    }

    /// The word at the position (after `skip` leading bytes): letters, digits, `_`.
    fn word(&mut self, skip: usize) -> String {
        let rest = &self.rest()[skip..];
        let n = rest.find(|c: char| !is_alnum(c)).unwrap_or(rest.len());
        let w = self.src[self.pos..self.pos + skip + n].to_owned();
        let to = self.pos + skip + n;
        self.advance(to);
        w
    }

    /// After a word, Go wants a separator: space, `.`, `,`, `|`, `:`, `(`, `)`, `=` or the end.
    fn terminator(&self) -> Result<(), TemplateError> {
        if self.at_right_delim().is_some() {
            return Ok(());
        }
        match self.rest().chars().next() {
            None => Ok(()),
            Some(c) if " \t\r\n.,|:()=".contains(c) => Ok(()),
            Some(c) => Err(self.err(format!("bad character {}", go_char(c)))),
        }
    }

    fn quoted(&mut self) -> Result<(), TemplateError> {
        let (pos, line) = (self.pos, self.line);
        let b = self.rest().as_bytes();
        let mut i = 1;
        loop {
            match b.get(i) {
                None | Some(b'\n') => return Err(self.err("unterminated quoted string")),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let quoted = self.rest()[..=i].to_owned();
        let value = unquote(&quoted[1..i]).ok_or_else(|| self.err("invalid syntax"))?;
        self.advance(pos + i + 1);
        self.push(Kind::Str { value, quoted }, pos, line);
        Ok(())
    }

    fn raw(&mut self) -> Result<(), TemplateError> {
        let (pos, line) = (self.pos, self.line);
        let Some(end) = self.rest()[1..].find('`') else {
            return Err(self.err("unterminated raw quoted string"));
        };
        let quoted = self.rest()[..end + 2].to_owned();
        let value = quoted[1..end + 1].replace('\r', "");
        self.advance(pos + end + 2);
        self.push(Kind::Str { value, quoted }, pos, line);
        Ok(())
    }

    fn char_constant(&mut self) -> Result<(), TemplateError> {
        let (pos, line) = (self.pos, self.line);
        let b = self.rest().as_bytes();
        let mut i = 1;
        loop {
            match b.get(i) {
                None | Some(b'\n') => return Err(self.err("unterminated character constant")),
                Some(b'\\') => i += 2,
                Some(b'\'') => break,
                Some(_) => i += 1,
            }
        }
        let text = self.rest()[..=i].to_owned();
        self.advance(pos + i + 1);
        self.push(Kind::Number(text), pos, line);
        Ok(())
    }

    fn number(&mut self) -> Result<(), TemplateError> {
        let (pos, line) = (self.pos, self.line);
        let n = scan_number(self.rest().as_bytes());
        let text = self.rest()[..n].to_owned();
        self.advance(pos + n);
        if text.is_empty() || text == "+" || text == "-" || self.rest().starts_with(is_alnum) {
            let bad = text
                + &self.rest()[..self
                    .rest()
                    .find(|c: char| !is_alnum(c))
                    .unwrap_or(self.rest().len())];
            return Err(self.err(format!("bad number syntax: {bad:?}")));
        }
        self.push(Kind::Number(text), pos, line);
        self.terminator()
    }
}

/// The length of the number at the start of `b`, as Go's lexer scans it: a sign, a base
/// prefix, digits with `_`, a fraction, an exponent (`e` or, for hex, `p`) and `i`.
fn scan_number(b: &[u8]) -> usize {
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let mut digits: &[u8] = b"0123456789_";
    let mut exp: &[u8] = b"eE";
    if b[i..].first() == Some(&b'0')
        && matches!(b.get(i + 1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B'))
    {
        match b[i + 1].to_ascii_lowercase() {
            b'x' => {
                digits = b"0123456789abcdefABCDEF_";
                exp = b"pP";
            }
            b'o' => digits = b"01234567_",
            _ => digits = b"01_",
        }
        i += 2;
    }
    let run = |i: &mut usize, set: &[u8]| {
        while *i < b.len() && set.contains(&b[*i]) {
            *i += 1;
        }
    };
    run(&mut i, digits);
    if b.get(i) == Some(&b'.') {
        i += 1;
        run(&mut i, digits);
    }
    if b.get(i).is_some_and(|c| exp.contains(c)) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        run(&mut i, b"0123456789_");
    }
    if b.get(i) == Some(&b'i') {
        i += 1;
    }
    i
}

/// Go's `%#U`-like rendering of a character in lexer messages (`U+0023 '#'`).
fn go_char(c: char) -> String {
    format!("U+{:04X} '{c}'", c as u32)
}

/// The value of a double-quoted Go string body (between the quotes), or `None` when an escape
/// is invalid.
pub(super) fn unquote(body: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = chars.next()?;
        match e {
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '\\' | '"' | '\'' => out.push(e),
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = (0..n).filter_map(|_| chars.next()).collect();
                let v = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == n)?;
                out.push(char::from_u32(v)?);
            }
            '0'..='7' => {
                let rest: String = (0..2).filter_map(|_| chars.next()).collect();
                let v = u32::from_str_radix(&format!("{e}{rest}"), 8)
                    .ok()
                    .filter(|_| rest.len() == 2)?;
                out.push(char::from_u32(v).filter(|_| v < 256)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Kind> {
        lex("", src).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn actions_split_into_go_tokens() {
        use Kind::*;
        assert_eq!(
            kinds("a{{.A.B | printf \"%d\" 1}}b"),
            vec![
                Text("a".into()),
                LeftDelim,
                Field("A".into()),
                Field("B".into()),
                Space,
                Pipe,
                Space,
                Ident("printf".into()),
                Space,
                Str {
                    value: "%d".into(),
                    quoted: "\"%d\"".into()
                },
                Space,
                Number("1".into()),
                RightDelim,
                Text("b".into()),
                Eof
            ]
        );
        assert_eq!(
            kinds("{{$x := -3}}{{range $i, $e := .}}"),
            vec![
                LeftDelim,
                Variable("$x".into()),
                Space,
                Declare,
                Space,
                Number("-3".into()),
                RightDelim,
                LeftDelim,
                Keyword("range"),
                Space,
                Variable("$i".into()),
                Comma,
                Space,
                Variable("$e".into()),
                Space,
                Declare,
                Space,
                Dot,
                RightDelim,
                Eof
            ]
        );
    }

    #[test]
    fn trim_markers_and_comments() {
        use Kind::*;
        assert_eq!(
            kinds("a \n {{- 1 -}} \n b{{/* c */}}c {{- /* d */ -}} e"),
            vec![
                Text("a".into()),
                LeftDelim,
                Number("1".into()),
                RightDelim,
                Text("b".into()),
                Text("c".into()),
                Text("e".into()),
                Eof
            ]
        );
        // `{{-3}}` is the number -3, not a trim marker.
        assert_eq!(
            kinds("x {{-3}}"),
            vec![
                Text("x ".into()),
                LeftDelim,
                Number("-3".into()),
                RightDelim,
                Eof
            ]
        );
    }

    #[test]
    fn lexical_errors_are_gos() {
        for (src, want) in [
            ("{{.Foo", "template: :1: unclosed action"),
            ("a\n{{\"abc}}", "template: :2: unterminated quoted string"),
            ("{{(.A}}", "template: :1: unclosed left paren"),
            ("{{.A)}}", "template: :1: unexpected right paren"),
            ("{{/* c }}", "template: :1: unclosed comment"),
            (
                "{{/* c */ x}}",
                "template: :1: comment ends before closing delimiter",
            ),
            ("{{.A#}}", "template: :1: bad character U+0023 '#'"),
        ] {
            assert_eq!(lex("", src).unwrap_err().to_string(), want, "{src}");
        }
    }

    #[test]
    fn strings_unquote_as_go() {
        assert_eq!(unquote(r#"a\tb\x41\u00e9\101\"\\"#).unwrap(), "a\tbAéA\"\\");
        assert!(unquote(r"\q").is_none());
    }
}
