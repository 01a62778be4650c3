//! Instructions that change only the image configuration (ENV, LABEL, CMD, ENTRYPOINT,
//! EXPOSE, VOLUME, USER, WORKDIR, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, ARG, MAINTAINER),
//! applied with Docker's meaning and recorded in the history as empty layers.

use std::collections::BTreeMap;

use crate::image::spec::Empty;
use crate::planner::expand::ShellError;
use crate::planner::ops::{ArgDecl, ArgValue, Command, MetaOp};

use super::state::{StageState, MAX_METADATA_BYTES};

/// What a metadata instruction did, for the history and the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The history's `created_by`, e.g. `ENV A=1`.
    pub created_by: String,
    /// What it changed in the config, as named values in order (`env-name`, `env-value`,
    /// `cmd`, …): with the parent step's key, this determines the config after the step, so
    /// the step's cache key needs only this, not the whole config. ARG changes nothing here
    /// (an ARG no later step uses changes no key; RUN keys include ARG values).
    pub changes: Vec<(&'static str, String)>,
}

impl Applied {
    /// Adds the instruction's changes to a cache key.
    pub fn key_fields(&self, key: &mut crate::cache::KeyBuilder) {
        key.field("changes", &(self.changes.len() as u64).to_le_bytes());
        for (name, value) in &self.changes {
            key.text(name, value);
        }
    }
}

/// Why a metadata instruction cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A word's variables cannot be expanded.
    #[error(transparent)]
    Expand(#[from] ShellError),
    /// `ENV` or `LABEL` with a name that expands to nothing.
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
    /// `VOLUME` with an empty path.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// An `EXPOSE` port is invalid.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The metadata outgrew [`MAX_METADATA_BYTES`].
    #[error(
        "ENV, LABEL and the other metadata instructions make the image configuration \
         larger than kiln's limit of {} MiB here ({total} bytes in all, {added} from this \
         instruction)",
        MAX_METADATA_BYTES >> 20
    )]
    TooLarge {
        /// Bytes in all.
        total: usize,
        /// Bytes from this instruction.
        added: usize,
    },
}

/// What is wrong with an `EXPOSE` port (Docker's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Not tcp, udp or sctp.
    #[error("invalid proto: {0}")]
    Proto(String),
    /// Not a port number.
    #[error("invalid containerPort: {0}")]
    Port(String),
    /// A range that ends before it starts.
    #[error("invalid port range: {0}")]
    Range(String),
}

fn command(state: &StageState, c: &Command) -> Vec<String> {
    match c {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut v = state.shell();
            v.push(s.clone());
            v
        }
    }
}

/// Go's `path.Clean` for absolute container paths.
pub fn clean_abs(p: &str) -> String {
    crate::context::ignore::clean_path(&format!("/{p}"))
}

