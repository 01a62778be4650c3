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
use crate::parser::shell::Lexer;
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
            let bad = |reason: String| ImageOpsError::Change {
                change: change.clone(),
                reason,
            };
            let df = parser::parse(change).map_err(|e| bad(e.message.clone()))?;
            if df.children.is_empty() {
                return Err(bad("no instruction".to_owned()));
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
                    return Err(bad(format!(
                        "{} is not a valid change command",
                        kw.to_uppercase()
                    )));
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
            apply_one(config, node, &mut cmd_set).map_err(|reason| ImageOpsError::Change {
                change: change.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

type Applied = std::result::Result<(), String>;

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

fn apply_one(config: &mut Map<String, Value>, node: &Node, cmd_set: &mut bool) -> Applied {
    let lexer = Lexer::new('\\');
    let env = env_of(config);
    let expand = |w: &str| lexer.process_word(w, &env).map_err(|e| e.to_string());
    let one_arg = |name: &str| -> std::result::Result<String, String> {
        match node.args.as_slice() {
            [a] => expand(a),
            _ => Err(format!("{name} requires exactly one argument")),
        }
    };
    let kw = node.instruction();
    if !node.flags.is_empty() && kw != "healthcheck" {
        return Err(format!("{} takes no flags", kw.to_uppercase()));
    }
    match kw.as_str() {
        "cmd" => {
            config.insert("Cmd".into(), strings(&command(config, node, &node.args)));
            *cmd_set = true;
        }
        "entrypoint" => {
            let ep = if node.args.is_empty() {
                Vec::new()
            } else {
                command(config, node, &node.args)
            };
            config.insert("Entrypoint".into(), strings(&ep));
            if !*cmd_set {
                config.remove("Cmd");
            }
        }
        "env" => {
            if node.args.is_empty() {
                return Err("ENV requires at least one argument".into());
            }
            let mut list: Vec<String> = match config.get("Env") {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            for kv in node.args.chunks(3) {
                let [k, v, ..] = kv else {
                    return Err("ENV needs a name and a value".into());
                };
                let (k, v) = (expand(k)?, expand(v)?);
                if k.is_empty() {
                    return Err("ENV names must not be empty".into());
                }
                let entry = format!("{k}={v}");
                let prefix = format!("{k}=");
                match list.iter_mut().find(|e| e.starts_with(&prefix) || **e == k) {
                    Some(e) => *e = entry,
                    None => list.push(entry),
                }
            }
            config.insert("Env".into(), strings(&list));
        }
        "label" => {
            if node.args.is_empty() {
                return Err("LABEL requires at least one argument".into());
            }
            let labels = config
                .entry("Labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if !labels.is_object() {
                *labels = Value::Object(Map::new());
            }
            for kv in node.args.chunks(3) {
                let [k, v, ..] = kv else {
                    return Err("LABEL needs a name and a value".into());
                };
                let (k, v) = (expand(k)?, expand(v)?);
                if k.is_empty() {
                    return Err("LABEL names must not be empty".into());
                }
                if let Some(m) = labels.as_object_mut() {
                    m.insert(k, Value::String(v));
                }
            }
        }
        "expose" => {
            if node.args.is_empty() {
                return Err("EXPOSE requires at least one argument".into());
            }
            let ports = config
                .entry("ExposedPorts")
                .or_insert_with(|| Value::Object(Map::new()));
            if !ports.is_object() {
                *ports = Value::Object(Map::new());
            }
            for a in &node.args {
                for p in port_specs(&expand(a)?)? {
                    if let Some(m) = ports.as_object_mut() {
                        m.insert(p, json!({}));
                    }
                }
            }
        }
        "user" => {
            config.insert("User".into(), Value::String(one_arg("USER")?));
        }
        "workdir" => {
            let dir = one_arg("WORKDIR")?;
            let current = config
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("");
            config.insert("WorkingDir".into(), Value::String(workdir(current, &dir)));
        }
        "volume" => {
            if node.args.is_empty() {
                return Err("VOLUME requires at least one argument".into());
            }
            let vols = config
                .entry("Volumes")
                .or_insert_with(|| Value::Object(Map::new()));
            if !vols.is_object() {
                *vols = Value::Object(Map::new());
            }
            for a in &node.args {
                let v = expand(a)?;
                if v.trim().is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                if let Some(m) = vols.as_object_mut() {
                    m.insert(v, json!({}));
                }
            }
        }
        "stopsignal" => {
            let sig = one_arg("STOPSIGNAL")?;
            check_signal(&sig)?;
            config.insert("StopSignal".into(), Value::String(sig));
        }
        "onbuild" => {
            let Some(next) = &node.next else {
                return Err("ONBUILD requires an instruction".into());
            };
            let inner = next.instruction();
            if matches!(inner.as_str(), "onbuild" | "from" | "maintainer") {
                return Err(format!(
                    "{} isn't allowed as an ONBUILD trigger",
                    inner.to_uppercase()
                ));
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
        }
        "healthcheck" => {
            config.insert("Healthcheck".into(), healthcheck(node)?);
        }
        other => {
            return Err(format!(
                "{} is not a valid change command",
                other.to_uppercase()
            ))
        }
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
fn port_specs(spec: &str) -> std::result::Result<Vec<String>, String> {
    let bad = || format!("invalid port {spec:?}: expected PORT[-PORT][/PROTOCOL]");
    if spec.contains(':') {
        return Err(format!("EXPOSE does not support port mappings: {spec:?}"));
    }
    let (range, proto) = match spec.split_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid protocol {proto:?} in port {spec:?}"));
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
            Err(format!("invalid signal: {sig}"))
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
        Err(format!("invalid signal: {sig}"))
    }
}

/// HEALTHCHECK [--interval=… --timeout=… --start-period=… --start-interval=… --retries=…] CMD …|NONE.
fn healthcheck(node: &Node) -> std::result::Result<Value, String> {
    let Some((kind, rest)) = node.args.split_first() else {
        return Err("HEALTHCHECK requires an argument".into());
    };
    let mut hc = Map::new();
    match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !rest.is_empty() || !node.flags.is_empty() {
                return Err("HEALTHCHECK NONE takes no arguments".into());
            }
            hc.insert("Test".into(), json!(["NONE"]));
            return Ok(Value::Object(hc));
        }
        "CMD" => {}
        other => return Err(format!("unknown type {other:?} in HEALTHCHECK (try CMD)")),
    }
    if rest.is_empty() {
        return Err("missing command after HEALTHCHECK CMD".into());
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
            .ok_or_else(|| format!("HEALTHCHECK flag {flag:?} needs a value"))?;
        let key = match name {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| format!("invalid --retries value {value:?}"))?;
                if n < 0 {
                    return Err("--retries cannot be negative".into());
                }
                if n > 0 {
                    hc.insert("Retries".into(), json!(n));
                }
                continue;
            }
            other => return Err(format!("unknown HEALTHCHECK flag --{other}")),
        };
        let d = crate::common::duration::parse_duration(value)?;
        if d != 0 && d < 1_000_000 {
            return Err(format!("--{name} cannot be less than 1ms"));
        }
        if d < 0 {
            return Err(format!("--{name} cannot be negative"));
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
