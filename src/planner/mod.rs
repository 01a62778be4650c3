//! Dockerfile to build graph: stages, their bases and dependencies, the target stage, pruning
//! of stages the target does not need, and the build args each part can see.
//!
//! The plan is pure data: variables in instructions are expanded later, step by step, when
//! the environment of the image being built is known (ENV of a base image feeds expansion).

pub mod ops;

/// The frontend's vocabulary that the build speaks when it executes ops: where an op came
/// from in the Dockerfile, the parse error of a whole Dockerfile, and variable expansion,
/// which runs step by step because a base image's ENV is only known when its stage runs.
/// `build` takes these from here and never reads Dockerfile syntax itself.
pub use crate::parser::{parse_bytes, Location, ParseError};

/// Docker's shell-word expansion (`$V`, `${V:-w}`, quotes), as the build applies it to an
/// op's words with the environment of the image being built.
pub mod expand {
    pub use crate::parser::shell::{Env, Lexer, ShellError};
}

use std::collections::{BTreeMap, BTreeSet};

use crate::common::platform::{Platform, PlatformError};
use crate::parser::instructions::InstructionError;
use crate::parser::instructions::{ArgDef, Instruction};
use crate::parser::shell::Lexer;
use crate::parser::stages::{parse_stages, Stage};
use crate::parser::Dockerfile;

use ops::{ArgScope, Op, OpError};

/// The proxy build args: RUN steps see them without an `ARG`, and they never reach the image.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Whether a build arg is known without an `ARG` (passing it never triggers the unused
/// build-arg warning).
pub fn is_predefined(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
        || name == "SOURCE_DATE_EPOCH"
        || crate::parser::check::PREDEFINED_ARGS.contains(&name)
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An image reference, variables already expanded.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
    /// A named context (`--build-context NAME=…`), by its normalized name: a directory or an
    /// image, which the build reads.
    Context(String),
}

/// Where a `COPY --from` / `RUN --mount=from=` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A stage of this Dockerfile.
    Stage(usize),
    /// An image reference.
    Image(String),
    /// A named context, by its normalized name.
    Context(String),
}

/// One stage of the plan.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// Position in the Dockerfile.
    pub index: usize,
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    /// What it starts from.
    pub base: Base,
    /// The platform the stage is built for: its `FROM --platform` (expanded and normalized),
    /// the platform of the stage it starts from, or else the build's target platform. Its
    /// base image is resolved for it, its RUN steps run on it (emulated when foreign) and its
    /// cache keys start from it.
    pub platform: Platform,
    /// Whether the platform was asked for (`FROM --platform`, `--platform`, or a stage built
    /// on such a stage): a base image of another platform is then an error, where otherwise
    /// the stage takes the base image's platform, as Docker does (with a warning).
    pub platform_given: bool,
    /// The stage's operations, after FROM; lowered only for the stages the target needs
    /// (empty for the others, which a build never runs).
    pub ops: Vec<Op>,
    /// Stages this one needs (base, `COPY --from`, `RUN --mount=from=`).
    pub deps: BTreeSet<usize>,
    /// Images named by `COPY --from` / `--mount from=`.
    pub image_sources: BTreeSet<String>,
    /// Where its FROM is.
    pub location: Location,
    /// The FROM line's text.
    pub code: String,
    /// A named context of the stage's name replaces it, as in BuildKit: its base is that
    /// context and it has no ops.
    pub replaced: bool,
}

/// A planned build.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every stage of the Dockerfile.
    pub stages: Vec<StagePlan>,
    /// The stage whose result is the image.
    pub target: usize,
    /// The stages to build, dependencies first; stages the target does not need are absent.
    pub order: Vec<usize>,
    /// `--build-arg` names no needed stage or global ARG declares (Docker warns about them).
    pub unused_build_args: Vec<String>,
    /// The build args and the global ARGs (before the first FROM, after BuildKit's automatic
    /// platform ARGs) with their values for this build: what ops are lowered with, ONBUILD
    /// triggers (lowered at build time) included.
    pub scope: ArgScope,
    /// The named contexts' names (see [`PlanOptions::contexts`]).
    pub contexts: BTreeSet<String>,
    /// The platform kiln runs on (`BUILDPLATFORM`).
    pub build_platform: Platform,
    /// The platform the build is for (`TARGETPLATFORM`; `--platform`, else the host's).
    pub target_platform: Platform,
    /// Whether `--platform` was given.
    pub target_given: bool,
}

