//! `--change` instructions (`docker import -c`, `docker commit -c`): Dockerfile
//! instructions that edit an image config without building a layer.
//!
//! Docker accepts CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD,
//! STOPSIGNAL, USER, VOLUME and WORKDIR, parsed with the Dockerfile parser
//! and applied as its classic builder does: ENV, LABEL, EXPOSE, USER,
//! WORKDIR, VOLUME and STOPSIGNAL words go through shell-word expansion
//! against the image's environment as it was before the instruction, a shell
//! form CMD or ENTRYPOINT becomes `["/bin/sh", "-c", …]`, and an ENTRYPOINT
//! clears a CMD that the same changes did not set.
//!
//! The config is handled as JSON (`serde_json::Map` of the `config` object)
//! because `Healthcheck` and `OnBuild` are Docker fields that oci-spec's
//! typed config does not keep.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::error::{ImageOpsError, Result};
use crate::parser::shell::{Lexer, ShellError};
use crate::parser::{self, Node};

/// Most ports one EXPOSE range may open (`EXPOSE 1-65535` is allowed, as in Docker).
const MAX_PORTS: usize = 65_536;

/// Parsed `--change` instructions, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    items: Vec<(String, Node)>,
}

impl Changes {
    /// Parses each change as Dockerfile text; every instruction must be one
    /// Docker allows in a change.
    pub fn parse(changes: &[String]) -> Result<Changes> {
        let mut items = Vec::new();
        for change in changes {
            let bad = |e: ChangeError| invalid(change, e);
            let df = parser::parse(change).map_err(|e| bad(ChangeError::Parse(e)))?;
            if df.children.is_empty() {
                return Err(bad(ChangeError::Empty));
            }
            for node in df.children {
                let kw = node.instruction();
                if !matches!(
                    kw.as_str(),
                    "cmd"
                        | "entrypoint"
                        | "env"
                        | "expose"
                        | "healthcheck"
                        | "label"
                        | "onbuild"
                        | "stopsignal"
                        | "user"
                        | "volume"
                        | "workdir"
                ) {
                    return Err(bad(ChangeError::NotAllowed(kw.to_uppercase())));
                }
                items.push((change.clone(), node));
            }
        }
        Ok(Changes { items })
    }

    /// True when there are no changes.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Applies the changes, in order, to the `config` object of an image
    /// config (`Cmd`, `Env`, … in Docker's capitalisation).
    pub fn apply(&self, config: &mut Map<String, Value>) -> Result<()> {
        let mut cmd_set = false;
        for (change, node) in &self.items {
            apply_one(config, node, &mut cmd_set).map_err(|e| invalid(change, e))?;
        }
        Ok(())
    }
}

/// The crate-level error for change `change`.
fn invalid(change: &str, e: ChangeError) -> ImageOpsError {
    ImageOpsError::Change {
        change: change.to_owned(),
        source: e,
    }
}

