//! Heredocs: which instructions may carry them, and the `<<EOF` markers found on a line.

use super::ast::{Heredoc, Node};
use super::error::ParseError;
use super::grammar;
use super::node::Place;
use super::shell::{Lexer, ShellError};

/// Only ADD, COPY and RUN (also nested in ONBUILD) in shell form read heredoc bodies.
pub(crate) fn allowed(node: &Node) -> bool {
    let inner = match (node.instruction().as_str(), &node.next) {
        ("onbuild", Some(next)) => next.as_ref(),
        _ => node,
    };
    matches!(inner.instruction().as_str(), "add" | "copy" | "run") && !inner.json
}

/// A heredoc marker whose delimiter cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeredocError {
    /// The shell lexer refused the delimiter (BuildKit's message).
    #[error(transparent)]
    Lex(#[from] ShellError),
    /// Lexing with and without quote removal split the delimiter differently.
    #[error("internal lexing of heredoc produced inconsistent results: {0}")]
    Inconsistent(String),
}

/// No variables are set while looking for heredoc markers; unset ones stay as written.
const NO_ENV: &[&str] = &[];

/// Parse one shell word as a heredoc marker (`<<EOF`, `3<<-'EOF'`, `<< EOF`). `Ok(None)` when
/// the word is not a heredoc marker; an error when its delimiter cannot be lexed.
pub fn parse_word(word: &str) -> Result<Option<Heredoc>, HeredocError> {
    let Some((fd, chomp, rest)) = grammar::heredoc_word(word) else {
        return Ok(None);
    };
    if rest.is_empty() {
        return Ok(None);
    }
    // Lex the delimiter twice, with and without quote removal: if the quote counts differ,
    // part of it was quoted and the body is not expanded (escaped quotes count the same).
    let lexer = Lexer::new('\\').skip_unset(true);
    let words = lexer.process_words(rest, NO_ENV)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = lexer.raw_quotes(true).process_words(rest, NO_ENV)?;
    let [raw_name] = raw.as_slice() else {
        return Err(HeredocError::Inconsistent(rest.to_string()));
    };
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: name.clone(),
        // Go's ParseUint failure (overflow) gives 0 too.
        file_descriptor: fd.parse().unwrap_or(0),
        expand: quotes(name) == quotes(raw_name),
        chomp,
        content: String::new(),
    }))
}

/// The heredoc markers on a logical line, in order. A line the shell lexer cannot split (an
/// unbalanced quote anywhere) has none, as in BuildKit.
pub fn markers(line: &str) -> Result<Vec<Heredoc>, HeredocError> {
    let lexer = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset(true);
    let Ok(words) = lexer.process_words(line, NO_ENV) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for w in words {
        if let Some(h) = parse_word(&w)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// The heredocs announced on a logical line, in order, with empty bodies.
pub(crate) fn from_line(line: &str, place: &Place) -> Result<Vec<Heredoc>, ParseError> {
    markers(line).map_err(|e| {
        ParseError::new(e.to_string(), place.line, place.column).with_end_line(place.end_line)
    })
}

/// Remove leading tabs from every line of a body, as `<<-` asks (done by the consumer).
pub fn chomp(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}
