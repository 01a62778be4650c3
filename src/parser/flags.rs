//! Instruction flags (`--from=x`, `--link`): the flags each instruction accepts, and their
//! values read from a node's flag words with BuildKit's rules and error wording.

use std::fmt;

use super::diag::suggest;

/// What kind of value a flag takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind<'a> {
    /// `--name` (true), `--name=true` or `--name=false` (any case).
    Bool {
        /// Value when the flag is absent.
        default: bool,
    },
    /// `--name=value`; given at most once.
    String {
        /// Value when the flag is absent.
        default: &'a str,
    },
    /// `--name=value`, repeatable; values are kept in order (`--mount`, `--exclude`).
    Strings,
}

/// One flag an instruction accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagSpec<'a> {
    /// The name without dashes, e.g. `chown`.
    pub name: &'a str,
    /// The kind of value and its default.
    pub kind: FlagKind<'a>,
}

impl<'a> FlagSpec<'a> {
    /// A boolean flag.
    pub const fn bool(name: &'a str, default: bool) -> Self {
        FlagSpec {
            name,
            kind: FlagKind::Bool { default },
        }
    }

    /// A single-valued string flag.
    pub const fn string(name: &'a str, default: &'a str) -> Self {
        FlagSpec {
            name,
            kind: FlagKind::String { default },
        }
    }

    /// A repeatable string flag.
    pub const fn strings(name: &'a str) -> Self {
        FlagSpec {
            name,
            kind: FlagKind::Strings,
        }
    }
}

/// The value a flag ended up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagValue {
    /// A boolean flag's value.
    Bool(bool),
    /// A string flag's value (its default when absent).
    String(String),
    /// A repeatable flag's values, in order (empty when absent).
    Strings(Vec<String>),
}

impl fmt::Display for FlagValue {
    /// BuildKit's textual form: booleans as `true`/`false`, lists joined with commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagValue::Bool(b) => write!(f, "{b}"),
            FlagValue::String(s) => f.write_str(s),
            FlagValue::Strings(v) => f.write_str(&v.join(",")),
        }
    }
}

/// What is wrong with a flag word.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagErrorKind {
    /// A word that does not start with `--` (never produced by the parser, which only
    /// collects `--` words).
    #[error("arg should start with -- : {0}")]
    NotAFlag(String),
    /// A flag the instruction does not accept; `suggestion` is a close accepted name.
    #[error("unknown flag: {flag}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    Unknown {
        /// The flag as written up to `=`, dashes included.
        flag: String,
        /// A close accepted flag name, without dashes.
        suggestion: Option<String>,
    },
    /// A single-valued flag given twice.
    #[error("duplicate flag specified: {0}")]
    Duplicate(String),
    /// `--name` without `=` for a string flag, or `--name=` for a boolean one.
    #[error("missing a value on flag: {0}")]
    MissingValue(String),
    /// A boolean flag with a value other than true or false.
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    NotBoolean {
        /// The flag as written up to `=`, dashes included.
        flag: String,
        /// The value given.
        value: String,
    },
}

/// A flag word that could not be accepted, and which word it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct FlagError {
    /// What is wrong.
    pub kind: FlagErrorKind,
    /// Index of the offending word in the flag list given to [`parse_flags`].
    pub index: usize,
}

impl FlagError {
    /// The message without a "did you mean" suffix, and the suggestion as a separate hint.
    pub fn message_and_help(&self) -> (String, Option<String>) {
        match &self.kind {
            FlagErrorKind::Unknown {
                flag,
                suggestion: Some(s),
            } => (
                format!("unknown flag: {flag}"),
                Some(format!("did you mean {s}?")),
            ),
            k => (k.to_string(), None),
        }
    }
}

/// Flag values after parsing, one per spec, plus which flags were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flags<'a> {
    specs: &'a [FlagSpec<'a>],
    values: Vec<FlagValue>,
    used: Vec<bool>,
}

impl<'a> Flags<'a> {
    fn position(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// The value of flag `name`; `None` if the instruction does not define it.
    pub fn value(&self, name: &str) -> Option<&FlagValue> {
        self.position(name).and_then(|i| self.values.get(i))
    }

    /// A boolean flag's value (false for a name not defined as boolean).
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.value(name), Some(FlagValue::Bool(true)))
    }

    /// A string flag's value (empty for a name not defined as a string flag).
    pub fn string(&self, name: &str) -> &str {
        match self.value(name) {
            Some(FlagValue::String(s)) => s,
            _ => "",
        }
    }

    /// A string flag's value, `None` when it is empty (BuildKit treats empty as unset).
    pub fn non_empty(&self, name: &str) -> Option<String> {
        Some(self.string(name))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// A repeatable flag's values (empty for a name not defined as repeatable).
    pub fn strings(&self, name: &str) -> &[String] {
        match self.value(name) {
            Some(FlagValue::Strings(v)) => v,
            _ => &[],
        }
    }

    /// Whether flag `name` was given.
    pub fn is_used(&self, name: &str) -> bool {
        self.position(name)
            .and_then(|i| self.used.get(i).copied())
            .unwrap_or(false)
    }

    /// The names of the flags given, sorted.
    pub fn used(&self) -> Vec<&'a str> {
        let mut v: Vec<&'a str> = self
            .specs
            .iter()
            .zip(&self.used)
            .filter(|(_, u)| **u)
            .map(|(s, _)| s.name)
            .collect();
        v.sort_unstable();
        v
    }
}

