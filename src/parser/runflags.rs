//! The structured values of RUN's flags: `--mount` and `--device` CSV records, `--network`
//! and `--security` modes, validated with BuildKit's rules and wording.
//!
//! A `--mount` value is read in two steps, as BuildKit does. When the instruction is parsed
//! only its CSV syntax and its `from=` are checked ([`MountSpec::parse`]): every other field
//! may hold build variables, so `type=$T` cannot be judged yet. Once the planner has expanded
//! the variables, [`parse_mount`] turns the value into a typed [`Mount`] and validates it.

use std::fmt;

use super::diag::suggest;
use super::dump::go_quote;
use super::goparse::{self, CsvError};

/// A `RUN --mount` value as written, checked for syntax only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// The CSV value, variables not yet expanded (`type=cache,target=$HOME/.cache`).
    pub raw: String,
    /// The stage or image named by `from=`: known before expansion, because BuildKit refuses
    /// variables in it (the stage graph is built before any variable is expanded).
    pub from: Option<String>,
}

impl MountSpec {
    /// Check a `--mount` value the way BuildKit does before variables are expanded.
    pub fn parse(raw: &str) -> Result<MountSpec, RunFlagError> {
        let fields = goparse::csv_fields(raw).map_err(RunFlagError::Csv)?;
        let mut from = None;
        for field in &fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            if key.to_lowercase() != "from" {
                continue;
            }
            // A `$` as the last character cannot start a variable, so BuildKit lets it pass.
            if value.find('$').is_some_and(|i| i + 1 != value.len()) {
                return Err(RunFlagError::FromVariable);
            }
            from = Some(value.to_string());
        }
        Ok(MountSpec {
            raw: raw.to_string(),
            from,
        })
    }

    /// The typed mount now, when the value has nothing to expand (no `$`, no quote, no
    /// `escape` character: expanding it would change nothing); `None` when it must wait for
    /// its variables. The planner and `kiln build --check` both judge mounts by this, so the
    /// check reports every mount the build refuses before its steps run.
    pub fn parse_literal(&self, escape: char) -> Option<Result<Mount, RunFlagError>> {
        super::instructions::is_literal(&self.raw, escape)
            .then(|| parse_mount(&self.raw, &|v| Ok(v.to_string())))
    }
}

/// The kind of a RUN mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountType {
    /// A read-only (by default) view of the build context or of another stage or image.
    Bind,
    /// A persistent cache directory, shared between builds.
    Cache,
    /// An empty in-memory file system.
    Tmpfs,
    /// A secret file or environment variable provided to the build.
    Secret,
    /// An SSH agent socket forwarded to the build.
    Ssh,
}

impl MountType {
    const ALL: [(&'static str, MountType); 5] = [
        ("bind", MountType::Bind),
        ("cache", MountType::Cache),
        ("tmpfs", MountType::Tmpfs),
        ("secret", MountType::Secret),
        ("ssh", MountType::Ssh),
    ];

    /// The name used in Dockerfiles (`bind`, `cache`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }

    /// The type named by a `type=` value (any case).
    fn from_value(value: String) -> Result<MountType, RunFlagError> {
        let lower = value.to_lowercase();
        match MountType::ALL.iter().find(|(n, _)| *n == lower) {
            Some(&(_, t)) => Ok(t),
            None => {
                let names: Vec<&str> = MountType::ALL.iter().map(|(n, _)| *n).collect();
                Err(RunFlagError::UnknownType {
                    suggestion: suggest(&value, &names, true),
                    value,
                })
            }
        }
    }

    /// Secret, SSH and cache mounts may set a file mode and owner.
    fn file_info_allowed(self) -> bool {
        matches!(self, MountType::Secret | MountType::Ssh | MountType::Cache)
    }
}

impl fmt::Display for MountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How concurrent builds share a cache mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// Several writers at once.
    Shared,
    /// A writer that finds the cache in use gets a fresh one.
    Private,
    /// Writers wait for each other.
    Locked,
}