impl Plan {
    /// A `--from` value, expanded: a stage, a named context or an image (see
    /// [`resolve_source`]).
    pub fn resolve_source(&self, value: &str, location: Location) -> Result<Source, PlanError> {
        let names: Vec<Option<String>> = self.stages.iter().map(|s| s.name.clone()).collect();
        resolve_source(value, &names, &self.contexts, location)
    }
}

/// Options that shape a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// The names of the named contexts (`--build-context`), normalized by [`context_name`].
    pub contexts: BTreeSet<String>,
    /// `--platform`: the target platform (`None`: the host's).
    pub platform: Option<Platform>,
}

/// The name a named context is known by, as BuildKit normalizes it: a valid image name,
/// in its familiar form, without a `:latest` tag (`docker.io/library/alpine:latest` and
/// `alpine` are the same context). `None` for a name that is no valid image name.
pub fn context_name(name: &str) -> Option<String> {
    let r = crate::image::Reference::parse_normalized_named(name).ok()?;
    let familiar = r.familiar_string();
    Some(match familiar.strip_suffix(":latest") {
        Some(s) => s.to_string(),
        None => familiar,
    })
}

/// Why a Dockerfile cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An instruction is invalid.
    #[error(transparent)]
    Instruction(#[from] InstructionError),
    /// An instruction cannot be lowered to an operation (a bad `RUN --mount` value).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The Dockerfile has no FROM.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `--target` names no stage.
    #[error("failed to reach build target {0} in Dockerfile")]
    NoTarget(String),
    /// A stage needs itself.
    #[error("circular dependency detected on stage: {name}")]
    Cycle {
        /// The stage.
        name: String,
        /// Where.
        location: Location,
    },
    /// A variable in FROM or --from cannot be expanded.
    #[error("{source}")]
    Expand {
        /// What went wrong.
        #[source]
        source: crate::parser::shell::ShellError,
        /// Where.
        location: Location,
    },
    /// A FROM base name is empty after expansion.
    #[error("base name ({code}) should not be blank")]
    BlankBase {
        /// The FROM line.
        code: String,
        /// Where.
        location: Location,
    },
    /// `FROM --platform=` is not `os/arch[/variant]` after expansion.
    #[error("{source}")]
    Platform {
        /// What is wrong with it.
        #[source]
        source: PlatformError,
        /// Where.
        location: Location,
    },
    /// `COPY --from=N` with N out of range.
    #[error("invalid stage index {index}")]
    BadIndex {
        /// The index given.
        index: String,
        /// Where.
        location: Location,
    },
}

impl PlanError {
    /// Where the problem is, when it is in the Dockerfile.
    pub fn location(&self) -> Option<Location> {
        match self {
            PlanError::Instruction(e) => Some(e.location),
            PlanError::Op(e) => Some(e.location()),
            PlanError::Cycle { location, .. }
            | PlanError::Expand { location, .. }
            | PlanError::BlankBase { location, .. }
            | PlanError::Platform { location, .. }
            | PlanError::BadIndex { location, .. } => Some(*location),
            PlanError::NoStages | PlanError::NoTarget(_) => None,
        }
    }
}

