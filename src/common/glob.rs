//! Glob patterns: the one compiler and matcher behind `.dockerignore` and COPY sources, image
//! reference filters and the shell's `${V#p}`-style patterns.
//!
//! The three places Docker matches names read patterns a little differently, and a
//! [`Syntax`] says how:
//!
//! | | `*` and `?` stop at | `**` | `[…]` | `\` |
//! |---|---|---|---|---|
//! | [`Syntax::DOCKERIGNORE`] (moby/patternmatcher) | `/` | any number of directories | lenient: `[]a]`, `[x-]` are classes | escapes anything; a trailing one is itself |
//! | [`Syntax::COPY_SOURCE`] (BuildKit sources) | `/` | two `*` | as `.dockerignore` | as `.dockerignore` |
//! | [`Syntax::GO_PATH`] (Go's `path.Match`, `reference=` filters) | `/` | two `*` | strict: `]` or `-` must be escaped | escapes anything; a trailing one is an error |
//! | [`Syntax::SHELL`] (BuildKit's `${V#p}`, `${V/p/r}`) | a newline | two `*` | none: `[` is itself | only `\*`, `\?`, `\\`; `\}` and `\/` are the character |
//!
//! A class matches any character, `/` included. Names are matched as sequences of `u32`
//! units: the characters of a `&str`, or (for context names that are not UTF-8) whatever
//! units the caller maps its raw bytes to, one unit per byte.
//!
//! Matching runs a Pike VM over the compiled pattern: linear in the text for a given pattern,
//! so no pattern can make it backtrack forever, with leftmost-first priorities so that a
//! search ([`Glob::find`]) picks the match a Go regular expression would. A step budget
//! bounds the total work of a caller that matches many patterns (the shell's).

/// What is wrong with a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GlobError {
    /// A malformed `[…]` class, a stray `]`, or (Go) a trailing `\` (Go's `ErrBadPattern`).
    #[error("syntax error in pattern")]
    Syntax,
    /// (shell) `\` before a character other than `*`, `?`, `\`, `}` or `/`.
    #[error("invalid escape '\\{0}'")]
    InvalidEscape(char),
    /// (shell) `\` as the last character (possible only through a variable's value).
    #[error("invalid escape '\\' at end of pattern")]
    TrailingEscape,
}

/// The matcher ran out of its step budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBudget;

/// How `[` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classes {
    /// No classes: `[` and `]` are literal characters.
    None,
    /// Go's `path.Match`: `]` and `-` are escaped inside a class, a `]` right after `[`
    /// does not close it but is an error, `[a-b-c]` is an error.
    Go,
    /// moby/patternmatcher: a `]` right after `[` (or `[^`) is a member, `-` before `]` is
    /// a member, and a `]` outside a class is an error.
    Moby,
}

/// How `\` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escapes {
    /// It makes the next character literal; a trailing `\` is an error.
    Go,
    /// It makes the next character literal; a trailing `\` matches a `\`.
    Moby,
    /// BuildKit's pattern converter: `\*`, `\?` and `\\` are literal, `\}` and `\/` are the
    /// character (the escape was only there to get past `${…}`), anything else is an error.
    Shell,
}

/// How a pattern is read: the differences between Docker's three pattern languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    /// The unit `*` and `?` never match.
    pub separator: u32,
    /// `**` matches any number of directories: `a/**/b` matches `a/b` and `a/x/y/b`, a
    /// trailing `**` everything below. Otherwise `**` is just two `*`s.
    pub double_star: bool,
    /// How `[` reads.
    pub classes: Classes,
    /// How `\` reads.
    pub escapes: Escapes,
}

impl Syntax {
    /// `.dockerignore` and `COPY --exclude`: moby/patternmatcher's rules.
    pub const DOCKERIGNORE: Syntax = Syntax {
        separator: '/' as u32,
        double_star: true,
        classes: Classes::Moby,
        escapes: Escapes::Moby,
    };
    /// COPY/ADD source wildcards: as `.dockerignore` but `**` is only two `*`s, as BuildKit
    /// matches sources with Go's `filepath.Match` one path at a time.
    pub const COPY_SOURCE: Syntax = Syntax {
        double_star: false,
        ..Syntax::DOCKERIGNORE
    };
    /// Go's `path.Match`, as Docker's `reference=` image filter uses it.
    pub const GO_PATH: Syntax = Syntax {
        separator: '/' as u32,
        double_star: false,
        classes: Classes::Go,
        escapes: Escapes::Go,
    };
    /// BuildKit's shell patterns (`${V#p}`, `${V%p}`, `${V/p/r}`), which it turns into Go
    /// regular expressions where `*` is `.*` and `?` is `.`: neither matches a newline.
    pub const SHELL: Syntax = Syntax {
        separator: '\n' as u32,
        double_star: false,
        classes: Classes::None,
        escapes: Escapes::Shell,
    };
}

