//! A private overlay view of a stack of snapshots for kiln's own file work (COPY, ADD,
//! WORKDIR): mounted in a mount namespace that only one short-lived thread sees, so nothing
//! is ever mounted on the host and the mount dies with the thread, even on a panic.

use crate::executor::isolation::overlay_options_here;
use crate::executor::link_lowers;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Overlayfs refuses more lower layers than this.
pub const MAX_LOWERS: usize = 500;

/// Run `f` with `lowers` (top-most first) and `upper` merged at a mount point that only this
/// call can see. `scratch` is an empty directory for the mount point, the work dir and the
/// short lower names; it must be on the same filesystem as `upper`. Each stack in `sources`
/// (another stage's layers, for `COPY --from`) is mounted read-only too; `f` gets their
/// mount points in the same order.
pub fn with_overlay<R: Send>(
    lowers: &[PathBuf],
    upper: &Path,
    scratch: &Path,
    sources: &[Vec<PathBuf>],
    f: impl FnOnce(&Path, &[PathBuf]) -> R + Send,
) -> io::Result<R> {
    if lowers.len() > MAX_LOWERS || sources.iter().any(|s| s.len() > MAX_LOWERS) {
        return Err(io::Error::other(format!(
            "an image with {} layers is more than overlayfs can stack ({MAX_LOWERS})",
            lowers.len()
        )));
    }
    if crate::executor::unpriv::enabled() {
        return with_copies(lowers, upper, scratch, sources, f);
    }
    let merged = scratch.join("merged");
    let work = scratch.join("work");
    let names = scratch.join("l");
    fs::create_dir_all(&merged)?;
    fs::create_dir_all(&work)?;
    fs::create_dir_all(&names)?;
    // Short relative names keep the mount options under the kernel's one-page limit however
    // long the store path is, resolved from a private working directory.
    let lower_names = link_lowers(&names, "", lowers)?;
    let mut source_points = Vec::new();
    let mut source_names = Vec::new();
    for (n, stack) in sources.iter().enumerate() {
        source_names.push(link_lowers(&names, &format!("s{n}-"), stack)?);
        let point = scratch.join(format!("source{n}"));
        fs::create_dir_all(&point)?;
        source_points.push(point);
    }
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<R> {
            // CLONE_NEWNS also unshares this thread's filesystem attributes (cwd), so the
            // chdir below and every mount are invisible to the rest of the process.
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS).map_err(io::Error::from)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(io::Error::from)?;
            std::env::set_current_dir(&names)?;
            let lower_opt = if lowers.is_empty() {
                // Overlayfs needs a lower layer; an empty one changes nothing.
                fs::create_dir_all(names.join("empty"))?;
                "empty".to_string()
            } else {
                lower_names.join(":")
            };
            // In the rootless user namespace overlayfs wants `userxattr` (see isolation).
            let opts = overlay_options_here(format!(
                "lowerdir={lower_opt},upperdir={},workdir={},index=off,metacopy=off,redirect_dir=off",
                upper.display(),
                work.display()
            ));
            mount(
                Some("overlay"),
                &merged,
                Some("overlay"),
                MsFlags::empty(),
                Some(opts.as_str()),
            )
            .map_err(|e| io::Error::other(format!("mounting overlayfs ({opts}): {e}")))?;
            mount_sources(sources, &source_names, &source_points)?;
            let r = f(&merged, &source_points);
            // The namespace dies with this thread anyway; unmounting first makes the upper
            // dir consistent before anyone reads it.
            for p in &source_points {
                let _ = umount2(p, MntFlags::MNT_DETACH);
            }
            let _ = umount2(&merged, MntFlags::MNT_DETACH);
            Ok(r)
        })
        .join()
        .map_err(|_| io::Error::other("the overlay worker thread panicked"))?
    })
}

