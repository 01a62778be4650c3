//! Shell-word expansion of Dockerfile instruction arguments, with the semantics of BuildKit's `shell.Lex`.
//!
//! A Dockerfile word such as `"${HOME:-/root}"/bin` goes through quote
//! removal, escape handling and `$VAR` / `${VAR…}` expansion. Docker does not
//! run a real shell for this: BuildKit has its own small lexer
//! (`frontend/dockerfile/shell/lex.go`), and a build engine that wants to
//! produce the same images must reproduce its behaviour, quirks included.
//! This module is a clean-room Rust implementation of that behaviour.
//!
//! ```
//! use std::collections::HashMap;
//! use kiln::parser::shell::Lexer;
//!
//! let env = HashMap::from([("NAME".to_string(), "kiln".to_string())]);
//! let lexer = Lexer::new('\\');
//! assert_eq!(lexer.process_word("'$NAME' is ${NAME:-?}", &env).unwrap(), "$NAME is kiln");
//! assert_eq!(lexer.process_words("a \"b c\" $NAME", &env).unwrap(), ["a", "b c", "kiln"]);
//! ```
//!
//! Supported forms: `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`,
//! `${V:?msg}`, `${V?msg}`, `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`,
//! `${V/p/r}` and `${V//p/r}`. Positional (`$1`) and special (`$@`, `$$`, …)
//! parameters are looked up like names and so expand to empty. Patterns know
//! `*`, `?` and `\` escapes; like BuildKit, and unlike POSIX `sh`, they have no
//! bracket expressions: `[` and `]` match themselves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

use super::dump::go_quote;
use crate::common::glob::{Glob, Prefer, Searcher, Syntax};

/// How deeply `${…}` expansions may nest inside one another.
///
/// BuildKit has no limit (Go stacks grow); real Dockerfiles nest two or three
/// levels. The limit keeps hostile input from overflowing the stack.
pub const MAX_NESTING: usize = 64;

/// How many matcher steps the patterns of one word may take in total.
///
/// Pattern matching is linear in the value for a given pattern but
/// proportional to value length times pattern length in the worst case (as
/// in Go's regexp, which BuildKit uses). Real patterns are a few characters
/// against short values, thousands of times below this; the cap turns a
/// hostile pattern into an error instead of a hang.
pub const MATCH_BUDGET: u64 = 100_000_000;

/// How long an expanded word may grow, in bytes: 1 MiB, or the word's own length as written
/// when that is longer (a long heredoc body without variables expands to itself).
///
/// BuildKit has no limit, so `ENV A1=${A0}${A0}${A0}${A0}` repeated a dozen times asks for
/// gigabytes and aborts the process. Real values (a `PATH`, a certificate, a JSON label) are
/// kilobytes; the limit is far above them and turns doubling into an error instead.
pub const MAX_WORD_LEN: usize = 1 << 20;

/// Variables visible to an expansion.
///
/// Names are compared exactly (case-sensitive), as BuildKit does on Unix.
pub trait Env {
    /// The value of `name`, or `None` when the variable is unset.
    ///
    /// A variable set to the empty string returns `Some("")`: `${V-x}` and
    /// `${V:-x}` tell the two apart.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

/// Key/value pairs; a later pair overrides an earlier one with the same key.
impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Key/value pairs; a later pair overrides an earlier one with the same key.
impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// `K=V` entries as in a process environment; later entries override earlier
/// ones, and an entry without `=` sets its key to the empty string (BuildKit's
/// `EnvsFromSlice`).
impl Env for [String] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find_map(|e| env_entry(e, name))
    }
}

/// `K=V` entries; see the impl for `[String]`.
impl Env for Vec<String> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// `K=V` entries; see the impl for `[String]`.
impl Env for [&str] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().rev().find_map(|e| env_entry(e, name))
    }
}

/// `K=V` entries; see the impl for `[String]`.
impl Env for Vec<&str> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// The value of `entry` (`K=V` or a bare `K`) if its key is `name`.
fn env_entry<'a>(entry: &'a str, name: &str) -> Option<&'a str> {
    let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
    (key == name).then_some(value)
}

/// Why an expansion failed.
///
/// The `Display` texts are BuildKit's, except for the limits this
/// implementation adds ([`TooDeep`](Self::TooDeep),
/// [`MatchTooExpensive`](Self::MatchTooExpensive), [`TooLong`](Self::TooLong)) and for `${V` cut off
/// right after the name, which BuildKit words as an unsupported modifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShellErrorKind {
    /// A `'` was never closed.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// A `"` was never closed.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// The word ended while looking for the given delimiter.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnexpectedEnd(char),
    /// A `${` was never closed.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// A `${V/pattern` has no `/` before the replacement.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:…}` or `${{…`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A modifier this lexer does not know, such as `=` or `:#` (the text
    /// between the parentheses).
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${V?msg}` with `V` unset, or `${V:?msg}` with `V` unset or empty.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The user's message, or BuildKit's default text.
        message: String,
    },
    /// A `#`, `%` or `/` pattern that cannot be compiled.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern as seen by the matcher (for `%`, it is reversed, as
        /// in BuildKit).
        pattern: String,
        /// What is wrong with it.
        reason: PatternError,
    },
    /// `${…}` nested more than [`MAX_NESTING`] levels deep.
    #[error("substitutions nested more than {0} levels deep")]
    TooDeep(usize),
    /// The word's patterns needed more than [`MATCH_BUDGET`] matcher steps.
    #[error("pattern matching gave up after {0} steps")]
    MatchTooExpensive(u64),
    /// The expanded word would be longer than [`MAX_WORD_LEN`] bytes (or than the word as
    /// written, when that is longer); the number is the limit.
    #[error("the expanded word is longer than {0} bytes, kiln's limit")]
    TooLong(usize),
}

/// What is wrong with a `#`, `%` or `/` pattern (the shell never reports
/// [`GlobError::Syntax`](crate::common::glob::GlobError::Syntax): its patterns have no classes).
pub use crate::common::glob::GlobError as PatternError;

/// An expansion failure, naming the word that failed.
///
/// Displays as BuildKit does: `failed to process "<word>": <kind>`, with the
/// word quoted the way Go's `%q` quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {kind}", go_quote(.word))]
pub struct ShellError {
    /// The whole word that was being expanded.
    pub word: String,
    /// What went wrong.
    pub kind: ShellErrorKind,
}

