//! The resolved form of a stage's instructions: what `build` executes, as BuildKit's LLB sits
//! between its Dockerfile frontend and its solver.
//!
//! The planner lowers each parsed instruction once into an [`Op`]: RUN's flags typed, its
//! heredocs folded into the script, its `--mount` values read into typed mounts, COPY and ADD
//! flags typed, and which value an `ARG` takes (a `--build-arg`, its default, or the global
//! ARG's) decided. Words that name variables stay words: the image's ENV, known only once the
//! base image is read, feeds their expansion, which the build does step by step.

use std::collections::BTreeMap;

use crate::image::spec::HealthConfig;
use crate::parser::instructions::{
    parse_instruction, Health, Instruction, InstructionError, ShellOrExec,
};
use crate::parser::Location;

pub use crate::parser::instructions::{parse_checksum, ChecksumError};
use crate::parser::runflags::{self, MountSpec};
pub use crate::parser::runflags::{Mount, MountType, RunFlagError, Sharing};

/// One operation of a stage.
#[derive(Debug, Clone)]
pub struct Op {
    /// What it does.
    pub kind: OpKind,
    /// The instruction keyword (`ENV`, `RUN`, …), as the cache key and messages name it.
    pub name: &'static str,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text.
    pub code: String,
}

/// The three kinds of operations: configuration only, a command, a copy.
#[derive(Debug, Clone)]
pub enum OpKind {
    /// A change to the image configuration only.
    Meta(MetaOp),
    /// `RUN`.
    Run(RunOp),
    /// `COPY` or `ADD`.
    Copy(CopyOp),
}

/// A command: an exec array, or a line for the stage's shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run as given, without a shell.
    Exec(Vec<String>),
    /// Run by the stage's shell (`SHELL`, or `/bin/sh -c`).
    Shell(String),
}

impl Command {
    fn of(c: &ShellOrExec) -> Command {
        match c {
            ShellOrExec::Exec(v) => Command::Exec(v.clone()),
            ShellOrExec::Shell(s) => Command::Shell(s.clone()),
        }
    }
}

/// Where an `ARG`'s value comes from, decided by the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// `--build-arg NAME=value`: wins over everything.
    BuildArg(String),
    /// The default written in the Dockerfile: a word, expanded when the step runs.
    Default(String),
    /// `ARG NAME` with no default re-declares the global ARG of that name (its value, or
    /// none).
    Global(Option<String>),
}

/// One name an `ARG` declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// Its value.
    pub value: ArgValue,
}

/// A change to the image configuration. Strings are Dockerfile words (variables not yet
/// expanded) where the instruction expands them.
#[derive(Debug, Clone)]
pub enum MetaOp {
    /// `ENV`: key and value words.
    Env(Vec<(String, String)>),
    /// `LABEL`: key and value words.
    Label(Vec<(String, String)>),
    /// `MAINTAINER`: the author, as written.
    Maintainer(String),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `EXPOSE`: port words.
    Expose(Vec<String>),
    /// `VOLUME`: path words.
    Volume(Vec<String>),
    /// `USER`: a word.
    User(String),
    /// `WORKDIR`: a word (it also makes the directory).
    Workdir(String),
    /// `SHELL`.
    Shell(Vec<String>),
    /// `STOPSIGNAL`: a word.
    Stopsignal(String),
    /// `HEALTHCHECK`, as the image configuration holds it.
    Healthcheck(HealthConfig),
    /// `ONBUILD`: the trigger's text, kept for images built on this one.
    Onbuild(String),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The build's network (`kiln build --network`).
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network (needs `--allow network.host`).
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// The usual sandbox.
    #[default]
    Sandbox,
    /// `insecure` (kiln runs it in the usual sandbox).
    Insecure,
}

/// `RUN`.
#[derive(Debug, Clone)]
pub struct RunOp {
    /// The command, heredocs already folded into a shell script.
    pub command: Command,
    /// `--mount` values.
    pub mounts: Vec<MountOp>,
    /// `--network`.
    pub network: Network,
    /// `--security`.
    pub security: Security,
}

/// A `RUN --mount`: typed when the planner could read it, or the value to read once its
/// variables are expanded.
#[derive(Debug, Clone)]
pub struct MountOp {
    raw: String,
    from: Option<String>,
    /// The typed mount when the value has nothing to expand ([`MountSpec::parse_literal`]).
    resolved: Option<Mount>,
}

impl MountOp {
    /// Read a `--mount` value: typed now when it holds no variables, so a bad one is refused
    /// before any step runs.
    fn plan(spec: &MountSpec, escape: char) -> Result<MountOp, RunFlagError> {
        let resolved = spec.parse_literal(escape).transpose()?;
        Ok(MountOp {
            raw: spec.raw.clone(),
            from: spec.from.clone(),
            resolved,
        })
    }