/// Read flag words (`--name`, `--name=value`) against the flags an instruction accepts.
///
/// Stops at a word that is exactly `--`. The first bad word is an error; BuildKit does not
/// go on after it.
pub fn parse_flags<'a>(
    specs: &'a [FlagSpec<'a>],
    words: &[String],
) -> Result<Flags<'a>, FlagError> {
    let mut values: Vec<FlagValue> = specs
        .iter()
        .map(|s| match s.kind {
            FlagKind::Bool { default } => FlagValue::Bool(default),
            FlagKind::String { default } => FlagValue::String(default.to_string()),
            FlagKind::Strings => FlagValue::Strings(Vec::new()),
        })
        .collect();
    let mut used = vec![false; specs.len()];
    for (index, word) in words.iter().enumerate() {
        let err = |kind| FlagError { kind, index };
        if word == "--" {
            break;
        }
        let Some(body) = word.strip_prefix("--") else {
            return Err(err(FlagErrorKind::NotAFlag(word.clone())));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let flag = format!("--{name}");
        let Some(i) = specs.iter().position(|s| s.name == name) else {
            let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
            return Err(err(FlagErrorKind::Unknown {
                flag,
                suggestion: suggest(name, &names, true),
            }));
        };
        let kind = specs[i].kind;
        if used[i] && kind != FlagKind::Strings {
            return Err(err(FlagErrorKind::Duplicate(flag)));
        }
        used[i] = true;
        values[i] = match (kind, value) {
            (FlagKind::Bool { .. }, Some("")) => {
                return Err(err(FlagErrorKind::MissingValue(flag)));
            }
            (FlagKind::Bool { .. }, None) => FlagValue::Bool(true),
            (FlagKind::Bool { .. }, Some(v)) => match v.to_lowercase().as_str() {
                "true" => FlagValue::Bool(true),
                "false" => FlagValue::Bool(false),
                _ => {
                    return Err(err(FlagErrorKind::NotBoolean {
                        flag,
                        value: v.to_string(),
                    }))
                }
            },
            (FlagKind::String { .. } | FlagKind::Strings, None) => {
                return Err(err(FlagErrorKind::MissingValue(flag)));
            }
            (FlagKind::String { .. }, Some(v)) => FlagValue::String(v.to_string()),
            (FlagKind::Strings, Some(v)) => {
                let mut all = match std::mem::replace(&mut values[i], FlagValue::Bool(false)) {
                    FlagValue::Strings(all) => all,
                    _ => Vec::new(),
                };
                all.push(v.to_string());
                FlagValue::Strings(all)
            }
        };
    }
    Ok(Flags {
        specs,
        values,
        used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    const SPECS: &[FlagSpec<'static>] = &[
        FlagSpec::string("from", ""),
        FlagSpec::string("chown", "root"),
        FlagSpec::bool("link", false),
        FlagSpec::strings("exclude"),
    ];

    #[test]
    fn values_and_errors() {
        let ok: &[(&[&str], &str, &str)] = &[
            (&[], "from", ""),
            (&[], "chown", "root"),
            (&["--from=a"], "from", "a"),
            (&["--from="], "from", ""),
            (&["--from=a=b"], "from", "a=b"),
            (&["--link"], "link", "true"),
            (&["--link=FALSE"], "link", "false"),
            (&["--exclude=a", "--exclude=b"], "exclude", "a,b"),
            (&["--", "--bogus"], "link", "false"),
        ];
        for (input, name, want) in ok {
            let f = parse_flags(SPECS, &words(input)).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let got = f.value(name).map(ToString::to_string);
            assert_eq!(got.as_deref(), Some(*want), "input {input:?}");
        }
        let bad: &[(&[&str], &str, usize)] = &[
            (&["--frm=x"], "unknown flag: --frm (did you mean from?)", 0),
            (&["--link", "--bogus"], "unknown flag: --bogus", 1),
            (
                &["--from=a", "--from=b"],
                "duplicate flag specified: --from",
                1,
            ),
            (&["--from"], "missing a value on flag: --from", 0),
            (&["--exclude"], "missing a value on flag: --exclude", 0),
            (&["--link="], "missing a value on flag: --link", 0),
            (
                &["--link=maybe"],
                "expecting boolean value for flag --link, not: maybe",
                0,
            ),
            (&["-x"], "arg should start with -- : -x", 0),
        ];
        for (input, want, index) in bad {
            let e = parse_flags(SPECS, &words(input)).expect_err("must fail");
            assert_eq!(e.to_string(), *want, "input {input:?}");
            assert_eq!(e.index, *index, "input {input:?}");
        }
    }

    #[test]
    fn used_is_sorted() {
        let f = parse_flags(SPECS, &words(&["--link", "--from=x", "--chown=a"])).unwrap();
        assert_eq!(f.used(), vec!["chown", "from", "link"]);
        assert!(f.is_used("link"));
        assert!(!f.is_used("exclude"));
    }
}
