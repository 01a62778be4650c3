//! The pest grammar (`grammar/dockerfile.pest`) and the functions that turn its parse trees
//! into plain values; pest types never leave this file.

use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/dockerfile.pest"]
struct DockerfileGrammar;

/// A parser directive line split into name and value (name as written).
pub(crate) fn directive(line: &str) -> Option<(&str, &str)> {
    let pair = DockerfileGrammar::parse(Rule::directive, line)
        .ok()?
        .next()?;
    let mut name = None;
    let mut value = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::directive_name => name = Some(p.as_str()),
            Rule::directive_value => value = Some(p.as_str()),
            _ => {}
        }
    }
    Some((name?, value?))
}

/// The parts of one logical instruction line.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct InstructionLine<'a> {
    /// The keyword as written.
    pub keyword: &'a str,
    /// Flags after quote and escape processing.
    pub flags: Vec<String>,
    /// The argument text, trimmed.
    pub rest: &'a str,
    /// Byte offset of `rest` within the line.
    pub rest_offset: usize,
}

/// Split a trimmed logical line into keyword, flags and argument text.
pub(crate) fn instruction(line: &str, escape: char) -> InstructionLine<'_> {
    let rule = if escape == '`' {
        Rule::instruction_bt
    } else {
        Rule::instruction_bs
    };
    let Some(top) = DockerfileGrammar::parse(rule, line)
        .ok()
        .and_then(|mut p| p.next())
    else {
        // The grammar accepts any text; this is only reached for an empty line.
        return InstructionLine {
            keyword: line,
            ..Default::default()
        };
    };
    let mut out = InstructionLine::default();
    for p in top.into_inner() {
        if p.as_rule() != Rule::instruction {
            continue;
        }
        for part in p.into_inner() {
            match part.as_rule() {
                Rule::keyword => out.keyword = part.as_str(),
                Rule::flags => {
                    out.flags = part
                        .into_inner()
                        .filter(|f| f.as_rule() == Rule::flag)
                        .map(flag_text)
                        .collect();
                }
                Rule::arguments => {
                    let raw = part.as_str();
                    let lead = raw.len() - raw.trim_start().len();
                    out.rest = raw.trim();
                    out.rest_offset = part.as_span().start() + lead;
                }
                _ => {}
            }
        }
    }
    out
}

fn flag_text(flag: Pair<'_, Rule>) -> String {
    let mut s = String::from("--");
    push_flag_parts(flag, &mut s);
    s
}

fn push_flag_parts(pair: Pair<'_, Rule>, out: &mut String) {
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::flag_char | Rule::flag_sq_char | Rule::flag_dq_char | Rule::flag_literal => {
                out.push_str(p.as_str())
            }
            Rule::flag_squote | Rule::flag_dquote | Rule::flag_escaped => push_flag_parts(p, out),
            _ => {}
        }
    }
}

/// Split text into words the way ARG, ENV and LABEL do: quotes and escapes stay in the words.
pub(crate) fn words(text: &str, escape: char) -> Vec<String> {
    let rule = if escape == '`' {
        Rule::words_bt
    } else {
        Rule::words_bs
    };
    let Some(top) = DockerfileGrammar::parse(rule, text)
        .ok()
        .and_then(|mut p| p.next())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for w in top.into_inner().flat_map(|p| p.into_inner()) {
        if w.as_rule() != Rule::word {
            continue;
        }
        // Quotes and escapes stay in the word; only an escape character at the very end of
        // the text is dropped.
        let mut s = w.as_str().to_string();
        if w.into_inner()
            .flatten()
            .any(|p| p.as_rule() == Rule::trailing_escape)
        {
            s.pop();
        }
        if !s.is_empty() {
            out.push(s);
        }
    }
    out
}

