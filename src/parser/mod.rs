//! Dockerfile parser: text to typed instructions with source spans. Imports nothing else of the crate.

pub mod ast;
pub mod check;
pub mod diag;
pub mod dump;
pub mod error;
pub mod flags;
pub(crate) mod goparse;
mod grammar;
pub mod heredoc;
pub mod instructions;
mod node;
mod reader;
pub mod runflags;
pub mod shell;
pub mod stages;

pub use ast::{Directive, Dockerfile, Heredoc, Location, Node, Warning};
pub use diag::{Diagnostic, Severity};
pub use dump::dump;
pub use error::ParseError;
pub use reader::{parse, MAX_LINE_LEN};

/// Parse a Dockerfile given as bytes. Text that is not UTF-8 is refused with the place of the
/// first bad byte.
pub fn parse_bytes(src: &[u8]) -> Result<Dockerfile, ParseError> {
    match std::str::from_utf8(src) {
        Ok(s) => parse(s),
        Err(e) => {
            let good = &src[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
            Err(ParseError::new(
                "dockerfile is not valid UTF-8 text",
                line,
                column,
            ))
        }
    }
}