/// BuildKit's automatic ARGs: the build platform (the machine kiln runs on), the target
/// platform (`--platform`) and the target stage, sorted by name.
pub fn automatic_args(build: &Platform, target: &Platform, stage: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        ("BUILDPLATFORM", build.to_string()),
        ("BUILDOS", build.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", build.architecture.clone()),
        ("BUILDVARIANT", build.variant_str().to_string()),
        ("TARGETPLATFORM", target.to_string()),
        ("TARGETOS", target.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", target.architecture.clone()),
        ("TARGETVARIANT", target.variant_str().to_string()),
        ("TARGETSTAGE", stage.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    debug_assert!(out
        .iter()
        .all(|(k, _)| crate::parser::check::PREDEFINED_ARGS.contains(&k.as_str())));
    out.sort();
    out
}

/// Values of the global ARGs: defaults expanded in order, overridden by `--build-arg`.
fn resolve_globals(
    defs: &[ArgDef],
    build_args: &BTreeMap<String, String>,
    automatic: Vec<(String, String)>,
    location: Location,
) -> Result<Vec<(String, Option<String>)>, PlanError> {
    let lexer = Lexer::new('\\');
    // BuildKit's automatic platform ARGs come first.
    let mut out: Vec<(String, Option<String>)> =
        automatic.into_iter().map(|(k, v)| (k, Some(v))).collect();
    for d in defs {
        let value = match build_args.get(&d.name) {
            Some(v) => Some(v.clone()),
            None => match &d.default {
                Some(def) => {
                    let env = ArgEnv(&out);
                    Some(
                        lexer
                            .process_word(def, &env)
                            .map_err(|source| PlanError::Expand { source, location })?,
                    )
                }
                // `ARG TARGETARCH` with no default declares the automatic value, as in
                // BuildKit (and keeps a value declared before).
                None => out
                    .iter()
                    .rev()
                    .find(|(n, _)| n == &d.name)
                    .and_then(|(_, v)| v.clone()),
            },
        };
        out.retain(|(n, _)| n != &d.name);
        out.push((d.name.clone(), value));
    }
    Ok(out)
}

/// ARGs with a value as the variables of an expansion, looked up in place (copying them for
/// each default made thousands of global ARGs quadratic).
struct ArgEnv<'a>(&'a [(String, Option<String>)]);

impl crate::parser::shell::Env for ArgEnv<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && v.is_some())
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Plan a parsed Dockerfile.
pub fn plan(df: &Dockerfile, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let (stages, meta) = parse_stages(df)?;
    if stages.is_empty() {
        return Err(PlanError::NoStages);
    }
    let meta_defs: Vec<ArgDef> = meta.iter().flat_map(|a| a.args.clone()).collect();
    let meta_loc = meta.first().map(|a| a.location).unwrap_or_default();
    let target_name = opts.target.clone().unwrap_or_default();
    let build_platform = Platform::host();
    let target_platform = opts
        .platform
        .as_ref()
        .map_or_else(Platform::host, Platform::normalized);
    let automatic = automatic_args(&build_platform, &target_platform, &target_name);
    let globals = resolve_globals(&meta_defs, &opts.build_args, automatic, meta_loc)?;
    let env = ArgEnv(&globals);
    let lexer = Lexer::new(df.escape);
    let expand = |word: &str, location: Location| -> Result<String, PlanError> {
        lexer
            .process_word(word, &env)
            .map_err(|source| PlanError::Expand { source, location })
    };

    let mut planned: Vec<StagePlan> = Vec::with_capacity(stages.len());
    for (index, st) in stages.iter().enumerate() {
        let target = (&target_platform, opts.platform.is_some());
        let sp = plan_stage(index, st, &planned, &opts.contexts, &expand, target)?;
        planned.push(sp);
    }
    // COPY --from and --mount from= may name any stage, later ones included.
    let names: Vec<Option<String>> = planned.iter().map(|s| s.name.clone()).collect();
    for (sp, st) in planned.iter_mut().zip(&stages) {
        if sp.replaced {
            continue;
        }
        for (word, location) in sources_of(&st.commands) {
            let value = expand(&word, location)?;
            match resolve_source(&value, &names, &opts.contexts, location)? {
                Source::Stage(i) => {
                    sp.deps.insert(i);
                }
                Source::Image(r) => {
                    sp.image_sources.insert(r);
                }
                Source::Context(_) => {}
            }
        }
    }

    let target = match &opts.target {
        None => planned.len() - 1,
        Some(t) => {
            let lower = t.to_lowercase();
            planned
                .iter()
                .rposition(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| PlanError::NoTarget(t.clone()))?
        }
    };
    let order = topo_order(&planned, target)?;

    let scope = ArgScope {
        build_args: opts.build_args.clone(),
        global_args: globals,
        escape: df.escape,
    };
    let mut declared: BTreeSet<&str> = meta_defs.iter().map(|d| d.name.as_str()).collect();
    for &i in &order {
        if planned[i].replaced {
            continue;
        }
        planned[i].ops = stages[i]
            .commands
            .iter()
            .map(|c| scope.lower(c))
            .collect::<Result<_, _>>()?;
        for c in &stages[i].commands {
            if let Instruction::Arg(a) = c {
                declared.extend(a.args.iter().map(|d| d.name.as_str()));
            }
        }
    }
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !declared.contains(k.as_str()) && !is_predefined(k))
        .cloned()
        .collect();

    Ok(Plan {
        stages: planned,
        target,
        order,
        unused_build_args,
        scope,
        contexts: opts.contexts.clone(),
        build_platform,
        target_platform,
        target_given: opts.platform.is_some(),
    })
}