impl Sharing {
    const ALL: [(&'static str, Sharing); 3] = [
        ("shared", Sharing::Shared),
        ("private", Sharing::Private),
        ("locked", Sharing::Locked),
    ];

    /// The mode named by a `sharing=` value (any case).
    fn from_value(value: String) -> Result<Sharing, RunFlagError> {
        let lower = value.to_lowercase();
        match Sharing::ALL.iter().find(|(n, _)| *n == lower) {
            Some(&(_, s)) => Ok(s),
            None => {
                let names: Vec<&str> = Sharing::ALL.iter().map(|(n, _)| *n).collect();
                Err(RunFlagError::UnknownSharing {
                    suggestion: suggest(&value, &names, true),
                    value,
                })
            }
        }
    }
}

/// A `RUN --mount`, after variable expansion and validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The kind of mount (`bind` when not given).
    pub kind: MountType,
    /// Stage or image to take the files from (bind and cache mounts).
    pub from: Option<String>,
    /// Path inside `from` (or the context, or the secret's id for secrets).
    pub source: Option<String>,
    /// Where the mount appears in the container (`target`, `dst` or `destination`).
    pub target: Option<String>,
    /// Read-only; defaults to false for cache and tmpfs, true otherwise.
    pub read_only: bool,
    /// Size limit in bytes of a tmpfs mount.
    pub size_limit: Option<i64>,
    /// The cache id or secret id.
    pub id: Option<String>,
    /// Sharing mode of a cache mount.
    pub sharing: Option<Sharing>,
    /// A secret or SSH mount whose source must exist.
    pub required: bool,
    /// For a secret: the environment variable to expose it in.
    pub env: Option<String>,
    /// File mode (octal in the Dockerfile) of a cache, secret or SSH mount.
    pub mode: Option<u32>,
    /// Owner user id of a cache, secret or SSH mount.
    pub uid: Option<u32>,
    /// Owner group id of a cache, secret or SSH mount.
    pub gid: Option<u32>,
}

/// What is wrong with a `--mount` or `--device` value. Wording is BuildKit's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunFlagError {
    /// The value is not one CSV record.
    #[error("failed to parse csv mounts: {0}")]
    Csv(CsvError),
    /// `from=` holds a variable.
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromVariable,
    /// A field without `=` that is not a known switch.
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    /// A key that does not apply to this mount type.
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyNotForType {
        /// The key.
        key: String,
        /// The mount type set so far.
        kind: MountType,
    },
    /// A key BuildKit does not know.
    #[error("unexpected key '{key}' in '{field}'{}", did_you_mean(suggestion))]
    UnknownKey {
        /// The key, lowercased.
        key: String,
        /// The whole field.
        field: String,
        /// A close known key.
        suggestion: Option<String>,
    },
    /// `type=` names no mount type.
    #[error(
        "unsupported mount type {}{}",
        go_quote(value),
        did_you_mean(suggestion)
    )]
    UnknownType {
        /// The value given.
        value: String,
        /// A close known type.
        suggestion: Option<String>,
    },
    /// `sharing=` names no sharing mode.
    #[error(
        "unsupported sharing value {}{}",
        go_quote(value),
        did_you_mean(suggestion)
    )]
    UnknownSharing {
        /// The value given.
        value: String,
        /// A close known mode.
        suggestion: Option<String>,
    },
    /// A boolean or size field with a bad value.
    #[error("invalid value for {key}: {value}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
    },
    /// `mode`, `uid` or `gid` that is not a number of the right base.
    #[error("invalid value {value} for {key}")]
    InvalidNumber {
        /// The key.
        key: String,
        /// The value given.
        value: String,
    },
    /// `mode`, `uid` or `gid` on a mount type that has no files of its own.
    #[error("{key} not allowed for {} type mounts", go_quote(kind.as_str()))]
    FileInfoNotAllowed {
        /// The key.
        key: &'static str,
        /// The mount type.
        kind: MountType,
    },
    /// A secret mount with `from=`.
    #[error("secret mount should not have a from")]
    SecretFrom,
    /// A secret mount with `sharing=`.
    #[error("secret mount should not define sharing")]
    SecretSharing,
    /// A secret mount with neither source, target nor id.
    #[error("invalid secret mount. one of source, target required")]
    SecretIncomplete,
    /// A secret mount with both source and id.
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    /// `sharing=` on a mount that is not a cache.
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotCache(MountType),
    /// Variable expansion of a field failed.
    #[error("{0}")]
    Expand(String),
    /// The `--device` value is not one CSV record.
    #[error("failed to parse csv devices: {0}")]
    DeviceCsv(CsvError),
    /// A `--device` with two names.
    #[error("device name already set to {0}")]
    DeviceNameTwice(String),
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