/// Split text on runs of blanks (`[\t\v\f\r ]`), with byte offsets of each item.
pub(crate) fn blank_list(text: &str) -> Vec<(usize, &str)> {
    let Some(top) = DockerfileGrammar::parse(Rule::blank_list, text)
        .ok()
        .and_then(|mut p| p.next())
    else {
        return Vec::new();
    };
    top.into_inner()
        .filter(|p| p.as_rule() == Rule::blank_item)
        .map(|p| (p.as_span().start(), p.as_str()))
        .collect()
}

/// Split HEALTHCHECK's argument text into its type word and the command text.
pub(crate) fn health(text: &str) -> (&str, &str) {
    let Some(top) = DockerfileGrammar::parse(Rule::health, text)
        .ok()
        .and_then(|mut p| p.next())
    else {
        return (text, "");
    };
    let mut typ = "";
    let mut cmd = "";
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::health_type => typ = p.as_str(),
            Rule::health_cmd => cmd = p.as_str(),
            _ => {}
        }
    }
    (typ, cmd)
}

/// A heredoc marker word split into (file descriptor text, chomp, delimiter text).
pub(crate) fn heredoc_word(word: &str) -> Option<(&str, bool, &str)> {
    let top = DockerfileGrammar::parse(Rule::heredoc_word, word)
        .ok()?
        .next()?;
    let mut fd = "";
    let mut chomp = false;
    let mut rest = "";
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::heredoc_fd => fd = p.as_str(),
            Rule::heredoc_chomp => chomp = true,
            Rule::heredoc_rest => rest = p.as_str(),
            _ => {}
        }
    }
    Some((fd, chomp, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_lines() {
        assert_eq!(directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(directive("#ESCAPE = \\  "), Some(("ESCAPE", "\\")));
        assert_eq!(directive("# syntax=a b "), Some(("syntax", "a b")));
        assert_eq!(directive("# no directive"), None);
        assert_eq!(directive("# key="), None);
    }

    #[test]
    fn instruction_split() {
        let l = instruction("COPY --from=a --chown=\"x y\" -- --z b", '\\');
        assert_eq!(l.keyword, "COPY");
        assert_eq!(l.flags, vec!["--from=a", "--chown=x y"]);
        assert_eq!(l.rest, "--z b");
        let l = instruction("RUN", '\\');
        assert_eq!((l.keyword, l.rest), ("RUN", ""));
        let l = instruction("RUN --a=\\\"b\\", '\\');
        assert_eq!(l.flags, vec!["--a=\"b"]);
        let l = instruction("COPY --a=\"\" x", '\\');
        assert_eq!(l.flags, vec!["--a="]);
        let l = instruction("COPY --x -- --y a", '\\');
        assert_eq!((l.flags, l.rest), (vec!["--x".to_string()], "--y a"));
        let l = instruction("COPY --x=`'a b` y", '`');
        assert_eq!(l.flags, vec!["--x='a"]);
        assert_eq!(l.rest, "b` y");
    }

    #[test]
    fn word_split() {
        let cases: &[(&str, &[&str])] = &[
            ("foo", &["foo"]),
            ("foo bar", &["foo", "bar"]),
            ("foo\\ bar", &["foo\\ bar"]),
            ("foo bar 'abc xyz'", &["foo", "bar", "'abc xyz'"]),
            ("foo bar \"abc xyz\"", &["foo", "bar", "\"abc xyz\""]),
            ("a\\", &["a"]),
            ("\"a\\\"b\"", &["\"a\\\"b\""]),
            ("\"a\\", &["\"a"]),
            ("\"a\\\"", &["\"a\\\""]),
            ("'a\\'b''", &["'a\\'b''"]),
        ];
        for (input, want) in cases {
            assert_eq!(&words(input, '\\'), want, "input {input:?}");
        }
    }

    #[test]
    fn heredoc_words() {
        assert_eq!(heredoc_word("<<EOF"), Some(("", false, "EOF")));
        assert_eq!(heredoc_word("3<<-  'E'"), Some(("3", true, "'E'")));
        assert_eq!(heredoc_word("<<a<b"), None);
        assert_eq!(heredoc_word("x<<EOF"), None);
    }
}
