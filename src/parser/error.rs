//! The parser's error type: a message with the place in the Dockerfile it refers to.

use super::ast::Location;
use super::diag::Diagnostic;

/// A Dockerfile that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// BuildKit's wording where BuildKit has an error for the case.
    pub message: String,
    /// Where the problem is.
    pub location: Location,
    /// Last line of the instruction involved (equals `location.line` for one-line problems).
    pub end_line: usize,
    /// Characters to underline.
    pub width: usize,
    /// A hint such as `did you mean RUN?`.
    pub help: Option<String>,
}

impl ParseError {
    /// An error at a line and column.
    pub fn new(message: impl Into<String>, line: usize, column: usize) -> Self {
        ParseError {
            message: message.into(),
            location: Location { line, column },
            end_line: line,
            width: 1,
            help: None,
        }
    }

    /// Set how many characters the caret underlines.
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = width.max(1);
        self
    }

    /// Set the last line of the instruction involved.
    pub fn with_end_line(mut self, end_line: usize) -> Self {
        self.end_line = end_line.max(self.location.line);
        self
    }

    /// Attach a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// A displayable diagnostic for this error in `file`, whose text is `source`.
    pub fn to_diagnostic(&self, file: &str, source: &str) -> Diagnostic {
        let d = Diagnostic::error(file, source, self.location, self.message.clone())
            .with_width(self.width);
        match &self.help {
            Some(h) => d.with_help(h.clone()),
            None => d,
        }
    }
}