/// Everything one expansion produces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word, not split.
    pub result: String,
    /// The expanded word split into fields (what [`Lexer::process_words`]
    /// returns).
    pub words: Vec<String>,
    /// Names that were looked up and were set.
    pub matched: BTreeSet<String>,
    /// Names that were looked up and were not set.
    pub unmatched: BTreeSet<String>,
}

/// A shell-word lexer configured with an escape character and modes.
///
/// The default modes (all off) are what Dockerfile instructions use; the
/// others exist because BuildKit switches them on for particular callers
/// (heredoc bodies, build-arg handling, progress names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    skip_process_quotes: bool,
}

impl Lexer {
    /// A lexer with the given escape character and every mode off.
    ///
    /// The Dockerfile `# escape=` directive allows `\` (the default) or
    /// `` ` ``; other characters work but have no meaning in Docker.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_process_quotes: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (BuildKit `RawQuotes`).
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output (BuildKit `RawEscapes`).
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Leave references to unset variables as written instead of expanding
    /// them to empty (BuildKit `SkipUnsetEnv`): `$V` stays `$V`, `${V}` stays
    /// `${V}`, and `${V:-w}` becomes `${V:-` + expanded `w` + `}`.
    pub fn skip_unset(mut self, on: bool) -> Self {
        self.skip_unset = on;
        self
    }

    /// Treat `'` and `"` as ordinary characters (BuildKit
    /// `SkipProcessQuotes`).
    pub fn skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Expands `word` as one word: quotes and escapes are removed and
    /// variables substituted, but whitespace is kept.
    pub fn process_word<E: Env + ?Sized>(&self, word: &str, env: &E) -> Result<String, ShellError> {
        self.run(word, env, false, false).map(|e| e.result)
    }

    /// Expands `word` and splits the result into fields the way Docker does:
    /// whitespace in unquoted text or unquoted variable values separates
    /// fields, quoted or escaped whitespace does not, and empty fields
    /// (including `""`) are dropped.
    pub fn process_words<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Vec<String>, ShellError> {
        self.run(word, env, true, false).map(|e| e.words)
    }

    /// Expands `word` as one word, also reporting which variables were found
    /// and which were not (BuildKit uses this to warn about undefined
    /// build arguments).
    pub fn process_word_with_matches<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Expansion, ShellError> {
        self.run(word, env, true, true)
    }

    fn run<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
        want_words: bool,
        capture: bool,
    ) -> Result<Expansion, ShellError> {
        // Go's text/scanner silently drops a byte-order mark at the very start
        // of its input, so BuildKit never sees one there.
        let text = word.strip_prefix('\u{FEFF}').unwrap_or(word);
        let mut ex = Expander {
            lexer: self,
            env,
            scan: Scanner { src: text, pos: 0 },
            depth: 0,
            budget: MATCH_BUDGET,
            max_len: MAX_WORD_LEN.max(text.len()),
            capture,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match ex.stop_on(None, self.raw_escapes, want_words) {
            Ok((result, words)) => Ok(Expansion {
                result,
                words,
                matched: ex.matched,
                unmatched: ex.unmatched,
            }),
            Err(kind) => Err(ShellError {
                word: word.to_owned(),
                kind,
            }),
        }
    }
}

/// A cursor over the characters of the word.
struct Scanner<'w> {
    src: &'w str,
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }
}

/// Field splitting that runs alongside expansion: it has to, because only
/// the expander knows which characters were quoted or escaped.
struct Words {
    enabled: bool,
    words: Vec<String>,
    buf: String,
    in_word: bool,
}

impl Words {
    fn new(enabled: bool) -> Self {
        Words {
            enabled,
            words: Vec::new(),
            buf: String::new(),
            in_word: false,
        }
    }