const MOUNT_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Turn a `--mount` value into a typed [`Mount`], expanding each field's value with `expand`
/// first (the planner passes its variable expander; a caller without variables passes
/// `|s| Ok(s.to_string())`).
///
/// The fields are read in order, as BuildKit does (a key may depend on the type set before
/// it), and the whole mount is then checked against its type.
pub fn parse_mount(
    raw: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Mount, RunFlagError> {
    let fields = goparse::csv_fields(raw).map_err(RunFlagError::Csv)?;
    let mut draft = MountDraft::new();
    for field in &fields {
        match field.split_once('=') {
            None => draft.switch(field)?,
            Some((key, value)) => {
                let key = key.to_lowercase();
                let value = expand(value).map_err(RunFlagError::Expand)?;
                draft.set(key, value, field)?;
            }
        }
    }
    draft.finish()
}

/// A mount being read field by field.
struct MountDraft {
    mount: Mount,
    /// Read-only follows the type unless a field says otherwise.
    ro_auto: bool,
}

impl MountDraft {
    fn new() -> MountDraft {
        MountDraft {
            mount: Mount {
                kind: MountType::Bind,
                from: None,
                source: None,
                target: None,
                read_only: false,
                size_limit: None,
                id: None,
                sharing: None,
                required: false,
                env: None,
                mode: None,
                uid: None,
                gid: None,
            },
            ro_auto: true,
        }
    }

    /// A field without `=`: one of the boolean switches.
    fn switch(&mut self, field: &str) -> Result<(), RunFlagError> {
        let key = field.to_lowercase();
        match key.as_str() {
            "readonly" | "ro" => self.read_only(true),
            "readwrite" | "rw" => self.read_only(false),
            // The type must come before `required`: BuildKit judges it in field order.
            "required" => {
                self.only_for_secret_or_ssh(key)?;
                self.mount.required = true;
            }
            _ => return Err(RunFlagError::NotKeyValue(field.to_string())),
        }
        Ok(())
    }

    /// A `key=value` field, the key lowercased and the value expanded.
    fn set(&mut self, key: String, value: String, field: &str) -> Result<(), RunFlagError> {
        let m = &mut self.mount;
        match key.as_str() {
            "type" => m.kind = MountType::from_value(value)?,
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                let on = bool_value(&key, &value)?;
                self.read_only(on);
            }
            "readwrite" | "rw" => {
                let on = bool_value(&key, &value)?;
                self.read_only(!on);
            }
            "required" => {
                self.only_for_secret_or_ssh(key.clone())?;
                self.mount.required = bool_value(&key, &value)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(RunFlagError::KeyNotForType { key, kind: m.kind });
                }
                m.size_limit = Some(
                    goparse::parse_ram_bytes(&value)
                        .ok_or(RunFlagError::InvalidValue { key, value })?,
                );
            }
            "id" => m.id = Some(value),
            "sharing" => m.sharing = Some(Sharing::from_value(value)?),
            "mode" | "uid" | "gid" => {
                let base = if key == "mode" { 8 } else { 10 };
                let n = goparse::parse_uint32(&value, base).ok_or_else(|| {
                    RunFlagError::InvalidNumber {
                        key: key.clone(),
                        value,
                    }
                })?;
                match key.as_str() {
                    "mode" => m.mode = Some(n),
                    "uid" => m.uid = Some(n),
                    _ => m.gid = Some(n),
                }
            }
            "env" => m.env = Some(value),
            _ => {
                return Err(RunFlagError::UnknownKey {
                    suggestion: suggest(&key, MOUNT_KEYS, true),
                    key,
                    field: field.to_string(),
                })
            }
        }
        Ok(())
    }

    /// An explicit read-only or read-write field, which the type's default no longer overrides.
    fn read_only(&mut self, on: bool) {
        self.mount.read_only = on;
        self.ro_auto = false;
    }

    /// `required` applies to secret and SSH mounts only.
    fn only_for_secret_or_ssh(&self, key: String) -> Result<(), RunFlagError> {
        let kind = self.mount.kind;
        if matches!(kind, MountType::Secret | MountType::Ssh) {
            Ok(())
        } else {
            Err(RunFlagError::KeyNotForType { key, kind })
        }
    }

    /// The rules that look at the whole mount, once every field is read.
    fn finish(self) -> Result<Mount, RunFlagError> {
        let mut m = self.mount;
        if !m.kind.file_info_allowed() {
            let set = [("mode", m.mode), ("uid", m.uid), ("gid", m.gid)];
            if let Some((key, _)) = set.iter().find(|(_, v)| v.is_some()) {
                return Err(RunFlagError::FileInfoNotAllowed { key, kind: m.kind });
            }
        }
        if self.ro_auto {
            m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
        }
        if m.kind == MountType::Secret {
            check_secret(&m)?;
        }
        if m.sharing.is_some() && m.kind != MountType::Cache {
            return Err(RunFlagError::SharingNotCache(m.kind));
        }
        Ok(m)
    }
}