fn plan_stage(
    index: usize,
    st: &Stage,
    earlier: &[StagePlan],
    contexts: &BTreeSet<String>,
    expand: &dyn Fn(&str, Location) -> Result<String, PlanError>,
    (target_platform, target_given): (&Platform, bool),
) -> Result<StagePlan, PlanError> {
    // As BuildKit: a named context of a stage's name replaces the whole stage, its FROM and
    // its instructions.
    if let Some(name) = st.name.as_deref().and_then(context_name) {
        if contexts.contains(&name) {
            return Ok(StagePlan {
                index,
                name: st.name.clone(),
                base: Base::Context(name),
                platform: target_platform.clone(),
                platform_given: target_given,
                ops: Vec::new(),
                deps: BTreeSet::new(),
                image_sources: BTreeSet::new(),
                location: st.location,
                code: st.code.clone(),
                replaced: true,
            });
        }
    }
    let base_name = expand(&st.base, st.location)?;
    if base_name.is_empty() {
        return Err(PlanError::BlankBase {
            code: st.code.clone(),
            location: st.location,
        });
    }
    let lower = base_name.to_lowercase();
    // FROM resolves a name against earlier stages only; the last one of that name wins.
    let base = if let Some(prev) = earlier
        .iter()
        .rposition(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        Base::Stage(prev)
    } else if lower == "scratch" {
        Base::Scratch
    } else if let Some(name) = context_name(&base_name).filter(|n| contexts.contains(n)) {
        Base::Context(name)
    } else {
        Base::Image(base_name)
    };
    let mut deps = BTreeSet::new();
    if let Base::Stage(i) = base {
        deps.insert(i);
    }
    // A stage built on another one is on that one's platform (its files are); otherwise
    // `--platform`, else the target.
    let platform_given = match &base {
        Base::Stage(i) => earlier[*i].platform_given,
        _ => target_given || st.platform.is_some(),
    };
    let platform = match (&base, &st.platform) {
        (Base::Stage(i), _) => earlier[*i].platform.clone(),
        (_, Some(p)) => Platform::parse(&expand(p, st.location)?)
            .map_err(|source| PlanError::Platform {
                source,
                location: st.location,
            })?
            .normalized(),
        (_, None) => target_platform.clone(),
    };
    Ok(StagePlan {
        index,
        name: st.name.clone(),
        base,
        platform,
        platform_given,
        ops: Vec::new(),
        deps,
        image_sources: BTreeSet::new(),
        location: st.location,
        code: st.code.clone(),
        replaced: false,
    })
}

