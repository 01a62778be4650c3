//! COPY/ADD source selection in a build context: paths confined to the context, and globs.

use super::ignore::{clean_path, Pattern};
use super::Context;

/// A COPY/ADD source that selects nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// A plain path that is not in the context.
    #[error("\"{0}\": not found in the build context (or excluded by .dockerignore)")]
    NotFound(String),
    /// A glob that matches nothing.
    #[error("no source files were specified: \"{0}\" matches nothing in the build context")]
    NoMatch(String),
    /// A glob that cannot be compiled.
    #[error("invalid source pattern \"{0}\": {1}")]
    BadPattern(String, String),
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

/// The context paths a source selects, sorted. The root is `""`.
pub fn select(ctx: &Context, src: &str) -> Result<Vec<String>, SelectError> {
    let path = confine(src);
    if !has_glob(&path) {
        return match ctx.get(&path) {
            Some(_) => Ok(vec![path]),
            None => Err(SelectError::NotFound(src.to_string())),
        };
    }
    let pattern = Pattern::new(&path).map_err(|e| SelectError::BadPattern(src.to_string(), e))?;
    let found: Vec<String> = ctx
        .entries()
        .keys()
        .filter(|k| !k.is_empty() && pattern.matches(k))
        .cloned()
        .collect();
    if found.is_empty() {
        return Err(SelectError::NoMatch(src.to_string()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::IgnoreRules;
    use std::fs;

    #[test]
    fn sources_are_confined_and_globbed() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a.txt", "b.txt", "src/x.rs", "src/y.rs", "c.md"] {
            let p = d.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        let ctx = Context::scan(d.path(), &IgnoreRules::default()).unwrap();
        assert_eq!(confine("../../etc/passwd"), "etc/passwd");
        assert_eq!(confine("/src/"), "src");
        assert_eq!(confine("."), "");
        assert_eq!(select(&ctx, ".").unwrap(), vec![""]);
        assert_eq!(select(&ctx, "*.txt").unwrap(), vec!["a.txt", "b.txt"]);
        assert_eq!(
            select(&ctx, "src/*.rs").unwrap(),
            vec!["src/x.rs", "src/y.rs"]
        );
        assert_eq!(select(&ctx, "../a.txt").unwrap(), vec!["a.txt"]);
        assert!(matches!(
            select(&ctx, "nope"),
            Err(SelectError::NotFound(_))
        ));
        assert!(matches!(
            select(&ctx, "*.zip"),
            Err(SelectError::NoMatch(_))
        ));
    }
}
