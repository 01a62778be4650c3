//! Named contexts (`--build-context NAME=VALUE`, as BuildKit's): a directory, an image of the
//! store or a registry, an image of an OCI layout, or a URL (a git repository or one file),
//! each resolved once per build to layers that `FROM NAME`, `COPY --from=NAME` and
//! `RUN --mount=from=NAME` read as they read an image's.
//!
//! A directory is read as the build context is (its own `.dockerignore` applied, through no
//! symlink, every file checked to be the one listed) and committed as one layer, its files
//! owned by root as BuildKit's file transfer sends them; the layer is kept in the cache under
//! the tree's content hash, so an unchanged directory is not packed again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::{CacheRecord, KeyBuilder, LayerRef, CACHE_VERSION};
use crate::context::{self, Context, ContextError};
use crate::image::Digest;
use crate::planner::Location;
use crate::rootfs::layers::{commit_dir, scratch_dir, FsError};
use crate::store::fsutil::{self, TempPath};
use crate::store::ImageRecord;

use super::remote::{self, GitSource, RemoteError, RemoteKind};
use super::{BuildError, BuildEvent, Builder};

/// What a named context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A directory on the host (absolute).
    Dir(PathBuf),
    /// `docker-image://REF`: an image, from the store or its registry as `--pull` says.
    Image(String),
    /// `oci-layout://DIR[:TAG][@DIGEST]`: an image of an OCI image layout on the host.
    OciLayout {
        /// The layout directory (absolute).
        dir: PathBuf,
        /// The `ref.name` to pick (`latest` when neither it nor a digest is given).
        tag: Option<String>,
        /// The manifest to pick.
        digest: Option<Digest>,
    },
    /// A git repository (`https://…/repo.git#ref:dir`, `git@…`): its checkout.
    Git(String),
    /// An `http(s)://` URL: a directory holding the one downloaded file.
    Http(String),
}

/// Why a `--build-context` value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NamedContextError {
    /// Not `NAME=VALUE`.
    #[error("invalid --build-context {0:?}: expected NAME=VALUE")]
    Syntax(String),
    /// The name is not a valid image name (BuildKit's rule: lowercase, `[a-z0-9._/-]`).
    #[error("invalid --build-context name {0:?}: it must be a valid image name (lowercase)")]
    Name(String),
    /// `docker-image://` with a reference that is not valid.
    #[error("--build-context {name}=docker-image://{reference}: {source}")]
    Reference {
        /// The context's name.
        name: String,
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        #[source]
        source: crate::image::ReferenceError,
    },
    /// `oci-layout://…@DIGEST` with a digest that is not valid.
    #[error("--build-context {name}: oci-layout digest: {source}")]
    LayoutDigest {
        /// The context's name.
        name: String,
        /// What is wrong with it.
        #[source]
        source: crate::image::DigestError,
    },
    /// A path that is not a directory (BuildKit takes only directories).
    #[error("--build-context {name}={}: {reason}", path.display())]
    NotDir {
        /// The context's name.
        name: String,
        /// The path.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The directory cannot be read.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The directory cannot be committed as a layer.
    #[error(transparent)]
    Layer(#[from] FsError),
    /// The URL or repository cannot be fetched.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The OCI layout's image cannot be loaded.
    #[error(transparent)]
    Layout(#[from] crate::imageops::ImageOpsError),
    /// A temporary directory or file cannot be made.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A copied file cannot be given its owner or time.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Parses `NAME=VALUE` of `--build-context` into the normalized name (see
/// [`crate::planner::context_name`]) and the context. A directory is made absolute against
/// the current directory and must exist.
pub fn parse_build_context(spec: &str) -> Result<(String, NamedContext), NamedContextError> {
    let (name, value) = spec
        .split_once('=')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| NamedContextError::Syntax(spec.to_string()))?;
    let key =
        crate::planner::context_name(name).ok_or_else(|| NamedContextError::Name(name.into()))?;
    let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
        crate::image::Reference::parse_normalized_named(r).map_err(|source| {
            NamedContextError::Reference {
                name: name.to_string(),
                reference: r.to_string(),
                source,
            }
        })?;
        NamedContext::Image(r.to_string())
    } else if let Some(rest) = value.strip_prefix("oci-layout://") {
        let (rest, digest) = match rest.split_once('@') {
            Some((p, d)) => (
                p,
                Some(
                    Digest::parse(d).map_err(|source| NamedContextError::LayoutDigest {
                        name: name.to_string(),
                        source,
                    })?,
                ),
            ),
            None => (rest, None),
        };
        let (path, tag) = match rest.split_once(':') {
            Some((p, t)) => (p, Some(t.to_string())),
            None => (rest, None),
        };
        NamedContext::OciLayout {
            dir: existing_dir(name, path)?,
            tag,
            digest,
        }
    } else {
        match remote::remote_kind(value) {
            Some(RemoteKind::Git) => NamedContext::Git(value.to_string()),
            Some(RemoteKind::Http) => NamedContext::Http(value.to_string()),
            None => NamedContext::Dir(existing_dir(name, value)?),
        }
    };
    Ok((key, ctx))
}

/// `path` made absolute, when it is a directory.
fn existing_dir(name: &str, path: &str) -> Result<PathBuf, NamedContextError> {
    let not_dir = |reason: String| NamedContextError::NotDir {
        name: name.to_string(),
        path: PathBuf::from(path),
        reason,
    };
    let abs = std::path::absolute(path).map_err(|e| not_dir(e.to_string()))?;
    match std::fs::metadata(&abs) {
        Ok(m) if m.is_dir() => Ok(abs),
        Ok(_) => Err(not_dir("not a directory".into())),
        Err(e) => Err(not_dir(e.to_string())),
    }
}

/// A named context, resolved: its layers, and the image when it is one.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The image (its config is a stage's start) when the context is one.
    pub image: Option<ImageRecord>,
    /// Its layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// What names it in cache keys: the image's manifest digest, or the directory layer's
    /// diff ID.
    pub ident: String,
}