/// The `--from` words of COPY and RUN mounts in a stage.
fn sources_of(commands: &[Instruction]) -> Vec<(String, Location)> {
    let mut out = Vec::new();
    for c in commands {
        match c {
            Instruction::Copy(cp) => {
                if let Some(f) = &cp.from {
                    out.push((f.clone(), cp.location));
                }
            }
            Instruction::Run(r) => {
                for m in &r.mounts {
                    if let Some(f) = &m.from {
                        out.push((f.clone(), r.location));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A `--from` value: a stage name, a stage index, a named context (BuildKit looks stages up
/// first), or an image.
pub fn resolve_source(
    value: &str,
    names: &[Option<String>],
    contexts: &BTreeSet<String>,
    location: Location,
) -> Result<Source, PlanError> {
    let lower = value.to_lowercase();
    if let Some(i) = names
        .iter()
        .rposition(|n| n.as_deref() == Some(lower.as_str()))
    {
        return Ok(Source::Stage(i));
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return match value.parse::<usize>() {
            Ok(i) if i < names.len() => Ok(Source::Stage(i)),
            _ => Err(PlanError::BadIndex {
                index: value.to_string(),
                location,
            }),
        };
    }
    if let Some(name) = context_name(value).filter(|n| contexts.contains(n)) {
        return Ok(Source::Context(name));
    }
    Ok(Source::Image(value.to_string()))
}

/// Stages the target needs, each after everything it depends on.
fn topo_order(stages: &[StagePlan], target: usize) -> Result<Vec<usize>, PlanError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; stages.len()];
    let mut order = Vec::new();
    // Iterative DFS: (stage, next dependency to visit).
    let mut stack: Vec<(usize, Vec<usize>)> =
        vec![(target, stages[target].deps.iter().copied().collect())];
    mark[target] = Mark::Active;
    while let Some((s, deps)) = stack.last_mut() {
        match deps.pop() {
            Some(d) => match mark[d] {
                Mark::Done => {}
                Mark::Active => {
                    let st = &stages[d];
                    return Err(PlanError::Cycle {
                        name: st.name.clone().unwrap_or_else(|| d.to_string()),
                        location: st.location,
                    });
                }
                Mark::New => {
                    mark[d] = Mark::Active;
                    stack.push((d, stages[d].deps.iter().copied().collect()));
                }
            },
            None => {
                let s = *s;
                mark[s] = Mark::Done;
                order.push(s);
                stack.pop();
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    fn plan_of(src: &str, target: Option<&str>, args: &[(&str, &str)]) -> Result<Plan, PlanError> {
        let df = parse(src).unwrap();
        plan(
            &df,
            &PlanOptions {
                build_args: args
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                target: target.map(str::to_string),
                ..Default::default()
            },
        )
    }

    #[test]
    fn bases_dependencies_and_pruning() {
        let src = "ARG BASE=busybox:local\nFROM ${BASE} AS build\nRUN x\n\
                   FROM scratch AS unused\nRUN broken --nonsense\n\
                   FROM build AS mid\nCOPY --from=0 /a /b\n\
                   FROM ${BASE}\nCOPY --from=mid /b /c\nCOPY --from=alpine:3 /x /y\n";
        let p = plan_of(src, None, &[]).unwrap();
        assert_eq!(p.stages[0].base, Base::Image("busybox:local".into()));
        assert_eq!(p.stages[1].base, Base::Scratch);
        assert_eq!(p.stages[2].base, Base::Stage(0));
        assert_eq!(p.target, 3);
        assert_eq!(p.order, vec![0, 2, 3]);
        assert!(p.stages[3].image_sources.contains("alpine:3"));
        let p = plan_of(src, Some("Build"), &[("BASE", "debian")]).unwrap();
        assert_eq!(p.order, vec![0]);
        assert_eq!(p.stages[0].base, Base::Image("debian".into()));
    }

    #[test]
    fn targets_cycles_and_bad_indexes() {
        assert!(matches!(
            plan_of("FROM a AS x\n", Some("nope"), &[]),
            Err(PlanError::NoTarget(_))
        ));
        let cyc = "FROM a AS one\nCOPY --from=two a b\nFROM a AS two\nCOPY --from=one a b\n";
        assert!(matches!(
            plan_of(cyc, None, &[]),
            Err(PlanError::Cycle { .. })
        ));
        assert!(matches!(
            plan_of("FROM a\nCOPY --from=7 a b\n", None, &[]),
            Err(PlanError::BadIndex { .. })
        ));
        assert!(matches!(
            plan_of("ARG X\nFROM ${X}\n", None, &[]),
            Err(PlanError::BlankBase { .. })
        ));
    }

    // As BuildKit: a named context replaces a stage of its name (FROM and instructions),
    // an image of its name (in FROM, COPY --from and --mount from=, by the image's familiar
    // name without :latest), and is looked up after the stages.
    #[test]
    fn named_contexts_replace_stages_and_images() {
        let src = "FROM busybox AS base\nRUN broken\nFROM base AS mid\nCOPY --from=src /a /b\n\
                   FROM alpine:latest\nCOPY --from=mid /b /c\n\
                   RUN --mount=from=docker.io/library/busybox,target=/m true\n";
        let df = parse(src).unwrap();
        let opts = PlanOptions {
            contexts: ["base", "src", "alpine", "busybox"]
                .into_iter()
                .map(String::from)
                .collect(),
            ..Default::default()
        };
        let p = plan(&df, &opts).unwrap();
        assert_eq!(p.stages[0].base, Base::Context("base".into()));
        assert!(p.stages[0].replaced && p.stages[0].ops.is_empty());
        assert_eq!(p.stages[1].base, Base::Stage(0));
        assert!(!p.stages[1].replaced);
        assert_eq!(p.stages[2].base, Base::Context("alpine".into()));
        assert!(
            p.stages[2].image_sources.is_empty(),
            "contexts are no images"
        );
        assert_eq!(p.order, vec![0, 1, 2]);
        let at = Location::default();
        assert_eq!(p.resolve_source("base", at).unwrap(), Source::Stage(0));
        assert_eq!(
            p.resolve_source("src", at).unwrap(),
            Source::Context("src".into())
        );
        assert_eq!(
            p.resolve_source("busybox:latest", at).unwrap(),
            Source::Context("busybox".into())
        );
        assert_eq!(
            p.resolve_source("busybox:1", at).unwrap(),
            Source::Image("busybox:1".into())
        );
        assert_eq!(context_name("Upper"), None);
        assert_eq!(
            context_name("docker.io/library/alpine:3").as_deref(),
            Some("alpine:3")
        );
        assert_eq!(
            context_name("localhost:5000/x:latest").as_deref(),
            Some("localhost:5000/x")
        );
    }

    // BuildKit's automatic ARGs carry the build platform (the host) and the target
    // (`--platform`); FROM --platform=$BUILDPLATFORM stages stay on the host, stages built on
    // a stage keep its platform, and the rest are for the target.
    #[test]
    fn platform_args_and_stage_platforms() {
        let src = "ARG V=$TARGETARCH-$TARGETVARIANT\nFROM --platform=$BUILDPLATFORM b AS build\n\
                   FROM img:$V AS t\nFROM build AS again\nFROM --platform=linux/aarch64 x\n";
        let df = parse(src).unwrap();
        let opts = PlanOptions {
            platform: Some(Platform::parse("linux/arm").unwrap()),
            ..Default::default()
        };
        let p = plan(&df, &opts).unwrap();
        let host = Platform::host();
        assert_eq!(p.build_platform, host);
        assert_eq!(p.target_platform.to_string(), "linux/arm/v7");
        assert_eq!(p.stages[0].platform, host);
        assert_eq!(p.stages[1].base, Base::Image("img:arm-v7".into()));
        assert_eq!(p.stages[1].platform.to_string(), "linux/arm/v7");
        assert_eq!(p.stages[2].platform, host);
        assert_eq!(p.stages[3].platform.to_string(), "linux/arm64");
        let globals: BTreeMap<_, _> = p.scope.global_args.iter().cloned().collect();
        assert_eq!(globals["TARGETPLATFORM"].as_deref(), Some("linux/arm/v7"));
        assert_eq!(globals["TARGETARCH"].as_deref(), Some("arm"));
        assert_eq!(
            globals["BUILDARCH"].as_deref(),
            Some(host.architecture.as_str())
        );
        assert_eq!(globals["BUILDVARIANT"].as_deref(), Some(""));

        let bad = parse("FROM --platform=linux x\n").unwrap();
        let e = plan(&bad, &PlanOptions::default()).unwrap_err();
        assert!(matches!(e, PlanError::Platform { .. }), "{e:?}");
        assert_eq!(e.location().map(|l| l.line), Some(1));
    }

    #[test]
    fn unused_build_args_are_reported() {
        let src = "ARG A\nFROM x\nARG B\nFROM y AS other\nARG C\n";
        let p = plan_of(
            src,
            Some("other"),
            &[("A", "1"), ("B", "2"), ("C", "3"), ("HTTP_PROXY", "p")],
        )
        .unwrap();
        assert_eq!(p.unused_build_args, vec!["B".to_string()]);
        let p = plan_of("ARG V=1\nARG W=${V}.0\nFROM img:${W}\n", None, &[]).unwrap();
        assert_eq!(p.stages[0].base, Base::Image("img:1.0".into()));
    }
}