    /// An unquoted character: whitespace ends the current field.
    fn add_char(&mut self, c: char) {
        if !self.enabled {
            return;
        }
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    /// A quoted or escaped character: always part of the field.
    fn add_raw_char(&mut self, c: char) {
        if self.enabled {
            self.buf.push(c);
            self.in_word = true;
        }
    }

    fn add_str(&mut self, s: &str) {
        if self.enabled {
            s.chars().for_each(|c| self.add_char(c));
        }
    }

    fn add_raw_str(&mut self, s: &str) {
        if self.enabled {
            self.buf.push_str(s);
            self.in_word = true;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

/// The state of one expansion.
struct Expander<'a, E: ?Sized> {
    lexer: &'a Lexer,
    env: &'a E,
    scan: Scanner<'a>,
    depth: usize,
    /// Matcher steps left for this word (see [`MATCH_BUDGET`]).
    budget: u64,
    /// The longest any text of this word may grow (see [`MAX_WORD_LEN`]).
    max_len: usize,
    capture: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Step<T> = Result<T, ShellErrorKind>;

impl<E: Env + ?Sized> Expander<'_, E> {
    /// Expands up to (and consuming) `stop`, or to the end of the word when
    /// `stop` is `None`.
    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        want_words: bool,
    ) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::new(want_words);
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(c) = self.scan.peek() {
            // The stop character wins over everything, so `${V:-$}` ends at `}`.
            if Some(c) == stop {
                self.scan.next();
                self.fits(&result, "")?;
                return Ok((result, words.finish()));
            }
            if c == '$' {
                let value = self.dollar()?;
                self.fits(&result, &value)?;
                result.push_str(&value);
                // Unquoted variable values are subject to field splitting.
                words.add_str(&value);
            } else if c == '<' {
                let value = self.possible_heredoc();
                result.push_str(&value);
                words.add_raw_str(&value);
            } else if quotes && c == '\'' {
                let value = self.single_quote()?;
                self.fits(&result, &value)?;
                result.push_str(&value);
                words.add_raw_str(&value);
            } else if quotes && c == '"' {
                let value = self.double_quote(raw_escapes)?;
                self.fits(&result, &value)?;
                result.push_str(&value);
                words.add_raw_str(&value);
            } else {
                self.scan.next();
                let mut c = c;
                if c == self.lexer.escape {
                    if raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    // An escape as the last character is dropped.
                    match self.scan.next() {
                        Some(escaped) => c = escaped,
                        None => break,
                    }
                    words.add_raw_char(c);
                } else {
                    words.add_char(c);
                }
                result.push(c);
            }
        }
        match stop {
            Some(c) => Err(ShellErrorKind::UnexpectedEnd(c)),
            None => {
                // Literal characters come from the word itself and grow it by at most its
                // own length: checked once, here.
                self.fits(&result, "")?;
                Ok((result, words.finish()))
            }
        }
    }

    /// Whether `add` may be appended to `text` without passing the word's length limit
    /// (checked before the bytes are copied, so doubling fails before it allocates).
    fn fits(&self, text: &str, add: &str) -> Step<()> {
        if text.len().saturating_add(add.len()) > self.max_len {
            return Err(ShellErrorKind::TooLong(self.max_len));
        }
        Ok(())
    }

    /// `<`: a `<<` keeps the blanks after it in the same word, so `<<  EOF` stays one
    /// heredoc marker when the line is split into words.
    fn possible_heredoc(&mut self) -> String {
        self.scan.next();
        if self.scan.peek() != Some('<') {
            return "<".to_string();
        }
        self.scan.next();
        let mut out = String::from("<<");
        while let Some(c) = self.scan.peek().filter(|c| *c == ' ' || *c == '\t') {
            out.push(c);
            self.scan.next();
        }
        out
    }

    /// `'…'`: everything up to the next `'` is literal; there is no escape.
    fn single_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        self.scan.next();
        if self.lexer.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.scan.next() {
                None => return Err(ShellErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    /// `"…"`: variables expand; the escape character escapes only `"`, `$`
    /// and itself and is otherwise kept.
    fn double_quote(&mut self, raw_escapes: bool) -> Step<String> {
        let mut result = String::new();
        self.scan.next();
        if self.lexer.raw_quotes {
            result.push('"');
        }
        loop {
            match self.scan.peek() {
                None => return Err(ShellErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.scan.next();
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    self.fits(&result, &value)?;
                    result.push_str(&value);
                }
                Some(c) => {
                    self.scan.next();
                    let mut c = c;
                    if c == self.lexer.escape {
                        if raw_escapes {
                            result.push(c);
                        }
                        match self.scan.peek() {
                            // Dropped here; the loop then reports the open quote.
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lexer.escape => {
                                self.scan.next();
                                c = n;
                            }
                            // BuildKit keeps the escape before any other
                            // character, and in raw-escape mode that means it
                            // is written twice. Reproduced on purpose.
                            Some(_) => {}
                        }
                    }
                    result.push(c);
                }
            }
        }
    }

    /// A `$` at the cursor: a name, a `${…}` form, or a literal `$`.
    fn dollar(&mut self) -> Step<String> {
        self.scan.next();
        if self.scan.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.scan.next();
        match self.scan.peek() {
            None => return Err(ShellErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellErrorKind::BadSubstitution),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ShellErrorKind::TooDeep(MAX_NESTING));
        }
        self.depth += 1;
        let out = self.braced();
        self.depth -= 1;
        out
    }

    /// The inside of `${…}`, after the `{`.
    fn braced(&mut self) -> Step<String> {
        let name = self.name();
        // BuildKit reports `${V` at the end of the word as an unsupported
        // modifier named U+FFFD (Go's rendering of its EOF marker); saying
        // what is actually missing is more useful.
        let Some(op) = self.scan.next() else {
            return Err(ShellErrorKind::MissingBrace);
        };
        match op {
            '}' => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.modifier(name, op),
            '/' => self.replace(name),
            other => Err(ShellErrorKind::UnsupportedModifier(other.to_string())),
        }
    }

    /// `${V:-w}`, `${V+w}`, `${V?w}`, `${V#p}` and the like; `first` is the
    /// character after the name.
    fn modifier(&mut self, name: String, first: char) -> Step<String> {
        let (null_is_unset, op) = if first == ':' {
            match self.scan.next() {
                Some(op) => (true, op),
                None => return Err(ShellErrorKind::MissingBrace),
            }
        } else {
            (false, first)
        };
        let spelled = if null_is_unset {
            format!(":{op}")
        } else {
            op.to_string()
        };
        // Patterns keep their escapes so that `\*` reaches the matcher as a
        // literal star rather than a wildcard.
        let is_pattern = op == '#' || op == '%';
        if null_is_unset && is_pattern {
            return Err(ShellErrorKind::UnsupportedModifier(spelled));
        }
        let word = self.operand('}', is_pattern, ShellErrorKind::MissingBrace)?;
        let value = self.lookup(&name);
        if self.lexer.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{spelled}{word}}}"));
        }
        let empty = value.as_deref().is_none_or(str::is_empty);
        match op {
            '-' if value.is_none() || (null_is_unset && empty) => Ok(word),
            '-' => Ok(value.unwrap_or_default()),
            '+' if value.is_none() || (null_is_unset && empty) => Ok(String::new()),
            '+' => Ok(word),
            '?' => {
                let default = match &value {
                    None => "is not allowed to be unset",
                    Some(v) if null_is_unset && v.is_empty() => "is not allowed to be empty",
                    Some(v) => return Ok(v.clone()),
                };
                let message = if word.is_empty() {
                    default.to_owned()
                } else {
                    word
                };
                Err(ShellErrorKind::Required { name, message })
            }
            '#' | '%' => {
                // A doubled operator (`##`, `%%`) asks for the longest match.
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                let value = value.unwrap_or_default();
                if op == '#' {
                    trim_prefix(pattern, &value, greedy, &mut self.budget)
                } else {
                    trim_suffix(pattern, &value, greedy, &mut self.budget)
                }
            }
            _ => Err(ShellErrorKind::UnsupportedModifier(spelled)),
        }
    }

    /// `${V/p/r}` and `${V//p/r}`, after the first `/`.
    fn replace(&mut self, name: String) -> Step<String> {
        let all = self.scan.peek() == Some('/');
        if all {
            self.scan.next();
        }
        let pattern = self.operand('/', true, ShellErrorKind::MissingSlash)?;
        let replacement = self.operand('}', true, ShellErrorKind::MissingBrace)?;
        let value = self.lookup(&name);
        if self.lexer.skip_unset && value.is_none() {
            // BuildKit writes a single `/` back even for `//`; kept as is.
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value = value.unwrap_or_default();
        let glob = compile(&pattern, true)?;
        let mut vm = Finder::new(&glob, &mut self.budget);
        let units = Units::new(&value);
        if all {
            return replace_all(&mut vm, &value, &units, &replacement, self.max_len);
        }
        Ok(match vm.find(&units, 0, false)? {
            Some((a, b)) => {
                if value.len() - (b - a) + replacement.len() > self.max_len {
                    return Err(ShellErrorKind::TooLong(self.max_len));
                }
                format!("{}{replacement}{}", &value[..a], &value[b..])
            }
            None => value,
        })
    }

    /// The text of a modifier's operand, up to `stop`. Running out of input
    /// inside it is reported as `at_end`, whatever nested error it caused.
    fn operand(&mut self, stop: char, raw_escapes: bool, at_end: ShellErrorKind) -> Step<String> {
        match self.stop_on(Some(stop), raw_escapes, false) {
            Ok((word, _)) => Ok(word),
            // Limits of this implementation are reported as they are, never
            // disguised as a syntax error.
            Err(
                e @ (ShellErrorKind::TooDeep(_)
                | ShellErrorKind::MatchTooExpensive(_)
                | ShellErrorKind::TooLong(_)),
            ) => Err(e),
            Err(_) if self.scan.at_end() => Err(at_end),
            Err(e) => Err(e),
        }
    }

    /// A parameter name: all consecutive digits, or one special character,
    /// or letters, digits and `_`. Empty when none of these follows.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.scan.peek() {
            if name.is_empty() && is_digit(c) {
                while let Some(d) = self.scan.peek().filter(|&d| is_digit(d)) {
                    self.scan.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.scan.next();
                return c.to_string();
            }
            if !(is_letter(c) || is_digit(c) || c == '_') {
                break;
            }
            self.scan.next();
            name.push(c);
        }
        name
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let value = self.env.get(name).map(str::to_owned);
        if self.capture {
            let set = if value.is_some() {
                &mut self.matched
            } else {
                &mut self.unmatched
            };
            if !set.contains(name) {
                set.insert(name.to_owned());
            }
        }
        value
    }
}

