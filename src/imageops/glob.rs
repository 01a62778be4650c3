//! Go's `path.Match` glob syntax, which Docker's `reference=` filter uses on image names.
//!
//! `*` matches any run of characters other than `/`, `?` one character other
//! than `/`, `[…]` a character class (`[^…]` negated, `a-z` ranges), and `\`
//! escapes the next character. A malformed pattern is an error, as in Go,
//! whether or not the name would have matched. The matcher is [`crate::common::glob`]'s.

use crate::common::glob::{Glob, Prefer, Syntax};

/// Why a pattern is not valid (Go's `path.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
pub struct BadPattern;

/// Reports whether `name` matches the shell pattern `pattern`, as Go's
/// `path.Match` does ([`Syntax::GO_PATH`]).
pub fn path_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let glob = Glob::new(pattern, Syntax::GO_PATH, Prefer::Longest).map_err(|_| BadPattern)?;
    Ok(glob.matches_str(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_as_go_path_match() {
        // Cases from Go's path/match_test.go.
        let cases: &[(&str, &str, Result<bool, BadPattern>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(BadPattern)),
            ("[-]", "-", Err(BadPattern)),
            ("[x-]", "x", Err(BadPattern)),
            ("[x-]", "-", Err(BadPattern)),
            ("[x-]", "z", Err(BadPattern)),
            ("[-x]", "x", Err(BadPattern)),
            ("[-x]", "-", Err(BadPattern)),
            ("[-x]", "a", Err(BadPattern)),
            ("\\", "a", Err(BadPattern)),
            ("[a-b-c]", "a", Err(BadPattern)),
            ("[", "a", Err(BadPattern)),
            ("[^", "a", Err(BadPattern)),
            ("[^bc", "a", Err(BadPattern)),
            ("a[", "a", Err(BadPattern)),
            ("a[", "ab", Err(BadPattern)),
            ("ab[", "ab", Err(BadPattern)),
            ("*x", "xxx", Ok(true)),
            // A class can match '/', a star after it still cannot.
            ("*[^x]*", "a/b", Ok(true)),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                path_match(pattern, name),
                *want,
                "pattern {pattern:?} name {name:?}"
            );
        }
    }

    #[test]
    fn many_stars_stay_fast() {
        let name = "a".repeat(200);
        let pattern = format!("{}b", "*a".repeat(50));
        assert_eq!(path_match(&pattern, &name), Ok(false));
    }
}
