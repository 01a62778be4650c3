//! Dockerfile parser: text to typed instructions with source spans. Imports nothing else of the crate.

pub mod ast;
pub mod diag;
pub mod shell;

pub use ast::{Directive, Dockerfile, Heredoc, Location, Node, Warning};
pub use diag::{Diagnostic, Severity};