/// Which of several matches a search prefers: a `*` takes the longest or the shortest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    /// `*` is greedy (`.*`).
    Longest,
    /// `*` is lazy (`.*?`).
    Shortest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(u32),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**` followed by more pattern: `(.*/)?`.
    Dirs,
    /// `**` at the end: `.*`.
    All,
    /// `[…]`: negated, ranges.
    Class(bool, Vec<(u32, u32)>),
}

#[derive(Debug, Clone, Copy)]
enum Inst {
    Char(u32),
    /// Any unit but the one given (`None`: any unit).
    AnyBut(Option<u32>),
    /// A class, by index.
    Class(usize),
    /// Try the first target, then the second.
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    prog: Vec<Inst>,
    classes: Vec<(bool, Vec<(u32, u32)>)>,
}

const STAR: u32 = '*' as u32;
const SLASH: u32 = '/' as u32;
const BACKSLASH: u32 = '\\' as u32;

fn is(u: Option<&u32>, c: char) -> bool {
    u == Some(&u32::from(c))
}

impl Glob {
    /// Compiles `pattern` (its characters as units).
    pub fn new(pattern: &str, syntax: Syntax, prefer: Prefer) -> Result<Glob, GlobError> {
        let units: Vec<u32> = pattern.chars().map(u32::from).collect();
        Glob::from_units(&units, syntax, prefer)
    }

    /// Compiles a pattern given as units.
    pub fn from_units(pattern: &[u32], syntax: Syntax, prefer: Prefer) -> Result<Glob, GlobError> {
        let tokens = tokenize(pattern, syntax)?;
        Ok(Glob::assemble(tokens, syntax.separator, prefer))
    }

    fn assemble(tokens: Vec<Token>, separator: u32, prefer: Prefer) -> Glob {
        let mut prog = Vec::with_capacity(tokens.len() * 3 + 1);
        let mut classes = Vec::new();
        // A loop over `body`: `split: Split(body, after); body; Jmp(split)`.
        let star = |prog: &mut Vec<Inst>, body: Inst| {
            let split = prog.len();
            let (body_at, after) = (split + 1, split + 3);
            prog.push(match prefer {
                Prefer::Longest => Inst::Split(body_at, after),
                Prefer::Shortest => Inst::Split(after, body_at),
            });
            prog.push(body);
            prog.push(Inst::Jmp(split));
        };
        for tok in tokens {
            match tok {
                Token::Char(c) => prog.push(Inst::Char(c)),
                Token::One => prog.push(Inst::AnyBut(Some(separator))),
                Token::Star => star(&mut prog, Inst::AnyBut(Some(separator))),
                Token::All => star(&mut prog, Inst::AnyBut(None)),
                Token::Dirs => {
                    // `(.*/)?`: nothing, or anything that ends in a slash.
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, split + 5));
                    star(&mut prog, Inst::AnyBut(None));
                    prog.push(Inst::Char(SLASH));
                }
                Token::Class(neg, ranges) => {
                    prog.push(Inst::Class(classes.len()));
                    classes.push((neg, ranges));
                }
            }
        }
        prog.push(Inst::Match);
        Glob { prog, classes }
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &[u32]) -> bool {
        let mut budget = u64::MAX;
        let mut vm = Vm::new(self, &mut budget);
        matches!(vm.run(text, 0, Mode::Whole), Ok(Some(_)))
    }

    /// Whether the whole of `text` matches, by characters.
    pub fn matches_str(&self, text: &str) -> bool {
        let units: Vec<u32> = text.chars().map(u32::from).collect();
        self.matches(&units)
    }

    /// A searcher over this pattern that spends at most `budget` steps, across every search.
    pub fn searcher<'g>(&'g self, budget: &'g mut u64) -> Searcher<'g> {
        Searcher {
            vm: Vm::new(self, budget),
        }
    }
}

/// Searches for matches of one [`Glob`], leftmost-first.
pub struct Searcher<'g> {
    vm: Vm<'g>,
}

impl Searcher<'_> {
    /// The leftmost-first match in `text` starting at or after unit `from` (exactly at
    /// `from` when `anchored`), as a range of unit indices.
    pub fn find(
        &mut self,
        text: &[u32],
        from: usize,
        anchored: bool,
    ) -> Result<Option<(usize, usize)>, OutOfBudget> {
        let mode = if anchored {
            Mode::Anchored
        } else {
            Mode::Search
        };
        self.vm.run(text, from, mode)
    }
}

fn tokenize(p: &[u32], syntax: Syntax) -> Result<Vec<Token>, GlobError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        i += 1;
        let tok = match char::from_u32(c).unwrap_or('\0') {
            '*' if syntax.double_star && p.get(i) == Some(&STAR) => {
                i += 1;
                if p.get(i) == Some(&SLASH) {
                    i += 1;
                }
                if i >= p.len() {
                    Token::All
                } else {
                    Token::Dirs
                }
            }
            '*' => Token::Star,
            '?' => Token::One,
            '\\' => match (syntax.escapes, p.get(i).copied()) {
                (Escapes::Moby, None) => Token::Char(BACKSLASH),
                (Escapes::Go, None) => return Err(GlobError::Syntax),
                (Escapes::Shell, None) => return Err(GlobError::TrailingEscape),
                (Escapes::Shell, Some(n)) if is(Some(&n), '}') || is(Some(&n), '/') => continue,
                (Escapes::Shell, Some(n))
                    if !matches!(char::from_u32(n), Some('*' | '?' | '\\')) =>
                {
                    return Err(GlobError::InvalidEscape(
                        char::from_u32(n).unwrap_or(char::REPLACEMENT_CHARACTER),
                    ))
                }
                (_, Some(n)) => {
                    i += 1;
                    Token::Char(n)
                }
            },
            '[' if syntax.classes == Classes::Moby => {
                let (tok, next) = moby_class(p, i).ok_or(GlobError::Syntax)?;
                i = next;
                tok
            }
            '[' if syntax.classes == Classes::Go => {
                let (tok, next) = go_class(p, i)?;
                i = next;
                tok
            }
            ']' if syntax.classes == Classes::Moby => return Err(GlobError::Syntax),
            _ => Token::Char(c),
        };
        // `**` without its own meaning is `*`, with the same preference; folding keeps long
        // runs of stars cheap.
        if tok == Token::Star && tokens.last() == Some(&Token::Star) {
            continue;
        }
        tokens.push(tok);
    }
    Ok(tokens)
}

/// A moby class after its `[`: the token and the index after its `]`, or `None` when it is
/// malformed.
fn moby_class(p: &[u32], mut i: usize) -> Option<(Token, usize)> {
    let neg = is(p.get(i), '^');
    if neg {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = *p.get(i)?;
        if is(Some(&c), ']') && !first {
            return Some((Token::Class(neg, ranges), i + 1));
        }
        first = false;
        i += 1;
        if c == BACKSLASH {
            c = *p.get(i)?;
            i += 1;
        }
        if is(p.get(i), '-') && p.get(i + 1).is_some_and(|n| !is(Some(n), ']')) {
            let mut hi = p[i + 1];
            i += 2;
            if hi == BACKSLASH {
                hi = *p.get(i)?;
                i += 1;
            }
            if hi < c {
                return None;
            }
            ranges.push((c, hi));
        } else {
            ranges.push((c, c));
        }
    }
}

/// A Go class after its `[`: the token and the index after its `]`.
fn go_class(p: &[u32], mut i: usize) -> Result<(Token, usize), GlobError> {
    // One character of a class, with `\` escapes; `]` and `-` end it.
    let class_char = |i: &mut usize| -> Result<u32, GlobError> {
        match p.get(*i) {
            None => Err(GlobError::Syntax),
            Some(c) if is(Some(c), ']') || is(Some(c), '-') => Err(GlobError::Syntax),
            Some(&BACKSLASH) => {
                let c = p.get(*i + 1).copied().ok_or(GlobError::Syntax)?;
                *i += 2;
                Ok(c)
            }
            Some(&c) => {
                *i += 1;
                Ok(c)
            }
        }
    };
    let neg = is(p.get(i), '^');
    if neg {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if is(p.get(i), ']') && !ranges.is_empty() {
            return Ok((Token::Class(neg, ranges), i + 1));
        }
        let lo = class_char(&mut i)?;
        let hi = if is(p.get(i), '-') {
            i += 1;
            class_char(&mut i)?
        } else {
            lo
        };
        if hi < lo {
            return Err(GlobError::Syntax);
        }
        ranges.push((lo, hi));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The whole text from `from` to its end.
    Whole,
    /// A match starting at `from`.
    Anchored,
    /// A match starting at or after `from`.
    Search,
}

/// A Pike VM over a [`Glob`], with leftmost-first priorities.
struct Vm<'g> {
    glob: &'g Glob,
    budget: &'g mut u64,
    /// Generation in which each instruction was last added to a list.
    seen: Vec<u64>,
    generation: u64,
    stack: Vec<usize>,
}

impl<'g> Vm<'g> {
    fn new(glob: &'g Glob, budget: &'g mut u64) -> Self {
        Vm {
            glob,
            budget,
            seen: vec![0; glob.prog.len()],
            generation: 0,
            stack: Vec::new(),
        }
    }

    /// Adds the thread at `pc` and everything reachable from it without consuming input,
    /// in priority order.
    fn add(
        &mut self,
        list: &mut Vec<(usize, usize)>,
        pc: usize,
        start: usize,
    ) -> Result<(), OutOfBudget> {
        self.stack.push(pc);
        while let Some(pc) = self.stack.pop() {
            self.spend()?;
            if self.seen[pc] == self.generation {
                continue;
            }
            self.seen[pc] = self.generation;
            match self.glob.prog[pc] {
                Inst::Jmp(t) => self.stack.push(t),
                Inst::Split(first, second) => {
                    self.stack.push(second);
                    self.stack.push(first);
                }
                _ => list.push((pc, start)),
            }
        }
        Ok(())
    }

    fn spend(&mut self) -> Result<(), OutOfBudget> {
        match self.budget.checked_sub(1) {
            Some(left) => {
                *self.budget = left;
                Ok(())
            }
            None => {
                self.stack.clear();
                Err(OutOfBudget)
            }
        }
    }

    fn accepts(&self, inst: Inst, c: Option<u32>) -> bool {
        let Some(c) = c else { return false };
        match inst {
            Inst::Char(want) => c == want,
            Inst::AnyBut(not) => Some(c) != not,
            Inst::Class(k) => {
                let (neg, ranges) = &self.glob.classes[k];
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *neg
            }
            _ => false,
        }
    }

    fn run(
        &mut self,
        text: &[u32],
        from: usize,
        mode: Mode,
    ) -> Result<Option<(usize, usize)>, OutOfBudget> {
        let mut current: Vec<(usize, usize)> = Vec::new();
        let mut next: Vec<(usize, usize)> = Vec::new();
        let mut found = None;
        let mut pos = from;
        self.generation += 1;
        loop {
            // A new start is the lowest-priority thread, and none is started once something
            // matched: that is what "leftmost" means.
            if found.is_none() && (mode == Mode::Search || pos == from) {
                self.add(&mut current, 0, pos)?;
            }
            if current.is_empty() && (found.is_some() || mode != Mode::Search) {
                break;
            }
            let c = text.get(pos).copied();
            self.generation += 1;
            next.clear();
            for &(pc, start) in &current {
                self.spend()?;
                match self.glob.prog[pc] {
                    // A whole match must end at the end; one that ends earlier is dropped.
                    Inst::Match if mode == Mode::Whole && c.is_none() => {
                        return Ok(Some((start, pos)));
                    }
                    Inst::Match if mode == Mode::Whole => {}
                    Inst::Match => {
                        found = Some((start, pos));
                        // Lower-priority threads lose to this match.
                        break;
                    }
                    inst if self.accepts(inst, c) => self.add(&mut next, pc + 1, start)?,
                    _ => {}
                }
            }
            std::mem::swap(&mut current, &mut next);
            if c.is_none() {
                break;
            }
            pos += 1;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(pattern: &str, syntax: Syntax, text: &str) -> Result<bool, GlobError> {
        Ok(Glob::new(pattern, syntax, Prefer::Longest)?.matches_str(text))
    }

    // The same pattern and name under each syntax, where the syntaxes differ:
    // (pattern, text, .dockerignore, COPY source, Go path.Match, shell whole match).
    #[test]
    fn where_the_syntaxes_differ() {
        use GlobError::*;
        type Want = Result<bool, GlobError>;
        let cases: &[(&str, &str, Want, Want, Want, Want)] = &[
            // `*` and `?` cross `/` only in the shell; none of them crosses a newline but…
            ("a*", "a/b", Ok(false), Ok(false), Ok(false), Ok(true)),
            ("a?b", "a/b", Ok(false), Ok(false), Ok(false), Ok(true)),
            ("a*", "a\nb", Ok(true), Ok(true), Ok(true), Ok(false)),
            ("a?b", "a\nb", Ok(true), Ok(true), Ok(true), Ok(false)),
            // `**` is directories only in `.dockerignore`.
            (
                "a/**/b",
                "a/x/y/b",
                Ok(true),
                Ok(false),
                Ok(false),
                Ok(true),
            ),
            ("a/**/b", "a/b", Ok(true), Ok(false), Ok(false), Ok(false)),
            ("**", "x/y", Ok(true), Ok(false), Ok(false), Ok(true)),
            // Classes: none in the shell, lenient in moby, strict in Go.
            ("[ab]", "a", Ok(true), Ok(true), Ok(true), Ok(false)),
            ("[ab]", "[ab]", Ok(false), Ok(false), Ok(false), Ok(true)),
            ("[]a]", "]", Ok(true), Ok(true), Err(Syntax), Ok(false)),
            ("[x-]", "-", Ok(true), Ok(true), Err(Syntax), Ok(false)),
            ("a]", "a]", Err(Syntax), Err(Syntax), Ok(true), Ok(true)),
            // A class matches `/`, a star after it still cannot (except in the shell).
            ("*[^x]*", "a/b", Ok(true), Ok(true), Ok(true), Ok(false)),
            // Escapes.
            (
                "a\\",
                "a\\",
                Ok(true),
                Ok(true),
                Err(Syntax),
                Err(TrailingEscape),
            ),
            (
                "\\a",
                "a",
                Ok(true),
                Ok(true),
                Ok(true),
                Err(InvalidEscape('a')),
            ),
            ("a\\}", "a}", Ok(true), Ok(true), Ok(true), Ok(true)),
            ("\\*", "*", Ok(true), Ok(true), Ok(true), Ok(true)),
            ("\\*", "x", Ok(false), Ok(false), Ok(false), Ok(false)),
        ];
        let syntaxes = [
            ("dockerignore", super::Syntax::DOCKERIGNORE),
            ("copy source", super::Syntax::COPY_SOURCE),
            ("go path", super::Syntax::GO_PATH),
            ("shell", super::Syntax::SHELL),
        ];
        for (pattern, text, a, b, c, d) in cases {
            for ((name, syntax), want) in syntaxes.iter().zip([a, b, c, d]) {
                assert_eq!(
                    &whole(pattern, *syntax, text),
                    want,
                    "{name}: {pattern:?} vs {text:?}"
                );
            }
        }
    }

    #[test]
    fn search_prefers_leftmost_then_longest_or_shortest() {
        let text: Vec<u32> = "xaabab".chars().map(u32::from).collect();
        for (prefer, anchored, want) in [
            (Prefer::Longest, false, Some((1, 6))),
            (Prefer::Shortest, false, Some((1, 4))),
            (Prefer::Longest, true, None),
        ] {
            let g = Glob::new("a*b", Syntax::SHELL, prefer).unwrap();
            let mut budget = 1_000;
            assert_eq!(g.searcher(&mut budget).find(&text, 0, anchored), Ok(want));
        }
    }

    #[test]
    fn the_budget_bounds_the_work() {
        let text = vec![u32::from('a'); 1000];
        let g = Glob::new(&"*a".repeat(20), Syntax::SHELL, Prefer::Longest).unwrap();
        let mut budget = 10_000;
        assert_eq!(
            g.searcher(&mut budget).find(&text, 0, false),
            Err(OutOfBudget)
        );
        assert_eq!(budget, 0);
    }
}
