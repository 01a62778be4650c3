//! Follows the symlinks of a path inside a root, the way BuildKit resolves COPY sources and
//! destinations (fsutil's and continuity's `RootPath`): an absolute target starts again at the
//! root, `..` stops there, and what is looked up is left to the caller (an image root on disk,
//! a build context's listing).

use std::collections::VecDeque;

/// What a path prefix is, as the caller found it.
pub enum Node {
    /// A directory: the walk goes on below it.
    Dir,
    /// A symlink with this target: the walk follows it.
    Link(String),
    /// Anything else: it must be the last component.
    Other,
    /// Nothing is there: the rest of the path is taken as written, with no more lookups.
    Missing,
}

/// How many symlinks one walk follows before it gives up (BuildKit's limit).
pub const MAX_LINKS: usize = 255;

/// `path` with every symlink followed, relative to the root and without symlinks, `.` or
/// `..`. `look(prefix, followed)` says what `prefix` (relative, `/`-joined) is, `followed`
/// telling whether a link was followed to get there, and may fail; `too_many` is the error
/// past [`MAX_LINKS`] links, `not_dir(prefix)` the error for a non-directory with more path
/// below it.
pub fn follow<E>(
    path: &str,
    mut look: impl FnMut(&str, bool, &VecDeque<String>) -> Result<Node, E>,
    too_many: impl FnOnce() -> E,
    not_dir: impl FnOnce(&str) -> E,
) -> Result<String, E> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: VecDeque<String> = path.split('/').map(str::to_string).collect();
    let mut links = 0;
    let mut followed = false;
    let mut missing = false;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => done.push(c),
        }
        if missing {
            continue;
        }
        let prefix = done.join("/");
        match look(&prefix, followed, &todo)? {
            Node::Dir => {}
            Node::Missing => missing = true,
            Node::Link(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(too_many());
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for part in target.split('/').rev() {
                    todo.push_front(part.to_string());
                }
                followed = true;
            }
            Node::Other if todo.iter().any(|c| !c.is_empty() && c != ".") => {
                return Err(not_dir(&prefix));
            }
            Node::Other => {}
        }
    }
    Ok(done.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn walk(tree: &BTreeMap<&str, Node>, path: &str) -> Result<String, String> {
        follow(
            path,
            |p, _, _| {
                Ok(match tree.get(p) {
                    Some(Node::Dir) => Node::Dir,
                    Some(Node::Link(t)) => Node::Link(t.clone()),
                    Some(Node::Other) => Node::Other,
                    _ => Node::Missing,
                })
            },
            || "loop".to_string(),
            |p| format!("{p} is not a directory"),
        )
    }

    #[test]
    fn links_stay_in_the_root() {
        let tree = BTreeMap::from([
            ("a", Node::Dir),
            ("a/f", Node::Other),
            ("up", Node::Link("../../../a".into())),
            ("abs", Node::Link("/a/f".into())),
            ("dangling", Node::Link("/nowhere/x".into())),
            ("self", Node::Link("self".into())),
        ]);
        assert_eq!(walk(&tree, "/up/f").unwrap(), "a/f");
        assert_eq!(walk(&tree, "abs").unwrap(), "a/f");
        assert_eq!(walk(&tree, "dangling").unwrap(), "nowhere/x");
        assert_eq!(walk(&tree, "a/./../a//f").unwrap(), "a/f");
        assert_eq!(walk(&tree, "self").unwrap_err(), "loop");
        assert_eq!(walk(&tree, "a/f/g").unwrap_err(), "a/f is not a directory");
    }
}