    /// The value as written.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The stage or image of `from=` (never a variable).
    pub fn from(&self) -> Option<&str> {
        self.from.as_deref()
    }

    /// The typed mount, its variables expanded with `expand` when it has any.
    pub fn resolve(
        &self,
        expand: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Mount, RunFlagError> {
        match &self.resolved {
            Some(m) => Ok(m.clone()),
            None => runflags::parse_mount(&self.raw, expand),
        }
    }
}

/// COPY or ADD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// `COPY`: context, stage or image sources only.
    Copy,
    /// `ADD`: URLs and git repositories too, local archives unpacked.
    Add,
}

/// A heredoc source of COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineSource {
    /// The file name (the heredoc's delimiter).
    pub path: String,
    /// The body.
    pub data: String,
    /// Whether variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// `COPY` and `ADD`, their flags typed. Paths are words, expanded when the step runs.
#[derive(Debug, Clone)]
pub struct CopyOp {
    /// Which instruction.
    pub kind: CopyKind,
    /// Source words.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub contents: Vec<InlineSource>,
    /// The destination word.
    pub dest: String,
    /// `--from` (COPY): a stage or an image.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link` (kiln's layers are independent already).
    pub link: bool,
    /// `--parents` (COPY).
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// ADD: unpack local archives (`--unpack`, true unless set false).
    pub unpack: bool,
    /// ADD `--checksum`: the digest a URL's content must have.
    pub checksum: Option<String>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: bool,
}

/// Why an instruction cannot be lowered to an operation.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A `RUN --mount` value is invalid.
    #[error("{source}")]
    Mount {
        /// What is wrong with it.
        #[source]
        source: RunFlagError,
        /// Where.
        location: Location,
    },
    /// An `ADD --checksum` value is invalid.
    #[error("{source}")]
    Checksum {
        /// What is wrong with it.
        #[source]
        source: ChecksumError,
        /// Where.
        location: Location,
    },
    /// An instruction that starts a stage, inside one (an ONBUILD trigger).
    #[error("{name} cannot appear inside a stage")]
    NotInStage {
        /// The keyword.
        name: &'static str,
        /// Where.
        location: Location,
    },
}

impl OpError {
    /// Where in the Dockerfile the problem is.
    pub fn location(&self) -> Location {
        match self {
            OpError::Mount { location, .. }
            | OpError::Checksum { location, .. }
            | OpError::NotInStage { location, .. } => *location,
        }
    }
}

/// What the lowering needs from the plan: the build args and the global ARGs' values.
#[derive(Debug, Clone, Default)]
pub struct ArgScope {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Global ARGs with their values.
    pub global_args: Vec<(String, Option<String>)>,
    /// The Dockerfile's escape character.
    pub escape: char,
}

impl ArgScope {
    /// Lower one instruction of a stage.
    pub fn lower(&self, ins: &Instruction) -> Result<Op, OpError> {
        let kind = match ins {
            Instruction::Run(r) => OpKind::Run(RunOp {
                command: run_command(&r.cmd, &r.files),
                mounts: r
                    .mounts
                    .iter()
                    .map(|m| MountOp::plan(m, self.escape))
                    .collect::<Result<_, _>>()
                    .map_err(|source| OpError::Mount {
                        source,
                        location: r.location,
                    })?,
                network: match r.network {
                    runflags::NetworkMode::Default => Network::Default,
                    runflags::NetworkMode::None => Network::None,
                    runflags::NetworkMode::Host => Network::Host,
                },
                security: match r.security {
                    runflags::SecurityMode::Sandbox => Security::Sandbox,
                    runflags::SecurityMode::Insecure => Security::Insecure,
                },
            }),
            Instruction::Copy(c) => OpKind::Copy(CopyOp {
                kind: CopyKind::Copy,
                sources: c.sources.clone(),
                contents: inline_sources(&c.contents),
                dest: c.dest.clone(),
                from: c.from.clone(),
                chown: c.chown.clone(),
                chmod: c.chmod.clone(),
                link: c.link,
                parents: c.parents,
                exclude: c.exclude.clone(),
                unpack: false,
                checksum: None,
                keep_git_dir: false,
            }),
            Instruction::Add(a) => OpKind::Copy(CopyOp {
                checksum: self.checksum(a.checksum.as_deref(), a.location)?,
                kind: CopyKind::Add,
                sources: a.sources.clone(),
                contents: inline_sources(&a.contents),
                dest: a.dest.clone(),
                from: None,
                chown: a.chown.clone(),
                chmod: a.chmod.clone(),
                link: a.link,
                parents: false,
                exclude: a.exclude.clone(),
                unpack: a.unpack.unwrap_or(true),
                keep_git_dir: a.keep_git_dir,
            }),
            Instruction::From(f) => {
                return Err(OpError::NotInStage {
                    name: ins.name(),
                    location: f.location,
                })
            }
            other => OpKind::Meta(self.meta(other)),
        };
        Ok(Op {
            kind,
            name: ins.name(),
            location: ins.location(),
            code: ins.code().to_string(),
        })
    }