impl Builder<'_> {
    /// The named context `name` (normalized), resolved on first use and kept for the build.
    pub(crate) fn named_context(
        &self,
        name: &str,
        location: Location,
    ) -> Result<Arc<Resolved>, BuildError> {
        // Held while resolving: two stages asking at once resolve it once.
        let mut known = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = known.get(name) {
            return Ok(r.clone());
        }
        let ctx = self
            .req
            .contexts
            .get(name)
            .ok_or_else(|| BuildError::NamedContext {
                name: name.to_string(),
                source: Box::new(NamedContextError::Syntax(name.to_string())),
                location,
            })?;
        let fail = |e: NamedContextError| BuildError::NamedContext {
            name: name.to_string(),
            source: Box::new(e),
            location,
        };
        let resolved = match ctx {
            NamedContext::Image(r) => image_resolved(self.image(
                r,
                (&self.plan.target_platform, self.plan.target_given),
                location,
            )?),
            NamedContext::OciLayout { dir, tag, digest } => {
                let rec = self
                    .shown(name, &format!("oci-layout://{}", dir.display()), || {
                        crate::imageops::layout::load_layout(
                            self.store,
                            dir,
                            tag.as_deref(),
                            digest.as_ref(),
                        )
                        .map_err(NamedContextError::from)
                    })
                    .map_err(fail)?;
                image_resolved(rec)
            }
            NamedContext::Dir(dir) => self
                .shown(name, &dir.display().to_string(), || self.dir_context(dir))
                .map_err(fail)?,
            NamedContext::Git(url) => self
                .shown(name, url, || self.git_context(url))
                .map_err(fail)?,
            NamedContext::Http(url) => self
                .shown(name, url, || self.http_context(url))
                .map_err(fail)?,
        };
        let resolved = Arc::new(resolved);
        known.insert(name.to_string(), resolved.clone());
        Ok(resolved)
    }

    /// Runs `f` as an `[internal] load build context NAME` step of the progress.
    fn shown<T>(
        &self,
        name: &str,
        what: &str,
        f: impl FnOnce() -> Result<T, NamedContextError>,
    ) -> Result<T, NamedContextError> {
        let id = self.next_id();
        let started = std::time::Instant::now();
        self.progress.event(BuildEvent::Step {
            id,
            stage: "internal".into(),
            text: format!("load build context {name} ({what})"),
        });
        let r = f()?;
        self.progress.event(BuildEvent::Done {
            id,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(r)
    }

    /// A directory as one layer, taken from the cache when its tree is unchanged.
    fn dir_context(&self, dir: &Path) -> Result<Resolved, NamedContextError> {
        let ignore = context::files::load_ignore(dir, None)?;
        let mut ctx = Context::scan(dir, &ignore)?;
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut stat = self.stat_cache(dir);
        ctx.hash_contents(&[""], &mut stat)?;
        if let Err(e) = stat.save() {
            tracing::warn!(error = %e, "cannot save a named context's stat cache");
        }
        let tree = ctx
            .tree_hash("")
            .ok_or_else(|| ContextError::Changed { path: abs.clone() })?;
        let epoch = self.req.source_date_epoch.map(|e| e.to_string());
        let mut key = KeyBuilder::new("named-context-dir");
        key.field("tree", &tree)
            .opt("source-date-epoch", epoch.as_deref());
        let key = key.finish();
        let cached = (!self.req.no_cache)
            .then(|| self.cache.get(&key))
            .flatten()
            .filter(|r| r.layers.len() == 1);
        let layer = match cached {
            Some(mut rec) => rec.layers.remove(0),
            None => {
                let layer = self.commit_tree(&ctx)?;
                let rec = CacheRecord {
                    version: CACHE_VERSION,
                    key,
                    layers: vec![layer.clone()],
                    history: Vec::new(),
                    inputs: BTreeMap::from([("context".into(), abs.display().to_string())]),
                };
                if let Err(e) = self.cache.put(&rec) {
                    tracing::warn!(error = %e, "cannot record a named context's layer");
                }
                layer
            }
        };
        Ok(Resolved {
            image: None,
            ident: format!("context:{}", layer.diff_id),
            layers: vec![layer],
        })
    }

    /// The listed tree copied out (owned by root, times kept) and committed as a layer.
    fn commit_tree(&self, ctx: &Context) -> Result<LayerRef, NamedContextError> {
        let scratch = scratch_dir(self.store)?;
        let root = scratch.path().join("tree");
        ctx.tree("").copy_to(&root)?;
        // Deepest first, so a directory's time is set after its children are.
        for (key, e) in ctx.subtree("").collect::<Vec<_>>().into_iter().rev() {
            let path = if key.is_empty() {
                root.clone()
            } else {
                root.join(context::name::to_os(key))
            };
            let io = |source| NamedContextError::Io {
                path: path.clone(),
                source,
            };
            match e.kind {
                context::Kind::File | context::Kind::Dir => {
                    std::os::unix::fs::lchown(&path, Some(0), Some(0)).map_err(io)?;
                    let mtime = std::time::UNIX_EPOCH
                        + std::time::Duration::new(
                            u64::try_from(e.mtime.0).unwrap_or(0),
                            u32::try_from(e.mtime.1).unwrap_or(0),
                        );
                    std::fs::File::open(&path)
                        .and_then(|f| f.set_modified(mtime))
                        .map_err(io)?;
                }
                context::Kind::Symlink => {
                    std::os::unix::fs::lchown(&path, Some(0), Some(0)).map_err(io)?
                }
                context::Kind::Other => {}
            }
        }
        Ok(commit_dir(self.store, &root, self.req.source_date_epoch)?)
    }

    /// A git repository's checkout (at the commit its ref names now) as a directory context.
    fn git_context(&self, url: &str) -> Result<Resolved, NamedContextError> {
        let g = GitSource::parse(url)?;
        let commit = remote::git_resolve(&g)?;
        let dir = remote::git_checkout(&g, &commit, false, &self.store.tmp_dir())?;
        let top = if g.subdir.is_empty() {
            dir.path().to_path_buf()
        } else {
            dir.path().join(&g.subdir)
        };
        self.dir_context(&top)
    }

    /// A URL's file, alone in a directory, as BuildKit's HTTP source gives it: named after
    /// the URL's last path segment (`index` without one), mode 0600.
    fn http_context(&self, url: &str) -> Result<Resolved, NamedContextError> {
        let d = remote::fetch(url, &self.store.tmp_dir(), self.cancel.as_deref())?;
        let dir = TempPath::new(fsutil::create_temp_dir(
            &self.store.tmp_dir(),
            "named-http",
            0o700,
        )?);
        let name = remote::url_file_name(url).unwrap_or_else(|| "index".to_string());
        let file = dir.path().join(name);
        let io = |source| NamedContextError::Io {
            path: file.clone(),
            source,
        };
        std::fs::rename(d.file.path(), &file).map_err(io)?;
        d.file.disarm();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        if let Some(secs) = d.mtime {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
            std::fs::File::open(&file)
                .and_then(|f| f.set_modified(t))
                .map_err(io)?;
        }
        self.dir_context(dir.path())
    }
}

fn image_resolved(rec: ImageRecord) -> Resolved {
    Resolved {
        layers: super::image_layers(&rec),
        ident: format!("image:{}", rec.manifest_digest),
        image: Some(rec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_buildkit_reads_them() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().display().to_string();
        let (name, ctx) =
            parse_build_context(&format!("docker.io/library/alpine:latest={dir}")).unwrap();
        assert_eq!(name, "alpine");
        assert_eq!(ctx, NamedContext::Dir(d.path().to_path_buf()));
        assert_eq!(
            parse_build_context("base=docker-image://busybox:1.36").unwrap(),
            ("base".into(), NamedContext::Image("busybox:1.36".into()))
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_build_context(&format!("l=oci-layout://{dir}:v1@{digest}")).unwrap(),
            (
                "l".into(),
                NamedContext::OciLayout {
                    dir: d.path().to_path_buf(),
                    tag: Some("v1".into()),
                    digest: Some(Digest::parse(&digest).unwrap()),
                }
            )
        );
        assert_eq!(
            parse_build_context("src=https://example.com/r.git#main")
                .unwrap()
                .1,
            NamedContext::Git("https://example.com/r.git#main".into())
        );
        assert_eq!(
            parse_build_context("f=https://example.com/f.txt")
                .unwrap()
                .1,
            NamedContext::Http("https://example.com/f.txt".into())
        );
        for bad in [
            "novalue",
            "=x",
            "Upper=/tmp",
            "x=docker-image://UPPER",
            "x=oci-layout:///tmp@sha256:zz",
            "x=/no/such/dir/here",
        ] {
            assert!(parse_build_context(bad).is_err(), "{bad}");
        }
    }
}
