//! Named volumes: `<root>/volumes/<name>/_data`, what `kiln volume` manages. A volume in use
//! by any container (running or not) is never removed.

use std::fs;
use std::path::{Path, PathBuf};

use super::{ContainerError, Containers, Result};

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// Its data directory (`Mountpoint`).
    pub mountpoint: PathBuf,
    /// When it was created (seconds since the epoch).
    pub created: i64,
    /// The containers using it (IDs).
    pub used_by: Vec<String>,
}

impl Volume {
    /// Anonymous volumes (`-v /path`) get a 64-hex-digit name, as Docker's.
    pub fn is_anonymous(&self) -> bool {
        self.name.len() == 64 && self.name.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

fn dir(root: &Path) -> PathBuf {
    root.join("volumes")
}

/// Every volume, sorted by name.
pub fn list(root: &Path) -> Result<Vec<Volume>> {
    let containers = Containers::new(root).list()?;
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir(root)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(super::io_err("reading", dir(root))(e)),
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a removal in progress
        }
        let used_by = containers
            .iter()
            .filter(|c| {
                c.config
                    .mounts
                    .iter()
                    .any(|m| m.kind == "volume" && m.name == name)
            })
            .map(|c| c.config.id.clone())
            .collect();
        let created = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        out.push(Volume {
            mountpoint: e.path().join("_data"),
            name,
            created,
            used_by,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The volume `name`.
pub fn find(root: &Path, name: &str) -> Result<Volume> {
    list(root)?
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ContainerError::Other(format!("get {name}: no such volume")))
}

/// Creates `name` (an anonymous name when `None`); creating an existing one is fine.
pub fn create(root: &Path, name: Option<&str>) -> Result<String> {
    let name = match name {
        Some(n) => n.to_string(),
        None => super::new_id()?,
    };
    super::ops::volume_dir(root, &name)?;
    Ok(name)
}

/// Removes a volume nobody uses: renamed aside first, so a half-removed volume is never
/// seen (or mounted) under its name.
pub fn remove(root: &Path, name: &str) -> Result<()> {
    let v = find(root, name)?;
    if !v.used_by.is_empty() {
        return Err(ContainerError::Invalid(format!(
            "remove {name}: volume is in use - [{}]",
            v.used_by.join(", ")
        )));
    }
    let path = dir(root).join(name);
    let aside = dir(root).join(format!(".removing-{name}"));
    fs::rename(&path, &aside).map_err(super::io_err("removing", &path))?;
    fs::remove_dir_all(&aside).map_err(super::io_err("removing", &aside))
}

/// Removes the unused volumes (anonymous ones only unless `all`); their names and bytes.
pub fn prune(root: &Path, all: bool) -> Result<(Vec<String>, u64)> {
    let mut removed = Vec::new();
    let mut bytes = 0;
    for v in list(root)? {
        if !v.used_by.is_empty() || !(all || v.is_anonymous()) {
            continue;
        }
        let size = du(&v.mountpoint);
        if remove(root, &v.name).is_ok() {
            bytes += size;
            removed.push(v.name);
        }
    }
    Ok((removed, bytes))
}

/// Bytes of the files below `p` (links counted as links).
pub fn du(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    fs::read_dir(p)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}