    /// An `ADD --checksum` word, judged now when it has no variables.
    fn checksum(&self, word: Option<&str>, location: Location) -> Result<Option<String>, OpError> {
        if let Some(w) = word.filter(|w| crate::parser::instructions::is_literal(w, self.escape)) {
            parse_checksum(w).map_err(|source| OpError::Checksum { source, location })?;
        }
        Ok(word.map(str::to_string))
    }

    fn meta(&self, ins: &Instruction) -> MetaOp {
        let pairs = |kvs: &[crate::parser::instructions::KeyValue]| {
            kvs.iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect()
        };
        match ins {
            Instruction::Env(e) => MetaOp::Env(pairs(&e.pairs)),
            Instruction::Label(l) => MetaOp::Label(pairs(&l.pairs)),
            Instruction::Maintainer(m) => MetaOp::Maintainer(m.maintainer.clone()),
            Instruction::Cmd(c) => MetaOp::Cmd(Command::of(&c.cmd)),
            Instruction::Entrypoint(e) => MetaOp::Entrypoint(Command::of(&e.cmd)),
            Instruction::Expose(x) => MetaOp::Expose(x.ports.clone()),
            Instruction::Volume(v) => MetaOp::Volume(v.volumes.clone()),
            Instruction::User(u) => MetaOp::User(u.user.clone()),
            Instruction::Workdir(w) => MetaOp::Workdir(w.path.clone()),
            Instruction::Shell(s) => MetaOp::Shell(s.shell.clone()),
            Instruction::Stopsignal(s) => MetaOp::Stopsignal(s.signal.clone()),
            Instruction::Healthcheck(h) => MetaOp::Healthcheck(health_config(&h.health)),
            Instruction::Onbuild(o) => MetaOp::Onbuild(o.expression.clone()),
            Instruction::Arg(a) => MetaOp::Arg(
                a.args
                    .iter()
                    .map(|d| ArgDecl {
                        name: d.name.clone(),
                        value: self.arg_value(&d.name, d.default.as_deref()),
                    })
                    .collect(),
            ),
            Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_) => {
                unreachable!("lower() handles filesystem instructions")
            }
            Instruction::From(_) => unreachable!("lower() refuses FROM"),
        }
    }

    /// A `--build-arg` wins; then the default; `ARG X` alone takes the global ARG's value.
    fn arg_value(&self, name: &str, default: Option<&str>) -> ArgValue {
        match (self.build_args.get(name), default) {
            (Some(v), _) => ArgValue::BuildArg(v.clone()),
            (None, Some(d)) => ArgValue::Default(d.to_string()),
            (None, None) => ArgValue::Global(
                self.global_args
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| v.clone()),
            ),
        }
    }

    /// Lower the ONBUILD triggers of a stage's base image (known only once the build has read
    /// that image) into operations: the narrow way `build` gets them parsed.
    pub fn lower_triggers(&self, triggers: &[String]) -> Result<Vec<Op>, TriggerError> {
        let mut ops = Vec::new();
        for t in triggers {
            let df = crate::parser::parse(t)?;
            for node in &df.children {
                let ins = parse_instruction(node).map_err(|source| TriggerError::Instruction {
                    trigger: t.clone(),
                    message: source.buildkit_message(),
                    source: Box::new(source),
                })?;
                ops.push(self.lower(&ins)?);
            }
        }
        Ok(ops)
    }
}

