//! COPY/ADD source selection in a build context: paths confined to the context, and globs.

use super::ignore::{clean_path, Pattern, PatternError};
use super::{Context, Kind};

/// A COPY/ADD source that selects nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// A plain path that is not in the context.
    #[error("\"{0}\": not found in the build context (or excluded by .dockerignore)")]
    NotFound(String),
    /// A path whose symlinks, followed inside the context, lead to what is not in it.
    #[error("\"{0}\": not found: its symlinks lead to \"/{1}\", which is not in the build context (or excluded by .dockerignore)")]
    Dangling(String, String),
    /// A chain of symlinks that does not end.
    #[error("\"{0}\": too many levels of symbolic links in the build context")]
    Loop(String),
    /// A glob that cannot be compiled.
    #[error("invalid source pattern \"{0}\": {1}")]
    BadPattern(String, #[source] PatternError),
}

/// A source path as a context path: cleaned, and confined to the context — `..` cannot climb
/// above the context root and an absolute path is taken from the root (`/x` and `../x` both
/// mean `x`), as Docker does.
pub fn confine(src: &str) -> String {
    let cleaned = clean_path(&format!("/{src}"));
    cleaned.trim_start_matches('/').to_string()
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// One selected source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The context path as written or matched: what the copy is named after.
    pub name: String,
    /// The listed entry it stands for: `name` with its symlinks followed inside the context.
    pub key: String,
}

/// `path` with every symlink followed the way BuildKit follows a source (fsutil's
/// `RootPath`, see [`crate::common::symlinks::follow`]): inside the context, never out of it, so
/// `foo -> /etc/passwd` names the context's own `etc/passwd`. Only the listing is read, so
/// what it names is a listed entry, opened later through the checked context file; a name
/// that is not listed (missing, ignored, or below a file) is an error.
pub fn resolve(ctx: &Context, path: &str) -> Result<String, SelectError> {
    use crate::common::symlinks::{follow, Node};
    follow(
        path,
        |key, followed, rest| {
            let Some(e) = ctx.get(key) else {
                return Err(if followed {
                    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
                    SelectError::Dangling(
                        path.to_string(),
                        clean_path(
                            &[key]
                                .iter()
                                .chain(&rest)
                                .copied()
                                .collect::<Vec<_>>()
                                .join("/"),
                        ),
                    )
                } else {
                    SelectError::NotFound(path.to_string())
                });
            };
            Ok(match e.kind {
                Kind::Symlink => Node::Link(e.link_target.clone().unwrap_or_default()),
                Kind::Dir => Node::Dir,
                _ => Node::Other,
            })
        },
        || SelectError::Loop(path.to_string()),
        |_| SelectError::NotFound(path.to_string()),
    )
}

