//! Diagnostics that point into a Dockerfile: file, line, column, the offending line and a caret.

use std::fmt;

use super::ast::Location;

/// Whether a diagnostic stops the build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The Dockerfile is invalid.
    Error,
    /// The Dockerfile works but something is suspect or deprecated.
    Warning,
}

/// One problem found in a Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, lowercase first word where it is our wording, BuildKit's wording otherwise.
    pub message: String,
    /// The file name as the user gave it.
    pub file: String,
    /// Where it is.
    pub location: Location,
    /// How many characters the caret underlines (at least 1).
    pub width: usize,
    /// The physical source line, for display.
    pub source_line: String,
    /// A hint shown after the caret, e.g. `did you mean RUN?`.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `location` in `file`; `source` is the whole file text, used to show the line.
    pub fn error(file: &str, source: &str, location: Location, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, file, source, location, message)
    }

    /// A warning at `location` in `file`.
    pub fn warning(
        file: &str,
        source: &str,
        location: Location,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, file, source, location, message)
    }

    fn new(
        severity: Severity,
        file: &str,
        source: &str,
        location: Location,
        message: impl Into<String>,
    ) -> Self {
        let source_line = source
            .split('\n')
            .nth(location.line.saturating_sub(1))
            .unwrap_or("")
            .trim_end_matches('\r');
        // Very long lines are clipped for display; the location stays exact.
        let source_line: String = source_line.chars().take(500).collect();
        Diagnostic {
            severity,
            message: message.into(),
            file: file.to_string(),
            location,
            width: 1,
            source_line,
            help: None,
        }
    }

    /// Underline `width` characters instead of one.
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = width.max(1);
        self
    }

    /// Attach a hint shown after the caret.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{kind}: {}", self.message)?;
        let line_no = self.location.line.to_string();
        let pad = " ".repeat(line_no.len());
        writeln!(f, "{pad}--> {}:{}", self.file, self.location)?;
        if self.location.line == 0 {
            return Ok(());
        }
        writeln!(f, "{pad} |")?;
        // Tabs are shown as single spaces so the caret lines up.
        let shown: String = self
            .source_line
            .chars()
            .map(|c| if c == '\t' || c.is_control() { ' ' } else { c })
            .collect();
        writeln!(f, "{line_no} | {shown}")?;
        let col = self.location.column.max(1);
        write!(
            f,
            "{pad} | {}{}",
            " ".repeat(col - 1),
            "^".repeat(self.width.max(1))
        )?;
        if let Some(help) = &self.help {
            write!(f, " {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Levenshtein distance, used for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate nearest to `word`, if `word` looks like a typo of it: BuildKit's `suggest`
/// package. A candidate qualifies when it is at most two edits away (the first of equally
/// near candidates wins); when `word` equals a candidate there is no suggestion, since the
/// error is then about something else. BuildKit has no minimum word length.
///
/// Without `case_sensitive`, words are compared lowercased and the suggestion takes the case
/// of `word` when that is all lower or all upper case (`foo` gives `from`, `FOO` gives `FROM`).
pub fn suggest(word: &str, candidates: &[&str], case_sensitive: bool) -> Option<String> {
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let w = fold(word);
    let mut best: Option<(String, usize)> = None;
    for c in candidates {
        let c = fold(c);
        if c == w {
            return None;
        }
        let d = edit_distance(&w, &c);
        if d <= 2 && best.as_ref().is_none_or(|(_, bd)| d < *bd) {
            best = Some((c, d));
        }
    }
    let (found, _) = best?;
    if !case_sensitive && word != word.to_lowercase() && word == word.to_uppercase() {
        return Some(found.to_uppercase());
    }
    // Lower- and mixed-case words get the lowercased candidate, as BuildKit's matchCase does.
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_like_buildkit() {
        let instructions = ["ADD", "ARG", "CMD", "COPY", "FROM", "RUN"];
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("FOO", false, Some("FROM")),
            ("foo", false, Some("from")),
            ("Foo", false, Some("from")),
            ("RUNN", false, Some("RUN")),
            ("run", false, None),
            ("XYZXYZ", false, None),
            // No minimum length: one letter is two edits from a three-letter name.
            ("a", false, Some("add")),
        ];
        for (word, cs, want) in cases {
            assert_eq!(
                suggest(word, &instructions, *cs).as_deref(),
                *want,
                "word {word:?}"
            );
        }
        let flags = ["chown", "from", "chmod", "link"];
        assert_eq!(suggest("chow", &flags, true).as_deref(), Some("chown"));
        assert_eq!(suggest("foo", &flags, true).as_deref(), Some("from"));
        assert_eq!(suggest("Chown", &flags, true).as_deref(), Some("chown"));
        assert_eq!(suggest("bogus", &flags, true), None);
        assert_eq!(suggest("link", &flags, true), None);
    }
}