fn invalid(pattern: &str, reason: PatternError) -> ShellErrorKind {
    ShellErrorKind::InvalidPattern {
        pattern: pattern.to_owned(),
        reason,
    }
}

// Go's `unicode.IsDigit` is category Nd and `unicode.IsLetter` category L.
// std has no category tables, so outside ASCII these are approximations:
// `is_numeric` also accepts No/Nl (e.g. `²`) and `is_alphabetic` also accepts
// Nl and combining vowel signs. Only names spelled with such characters
// expand differently from BuildKit.
fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        c.is_numeric()
    }
}

fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        c.is_alphabetic()
    }
}

/// `${V#p}` / `${V##p}`: remove the shortest (longest) prefix matching `p`.
fn trim_prefix(pattern: &str, value: &str, greedy: bool, budget: &mut u64) -> Step<String> {
    let glob = compile(pattern, greedy)?;
    Ok(
        match Finder::new(&glob, budget).find(&Units::new(value), 0, true)? {
            Some((_, end)) => value[end..].to_owned(),
            None => value.to_owned(),
        },
    )
}

/// `${V%p}` / `${V%%p}`: remove the shortest (longest) suffix matching `p`.
///
/// Like BuildKit, this reverses the value and the pattern and trims a
/// prefix; the reversal decides corner cases (a trailing `\` in a pattern
/// taken from a variable), so it is kept rather than matching from the end.
fn trim_suffix(pattern: &str, value: &str, greedy: bool, budget: &mut u64) -> Step<String> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy, budget)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern, keeping each `\x` escape pair in order.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        pieces.push(&chars[i..i + len]);
        i += len;
    }
    pieces.iter().rev().flat_map(|p| p.iter()).collect()
}

/// Compiles a shell pattern; `greedy` makes `*` prefer the longest run.
///
/// BuildKit turns patterns into Go regular expressions (`*` → `.*` or `.*?`,
/// `?` → `.`) and takes the leftmost-first match; [`crate::common::glob`]
/// reproduces those semantics without a regex engine, including `.` not
/// matching a newline.
fn compile(pattern: &str, greedy: bool) -> Step<Glob> {
    // BuildKit scans patterns with Go's text/scanner too, which drops a
    // leading byte-order mark.
    let body = pattern.strip_prefix('\u{FEFF}').unwrap_or(pattern);
    let prefer = if greedy {
        Prefer::Longest
    } else {
        Prefer::Shortest
    };
    // The backslash is hard-coded, whatever the escape directive says,
    // because BuildKit's pattern converter hard-codes it.
    Glob::new(body, Syntax::SHELL, prefer).map_err(|reason| invalid(pattern, reason))
}

/// A value as the matcher's units (its characters), with the byte offset of each.
struct Units {
    units: Vec<u32>,
    /// `offsets[i]` is where unit `i` starts; the last is the value's length.
    offsets: Vec<usize>,
}

impl Units {
    fn new(text: &str) -> Units {
        let mut units = Vec::with_capacity(text.len());
        let mut offsets = Vec::with_capacity(text.len() + 1);
        for (at, c) in text.char_indices() {
            units.push(u32::from(c));
            offsets.push(at);
        }
        offsets.push(text.len());
        Units { units, offsets }
    }

    /// The unit at byte offset `at` (a character boundary).
    fn index(&self, at: usize) -> usize {
        self.offsets.partition_point(|&o| o < at)
    }
}

/// Searches a value for one pattern, in byte offsets, spending the word's budget.
struct Finder<'g> {
    searcher: Searcher<'g>,
}

impl<'g> Finder<'g> {
    fn new(glob: &'g Glob, budget: &'g mut u64) -> Self {
        Finder {
            searcher: glob.searcher(budget),
        }
    }

    /// The leftmost-first match in `text` starting at or after byte `from`
    /// (exactly at `from` when `anchored`), as a byte range.
    fn find(&mut self, text: &Units, from: usize, anchored: bool) -> Step<Option<(usize, usize)>> {
        let found = self
            .searcher
            .find(&text.units, text.index(from), anchored)
            .map_err(|_| ShellErrorKind::MatchTooExpensive(MATCH_BUDGET))?;
        Ok(found.map(|(a, b)| (text.offsets[a], text.offsets[b])))
    }
}