/// Normalise an EXPOSE spec: `80` → `80/tcp`, protocols lowercased, ranges expanded.
pub fn expose_ports(spec: &str) -> Result<Vec<String>, PortError> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(PortError::Proto(proto));
    }
    let parse = |s: &str| -> Result<u16, PortError> {
        s.parse::<u16>()
            .map_err(|_| PortError::Port(spec.to_string()))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(PortError::Range(spec.to_string()));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Apply a metadata operation to `state`: what it changed, for the history and the key.
pub fn apply(state: &mut StageState, op: &MetaOp) -> Result<Applied, MetaError> {
    let applied = apply_op(state, op)?;
    // Each value lands twice in the image config: in its field and in the history.
    let added =
        applied.created_by.len() + applied.changes.iter().map(|(_, v)| v.len()).sum::<usize>();
    state.metadata_bytes = state.metadata_bytes.saturating_add(added);
    if state.metadata_bytes > MAX_METADATA_BYTES {
        return Err(MetaError::TooLarge {
            total: state.metadata_bytes,
            added,
        });
    }
    Ok(applied)
}

/// `RunConfig::env_set` with a cheaper comparison per entry (a prefix and one byte, not a
/// split of every entry): each ENV still looks at every entry, but 10,000 ENV lines then cost
/// milliseconds instead of most of a second.
fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    if key.contains('=') {
        // No entry's name contains `=`: the slow path appends, as env_set does.
        let mut c = crate::image::spec::RunConfig {
            env: std::mem::take(env),
            ..Default::default()
        };
        c.env_set(key, value);
        *env = c.env;
        return;
    }
    let entry = format!("{key}={value}");
    let slot = env.iter_mut().find(|kv| {
        let b = kv.as_bytes();
        b.len() >= key.len()
            && b.get(key.len()).is_none_or(|&c| c == b'=')
            && &b[..key.len()] == key.as_bytes()
    });
    match slot {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// A JSON rendering of a small config value, for cache keys.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// One operation: each kind is a phase of its own below.
fn apply_op(state: &mut StageState, op: &MetaOp) -> Result<Applied, MetaError> {
    let mut changes: Vec<(&'static str, String)> = Vec::new();
    let created_by = match op {
        MetaOp::Env(pairs) => apply_env(state, pairs, &mut changes)?,
        MetaOp::Label(pairs) => apply_label(state, pairs, &mut changes)?,
        MetaOp::Maintainer(m) => {
            state.spec.author = Some(m.clone());
            changes.push(("author", m.clone()));
            format!("MAINTAINER {m}")
        }
        MetaOp::Cmd(c) => {
            let v = command(state, c);
            // `CMD []` leaves no Cmd in the config, as both of Docker's builders write it.
            state.spec.config.cmd = (!v.is_empty()).then(|| v.clone());
            state.cmd_set = true;
            changes.push(("cmd", json(&state.spec.config.cmd)));
            format!("CMD {}", serde_json::to_string(&v).unwrap_or_default())
        }
        MetaOp::Entrypoint(e) => apply_entrypoint(state, e, &mut changes),
        MetaOp::Expose(ports) => apply_expose(state, ports, &mut changes)?,
        MetaOp::Volume(volumes) => apply_volume(state, volumes, &mut changes)?,
        MetaOp::User(u) => {
            let user = state.expand(u)?;
            state.spec.config.user = user.clone();
            changes.push(("user", user.clone()));
            format!("USER {user}")
        }
        MetaOp::Workdir(w) => apply_workdir(state, w, &mut changes)?,
        MetaOp::Shell(shell) => {
            state.spec.config.shell = Some(shell.clone());
            changes.push(("shell", json(shell)));
            format!("SHELL {}", serde_json::to_string(shell).unwrap_or_default())
        }
        MetaOp::Stopsignal(s) => {
            let sig = state.expand(s)?;
            state.spec.config.stop_signal = Some(sig.clone());
            changes.push(("stopsignal", sig.clone()));
            format!("STOPSIGNAL {sig}")
        }
        MetaOp::Healthcheck(hc) => {
            let shown = serde_json::to_string(&hc.test).unwrap_or_default();
            changes.push(("healthcheck", json(hc)));
            state.spec.config.healthcheck = Some(hc.clone());
            format!("HEALTHCHECK {shown}")
        }
        MetaOp::Onbuild(expression) => {
            state
                .spec
                .config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(expression.clone());
            changes.push(("onbuild", expression.clone()));
            format!("ONBUILD {expression}")
        }
        MetaOp::Arg(decls) => apply_arg(state, decls)?,
    };
    Ok(Applied {
        created_by,
        changes,
    })
}

/// ENV: every word is expanded with the variables as they were before the instruction:
/// `ENV abc=bye def=$abc` gives def the old abc (Docker's reference, "Environment
/// replacement").
fn apply_env(
    state: &mut StageState,
    pairs: &[(String, String)],
    changes: &mut Vec<(&'static str, String)>,
) -> Result<String, MetaError> {
    let mut expanded = Vec::new();
    for (k, v) in pairs {
        let k = state.expand(k)?;
        let v = state.expand(v)?;
        if k.is_empty() {
            return Err(MetaError::BlankName("ENV"));
        }
        expanded.push((k, v));
    }
    let mut parts = Vec::new();
    for (k, v) in expanded {
        set_env(&mut state.spec.config.env, &k, &v);
        parts.push(format!("{k}={v}"));
        changes.push(("env-name", k));
        changes.push(("env-value", v));
    }
    Ok(format!("ENV {}", parts.join(" ")))
}

fn apply_label(
    state: &mut StageState,
    pairs: &[(String, String)],
    changes: &mut Vec<(&'static str, String)>,
) -> Result<String, MetaError> {
    let mut parts = Vec::new();
    for (k, v) in pairs {
        let k = state.expand(k)?;
        let v = state.expand(v)?;
        if k.is_empty() {
            return Err(MetaError::BlankName("LABEL"));
        }
        state
            .spec
            .config
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.clone(), v.clone());
        parts.push(format!("{k}={v}"));
        changes.push(("label-name", k));
        changes.push(("label-value", v));
    }
    Ok(format!("LABEL {}", parts.join(" ")))
}

fn apply_entrypoint(
    state: &mut StageState,
    e: &Command,
    changes: &mut Vec<(&'static str, String)>,
) -> String {
    let v = command(state, e);
    // `ENTRYPOINT []` clears the entrypoint (no empty list in the config).
    state.spec.config.entrypoint = (!v.is_empty()).then(|| v.clone());
    // A CMD inherited from the base image is dropped by a new ENTRYPOINT.
    if !state.cmd_set {
        state.spec.config.cmd = None;
    }
    changes.push(("entrypoint", json(&state.spec.config.entrypoint)));
    changes.push(("cmd", json(&state.spec.config.cmd)));
    format!(
        "ENTRYPOINT {}",
        serde_json::to_string(&v).unwrap_or_default()
    )
}

fn apply_expose(
    state: &mut StageState,
    ports: &[String],
    changes: &mut Vec<(&'static str, String)>,
) -> Result<String, MetaError> {
    let mut all = Vec::new();
    for p in ports {
        let p = state.expand(p)?;
        for port in p.split_whitespace() {
            all.extend(expose_ports(port)?);
        }
    }
    let map = state
        .spec
        .config
        .exposed_ports
        .get_or_insert_with(BTreeMap::new);
    for p in &all {
        map.insert(p.clone(), Empty {});
        changes.push(("expose", p.clone()));
    }
    Ok(format!("EXPOSE {}", all.join(" ")))
}

fn apply_volume(
    state: &mut StageState,
    volumes: &[String],
    changes: &mut Vec<(&'static str, String)>,
) -> Result<String, MetaError> {
    let mut all = Vec::new();
    for vol in volumes {
        let vol = state.expand(vol)?;
        if vol.trim().is_empty() {
            return Err(MetaError::EmptyVolume);
        }
        all.push(vol);
    }
    let map = state.spec.config.volumes.get_or_insert_with(BTreeMap::new);
    for vol in &all {
        map.insert(vol.clone(), Empty {});
        changes.push(("volume", vol.clone()));
    }
    Ok(format!(
        "VOLUME {}",
        serde_json::to_string(&all).unwrap_or_default()
    ))
}

/// WORKDIR, as BuildKit: an absolute path is kept as written (`/etc/` stays `/etc/`), a
/// relative one is joined to the current one and cleaned.
fn apply_workdir(
    state: &mut StageState,
    w: &str,
    changes: &mut Vec<(&'static str, String)>,
) -> Result<String, MetaError> {
    let p = state.expand(w)?;
    let wd = if p.starts_with('/') {
        p
    } else {
        let base = if state.spec.config.working_dir.is_empty() {
            "/"
        } else {
            state.spec.config.working_dir.as_str()
        };
        clean_abs(&format!("{base}/{p}"))
    };
    state.spec.config.working_dir = wd.clone();
    changes.push(("workdir", wd.clone()));
    Ok(format!("WORKDIR {wd}"))
}

/// ARG: the planner chose each value's origin; defaults are expanded before any of this
/// instruction's ARGs is declared, as ENV's values are: `ARG P=1 Q=${P}x` gives Q the P of
/// before.
fn apply_arg(state: &mut StageState, decls: &[ArgDecl]) -> Result<String, MetaError> {
    let mut values = Vec::new();
    for d in decls {
        let value = match &d.value {
            ArgValue::BuildArg(v) => Some(v.clone()),
            ArgValue::Default(word) => Some(state.expand(word)?),
            ArgValue::Global(v) => v.clone(),
        };
        values.push((d.name.clone(), value));
    }
    let mut parts = Vec::new();
    for (name, value) in values {
        state.args.retain(|(k, _)| k != &name);
        parts.push(match &value {
            Some(v) => format!("{name}={v}"),
            None => name.clone(),
        });
        state.args.push((name, value));
    }
    Ok(format!("ARG {}", parts.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::spec::ImageSpec;
    use crate::planner::ops::OpKind;
    use crate::planner::{plan, PlanOptions};

    /// The metadata ops of `src` (a stage body) with `build_args`, the global ARG `GLOBAL=g`
    /// declared before it.
    fn meta_ops(src: &str, build_args: &[(&str, &str)]) -> (char, Vec<MetaOp>) {
        let df =
            crate::planner::parse_bytes(format!("ARG GLOBAL=g\nFROM scratch\n{src}").as_bytes())
                .unwrap();
        let opts = PlanOptions {
            build_args: build_args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target: None,
            ..Default::default()
        };
        let p = plan(&df, &opts).unwrap();
        let ops = p.stages[0]
            .ops
            .iter()
            .filter_map(|op| match &op.kind {
                OpKind::Meta(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        (df.escape, ops)
    }

    fn run(src: &str, build_args: &[(&str, &str)]) -> (StageState, Vec<String>) {
        let (escape, ops) = meta_ops(src, build_args);
        let mut st = StageState::new(ImageSpec::scratch(), Vec::new(), escape);
        st.spec.config.cmd = Some(vec!["base-cmd".into()]);
        let hist = ops
            .iter()
            .map(|op| apply(&mut st, op).unwrap().created_by)
            .collect();
        (st, hist)
    }

    #[test]
    fn env_arg_and_expansion_rules() {
        let (st, hist) = run(
            "ARG V=1\nARG GLOBAL\nARG FROMCLI=x\nENV A=$V B=\"${A}-two\" C=$GLOBAL\nENV V=env\nLABEL l=$V\n",
            &[("FROMCLI", "cli")],
        );
        // B's ${A} is the A of before this ENV: unset.
        assert_eq!(st.spec.config.env, vec!["A=1", "B=-two", "C=g", "V=env"]);
        assert_eq!(st.spec.config.labels.as_ref().unwrap()["l"], "env");
        assert_eq!(st.arg_values()["FROMCLI"], "cli");
        assert_eq!(hist[0], "ARG V=1");
        // ARG values reach RUN unless ENV overrides them; PATH gets Docker's default.
        let env = st.run_env();
        assert!(env.contains(&"FROMCLI=cli".to_string()));
        assert!(!env.contains(&"V=1".to_string()));
        assert!(env[0].starts_with("PATH=/usr/local/sbin"));
    }

    // Regression: ENV and ARG expanded each pair with the pairs before it in the same
    // instruction already set (`ENV abc=bye def=$abc` gave def=bye; Docker gives hello).
    #[test]
    fn one_instruction_expands_with_the_variables_of_before_it() {
        let (st, hist) = run(
            "ENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\nARG P=1 Q=${P}x\nARG R=$P\n",
            &[],
        );
        assert_eq!(st.spec.config.env, vec!["abc=bye", "def=hello", "ghi=bye"]);
        assert_eq!(hist[1], "ENV abc=bye def=hello");
        let args = st.arg_values();
        assert_eq!(
            (&args["P"][..], &args["Q"][..], &args["R"][..]),
            ("1", "x", "1")
        );
    }

    // Regression: `CMD []` and `ENTRYPOINT []` wrote empty lists into the config, where
    // Docker's builders leave the field out.
    #[test]
    fn empty_exec_forms_unset_cmd_and_entrypoint() {
        let (st, _) = run("ENTRYPOINT [\"/e\"]\nCMD [\"x\"]\nENTRYPOINT []\n", &[]);
        assert_eq!(st.spec.config.entrypoint, None);
        assert_eq!(st.spec.config.cmd.as_deref(), Some(&["x".to_string()][..]));
        let (st, _) = run("CMD []\nENTRYPOINT []\n", &[]);
        assert_eq!(
            (st.spec.config.cmd, st.spec.config.entrypoint),
            (None, None)
        );
    }

    // The cache key of a metadata step is its parent's key and `changes`: they must say
    // everything the step did to the config, or two different configs would share a key.
    #[test]
    fn changes_name_every_value_a_step_sets() {
        let changes = |src: &str| {
            let (escape, ops) = meta_ops(src, &[]);
            let mut st = StageState::new(ImageSpec::scratch(), Vec::new(), escape);
            st.spec.config.cmd = Some(vec!["base-cmd".into()]);
            ops.iter()
                .map(|op| apply(&mut st, op).unwrap().changes)
                .last()
                .unwrap()
        };
        let s = |v: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            v.iter().map(|(k, v)| (*k, v.to_string())).collect()
        };
        assert_eq!(
            changes("ARG V=x\nENV A=$V B=2\n"),
            s(&[
                ("env-name", "A"),
                ("env-value", "x"),
                ("env-name", "B"),
                ("env-value", "2")
            ])
        );
        // The CMD an ENTRYPOINT keeps or drops depends on the stage: it is in the change.
        assert_eq!(
            changes("ENTRYPOINT [\"/e\"]\n"),
            s(&[("entrypoint", "[\"/e\"]"), ("cmd", "null")])
        );
        assert_eq!(
            changes("CMD [\"c\"]\nENTRYPOINT [\"/e\"]\n"),
            s(&[("entrypoint", "[\"/e\"]"), ("cmd", "[\"c\"]")])
        );
        assert_eq!(changes("ARG V=1\n"), s(&[]));
        assert_eq!(
            changes("LABEL a=b\n"),
            s(&[("label-name", "a"), ("label-value", "b")])
        );
        // BuildKit keeps an absolute WORKDIR as written (util/system NormalizePath).
        assert_eq!(changes("WORKDIR /a/../b\n"), s(&[("workdir", "/a/../b")]));
        assert_eq!(changes("WORKDIR /etc/\n"), s(&[("workdir", "/etc/")]));
    }

    #[test]
    fn set_env_replaces_like_env_set() {
        for (env, k) in [
            (vec!["A=1", "AB=2", "B"], "A"),
            (vec!["A=1", "AB=2", "B"], "B"),
            (vec!["A=1", "AB=2", "B"], "AB"),
            (vec!["A=1", "AB=2", "B"], "C"),
            (vec!["A=b=1"], "A=b"),
            (vec!["A=1"], ""),
        ] {
            let mut a: Vec<String> = env.iter().map(|s| s.to_string()).collect();
            let mut c = crate::image::spec::RunConfig {
                env: a.clone(),
                ..Default::default()
            };
            c.env_set(k, "new");
            set_env(&mut a, k, "new");
            assert_eq!(a, c.env, "{env:?} {k}");
        }
    }

    // Regression (issue 15): nothing bounded what metadata added to the config.
    #[test]
    fn metadata_stops_at_its_limit() {
        let (escape, ops) = meta_ops("ENV A=1\n", &[]);
        let mut st = StageState::new(ImageSpec::scratch(), Vec::new(), escape);
        st.metadata_bytes = MAX_METADATA_BYTES - 10;
        assert!(apply(&mut st, &ops[0]).is_ok());
        let e = apply(&mut st, &ops[0]).unwrap_err();
        // A kind, not a string: the limit is what failed.
        assert!(matches!(e, MetaError::TooLarge { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("larger than kiln's limit of 8 MiB"), "{e}");
    }

    #[test]
    fn cmd_entrypoint_shell_workdir_expose() {
        let (st, _) = run("ENTRYPOINT [\"/e\"]\n", &[]);
        assert_eq!(
            st.spec.config.cmd, None,
            "inherited CMD is reset by ENTRYPOINT"
        );
        let (st, _) = run(
            "CMD echo hi\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT run me\nWORKDIR /a\nWORKDIR b/../c\n\
             EXPOSE 80 53/UDP 8000-8001\nUSER app:app\nSTOPSIGNAL SIGINT\nHEALTHCHECK CMD true\n",
            &[],
        );
        let c = &st.spec.config;
        assert_eq!(
            c.cmd.as_deref(),
            Some(&["/bin/sh".to_string(), "-c".into(), "echo hi".into()][..])
        );
        assert_eq!(
            c.entrypoint.as_deref(),
            Some(&["/bin/bash".to_string(), "-c".into(), "run me".into()][..])
        );
        assert_eq!(c.working_dir, "/a/c");
        let ports: Vec<&String> = c.exposed_ports.as_ref().unwrap().keys().collect();
        assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
        assert_eq!(c.user, "app:app");
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(
            c.healthcheck.as_ref().unwrap().test,
            vec!["CMD-SHELL", "true"]
        );
        assert_eq!(expose_ports("80/xyz"), Err(PortError::Proto("xyz".into())));
        assert_eq!(expose_ports("9-8"), Err(PortError::Range("9-8".into())));
    }
}