/// Why an ONBUILD trigger cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// Its text is not a Dockerfile line.
    #[error(transparent)]
    Parse(#[from] crate::parser::ParseError),
    /// Its instruction is invalid.
    #[error("ONBUILD trigger {trigger:?}: {message}")]
    Instruction {
        /// The trigger's text.
        trigger: String,
        /// BuildKit's wording of the problem.
        message: String,
        /// The problem.
        #[source]
        source: Box<InstructionError>,
    },
    /// It cannot be lowered to an operation.
    #[error(transparent)]
    Op(#[from] OpError),
}

/// A RUN's command: `RUN <<EOF` alone runs the heredoc's body as the script (BuildKit does
/// the same for shells without heredoc support); otherwise the shell reads the heredocs.
fn run_command(cmd: &ShellOrExec, files: &[crate::parser::instructions::InlineFile]) -> Command {
    let line = match cmd {
        ShellOrExec::Exec(v) => return Command::Exec(v.clone()),
        ShellOrExec::Shell(line) => line,
    };
    Command::Shell(match files {
        [] => line.clone(),
        [only]
            if crate::parser::heredoc::parse_word(line.trim())
                .ok()
                .flatten()
                .is_some() =>
        {
            only.data.clone()
        }
        files => {
            let mut s = line.clone();
            for f in files {
                s.push('\n');
                s.push_str(&f.data);
                s.push_str(&f.name);
            }
            s
        }
    })
}

fn inline_sources(contents: &[crate::parser::instructions::SourceContent]) -> Vec<InlineSource> {
    contents
        .iter()
        .map(|c| InlineSource {
            path: c.path.clone(),
            data: c.data.clone(),
            expand: c.expand,
        })
        .collect()
}

fn health_config(h: &Health) -> HealthConfig {
    match h {
        Health::None => HealthConfig {
            test: vec!["NONE".to_string()],
            ..Default::default()
        },
        Health::Cmd(c) => HealthConfig {
            test: c.test.clone(),
            interval: c.interval.as_nanos() as i64,
            timeout: c.timeout.as_nanos() as i64,
            start_period: c.start_period.as_nanos() as i64,
            start_interval: c.start_interval.as_nanos() as i64,
            retries: c.retries,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(src: &str) -> Result<Op, OpError> {
        let df = crate::parser::parse(src).unwrap();
        let ins = parse_instruction(&df.children[0]).unwrap();
        ArgScope {
            escape: df.escape,
            ..Default::default()
        }
        .lower(&ins)
    }

    #[test]
    fn run_mounts_are_typed_when_literal_and_deferred_with_variables() {
        let op = lower("RUN --mount=type=cache,target=/c --network=none make\n").unwrap();
        let OpKind::Run(r) = op.kind else {
            panic!("not a run")
        };
        assert_eq!(r.network, Network::None);
        assert_eq!(r.command, Command::Shell("make".into()));
        assert!(r.mounts[0].resolved.is_some());
        let m = r.mounts[0]
            .resolve(&|_| Err("not expanded".into()))
            .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        let op = lower("RUN --mount=type=$T,target=/c make\n").unwrap();
        let OpKind::Run(r) = op.kind else {
            panic!("not a run")
        };
        let m = r.mounts[0]
            .resolve(&|w| Ok(w.replace("$T", "tmpfs")))
            .unwrap();
        assert_eq!(m.kind, MountType::Tmpfs);
    }

    #[test]
    fn a_bad_mount_is_an_op_error_at_its_line() {
        let df =
            crate::parser::parse("FROM a\nRUN --mount=type=cache,size=1m,target=/c x\n").unwrap();
        let ins = parse_instruction(&df.children[1]).unwrap();
        let e = ArgScope::default().lower(&ins).unwrap_err();
        assert!(matches!(
            e,
            OpError::Mount {
                source: RunFlagError::KeyNotForType { .. },
                ..
            }
        ));
        assert_eq!(e.location().line, 2);
    }

    #[test]
    fn a_literal_bad_checksum_is_an_op_error() {
        let e = lower("ADD --checksum=sha256:abc http://e/x /x\n").unwrap_err();
        assert!(matches!(e, OpError::Checksum { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "invalid --checksum=sha256:abc: expected sha256:<64 hexadecimal digits>"
        );
        assert!(lower("ADD --checksum=$SUM http://e/x /x\n").is_ok());
    }

    #[test]
    fn arg_values_follow_build_args_defaults_and_globals() {
        let scope = ArgScope {
            build_args: BTreeMap::from([("A".to_string(), "cli".to_string())]),
            global_args: vec![("G".into(), Some("g".into()))],
            escape: '\\',
        };
        let df = crate::parser::parse("ARG A=x B=$A G\n").unwrap();
        let ins = parse_instruction(&df.children[0]).unwrap();
        let Ok(Op {
            kind: OpKind::Meta(MetaOp::Arg(decls)),
            ..
        }) = scope.lower(&ins)
        else {
            panic!("not an ARG")
        };
        let values: Vec<&ArgValue> = decls.iter().map(|d| &d.value).collect();
        assert_eq!(
            values,
            [
                &ArgValue::BuildArg("cli".into()),
                &ArgValue::Default("$A".into()),
                &ArgValue::Global(Some("g".into()))
            ]
        );
    }

    #[test]
    fn triggers_are_lowered_and_bad_ones_named() {
        let scope = ArgScope::default();
        let ops = scope
            .lower_triggers(&["RUN echo hi".into(), "ENV A=1".into()])
            .unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].name, "ENV");
        let e = scope.lower_triggers(&["EXPOSE".into()]).unwrap_err();
        assert!(matches!(e, TriggerError::Instruction { .. }), "{e}");
        assert!(
            e.to_string().starts_with("ONBUILD trigger \"EXPOSE\": "),
            "{e}"
        );
    }
}
