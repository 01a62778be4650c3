//! Go's `path.Match` glob syntax, which Docker's `reference=` filter uses on image names.
//!
//! `*` matches any run of characters other than `/`, `?` one character other
//! than `/`, `[…]` a character class (`[^…]` negated, `a-z` ranges), and `\`
//! escapes the next character. A malformed pattern is an error, as in Go,
//! whether or not the name would have matched.

/// Why a pattern is not valid (Go's `path.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
pub struct BadPattern;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Lit(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Star => true,
            Token::Any => c != '/',
            Token::Lit(l) => *l == c,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// One character of a class, with `\` escapes; `]` and `-` end it.
fn class_char(chars: &[char], i: &mut usize) -> Result<char, BadPattern> {
    match chars.get(*i) {
        None | Some(']') | Some('-') => Err(BadPattern),
        Some('\\') => {
            let c = chars.get(*i + 1).copied().ok_or(BadPattern)?;
            *i += 2;
            Ok(c)
        }
        Some(&c) => {
            *i += 1;
            Ok(c)
        }
    }
}

fn compile(pattern: &str) -> Result<Vec<Token>, BadPattern> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                i += 1;
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
            }
            '?' => {
                i += 1;
                out.push(Token::Any);
            }
            '\\' => {
                let c = chars.get(i + 1).copied().ok_or(BadPattern)?;
                i += 2;
                out.push(Token::Lit(c));
            }
            '[' => {
                i += 1;
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    if chars.get(i) == Some(&']') && !ranges.is_empty() {
                        i += 1;
                        break;
                    }
                    let lo = class_char(&chars, &mut i)?;
                    let hi = if chars.get(i) == Some(&'-') {
                        i += 1;
                        class_char(&chars, &mut i)?
                    } else {
                        lo
                    };
                    if hi < lo {
                        return Err(BadPattern);
                    }
                    ranges.push((lo, hi));
                }
                out.push(Token::Class { negated, ranges });
            }
            c => {
                i += 1;
                out.push(Token::Lit(c));
            }
        }
    }
    Ok(out)
}

/// Reports whether `name` matches the shell pattern `pattern`, as Go's
/// `path.Match` does.
pub fn path_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let tokens = compile(pattern)?;
    let name: Vec<char> = name.chars().collect();
    // matched[j]: tokens[i..] match name[j..], computed from the last token back.
    let mut next = vec![false; name.len() + 1];
    next[name.len()] = true;
    for t in tokens.iter().rev() {
        let mut cur = vec![false; name.len() + 1];
        for j in (0..=name.len()).rev() {
            cur[j] = match t {
                Token::Star => next[j] || (j < name.len() && name[j] != '/' && cur[j + 1]),
                _ => j < name.len() && t.matches(name[j]) && next[j + 1],
            };
        }
        next = cur;
    }
    Ok(next[0])
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
