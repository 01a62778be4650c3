//! Lists what a step changed by reading its overlay upper dir alone: written entries,
//! whiteouts (deletions) and opaque directories, in a stable order.
//!
//! The cost is proportional to the upper dir, never to the image: lower dirs are not read,
//! which is also why a written entry is not split into "added" and "modified" (overlayfs
//! copies a file up whole on any change).

use std::io;
use std::path::{Path, PathBuf};

use super::error::ExecError;
use super::layers::{is_opaque, is_whiteout};

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The entry was added or modified; its current content and metadata are in the upper dir.
    Upsert,
    /// The entry was deleted (an overlay whiteout; OCI `.wh.<name>`).
    Delete,
    /// The directory replaces the lower one entirely: lower contents are hidden (OCI
    /// `.wh..wh..opq`). Its own entries follow as `Upsert`s.
    Opaque,
}

/// One change of a step, relative to the root (no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Path inside the image, e.g. `etc/passwd`.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// Lists the changes recorded in an overlay upper dir, parents before children, names in
/// byte order. Symlinks are reported, never followed.
pub fn upper_changes(upper: &Path) -> Result<Vec<Change>, ExecError> {
    let mut out = Vec::new();
    walk(upper, Path::new(""), &mut out)
        .map_err(|e| ExecError::io("reading upper dir", upper, e))?;
    Ok(out)
}

fn walk(upper: &Path, rel: &Path, out: &mut Vec<Change>) -> io::Result<()> {
    let dir = upper.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = rel.join(&name);
        let full = upper.join(&path);
        let meta = std::fs::symlink_metadata(&full)?;
        if is_whiteout(&meta) {
            out.push(Change {
                path,
                kind: ChangeKind::Delete,
            });
        } else if meta.is_dir() {
            let kind = if is_opaque(&full) {
                ChangeKind::Opaque
            } else {
                ChangeKind::Upsert
            };
            out.push(Change {
                path: path.clone(),
                kind,
            });
            walk(upper, &path, out)?;
        } else {
            out.push(Change {
                path,
                kind: ChangeKind::Upsert,
            });
        }
    }
    Ok(())
}