/// `${V//p/r}`: replaces every match, the way Go's `ReplaceAllString` does,
/// including its handling of empty matches and of `$` in the replacement.
/// The result may not grow past `max_len` bytes: every match can insert the whole
/// replacement, so a long value and a long replacement multiply.
fn replace_all(
    vm: &mut Finder<'_>,
    value: &str,
    units: &Units,
    replacement: &str,
    max_len: usize,
) -> Step<String> {
    let mut out = String::with_capacity(value.len());
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some((a, b)) = vm.find(units, search, false)? else {
            break;
        };
        out.push_str(&value[last_end..a]);
        // An empty match right after a previous match is not replaced again.
        if b > last_end || a == 0 {
            expand_go_template(&mut out, replacement, &value[a..b], max_len)?;
        }
        if out.len() > max_len {
            return Err(ShellErrorKind::TooLong(max_len));
        }
        last_end = b;
        let width = value[search..].chars().next().map_or(1, char::len_utf8);
        search = if search + width > b {
            search + width
        } else {
            b
        };
    }
    out.push_str(&value[last_end..]);
    Ok(out)
}

/// Appends `template` to `out` as Go's `Regexp.Expand` would for a pattern
/// without groups: `$$` is `$`, `$0` / `${0}` is the whole match, any other
/// well-formed `$name` is empty, and a malformed `$` is kept. Only `//` goes
/// through this in BuildKit; a single `/` inserts the replacement verbatim.
///
/// Each `$0` inserts the whole match, so `out` is checked against `max_len` before it is.
fn expand_go_template(out: &mut String, template: &str, whole: &str, max_len: usize) -> Step<()> {
    let mut rest = template;
    let fits = |out: &String, add: usize| {
        if out.len().saturating_add(add) > max_len {
            return Err(ShellErrorKind::TooLong(max_len));
        }
        Ok(())
    };
    while let Some(i) = rest.find('$') {
        fits(out, i + 1)?;
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let braced = rest.strip_prefix('{');
        let body = braced.unwrap_or(rest);
        let len: usize = body
            .chars()
            .take_while(|&c| is_letter(c) || is_digit(c) || c == '_')
            .map(char::len_utf8)
            .sum();
        let name = &body[..len];
        let after = match braced {
            Some(_) => body[len..].strip_prefix('}'),
            None => Some(&body[len..]),
        };
        match after {
            Some(after) if !name.is_empty() => {
                if name == "0" {
                    fits(out, whole.len())?;
                    out.push_str(whole);
                }
                rest = after;
            }
            _ => out.push('$'),
        }
    }
    fits(out, rest.len())?;
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn data(rel: &str) -> String {
        let path: PathBuf = [
            env!("CARGO_MANIFEST_DIR"),
            "testdata/conformance/buildkit",
            rel,
        ]
        .iter()
        .collect();
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()))
    }

    /// Lines as Go's `bufio.Scanner` yields them: split at `\n`, a `\r`
    /// before it dropped, no extra empty line after a final newline.
    fn go_lines(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text.split('\n').collect();
        if lines.last() == Some(&"") {
            lines.pop();
        }
        lines
            .into_iter()
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect()
    }

    /// Tallies a conformance run and fails it listing every failure.
    #[derive(Default)]
    struct Tally {
        passed: usize,
        skipped: usize,
        failed: Vec<String>,
    }

    impl Tally {
        fn check(&mut self, ok: bool, describe: impl FnOnce() -> String) {
            if ok {
                self.passed += 1;
            } else {
                self.failed.push(describe());
            }
        }

        fn finish(self, name: &str) {
            println!(
                "{name}: {} passed, {} skipped, {} failed",
                self.passed,
                self.skipped,
                self.failed.len()
            );
            assert!(
                self.failed.is_empty(),
                "{name}: {} failing vectors:\n{}",
                self.failed.len(),
                self.failed.join("\n")
            );
            assert!(self.passed > 0, "{name}: no vectors ran");
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn strings(v: &serde_json::Value) -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn object_env(v: &serde_json::Value) -> BTreeMap<String, String> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn conformance_env_var_test() {
        let text = data("shell/envVarTest");
        let env: Vec<String> = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]
            .map(String::from)
            .to_vec();
        let lexer = Lexer::new('\\');
        let mut tally = Tally::default();
        for (n, line) in go_lines(&text).into_iter().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            let [platform, input, expected] = fields[..] else {
                tally
                    .failed
                    .push(format!("line {}: not 3 fields: {line:?}", n + 1));
                continue;
            };
            match platform {
                "A" | "U" => {}
                "W" => {
                    tally.skipped += 1;
                    continue;
                }
                other => {
                    tally
                        .failed
                        .push(format!("line {}: unknown platform {other:?}", n + 1));
                    continue;
                }
            }
            let got = lexer.process_word(input, &env);
            let ok = match (&got, expected) {
                (Err(_), "error") => true,
                (Ok(s), e) => e != "error" && s == e,
                _ => false,
            };
            tally.check(ok, || {
                format!("line {}: {input:?}: want {expected:?}, got {got:?}", n + 1)
            });
        }
        tally.finish("shell/envVarTest");
    }

    #[test]
    fn conformance_words_test() {
        let text = data("shell/wordsTest");
        let lexer = Lexer::new('\\');
        let mut env: Vec<String> = Vec::new();
        let mut tally = Tally::default();
        for (n, line) in go_lines(&text).into_iter().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            if let Some(def) = line.strip_prefix("ENV ") {
                // Trailing spaces of the value are significant.
                env.push(def.trim_start_matches(' ').to_owned());
                continue;
            }
            let parts: Vec<&str> = line.split('|').collect();
            let [input, expected] = parts[..] else {
                tally
                    .failed
                    .push(format!("line {}: not exactly one '|': {line:?}", n + 1));
                continue;
            };
            let input = input.trim();
            let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
            let got = lexer
                .process_words(input, &env)
                .unwrap_or_else(|_| vec!["error".to_owned()]);
            tally.check(got == expected, || {
                format!("line {}: {input:?}: want {expected:?}, got {got:?}", n + 1)
            });
        }
        tally.finish("shell/wordsTest");
    }

    #[test]
    fn conformance_shell_expansion_json() {
        let doc: serde_json::Value =
            serde_json::from_str(&data("derived/shell-expansion.json")).expect("valid JSON");
        let lexer = Lexer::new('\\');
        let mut tally = Tally::default();
        let section = |name: &str| doc[name].as_array().cloned().unwrap_or_default();

        for (i, case) in section("processWordWithMatches").iter().enumerate() {
            let input = case["input"].as_str().unwrap_or_default();
            let env = object_env(&case["env"]);
            let got = lexer.process_word_with_matches(input, &env);
            let ok = match (&got, case.get("error")) {
                (Err(e), Some(want)) => want.as_str() == Some(e.to_string().as_str()),
                (Ok(x), None) => {
                    case["expect"].as_str() == Some(x.result.as_str())
                        && strings(&case["matched"])
                            .into_iter()
                            .collect::<BTreeSet<_>>()
                            == x.matched
                        && strings(&case["unmatched"])
                            .into_iter()
                            .collect::<BTreeSet<_>>()
                            == x.unmatched
                }
                _ => false,
            };
            tally.check(ok, || {
                format!("processWordWithMatches[{i}] {input:?}: want {case}, got {got:?}")
            });
        }

        for (i, case) in section("mandatoryVars").iter().enumerate() {
            let input = case["input"].as_str().unwrap_or_default();
            let env = strings(&case["env"]);
            let got = lexer.process_word(input, &env);
            let ok = match (&got, case.get("error")) {
                (Err(e), Some(want)) => {
                    let msg = e.to_string();
                    msg.contains("message herex") && want.as_str() == Some(msg.as_str())
                }
                (Ok(s), None) => case["expect"].as_str() == Some(s.as_str()),
                _ => false,
            };
            tally.check(ok, || {
                format!("mandatoryVars[{i}] {input:?}: want {case}, got {got:?}")
            });
        }

        for (i, case) in section("platformTemplate").iter().enumerate() {
            let input = case["input"].as_str().unwrap_or_default();
            let env = object_env(&case["env"]);
            let got = lexer.process_word(input, &env);
            let ok = matches!(&got, Ok(s) if case["expect"].as_str() == Some(s.as_str()));
            tally.check(ok, || {
                format!("platformTemplate[{i}] {input:?}: want {case}, got {got:?}")
            });
        }
        tally.finish("derived/shell-expansion.json");
    }

    fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Runs `(input, expected)` rows through `process_word`; `None` means an error.
    fn table(lexer: Lexer, env: &BTreeMap<String, String>, rows: &[(&str, Option<&str>)]) {
        let mut bad = Vec::new();
        for &(input, want) in rows {
            let got = lexer.process_word(input, env);
            if got.as_deref().ok() != want {
                bad.push(format!("{input:?}: want {want:?}, got {got:?}"));
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn default_mode_forms() {
        let env = env_of(&[("A", "a b"), ("E", ""), ("P", "/usr/local/bin")]);
        table(
            Lexer::new('\\'),
            &env,
            &[
                ("$A", Some("a b")),
                ("${A}x", Some("a bx")),
                ("${E-d}|${E:-d}", Some("|d")),
                ("${E+s}|${E:+s}", Some("s|")),
                ("${U-'q u'}", Some("q u")),
                ("${U:-\"$A\"}", Some("a b")),
                ("${P#*/}", Some("usr/local/bin")),
                ("${P##*/}", Some("bin")),
                ("${P%/*}", Some("/usr/local")),
                ("${P%%/*}", Some("")),
                ("${P/local/opt}", Some("/usr/opt/bin")),
                ("${P//\\//:}", Some(":usr:local:bin")),
                ("${P#[}", Some("/usr/local/bin")),
                ("${P#\\x}", None),
                ("${A:=x}", None),
                ("${#A}", None),
                ("${A", None),
                ("${A:", None),
                ("${A:-", None),
                ("${A/x", None),
                ("$", Some("$")),
                ("a$", Some("a$")),
                ("$-x", Some("x")),
                ("\u{FEFF}$A", Some("a b")),
                ("x\u{FEFF}", Some("x\u{FEFF}")),
                ("a\0b$A\0", Some("a\0ba b\0")),
            ],
        );
    }

    #[test]
    fn error_messages_match_buildkit() {
        let lexer = Lexer::new('\\');
        let env = env_of(&[("E", "")]);
        let rows = [
            ("'abc", "failed to process \"'abc\": unexpected end of statement while looking for matching single-quote"),
            ("\"abc", "failed to process \"\\\"abc\": unexpected end of statement while looking for matching double-quote"),
            ("${}", "failed to process \"${}\": syntax error: bad substitution"),
            ("${X", "failed to process \"${X\": syntax error: missing '}'"),
            ("${X:-y", "failed to process \"${X:-y\": syntax error: missing '}'"),
            ("${X=y}", "failed to process \"${X=y}\": unsupported modifier (=) in substitution"),
            ("${E:?}", "failed to process \"${E:?}\": E: is not allowed to be empty"),
            ("${X?}", "failed to process \"${X?}\": X: is not allowed to be unset"),
            ("${E#\\a}", "failed to process \"${E#\\\\a}\": invalid pattern (\\a) in substitution: invalid escape '\\a'"),
            ("a\tb${}", "failed to process \"a\\tb${}\": syntax error: bad substitution"),
        ];
        for (input, want) in rows {
            let err = lexer.process_word(input, &env).expect_err(input);
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn backtick_escape() {
        let env = env_of(&[("A", "x")]);
        table(
            Lexer::new('`'),
            &env,
            &[
                ("`$A", Some("$A")),
                ("\\$A", Some("\\x")),
                ("\"`\"\"", Some("\"")),
                ("a``", Some("a`")),
                ("a`", Some("a")),
                // Patterns always use `\`, whatever the escape directive says.
                ("${A#\\*}", Some("x")),
            ],
        );
    }

    #[test]
    fn skip_unset_keeps_references() {
        let env = env_of(&[("A", "a")]);
        table(
            Lexer::new('\\').skip_unset(true),
            &env,
            &[
                ("$A$U", Some("a$U")),
                ("${U}", Some("${U}")),
                ("${U:-$A}", Some("${U:-a}")),
                ("${U+'q'}", Some("${U+q}")),
                ("${U#x}", Some("${U#x}")),
                ("${U//x/y}", Some("${U/x/y}")),
                ("${A:-z}", Some("a")),
                ("$1", Some("$1")),
            ],
        );
    }

    #[test]
    fn raw_quotes_and_escapes() {
        let env = env_of(&[("A", "a")]);
        table(
            Lexer::new('\\').raw_quotes(true),
            &env,
            &[("'$A' \"$A\"", Some("'$A' \"a\"")), ("\\'", Some("'"))],
        );
        table(
            Lexer::new('\\').raw_escapes(true),
            &env,
            &[
                ("\\$A", Some("\\$A")),
                ("a\\", Some("a\\")),
                ("\"\\t\"", Some("\\\\t")),
            ],
        );
        table(
            Lexer::new('\\').skip_process_quotes(true),
            &env,
            &[("'$A' \"x", Some("'a' \"x"))],
        );
    }

    #[test]
    fn words_split_like_docker() {
        let lexer = Lexer::new('\\');
        let env = env_of(&[("S", " x  y "), ("E", "")]);
        let rows: &[(&str, &[&str])] = &[
            ("a $S b", &["a", "x", "y", "b"]),
            ("a\"$S\"b", &["a x  y b"]),
            ("a\\ b '' \"\" $E", &["a b"]),
            ("${U:-p q}", &["p", "q"]),
            ("\t a \n b\u{3000}c ", &["a", "b", "c"]),
            // Recent BuildKit shares one field buffer between nested
            // `${V:-…}` scans, so it drops the `hello`; kiln keeps the
            // intended result (older BuildKit's).
            ("hello${U:-abc}def", &["helloabcdef"]),
        ];
        for &(input, want) in rows {
            assert_eq!(lexer.process_words(input, &env).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn matches_are_recorded() {
        let env = env_of(&[("A", "1"), ("E", "")]);
        let x = Lexer::new('\\')
            .process_word_with_matches("$A ${E:-$B} ${C#$D} '$F'", &env)
            .unwrap();
        assert_eq!(x.result, "1   $F");
        assert_eq!(x.matched, set(&["A", "E"]));
        assert_eq!(x.unmatched, set(&["B", "C", "D"]));
    }

    #[test]
    fn patterns_follow_go_regexp_semantics() {
        let env = env_of(&[("NL", "ab\ncd"), ("V", "aXbXc"), ("U", "ééx"), ("D", "a$b")]);
        table(
            Lexer::new('\\'),
            &env,
            &[
                // `*` and `?` never match a newline (Go's `.`).
                ("${NL#*d}", Some("ab\ncd")),
                ("${NL#a?}", Some("\ncd")),
                ("${V#*X}", Some("bXc")),
                ("${V##*X}", Some("c")),
                ("${V%X*}", Some("aXb")),
                ("${V%%X*}", Some("a")),
                ("${U#?}", Some("éx")),
                ("${U%?}", Some("éé")),
                ("${V/X/-}", Some("a-bXc")),
                ("${V//X/-}", Some("a-b-c")),
                ("${V/*/-}", Some("-")),
                ("${V//$NOPE/-}", Some("-a-X-b-X-c-")),
                ("${V/$NOPE/-}", Some("-aXbXc")),
                // Go's ReplaceAllString expands `$` in the replacement.
                ("${V//X/<$D>}", Some("a<a>b<a>c")),
                ("${V/X/$D}", Some("aa$bbXc")),
            ],
        );
        let env = env_of(&[
            ("V", "ab*"),
            ("BS", "\\"),
            ("Z", "x$0y"),
            ("Z2", "x${0}y"),
            ("DD", "$$"),
        ]);
        table(
            Lexer::new('\\'),
            &env,
            &[
                // A `\` from a variable's value ends a `%` pattern; reversed,
                // it escapes the star before it, as in BuildKit.
                ("${V%*$BS}", Some("ab")),
                ("${V#$BS}", None),
                // `$0y` names a group `0y`, which does not exist; `${0}` is the match.
                ("${V//b/$Z}", Some("ax*")),
                ("${V//b/$Z2}", Some("axby*")),
                ("${V//b/$DD}", Some("a$*")),
                ("${V/b/$DD}", Some("a$$*")),
            ],
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let env = env_of(&[]);
        let lexer = Lexer::new('\\');
        let deep = "${a:-".repeat(100_000) + &"}".repeat(100_000);
        let err = lexer.process_word(&deep, &env).expect_err("too deep");
        assert_eq!(err.kind, ShellErrorKind::TooDeep(MAX_NESTING));
        let ok = "${a:-".repeat(MAX_NESTING) + "x" + &"}".repeat(MAX_NESTING);
        assert_eq!(lexer.process_word(&ok, &env).unwrap(), "x");
        let open = "${".repeat(100_000);
        assert!(lexer.process_word(&open, &env).is_err());
    }

    #[test]
    fn large_inputs_finish() {
        let env = env_of(&[("A", "value with spaces")]);
        let lexer = Lexer::new('\\');
        let chunk = "plain 'quoted' \"dq $A\" \\x $A ${A:-d} ${A#v*} ";
        // Expanded, this grows past its written length and past MAX_WORD_LEN: refused, quickly.
        let big = chunk.repeat(10 * 1024 * 1024 / chunk.len());
        let got = lexer.process_word(&big, &env).map(|v| v.len());
        assert_eq!(
            got.map_err(|e| e.kind),
            Err(ShellErrorKind::TooLong(big.len()))
        );
        let some = chunk.repeat(MAX_WORD_LEN / 2 / chunk.len());
        assert!(lexer.process_words(&some, &env).is_ok());
        let stars = "*".repeat(2 * 1024 * 1024);
        let word = format!("${{A#{stars}x}}${{A//{stars}?/-}}");
        assert!(lexer.process_word(&word, &env).is_ok());
        let unterminated = "'".to_owned() + &"a".repeat(10 * 1024 * 1024);
        assert!(lexer.process_word(&unterminated, &env).is_err());
    }

    // Regression (issue 15): `A1=${A0}${A0}${A0}${A0}`, repeated, asked for a gigabyte and
    // aborted the process; a word now stops growing at MAX_WORD_LEN.
    #[test]
    fn expansion_stops_at_the_word_length_limit() {
        let lexer = Lexer::new('\\');
        let quarter = "x".repeat(MAX_WORD_LEN / 4);
        let env = env_of(&[("A", quarter.as_str()), ("B", "$0$0$0$0$0")]);
        let len = |w: &str| {
            lexer
                .process_word(w, &env)
                .map(|v| v.len())
                .map_err(|e| e.kind)
        };
        assert_eq!(len("${A}${A}${A}${A}"), Ok(MAX_WORD_LEN));
        for word in [
            "${A}${A}${A}${A}x",
            "\"${A}${A}${A}${A}${A}\"",
            "${A//x/yyyyy}",
            "${A//x*/$B}",
            "${A/x/${A}${A}${A}${A}}",
            "${X:-${A}${A}${A}${A}${A}}",
        ] {
            assert_eq!(
                len(word),
                Err(ShellErrorKind::TooLong(MAX_WORD_LEN)),
                "{word}"
            );
        }
        // A longer word as written may expand to its own length.
        let written = "y".repeat(MAX_WORD_LEN + 10);
        assert_eq!(len(&written), Ok(written.len()));
    }

    #[test]
    fn matcher_gives_up_when_over_budget() {
        // Worst case for the VM: every start position keeps a thread alive
        // at every pattern position.
        let glob = compile(&("a".repeat(2_000) + "b"), true).unwrap();
        let text = "a".repeat(20_000);
        let mut budget = 1_000_000;
        let got = Finder::new(&glob, &mut budget).find(&Units::new(&text), 0, false);
        assert_eq!(got, Err(ShellErrorKind::MatchTooExpensive(MATCH_BUDGET)));
        assert_eq!(budget, 0);
        let mut budget = MATCH_BUDGET;
        let cheap = Finder::new(&glob, &mut budget).find(&Units::new(&text[..100]), 0, false);
        assert_eq!(cheap, Ok(None));
    }

    #[test]
    fn env_implementations_agree() {
        let lexer = Lexer::new('\\');
        let word = "$A-$B-${C-unset}";
        let want = "2-b-unset";
        let list = vec!["A=1".to_owned(), "B=b".to_owned(), "A=2".to_owned()];
        let strs = vec!["A=1", "B=b", "A=2"];
        let pairs = vec![
            ("A".to_owned(), "2".to_owned()),
            ("B".to_owned(), "b".to_owned()),
        ];
        let map: HashMap<String, String> = pairs.iter().cloned().collect();
        let tree: BTreeMap<String, String> = pairs.iter().cloned().collect();
        assert_eq!(lexer.process_word(word, &list).unwrap(), want);
        assert_eq!(lexer.process_word(word, &list[..]).unwrap(), want);
        assert_eq!(lexer.process_word(word, &strs).unwrap(), want);
        assert_eq!(lexer.process_word(word, &pairs).unwrap(), want);
        assert_eq!(lexer.process_word(word, &map).unwrap(), want);
        assert_eq!(lexer.process_word(word, &&tree).unwrap(), want);
        // A bare key is set to the empty string.
        assert_eq!(lexer.process_word("${K-unset}.", &vec!["K"]).unwrap(), ".");
    }

    #[test]
    fn go_quote_matches_strconv() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\0\x07\t\x7f\u{85}"), r#""\x00\a\t\x7f\u0085""#);
        assert_eq!(
            go_quote("한국어 é\u{a0}\u{feff}"),
            "\"한국어 é\\u00a0\\ufeff\""
        );
        assert_eq!(go_quote("\u{10ffff}"), r#""\U0010ffff""#);
    }

    // The shell's error messages had their own `%q` that took unassigned code points (U+0378,
    // U+1FFFF) as printable, so they disagreed with the dump and instruction errors. Both now
    // use `dump::go_quote`; this walks ranges with assigned, unassigned, format and private-use
    // code points and checks an expansion error quotes every one as the dump does.
    #[test]
    fn shell_errors_quote_like_the_dump_over_unassigned_code_points() {
        let ranges = [
            0u32..0x800,
            0x0370..0x0390,
            0x0890..0x0900,
            0x2000..0x2070,
            0xD7F0..0xD800,
            0xE000..0xE010,
            0xFDC0..0xFE00,
            0xFFF0..0x1_0000,
            0x1_FF00..0x2_0010,
            0xE_0000..0xE_0100,
            0x10_FFF0..0x11_0000,
        ];
        let env = env_of(&[]);
        let mut checked = 0;
        let chars = ranges.into_iter().flatten().filter_map(char::from_u32);
        // Leave out what the lexer itself gives a meaning to.
        for c in chars.filter(|c| !"$\\'\"`".contains(*c)) {
            let word = format!("{c}${{");
            let err = Lexer::new('\\').process_word(&word, &env).unwrap_err();
            let want = format!(
                "failed to process {}: {}",
                crate::parser::dump::go_quote(&word),
                err.kind
            );
            assert_eq!(err.to_string(), want, "U+{:04X}", c as u32);
            checked += 1;
        }
        assert!(checked > 2500, "{checked}");
        // Unassigned code points are not printable for Go's strconv.Quote.
        assert_eq!(go_quote("\u{378}"), r#""\u0378""#);
        assert_eq!(go_quote("\u{1ffff}"), r#""\U0001ffff""#);
    }

    fn lexers() -> Vec<Lexer> {
        let mut all = Vec::new();
        for escape in ['\\', '`'] {
            for bits in 0..16u8 {
                all.push(
                    Lexer::new(escape)
                        .raw_quotes(bits & 1 != 0)
                        .raw_escapes(bits & 2 != 0)
                        .skip_unset(bits & 4 != 0)
                        .skip_process_quotes(bits & 8 != 0),
                );
            }
        }
        all
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(word in "\\PC*|[${}:#%/?*+=\\\\\"'` a-c\\n\\x00]{0,48}") {
            let env = env_of(&[("a", "x y"), ("b", ""), ("c", "*\\?")]);
            for lexer in lexers() {
                let _ = lexer.process_word(&word, &env);
                let _ = lexer.process_words(&word, &env);
                let _ = lexer.process_word_with_matches(&word, &env);
            }
        }

        #[test]
        fn text_without_specials_is_unchanged(word in "[a-zA-Z0-9_./,:=@-]{0,64}") {
            let env = env_of(&[]);
            prop_assert_eq!(Lexer::new('\\').process_word(&word, &env).unwrap(), word);
        }
    }
}