/// The context paths a source selects, sorted by name (the root is `""`). With `follow`,
/// symlinks are followed inside the context (BuildKit's COPY/ADD of local sources); without,
/// a source must be listed as it is written. A pattern that matches nothing selects nothing:
/// BuildKit copies nothing for it and goes on.
pub fn select(ctx: &Context, src: &str, follow: bool) -> Result<Vec<Selected>, SelectError> {
    let path = confine(src);
    let key_of = |p: &str| -> Result<String, SelectError> {
        if follow {
            resolve(ctx, p)
        } else if ctx.get(p).is_some() {
            Ok(p.to_string())
        } else {
            Err(SelectError::NotFound(p.to_string()))
        }
    };
    if !has_glob(&path) {
        let key = key_of(&path).map_err(|e| match e {
            SelectError::NotFound(_) => SelectError::NotFound(src.to_string()),
            e => e,
        })?;
        return Ok(vec![Selected { name: path, key }]);
    }
    // As BuildKit: the components before the first one with a wildcard name a directory
    // (symlinks followed); the rest is matched against the paths below it.
    let parts: Vec<&str> = path.split('/').collect();
    let first = parts.iter().position(|p| has_glob(p)).unwrap_or(0);
    let prefix = parts[..first].join("/");
    let rest = parts[first..].join("/");
    let pattern =
        Pattern::source_glob(&rest).map_err(|e| SelectError::BadPattern(src.to_string(), e))?;
    let base = match key_of(&prefix) {
        Ok(b) if ctx.get(&b).is_some_and(|e| e.kind == Kind::Dir) => b,
        _ => return Ok(Vec::new()),
    };
    let mut found = Vec::new();
    for (k, _) in ctx.subtree(&base) {
        let rel = match k.strip_prefix(base.as_str()) {
            Some(r) => r.trim_start_matches('/'),
            None => continue,
        };
        if rel.is_empty() || !pattern.matches(rel) {
            continue;
        }
        let name = join(&prefix, rel);
        let key = if follow {
            resolve(ctx, &join(&base, rel))?
        } else {
            k.clone()
        };
        found.push(Selected { name, key });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::IgnoreRules;
    use std::fs;

    fn names(found: Vec<Selected>) -> Vec<String> {
        found.into_iter().map(|s| s.name).collect()
    }

    fn ctx_of(files: &[&str], links: &[(&str, &str)]) -> (tempfile::TempDir, Context) {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        for (l, t) in links {
            let p = d.path().join(l);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(t, p).unwrap();
        }
        let ctx = Context::scan(d.path(), &IgnoreRules::default()).unwrap();
        (d, ctx)
    }

    #[test]
    fn sources_are_confined_and_globbed() {
        let (_d, ctx) = ctx_of(&["a.txt", "b.txt", "src/x.rs", "src/y.rs", "c.md"], &[]);
        assert_eq!(confine("../../etc/passwd"), "etc/passwd");
        assert_eq!(confine("/src/"), "src");
        assert_eq!(confine("."), "");
        assert_eq!(names(select(&ctx, ".", true).unwrap()), [""]);
        assert_eq!(
            names(select(&ctx, "*.txt", true).unwrap()),
            ["a.txt", "b.txt"]
        );
        assert_eq!(
            names(select(&ctx, "src/*.rs", true).unwrap()),
            ["src/x.rs", "src/y.rs"]
        );
        assert_eq!(names(select(&ctx, "../a.txt", true).unwrap()), ["a.txt"]);
        assert!(matches!(
            select(&ctx, "nope", true),
            Err(SelectError::NotFound(_))
        ));
        // Regression (golden copy-glob-nomatch-only): a pattern that matches nothing was an
        // error; BuildKit copies nothing for it.
        assert_eq!(select(&ctx, "*.zip", true).unwrap(), []);
        assert_eq!(select(&ctx, "nodir/*.rs", true).unwrap(), []);
    }

    // Regression (golden copy-glob-doublestar): `**/*.c` matched at every depth, as in
    // .dockerignore; BuildKit matches COPY sources with Go's filepath.Match, where `**` is
    // `*`: one level.
    #[test]
    fn doublestar_in_a_source_matches_one_level() {
        let (_d, ctx) = ctx_of(&["top.c", "d1/one.c", "d1/d2/two.c", "d3/x/y.c"], &[]);
        let cases: &[(&str, &[&str])] = &[
            ("**/*.c", &["d1/one.c"]),
            ("*/*.c", &["d1/one.c"]),
            ("**", &["d1", "d3", "top.c"]),
            ("*.c", &["top.c"]),
            ("d1/**/*.c", &["d1/d2/two.c"]),
            ("*/*/*.c", &["d1/d2/two.c", "d3/x/y.c"]),
            ("d?/*", &["d1/d2", "d1/one.c", "d3/x"]),
            ("[d]1/one.[ch]", &["d1/one.c"]),
            ("\\*.c", &[]),
        ];
        for (pattern, want) in cases {
            assert_eq!(
                names(select(&ctx, pattern, true).unwrap()),
                *want,
                "{pattern}"
            );
        }
    }

    // Regression (goldens copy-symlink-source-followed, -to-dir, -dangling): a symlink given
    // as a source was copied as a link; BuildKit follows it, inside the context.
    #[test]
    fn source_symlinks_are_followed_inside_the_context() {
        let (_d, ctx) = ctx_of(
            &["target.txt", "real/x", "etc/passwd"],
            &[
                ("link.txt", "target.txt"),
                ("ldir", "real"),
                ("abs", "/real/x"),
                ("out", "/etc/passwd"),
                ("up", "../../../../target.txt"),
                ("chain", "ldir"),
                ("dangling", "missing.txt"),
                ("loop", "loop"),
                ("real/back", "../link.txt"),
                ("rootlink", "/"),
            ],
        );
        let sel = |name: &str, key: &str| Selected {
            name: name.into(),
            key: key.into(),
        };
        let one = |s: &str| select(&ctx, s, true).unwrap();
        assert_eq!(one("link.txt"), [sel("link.txt", "target.txt")]);
        assert_eq!(one("ldir"), [sel("ldir", "real")]);
        assert_eq!(one("ldir/x"), [sel("ldir/x", "real/x")]);
        assert_eq!(one("chain/x"), [sel("chain/x", "real/x")]);
        assert_eq!(one("abs"), [sel("abs", "real/x")]);
        // Absolute and climbing targets stay in the context: the context's own etc/passwd.
        assert_eq!(one("out"), [sel("out", "etc/passwd")]);
        assert_eq!(one("up"), [sel("up", "target.txt")]);
        assert_eq!(one("real/back"), [sel("real/back", "target.txt")]);
        assert_eq!(one("rootlink"), [sel("rootlink", "")]);
        // A glob's matches are followed too; the prefix before the pattern as well.
        assert_eq!(
            one("l[di]*"),
            [sel("ldir", "real"), sel("link.txt", "target.txt")]
        );
        assert_eq!(
            one("ldir/*"),
            [sel("ldir/back", "target.txt"), sel("ldir/x", "real/x")]
        );
        assert!(matches!(
            select(&ctx, "dangling", true),
            Err(SelectError::Dangling(_, t)) if t == "missing.txt"
        ));
        assert!(matches!(
            select(&ctx, "loop", true),
            Err(SelectError::Loop(_))
        ));
        // Without following (--parents), a source is what is listed.
        assert_eq!(
            select(&ctx, "link.txt", false).unwrap(),
            [sel("link.txt", "link.txt")]
        );
        assert!(select(&ctx, "ldir/x", false).is_err());
    }
}