/// Why one `--change` instruction cannot be applied; the message is the reason Docker gives.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The text is not a Dockerfile instruction.
    #[error(transparent)]
    Parse(parser::ParseError),
    /// The text holds no instruction.
    #[error("no instruction")]
    Empty,
    /// The instruction is not one a change may use.
    #[error("{0} is not a valid change command")]
    NotAllowed(String),
    /// Flags on an instruction other than HEALTHCHECK.
    #[error("{0} takes no flags")]
    NoFlags(String),
    /// An instruction without its arguments.
    #[error("{0} requires at least one argument")]
    NoArguments(&'static str),
    /// USER, WORKDIR or STOPSIGNAL without exactly one argument.
    #[error("{0} requires exactly one argument")]
    OneArgument(&'static str),
    /// ENV or LABEL with a name and no value.
    #[error("{0} needs a name and a value")]
    NameValue(&'static str),
    /// ENV or LABEL with an empty name.
    #[error("{0} names must not be empty")]
    EmptyName(&'static str),
    /// A word could not be expanded against the image's environment.
    #[error(transparent)]
    Expand(#[from] ShellError),
    /// EXPOSE given a host port.
    #[error("EXPOSE does not support port mappings: {0:?}")]
    PortMapping(String),
    /// EXPOSE given a protocol other than tcp, udp and sctp.
    #[error("invalid protocol {proto:?} in port {spec:?}")]
    Protocol {
        /// The protocol.
        proto: String,
        /// The whole port.
        spec: String,
    },
    /// EXPOSE given something that is not a port or range.
    #[error("invalid port {0:?}: expected PORT[-PORT][/PROTOCOL]")]
    Port(String),
    /// VOLUME given an empty path.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// STOPSIGNAL given no signal Docker knows.
    #[error("invalid signal: {0}")]
    Signal(String),
    /// ONBUILD without a trigger.
    #[error("ONBUILD requires an instruction")]
    NoTrigger,
    /// ONBUILD with a trigger that is not allowed.
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    Trigger(String),
    /// A HEALTHCHECK that cannot be read.
    #[error(transparent)]
    Healthcheck(#[from] HealthcheckError),
}

/// Why a `--change` HEALTHCHECK cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthcheckError {
    /// HEALTHCHECK alone.
    #[error("HEALTHCHECK requires an argument")]
    NoArgument,
    /// `HEALTHCHECK NONE` with arguments or flags.
    #[error("HEALTHCHECK NONE takes no arguments")]
    NoneArguments,
    /// A type other than CMD or NONE.
    #[error("unknown type {0:?} in HEALTHCHECK (try CMD)")]
    Type(String),
    /// `HEALTHCHECK CMD` with nothing after it.
    #[error("missing command after HEALTHCHECK CMD")]
    MissingCommand,
    /// A flag without `=value`.
    #[error("HEALTHCHECK flag {0:?} needs a value")]
    FlagValue(String),
    /// A flag HEALTHCHECK does not take.
    #[error("unknown HEALTHCHECK flag --{0}")]
    UnknownFlag(String),
    /// A `--retries` that is not an integer.
    #[error("invalid --retries value {value:?}")]
    Retries {
        /// The value given.
        value: String,
        /// Why it is not an integer.
        #[source]
        source: std::num::ParseIntError,
    },
    /// A negative `--retries`.
    #[error("--retries cannot be negative")]
    NegativeRetries,
    /// A duration flag that is not a Go duration.
    #[error(transparent)]
    Duration(#[from] crate::common::duration::DurationError),
    /// A non-zero duration below one millisecond, negative ones included.
    #[error("--{0} cannot be less than 1ms")]
    TooShort(String),
}

type Applied = std::result::Result<(), ChangeError>;

/// The image's environment as a lookup table (later entries win, as in a process).
fn env_of(config: &Map<String, Value>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let Some(Value::Array(items)) = config.get("Env") {
        for item in items.iter().filter_map(Value::as_str) {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    env
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().cloned().map(Value::String).collect())
}

/// The command of a CMD/ENTRYPOINT/HEALTHCHECK: exec form as is, shell form
/// wrapped in the image's shell.
fn command(config: &Map<String, Value>, node: &Node, args: &[String]) -> Vec<String> {
    if node.json {
        return args.to_vec();
    }
    let mut shell: Vec<String> = match config.get("Shell") {
        Some(Value::Array(s)) if !s.is_empty() => s
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => vec!["/bin/sh".to_owned(), "-c".to_owned()],
    };
    shell.push(args.join(" "));
    shell
}

/// Shell-word expansion against the image's environment as it was before the instruction.
struct Words {
    lexer: Lexer,
    env: BTreeMap<String, String>,
}

impl Words {
    fn of(config: &Map<String, Value>) -> Words {
        Words {
            lexer: Lexer::new('\\'),
            env: env_of(config),
        }
    }

    fn expand(&self, w: &str) -> std::result::Result<String, ChangeError> {
        Ok(self.lexer.process_word(w, &self.env)?)
    }

    /// The instruction's only argument, expanded.
    fn one_arg(&self, node: &Node, name: &'static str) -> std::result::Result<String, ChangeError> {
        match node.args.as_slice() {
            [a] => self.expand(a),
            _ => Err(ChangeError::OneArgument(name)),
        }
    }

    /// ENV/LABEL's `name value` pairs (the parser gives name, value, separator), expanded.
    fn pairs(
        &self,
        node: &Node,
        name: &'static str,
    ) -> std::result::Result<Vec<(String, String)>, ChangeError> {
        if node.args.is_empty() {
            return Err(ChangeError::NoArguments(name));
        }
        let mut out = Vec::new();
        for kv in node.args.chunks(3) {
            let [k, v, ..] = kv else {
                return Err(ChangeError::NameValue(name));
            };
            let (k, v) = (self.expand(k)?, self.expand(v)?);
            if k.is_empty() {
                return Err(ChangeError::EmptyName(name));
            }
            out.push((k, v));
        }
        Ok(out)
    }
}

/// Adds `items` to the object at `key` of the config, made one if missing or of another
/// type.
fn insert_into(
    config: &mut Map<String, Value>,
    key: &str,
    items: impl IntoIterator<Item = (String, Value)>,
) {
    let v = config
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    if let Value::Object(m) = v {
        m.extend(items);
    }
}

fn apply_one(config: &mut Map<String, Value>, node: &Node, cmd_set: &mut bool) -> Applied {
    let kw = node.instruction();
    if !node.flags.is_empty() && kw != "healthcheck" {
        return Err(ChangeError::NoFlags(kw.to_uppercase()));
    }
    let words = Words::of(config);
    match kw.as_str() {
        "cmd" => {
            config.insert("Cmd".into(), strings(&command(config, node, &node.args)));
            *cmd_set = true;
        }
        "entrypoint" => set_entrypoint(config, node, *cmd_set),
        "env" => set_env(config, words.pairs(node, "ENV")?),
        "label" => {
            let labels = words.pairs(node, "LABEL")?;
            insert_into(
                config,
                "Labels",
                labels.into_iter().map(|(k, v)| (k, Value::String(v))),
            );
        }
        "expose" => expose(config, node, &words)?,
        "user" => {
            config.insert("User".into(), Value::String(words.one_arg(node, "USER")?));
        }
        "workdir" => {
            let dir = words.one_arg(node, "WORKDIR")?;
            let current = config
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("");
            config.insert("WorkingDir".into(), Value::String(workdir(current, &dir)));
        }
        "volume" => add_volumes(config, node, &words)?,
        "stopsignal" => {
            let sig = words.one_arg(node, "STOPSIGNAL")?;
            check_signal(&sig)?;
            config.insert("StopSignal".into(), Value::String(sig));
        }
        "onbuild" => add_trigger(config, node)?,
        "healthcheck" => {
            config.insert("Healthcheck".into(), healthcheck(node)?);
        }
        other => return Err(ChangeError::NotAllowed(other.to_uppercase())),
    }
    Ok(())
}

/// ENTRYPOINT: set (or cleared, without arguments); it clears a CMD these changes did not
/// set.
fn set_entrypoint(config: &mut Map<String, Value>, node: &Node, cmd_set: bool) {
    let ep = if node.args.is_empty() {
        Vec::new()
    } else {
        command(config, node, &node.args)
    };
    config.insert("Entrypoint".into(), strings(&ep));
    if !cmd_set {
        config.remove("Cmd");
    }
}

/// ENV: each name replaces its earlier value in place, or is added at the end.
fn set_env(config: &mut Map<String, Value>, pairs: Vec<(String, String)>) {
    let mut list: Vec<String> = match config.get("Env") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    for (k, v) in pairs {
        let entry = format!("{k}={v}");
        let prefix = format!("{k}=");
        match list.iter_mut().find(|e| e.starts_with(&prefix) || **e == k) {
            Some(e) => *e = entry,
            None => list.push(entry),
        }
    }
    config.insert("Env".into(), strings(&list));
}

fn expose(config: &mut Map<String, Value>, node: &Node, words: &Words) -> Applied {
    if node.args.is_empty() {
        return Err(ChangeError::NoArguments("EXPOSE"));
    }
    let mut ports = Vec::new();
    for a in &node.args {
        ports.extend(port_specs(&words.expand(a)?)?);
    }
    insert_into(
        config,
        "ExposedPorts",
        ports.into_iter().map(|p| (p, json!({}))),
    );
    Ok(())
}

fn add_volumes(config: &mut Map<String, Value>, node: &Node, words: &Words) -> Applied {
    if node.args.is_empty() {
        return Err(ChangeError::NoArguments("VOLUME"));
    }
    let mut vols = Vec::new();
    for a in &node.args {
        let v = words.expand(a)?;
        if v.trim().is_empty() {
            return Err(ChangeError::EmptyVolume);
        }
        vols.push((v, json!({})));
    }
    insert_into(config, "Volumes", vols);
    Ok(())
}

/// ONBUILD: the trigger's text, as written, appended to the image's triggers.
fn add_trigger(config: &mut Map<String, Value>, node: &Node) -> Applied {
    let Some(next) = &node.next else {
        return Err(ChangeError::NoTrigger);
    };
    let inner = next.instruction();
    if matches!(inner.as_str(), "onbuild" | "from" | "maintainer") {
        return Err(ChangeError::Trigger(inner.to_uppercase()));
    }
    let original = node.original.trim_start();
    let trigger = original
        .get(node.keyword.len()..)
        .unwrap_or("")
        .trim()
        .to_owned();
    let list = config
        .entry("OnBuild")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    if let Some(a) = list.as_array_mut() {
        a.push(Value::String(trigger));
    }
    Ok(())
}

/// `WORKDIR` semantics: a relative path is joined to the current one; the
/// result is cleaned (`/a/./b/../c` → `/a/c`).
fn workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_owned()
    } else {
        format!("{}/{dir}", if current.is_empty() { "/" } else { current })
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Docker's `nat.ParsePortSpecs` for EXPOSE: `80`, `80/udp`, `8000-8002/tcp`
/// → `80/tcp`, … (ranges expanded).
fn port_specs(spec: &str) -> std::result::Result<Vec<String>, ChangeError> {
    let bad = || ChangeError::Port(spec.to_owned());
    if spec.contains(':') {
        return Err(ChangeError::PortMapping(spec.to_owned()));
    }
    let (range, proto) = match spec.split_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(ChangeError::Protocol {
            proto,
            spec: spec.to_owned(),
        });
    }
    let num = |s: &str| s.parse::<u16>().map_err(|_| bad());
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let p = num(range)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    let out: Vec<String> = (lo..=hi).map(|p| format!("{p}/{proto}")).collect();
    debug_assert!(out.len() <= MAX_PORTS);
    Ok(out)
}

/// Docker's `signal.ParseSignal`: a number, or a name with or without `SIG`.
fn check_signal(sig: &str) -> Applied {
    if let Ok(n) = sig.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(ChangeError::Signal(sig.to_owned()))
        };
    }
    let upper = sig.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rt = |base: &str| {
        name.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(['+', '-'])
                    .and_then(|n| n.parse::<u8>().ok())
                    .is_some_and(|n| n <= 15)
        })
    };
    if rt("RTMIN")
        || rt("RTMAX")
        || format!("SIG{name}")
            .parse::<nix::sys::signal::Signal>()
            .is_ok()
    {
        Ok(())
    } else {
        Err(ChangeError::Signal(sig.to_owned()))
    }
}

/// HEALTHCHECK [--interval=… --timeout=… --start-period=… --start-interval=… --retries=…] CMD …|NONE.
fn healthcheck(node: &Node) -> std::result::Result<Value, HealthcheckError> {
    let Some((kind, rest)) = node.args.split_first() else {
        return Err(HealthcheckError::NoArgument);
    };
    let mut hc = Map::new();
    match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !rest.is_empty() || !node.flags.is_empty() {
                return Err(HealthcheckError::NoneArguments);
            }
            hc.insert("Test".into(), json!(["NONE"]));
            return Ok(Value::Object(hc));
        }
        "CMD" => {}
        other => return Err(HealthcheckError::Type(other.to_string())),
    }
    if rest.is_empty() {
        return Err(HealthcheckError::MissingCommand);
    }
    let test: Vec<String> = if node.json {
        std::iter::once("CMD".to_owned())
            .chain(rest.iter().cloned())
            .collect()
    } else {
        vec!["CMD-SHELL".to_owned(), rest.join(" ")]
    };
    hc.insert("Test".into(), strings(&test));
    for flag in &node.flags {
        let (name, value) = flag
            .trim_start_matches('-')
            .split_once('=')
            .ok_or_else(|| HealthcheckError::FlagValue(flag.clone()))?;
        let key = match name {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: i64 = value.parse().map_err(|source| HealthcheckError::Retries {
                    value: value.to_string(),
                    source,
                })?;
                if n < 0 {
                    return Err(HealthcheckError::NegativeRetries);
                }
                if n > 0 {
                    hc.insert("Retries".into(), json!(n));
                }
                continue;
            }
            other => return Err(HealthcheckError::UnknownFlag(other.to_string())),
        };
        let d = crate::common::duration::parse_duration(value)?;
        // Negative durations are below 1ms too, as in Docker.
        if d != 0 && d < 1_000_000 {
            return Err(HealthcheckError::TooShort(name.to_string()));
        }
        if d > 0 {
            hc.insert(key.into(), json!(d));
        }
    }
    Ok(Value::Object(hc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_one_err(text: &str) -> ChangeError {
        let df = parser::parse(text).expect("parses");
        let mut config = Map::new();
        apply_one(&mut config, &df.children[0], &mut false).expect_err(text)
    }

    #[test]
    fn change_errors_are_typed_kinds() {
        assert!(
            matches!(apply_one_err("EXPOSE 8080:80"), ChangeError::PortMapping(p) if p == "8080:80")
        );
        assert!(matches!(
            apply_one_err("EXPOSE 80/icmp"),
            ChangeError::Protocol { proto, .. } if proto == "icmp"
        ));
        assert!(matches!(apply_one_err("EXPOSE 9-1"), ChangeError::Port(_)));
        assert!(matches!(
            apply_one_err("STOPSIGNAL SIGNOPE"),
            ChangeError::Signal(_)
        ));
        assert!(matches!(
            apply_one_err("WORKDIR"),
            ChangeError::OneArgument("WORKDIR")
        ));
        assert!(matches!(
            apply_one_err("ONBUILD FROM x"),
            ChangeError::Trigger(t) if t == "FROM"
        ));
        assert!(matches!(
            apply_one_err("HEALTHCHECK --retries=-1 CMD true"),
            ChangeError::Healthcheck(HealthcheckError::NegativeRetries)
        ));
        assert!(matches!(
            apply_one_err("RUN true"),
            ChangeError::NotAllowed(k) if k == "RUN"
        ));
    }

    fn apply(base: Value, changes: &[&str]) -> Value {
        let mut config = base.as_object().cloned().unwrap_or_default();
        let changes: Vec<String> = changes.iter().map(|s| s.to_string()).collect();
        Changes::parse(&changes)
            .unwrap()
            .apply(&mut config)
            .unwrap();
        Value::Object(config)
    }

    fn apply_err(changes: &[&str]) -> String {
        let changes: Vec<String> = changes.iter().map(|s| s.to_string()).collect();
        match Changes::parse(&changes) {
            Err(e) => e.to_string(),
            Ok(c) => c.apply(&mut Map::new()).unwrap_err().to_string(),
        }
    }

    #[test]
    fn applies_each_instruction_like_docker() {
        let cases: &[(&[&str], Value)] = &[
            (&["CMD [\"sh\"]"], json!({"Cmd": ["sh"]})),
            (
                &["CMD echo hi"],
                json!({"Cmd": ["/bin/sh", "-c", "echo hi"]}),
            ),
            (
                &["ENV A=1 B=\"x y\"", "ENV C=$A-${B}"],
                json!({"Env": ["A=1", "B=x y", "C=1-x y"]}),
            ),
            (
                &["ENV OLD style value"],
                json!({"Env": ["OLD=style value"]}),
            ),
            (&["ENV A=1", "ENV A=2"], json!({"Env": ["A=2"]})),
            (
                &["LABEL a=b \"c d\"=e"],
                json!({"Labels": {"a": "b", "c d": "e"}}),
            ),
            (
                &["EXPOSE 80 53/UDP 8000-8001"],
                json!({"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}}),
            ),
            (&["USER app:app"], json!({"User": "app:app"})),
            (
                &["WORKDIR /a", "WORKDIR b/../c", "WORKDIR ./d"],
                json!({"WorkingDir": "/a/c/d"}),
            ),
            (
                &["VOLUME [\"/data\"]", "VOLUME /a /b"],
                json!({"Volumes": {"/data": {}, "/a": {}, "/b": {}}}),
            ),
            (&["STOPSIGNAL SIGINT"], json!({"StopSignal": "SIGINT"})),
            (&["STOPSIGNAL 9"], json!({"StopSignal": "9"})),
            (
                &["ONBUILD   RUN  echo  hi"],
                json!({"OnBuild": ["RUN  echo  hi"]}),
            ),
            (
                &["HEALTHCHECK --interval=5s --retries=3 CMD [\"true\"]"],
                json!({"Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000i64, "Retries": 3}}),
            ),
            (
                &["HEALTHCHECK --timeout=1m30s CMD curl -f x"],
                json!({"Healthcheck": {"Test": ["CMD-SHELL", "curl -f x"], "Timeout": 90_000_000_000i64}}),
            ),
            (
                &["HEALTHCHECK NONE"],
                json!({"Healthcheck": {"Test": ["NONE"]}}),
            ),
            // ENTRYPOINT clears a CMD set before these changes, not one they set.
            (&["ENTRYPOINT [\"a\"]"], json!({"Entrypoint": ["a"]})),
            (
                &["CMD [\"b\"]", "ENTRYPOINT [\"a\"]"],
                json!({"Cmd": ["b"], "Entrypoint": ["a"]}),
            ),
        ];
        for (changes, want) in cases {
            let got = apply(json!({"Cmd": ["old"]}), changes);
            let mut want = want.clone();
            if !changes.iter().any(|c| c.starts_with("ENTRYPOINT")) {
                want.as_object_mut()
                    .unwrap()
                    .entry("Cmd")
                    .or_insert(json!(["old"]));
            }
            assert_eq!(got, want, "{changes:?}");
        }
    }

    #[test]
    fn shell_form_uses_the_image_shell() {
        let got = apply(json!({"Shell": ["/bin/bash", "-eu", "-c"]}), &["CMD echo"]);
        assert_eq!(got["Cmd"], json!(["/bin/bash", "-eu", "-c", "echo"]));
    }

    #[test]
    fn rejects_what_docker_rejects() {
        let cases: &[(&[&str], &str)] = &[
            (&["RUN echo"], "RUN is not a valid change command"),
            (&["FROM x"], "FROM is not a valid change command"),
            (&[""], "no instruction"),
            (&["EXPOSE 80:80"], "port mappings"),
            (&["EXPOSE 70000"], "invalid port"),
            (&["EXPOSE 80/icmp"], "invalid protocol"),
            (&["STOPSIGNAL SIGNOPE"], "invalid signal"),
            (&["VOLUME \"\""], "empty string"),
            (&["ONBUILD ONBUILD RUN x"], "isn't allowed"),
            (&["HEALTHCHECK --interval=1us CMD x"], "less than 1ms"),
            (&["HEALTHCHECK --bogus=1 CMD x"], "unknown HEALTHCHECK flag"),
            (&["USER --chown=1 x"], "takes no flags"),
        ];
        for (changes, want) in cases {
            let err = apply_err(changes);
            assert!(err.contains(want), "{changes:?}: {err}");
        }
    }

    #[test]
    fn healthcheck_errors_are_typed_kinds() {
        use crate::common::duration::DurationError;
        let hc = |text: &str| match apply_one_err(text) {
            ChangeError::Healthcheck(e) => e,
            other => panic!("{text}: not a healthcheck error: {other:?}"),
        };
        assert_eq!(hc("HEALTHCHECK NONE x"), HealthcheckError::NoneArguments);
        assert_eq!(
            hc("HEALTHCHECK FOO x"),
            HealthcheckError::Type("FOO".into())
        );
        assert_eq!(
            hc("HEALTHCHECK --bogus=1 CMD x"),
            HealthcheckError::UnknownFlag("bogus".into())
        );
        assert_eq!(
            hc("HEALTHCHECK --interval=1us CMD x"),
            HealthcheckError::TooShort("interval".into())
        );
        assert_eq!(
            hc("HEALTHCHECK --timeout=-1s CMD x"),
            HealthcheckError::TooShort("timeout".into())
        );
        assert_eq!(
            hc("HEALTHCHECK --interval=5 CMD x"),
            HealthcheckError::Duration(DurationError::MissingUnit("5".into()))
        );
        let e = hc("HEALTHCHECK --retries=x CMD x");
        assert!(matches!(&e, HealthcheckError::Retries { value, .. } if value == "x"));
        let cause = std::error::Error::source(&e).expect("the integer error");
        assert_eq!(cause.to_string(), "invalid digit found in string");
        assert_eq!(e.to_string(), "invalid --retries value \"x\"");
    }

    #[test]
    fn a_change_that_does_not_parse_keeps_the_parse_error() {
        let err = Changes::parse(&["ENV k".to_owned()]).unwrap_err();
        let ImageOpsError::Change {
            source: ChangeError::Parse(e),
            ..
        } = &err
        else {
            panic!("not a parse error: {err:?}");
        };
        assert_eq!(e.message, "ENV must have two arguments");
        assert_eq!(e.location.line, 1);
        assert_eq!(
            err.to_string(),
            "invalid change \"ENV k\": ENV must have two arguments"
        );
    }

    #[test]
    fn the_crate_error_keeps_the_change_error_as_its_source() {
        let changes = vec!["EXPOSE 8080:80".to_owned()];
        let err = Changes::parse(&changes)
            .unwrap()
            .apply(&mut Map::new())
            .unwrap_err();
        let ImageOpsError::Change { change, source } = &err else {
            panic!("not a change error: {err:?}");
        };
        assert_eq!(change, "EXPOSE 8080:80");
        assert!(matches!(source, ChangeError::PortMapping(p) if p == "8080:80"));
        let cause = std::error::Error::source(&err).expect("a source");
        assert_eq!(cause.to_string(), source.to_string());
        assert_eq!(
            err.to_string(),
            "invalid change \"EXPOSE 8080:80\": EXPOSE does not support port mappings: \"8080:80\""
        );
        // Refused while parsing too: the kind is kept.
        let err = Changes::parse(&["RUN true".to_owned()]).unwrap_err();
        assert!(matches!(
            err,
            ImageOpsError::Change { source: ChangeError::NotAllowed(k), .. } if k == "RUN"
        ));
    }

    #[test]
    fn parses_go_durations() {
        use crate::common::duration::parse_duration;
        assert_eq!(parse_duration("1h2m3.5s"), Ok(3_723_500_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in ["", "5", "1x", "h", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