/// A secret mount names one secret, by source or id, and takes nothing from elsewhere.
fn check_secret(m: &Mount) -> Result<(), RunFlagError> {
    if m.from.is_some() {
        return Err(RunFlagError::SecretFrom);
    }
    if m.sharing.is_some() {
        return Err(RunFlagError::SecretSharing);
    }
    if m.source.is_none() && m.target.is_none() && m.id.is_none() {
        return Err(RunFlagError::SecretIncomplete);
    }
    if m.source.is_some() && m.id.is_some() {
        return Err(RunFlagError::SecretSourceAndId);
    }
    Ok(())
}

/// A boolean field's value, read as Go's `strconv.ParseBool` does.
fn bool_value(key: &str, value: &str) -> Result<bool, RunFlagError> {
    goparse::parse_bool(value).ok_or_else(|| RunFlagError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// A `RUN --device` request (CDI device name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The device name, e.g. `vendor1.com/device=foo`.
    pub name: String,
    /// Fail the build when the device is not available.
    pub required: bool,
}

impl Device {
    /// Read a `--device` value: a name (bare or `name=`), optionally `required[=bool]`.
    pub fn parse(raw: &str) -> Result<Device, RunFlagError> {
        let fields = goparse::csv_fields(raw).map_err(RunFlagError::DeviceCsv)?;
        let mut d = Device {
            name: String::new(),
            required: false,
        };
        for field in &fields {
            let Some((key, value)) = field.split_once('=') else {
                if field.to_lowercase() == "required" {
                    d.required = true;
                } else if d.name.is_empty() {
                    d.name = field.clone();
                } else {
                    return Err(RunFlagError::NotKeyValue(field.clone()));
                }
                continue;
            };
            let key = key.to_lowercase();
            match key.as_str() {
                "name" => {
                    if !d.name.is_empty() {
                        return Err(RunFlagError::DeviceNameTwice(d.name));
                    }
                    d.name = value.to_string();
                }
                "required" => {
                    d.required =
                        goparse::parse_bool(value).ok_or_else(|| RunFlagError::InvalidValue {
                            key: key.clone(),
                            value: value.to_string(),
                        })?;
                }
                // A CDI name may itself contain `=` (`vendor.com/class=name`).
                _ if d.name.is_empty() => d.name = field.clone(),
                _ => {
                    return Err(RunFlagError::UnknownKey {
                        suggestion: suggest(&key, &["name", "required"], true),
                        key,
                        field: field.clone(),
                    })
                }
            }
        }
        Ok(d)
    }
}

/// `RUN --network`: the network a RUN step sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The builder's default.
    #[default]
    Default,
    /// No network at all.
    None,
    /// The host's network namespace.
    Host,
}

impl NetworkMode {
    /// Read a `--network` value (`default`, `none` or `host`, exact case).
    pub fn parse(s: &str) -> Option<NetworkMode> {
        match s {
            "default" => Some(NetworkMode::Default),
            "none" => Some(NetworkMode::None),
            "host" => Some(NetworkMode::Host),
            _ => None,
        }
    }
}

/// `RUN --security`: whether the step runs sandboxed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SecurityMode {
    /// The usual sandbox.
    #[default]
    Sandbox,
    /// Full privileges (needs the builder's permission).
    Insecure,
}