/// Mount each source stack read-only at its point (inside [`with_overlay`]'s namespace): one
/// layer is bound, several are stacked by overlayfs without an upper dir.
fn mount_sources(
    sources: &[Vec<PathBuf>],
    source_names: &[Vec<String>],
    source_points: &[PathBuf],
) -> io::Result<()> {
    for (n, stack) in sources.iter().enumerate() {
        let point = &source_points[n];
        if stack.is_empty() {
            continue; // a scratch stage: an empty directory
        }
        // Overlayfs without an upper dir is read-only; one layer needs no overlay.
        let opts = if stack.len() == 1 {
            None
        } else {
            Some(overlay_options_here(format!(
                "lowerdir={}",
                source_names[n].join(":")
            )))
        };
        match opts {
            Some(o) => mount(
                Some("overlay"),
                point,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(o.as_str()),
            ),
            None => mount(
                Some(&stack[0]),
                point,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .and_then(|_| {
                mount(
                    None::<&str>,
                    point,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
            }),
        }
        .map_err(|e| io::Error::other(format!("mounting a source stage: {e}")))?;
    }
    Ok(())
}

/// [`with_overlay`] where nothing can be mounted (the unprivileged mode): the views are
/// copies, and what `f` changed in the merged one is written into `upper` in overlay's
/// format afterwards (`executor::copyroot`).
fn with_copies<R: Send>(
    lowers: &[PathBuf],
    upper: &Path,
    scratch: &Path,
    sources: &[Vec<PathBuf>],
    f: impl FnOnce(&Path, &[PathBuf]) -> R + Send,
) -> io::Result<R> {
    use crate::executor::copyroot;
    let merged = scratch.join("merged");
    fs::create_dir_all(&merged)?;
    let mut layers = vec![upper.to_path_buf()];
    layers.extend(lowers.iter().cloned());
    copyroot::build_root(&layers, &merged)?;
    let before = copyroot::record(&merged)?;
    let r = with_source_copies(scratch, sources, false, |points| f(&merged, points))?;
    copyroot::diff_into_upper(&merged, &before, upper)?;
    fs::remove_dir_all(&merged)?;
    fs::create_dir_all(&merged)?;
    Ok(r)
}

/// Runs `f` with a copy of each stack of `sources` (top-most first) in `scratch` (the
/// unprivileged mode's stand-in for [`with_overlay`]'s read-only source mounts), removed
/// afterwards. `read_only`: `f` only reads them (kiln's COPY), so their files are hard
/// links to the layers' own ([`copyroot::link_root`](crate::executor::copyroot::link_root)).
pub(crate) fn with_source_copies<R>(
    scratch: &Path,
    sources: &[Vec<PathBuf>],
    read_only: bool,
    f: impl FnOnce(&[PathBuf]) -> R,
) -> io::Result<R> {
    use crate::executor::copyroot;
    let mut points = Vec::new();
    for (n, stack) in sources.iter().enumerate() {
        let point = scratch.join(format!("source{n}"));
        fs::create_dir_all(&point)?;
        if read_only {
            copyroot::link_root(stack, &point)?;
        } else {
            copyroot::build_root(stack, &point)?;
        }
        points.push(point);
    }
    let r = f(&points);
    for p in &points {
        fs::remove_dir_all(p)?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_view_is_private_and_writes_land_in_upper() {
        if !crate::testutil::require(nix::unistd::geteuid().is_root(), "root (overlayfs)") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let low = d.path().join("low");
        fs::create_dir_all(low.join("etc")).unwrap();
        fs::write(low.join("etc/os"), b"base").unwrap();
        let upper = d.path().join("upper");
        fs::create_dir(&upper).unwrap();
        let scratch = d.path().join("scratch");
        let before = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let seen = with_overlay(std::slice::from_ref(&low), &upper, &scratch, &[], |m, _| {
            let os = fs::read(m.join("etc/os")).unwrap();
            fs::write(m.join("etc/new"), b"x").unwrap();
            fs::remove_file(m.join("etc/os")).unwrap();
            os
        })
        .unwrap();
        assert_eq!(seen, b"base");
        assert_eq!(fs::read(upper.join("etc/new")).unwrap(), b"x");
        assert!(fs::read(low.join("etc/os")).is_ok(), "lower untouched");
        assert_eq!(fs::read_to_string("/proc/self/mountinfo").unwrap(), before);
        assert!(fs::read_dir(scratch.join("merged"))
            .unwrap()
            .next()
            .is_none());
    }
}
