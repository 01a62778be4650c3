//! The syntax tree the parser produces: one node per Dockerfile instruction, with its source span.

use std::fmt;

/// Where something sits in a Dockerfile: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// 1-based line number; every physical line counts.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A heredoc attached to an instruction (`<<EOF` ... `EOF`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter after quote removal, e.g. `EOF`.
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted: the body is not expanded.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped by the consumer (COPY/ADD).
    pub chomp: bool,
    /// The body, verbatim, each line with its own newline.
    pub content: String,
}

/// One instruction of a Dockerfile, as BuildKit's parser shapes it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Node {
    /// The keyword as written (case kept), e.g. `RuN`.
    pub keyword: String,
    /// Flags as written after quote and escape processing, e.g. `--from=build`.
    pub flags: Vec<String>,
    /// Arguments; their shape depends on the instruction (see the conformance README §2.6).
    /// ENV and LABEL hold (key, value, separator) triples.
    pub args: Vec<String>,
    /// The nested instruction of `ONBUILD`, if any.
    pub next: Option<Box<Node>>,
    /// True when the arguments came from a JSON array (exec form).
    pub json: bool,
    /// Heredocs in the order they appear on the line.
    pub heredocs: Vec<Heredoc>,
    /// The logical line after continuation joining.
    pub original: String,
    /// First physical line of the instruction (1-based).
    pub start_line: usize,
    /// Last physical line consumed (continuations, heredoc terminator).
    pub end_line: usize,
    /// 1-based column of the keyword on its first line.
    pub column: usize,
    /// Comment lines directly above the instruction, text after `#` trimmed.
    pub prev_comment: Vec<String>,
}

impl Node {
    /// The keyword lowercased, as BuildKit names instructions (`run`, `copy`, ...).
    pub fn instruction(&self) -> String {
        self.keyword.to_lowercase()
    }

    /// Where the keyword starts.
    pub fn location(&self) -> Location {
        Location {
            line: self.start_line,
            column: self.column,
        }
    }
}

/// A parser directive found at the top of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// 1-based line of the directive.
    pub line: usize,
}

/// A non-fatal finding while parsing (e.g. an empty continuation line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Human-readable message, BuildKit's wording.
    pub message: String,
    /// Where it was found.
    pub location: Location,
}

/// A parsed Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dockerfile {
    /// The instructions, in file order.
    pub children: Vec<Node>,
    /// The escape character in force (`\` or `` ` ``).
    pub escape: char,
    /// Parser directives found at the top.
    pub directives: Vec<Directive>,
    /// Non-fatal findings.
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// First line of the first instruction.
    pub fn start_line(&self) -> usize {
        self.children.first().map_or(0, |n| n.start_line)
    }

    /// Last line of the last instruction.
    pub fn end_line(&self) -> usize {
        self.children.last().map_or(0, |n| n.end_line)
    }

    /// The value of a directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}