impl SecurityMode {
    /// Read a `--security` value (`sandbox` or `insecure`, exact case).
    pub fn parse(s: &str) -> Option<SecurityMode> {
        match s {
            "sandbox" => Some(SecurityMode::Sandbox),
            "insecure" => Some(SecurityMode::Insecure),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(s: &str) -> Result<String, String> {
        Ok(s.to_string())
    }

    #[test]
    fn mount_specs_before_expansion() {
        let ok: &[(&str, Option<&str>)] = &[
            ("type=cache,target=/x", None),
            ("type=foo,bogus,uid=x", None),
            ("from=build,source=/out", Some("build")),
            ("FROM=build", Some("build")),
            ("from=a$", Some("a$")),
        ];
        for (input, from) in ok {
            let m = MountSpec::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(m.from.as_deref(), *from, "input {input:?}");
        }
        let bad: &[(&str, &str)] = &[
            (
                "from=$STAGE",
                "'from' doesn't support variable expansion, define alias stage instead",
            ),
            (
                "target=a\"b",
                "failed to parse csv mounts: parse error on line 1, column 9: bare \" in non-quoted-field",
            ),
            ("", "failed to parse csv mounts: EOF"),
        ];
        for (input, want) in bad {
            let e = MountSpec::parse(input).expect_err("must fail");
            assert_eq!(e.to_string(), *want, "input {input:?}");
        }
    }

    #[test]
    fn literal_mounts_are_typed_at_once() {
        let spec = |raw: &str| MountSpec::parse(raw).unwrap();
        let m = spec("type=cache,target=/c").parse_literal('\\');
        assert_eq!(m.unwrap().unwrap().kind, MountType::Cache);
        assert!(matches!(
            spec("type=cache,size=1m").parse_literal('\\'),
            Some(Err(RunFlagError::KeyNotForType { .. }))
        ));
        // Words that expansion would change wait for it.
        for raw in ["type=$T", "target='/a b'", "target=/a\\b"] {
            assert!(spec(raw).parse_literal('\\').is_none(), "{raw}");
        }
        assert!(spec("target=/a\\b").parse_literal('`').is_some());
    }

    #[test]
    fn typed_mounts() {
        let m = parse_mount(
            "type=cache,target=/root/.cache,sharing=LOCKED,id=x,mode=0700,uid=1",
            &literal,
        )
        .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o700));
        assert_eq!(m.uid, Some(1));
        assert!(!m.read_only);
        let m = parse_mount("target=/src", &literal).unwrap();
        assert_eq!((m.kind, m.read_only), (MountType::Bind, true));
        let m = parse_mount("type=bind,target=/src,rw", &literal).unwrap();
        assert!(!m.read_only);
        let m = parse_mount("type=tmpfs,dst=/t,size=64m", &literal).unwrap();
        assert_eq!(m.size_limit, Some(64 << 20));
        let m = parse_mount("type=secret,id=tok,env=TOKEN,required", &literal).unwrap();
        assert_eq!((m.required, m.env.as_deref()), (true, Some("TOKEN")));
        let m = parse_mount("type=ssh,required=false", &literal).unwrap();
        assert!(!m.required);
    }

    #[test]
    fn mount_errors() {
        let cases: &[(&str, &str)] = &[
            ("type=foo", "unsupported mount type \"foo\""),
            (
                "type=cahce",
                "unsupported mount type \"cahce\" (did you mean cache?)",
            ),
            ("target", "invalid field 'target' must be a key=value pair"),
            (
                "required",
                "unexpected key 'required' for mount type 'bind'",
            ),
            (
                "required,type=secret,id=x",
                "unexpected key 'required' for mount type 'bind'",
            ),
            (
                "type=cache,size=1m",
                "unexpected key 'size' for mount type 'cache'",
            ),
            ("type=tmpfs,size=lots", "invalid value for size: lots"),
            (
                "tagret=/x",
                "unexpected key 'tagret' in 'tagret=/x' (did you mean target?)",
            ),
            ("ro=maybe", "invalid value for ro: maybe"),
            (
                "type=cache,sharing=all",
                "unsupported sharing value \"all\"",
            ),
            ("type=cache,mode=999", "invalid value 999 for mode"),
            ("type=cache,uid=-1", "invalid value -1 for uid"),
            (
                "type=bind,mode=0755",
                "mode not allowed for \"bind\" type mounts",
            ),
            (
                "type=tmpfs,gid=1",
                "gid not allowed for \"tmpfs\" type mounts",
            ),
            (
                "type=secret,id=x,from=y",
                "secret mount should not have a from",
            ),
            (
                "type=secret",
                "invalid secret mount. one of source, target required",
            ),
            (
                "type=secret,source=a,id=b",
                "both source and id can't be set",
            ),
            (
                "type=bind,sharing=shared",
                "invalid cache sharing set for bind mount",
            ),
        ];
        for (input, want) in cases {
            let e = parse_mount(input, &literal).expect_err(input);
            assert_eq!(e.to_string(), *want, "input {input:?}");
        }
    }

    #[test]
    fn expansion_applies_to_values() {
        let expand = |s: &str| Ok(s.replace("$T", "cache"));
        let m = parse_mount("type=$T,target=/x", &expand).unwrap();
        assert_eq!(m.kind, MountType::Cache);
        let failing = |_: &str| Err("boom".to_string());
        assert_eq!(
            parse_mount("type=x", &failing).unwrap_err().to_string(),
            "boom"
        );
    }

    #[test]
    fn modes() {
        assert_eq!(NetworkMode::parse("none"), Some(NetworkMode::None));
        assert_eq!(NetworkMode::parse("NONE"), None);
        assert_eq!(
            SecurityMode::parse("insecure"),
            Some(SecurityMode::Insecure)
        );
        assert_eq!(SecurityMode::parse("foo"), None);
    }
}
