//! `.dockerignore` files: Docker's pattern syntax and its match-or-parent-matches rule.
//!
//! Patterns are read the way moby/patternmatcher reads them ([`Syntax::DOCKERIGNORE`], see
//! [`crate::common::glob`]): `*` is any run of characters but `/`, `?` one character but `/`,
//! `**` any number of directories (`**/` included), `[...]` a character class, `\` escapes the
//! next character, and a pattern that ends in `**` matches everything below. A file is
//! excluded when the last pattern that matches it (or one of its parent directories) is not a
//! `!` exception.

use std::fmt;

use super::name::{encode, units};
use crate::common::glob::{Glob, GlobError, Prefer, Syntax};

/// A problem in a `.dockerignore` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {error}")]
pub struct IgnoreError {
    /// The ignore file's name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong with the line's pattern.
    #[source]
    pub error: PatternError,
}

/// Why a `.dockerignore`, `COPY --exclude` or COPY source pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A `!` with no pattern after it.
    #[error("illegal exclusion pattern: \"!\"")]
    EmptyExclusion,
    /// A malformed `[…]` class or a stray `]`.
    #[error("syntax error in pattern {pattern:?}")]
    Syntax {
        /// The pattern as given (with its `!`).
        pattern: String,
        /// What the matcher found wrong.
        #[source]
        source: GlobError,
    },
}

/// One compiled pattern.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    exclusion: bool,
    glob: Glob,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bang = if self.exclusion { "!" } else { "" };
        write!(f, "{bang}{}", self.text)
    }
}

/// Go's `filepath.Clean` on a slash-separated path.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

impl Pattern {
    /// Compile one pattern (already cleaned; `!` prefix allowed).
    pub fn new(pattern: &str) -> Result<Pattern, PatternError> {
        Pattern::compile(pattern, true)
    }

    /// Compile a COPY/ADD source pattern: Go's `filepath.Match`, as BuildKit matches
    /// sources, where `*` never crosses a `/` and `**` is two `*`s (one level), unlike in
    /// `.dockerignore`.
    pub fn source_glob(pattern: &str) -> Result<Pattern, PatternError> {
        Pattern::compile(pattern, false)
    }

    fn compile(pattern: &str, doublestar: bool) -> Result<Pattern, PatternError> {
        // `!` marks an exception in `.dockerignore` only; a source may start with one.
        let bang = if doublestar {
            pattern.strip_prefix('!')
        } else {
            None
        };
        let (exclusion, body) = match bang {
            Some("") => return Err(PatternError::EmptyExclusion),
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let syntax = if doublestar {
            Syntax::DOCKERIGNORE
        } else {
            Syntax::COPY_SOURCE
        };
        let glob = Glob::from_units(&units(body), syntax, Prefer::Longest).map_err(|source| {
            PatternError::Syntax {
                pattern: pattern.to_string(),
                source,
            }
        })?;
        Ok(Pattern {
            text: body.to_string(),
            exclusion,
            glob,
        })
    }

    /// True for a `!` exception.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// Whether the whole of `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        self.glob.matches(&units(path))
    }
}

/// The patterns of a `.dockerignore` file, in order.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

impl IgnoreRules {
    /// Read the text of an ignore file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<IgnoreRules, IgnoreError> {
        IgnoreRules::parse_bytes(file, text.as_bytes())
    }

    /// Read an ignore file's bytes, as Docker does: a line that is not UTF-8 is a pattern
    /// like any other, matched byte for byte against names that are not UTF-8 either.
    pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<IgnoreRules, IgnoreError> {
        let mut patterns = Vec::new();
        let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        for (idx, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let line = encode(raw);
            let line: &str = &line;
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (invert, rest) = match line.strip_prefix('!') {
                Some(r) => (true, r.trim()),
                None => (false, line),
            };
            let mut p = if rest.is_empty() {
                String::new()
            } else {
                clean_path(rest)
            };
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
            if invert {
                p.insert(0, '!');
            }
            let compiled = Pattern::new(&p).map_err(|error| IgnoreError {
                file: file.to_string(),
                line: idx + 1,
                error,
            })?;
            patterns.push(compiled);
        }
        Ok(IgnoreRules { patterns })
    }

    /// Rules from a list of patterns (e.g. `COPY --exclude`).
    pub fn from_patterns(patterns: &[String]) -> Result<IgnoreRules, PatternError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                let (bang, body) = match p.strip_prefix('!') {
                    Some(b) => ("!", b),
                    None => ("", p.as_str()),
                };
                Pattern::new(&format!("{bang}{}", clean_path(body)))
            })
            .collect::<Result<_, _>>()?;
        Ok(IgnoreRules { patterns })
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when some pattern is a `!` exception: then an excluded directory must still be
    /// walked, since something inside may be re-included.
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(Pattern::is_exclusion)
    }

    /// Whether `path` (relative, `/`-separated) is excluded: the last pattern matching it or
    /// one of its parent directories decides.
    pub fn is_excluded(&self, path: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        // The parent directories are the prefixes of `path` ending before each `/`.
        let parent_dirs: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion cannot change an already matched path, nor an exception an
            // unmatched one.
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(path);
            if !m {
                m = parent_dirs.iter().any(|d| p.matches(d));
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(".dockerignore", text).unwrap()
    }

    #[test]
    fn docker_matching_table() {
        // (patterns, path, excluded)
        let cases: &[(&str, &str, bool)] = &[
            ("*", "a", true),
            ("*", "a/b", true),
            ("*.md", "README.md", true),
            ("*.md", "docs/README.md", false),
            ("**/*.md", "docs/x/README.md", true),
            ("**/*.md", "README.md", true),
            ("docs", "docs/a/b", true),
            ("/docs", "docs/a", true),
            ("docs/", "docs/a", true),
            ("a/**", "a/b/c", true),
            ("a/**", "a", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
            ("[a-c].txt", "b.txt", true),
            ("[^a-c].txt", "b.txt", false),
            ("\\*.txt", "*.txt", true),
            ("\\*.txt", "a.txt", false),
            ("*\n!keep.md", "keep.md", false),
            ("*\n!keep.md", "other.md", true),
            ("docs\n!docs/keep", "docs/keep/x", false),
            ("docs\n!docs/keep", "docs/other", true),
            ("!a\n*", "a", true),
            ("# comment\n  \nnode_modules", "node_modules/x/y", true),
            ("./a/../b", "b/c", true),
            ("a**", "abc/d", true),
            ("**", "anything/at/all", true),
        ];
        for (pats, path, want) in cases {
            assert_eq!(rules(pats).is_excluded(path), *want, "{pats:?} vs {path}");
        }
    }

    #[test]
    fn bad_patterns_name_the_line() {
        let err = IgnoreRules::parse(".dockerignore", "ok\n[a-\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            matches!(&err.error, PatternError::Syntax { pattern, .. } if pattern == "[a-"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            ".dockerignore:2: syntax error in pattern \"[a-\""
        );
        let err = IgnoreRules::parse(".dockerignore", "!\n").unwrap_err();
        assert_eq!(err.error, PatternError::EmptyExclusion);
        assert!(err.to_string().contains("illegal exclusion"), "{err}");
    }

    #[test]
    fn clean_like_go() {
        for (i, o) in [
            ("a/./b/", "a/b"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("", "."),
        ] {
            assert_eq!(clean_path(i), o);
        }
    }
}
