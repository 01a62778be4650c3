//! `kiln build --check`: what `docker build --check` reports without building — every
//! instruction's error, whole-file errors (stage cycles, bad stage indexes, RUN mounts) and
//! BuildKit's lint warnings — as findings in file order.
//!
//! Unlike BuildKit, which stops at the first error, every instruction is checked: one error
//! per instruction (its first, as BuildKit would report it), and the file-wide checks run on
//! whatever instructions could be read.

use std::collections::{BTreeSet, HashMap};

use super::ast::{Dockerfile, Location, Node};
use super::diag::{suggest, Diagnostic, Severity};
use super::goparse;
use super::instructions::{
    last_flag_place, nth_flag_place, parse_instruction, split_suggestion, ArgDef, Instruction,
    InstructionError, InstructionErrorKind, KeyValue, ShellOrExec, SourceContent,
};
use super::runflags::{parse_mount, MountSpec};
use super::shell::Lexer;

/// One problem `check` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Errors fail the build; warnings do not (unless `# check=error=true`).
    pub severity: Severity,
    /// BuildKit's rule name for a warning (`JSONArgsRecommended`); `None` for errors.
    pub rule: Option<&'static str>,
    /// What is wrong, in BuildKit's words.
    pub message: String,
    /// A hint shown after the caret, e.g. `did you mean RUN?`.
    pub help: Option<String>,
    /// Where it is.
    pub location: Location,
    /// Characters to underline.
    pub width: usize,
}

impl Finding {
    /// A displayable diagnostic for this finding in `file`, whose text is `source`. Warnings
    /// are prefixed with their rule name, as `docker build --check` prints them.
    pub fn to_diagnostic(&self, file: &str, source: &str) -> Diagnostic {
        let message = match self.rule {
            Some(rule) => format!("{rule}: {}", self.message),
            None => self.message.clone(),
        };
        let d = match self.severity {
            Severity::Error => Diagnostic::error(file, source, self.location, message),
            Severity::Warning => Diagnostic::warning(file, source, self.location, message),
        }
        .with_width(self.width);
        match &self.help {
            Some(h) => d.with_help(h.clone()),
            None => d,
        }
    }

    /// True for an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn from_error(e: &InstructionError) -> Self {
        let (message, help) = e.message_and_help();
        Finding {
            severity: Severity::Error,
            rule: None,
            message,
            help,
            location: e.location,
            width: e.width,
        }
    }
}

/// The warning rules `check` implements, by BuildKit's names.
pub const RULES: &[&str] = &[
    "ConsistentInstructionCasing",
    "DuplicateStageName",
    "ExposeProtoCasing",
    "FromAsCasing",
    "InvalidDefaultArgInFrom",
    "JSONArgsRecommended",
    "LegacyKeyValueFormat",
    "MaintainerDeprecated",
    "MultipleInstructionsDisallowed",
    "NoEmptyContinuation",
    "ReservedStageName",
    "SecretsUsedInArgOrEnv",
    "StageNameCasing",
    "UndefinedArgInFrom",
    "UndefinedVar",
    "WorkdirRelativePath",
];

/// Looks up a base image's config Env by name; `None` when the image is unknown.
pub type ImageEnv<'a> = dyn Fn(&str) -> Option<Vec<String>> + 'a;

/// What a check may know beyond the Dockerfile. The parser imports nothing else of the
/// crate, so the caller brings what needs images: their Env, and reference syntax.
#[derive(Default, Clone, Copy)]
pub struct CheckOptions<'a> {
    /// `--build-arg` values; without them ARGs have their defaults.
    pub build_args: Option<&'a HashMap<String, String>>,
    /// The config Env (`KEY=value` entries) of a base image, by its expanded name; `None`
    /// when the image is not known. Stages whose base Env is unknown get no UndefinedVar.
    pub image_env: Option<&'a ImageEnv<'a>>,
    /// Whether an expanded base name is a valid image reference (Docker's
    /// `ParseNormalizedNamed`); without it only an empty name is invalid.
    pub valid_image_name: Option<&'a dyn Fn(&str) -> bool>,
}

/// Parse `src` and check it. A file that does not parse yields that one error.
pub fn check_source(src: &str) -> Vec<Finding> {
    check_source_with(src, &CheckOptions::default())
}

/// [`check_source`] with build arguments and what is known of base images.
pub fn check_source_with(src: &str, options: &CheckOptions<'_>) -> Vec<Finding> {
    match super::parse(src) {
        Ok(df) => check_with(&df, options),
        Err(e) => vec![Finding {
            severity: Severity::Error,
            rule: None,
            message: e.message.clone(),
            help: e.help.clone(),
            location: e.location,
            width: e.width,
        }],
    }
}

/// Check a parsed Dockerfile. Findings are sorted by position.
pub fn check(df: &Dockerfile) -> Vec<Finding> {
    check_with(df, &CheckOptions::default())
}

/// [`check`] with build arguments and what is known of base images.
pub fn check_with(df: &Dockerfile, options: &CheckOptions<'_>) -> Vec<Finding> {
    let mut c = Checker::new(df, options);
    for w in &df.warnings {
        c.warn(
            "NoEmptyContinuation",
            w.location,
            1,
            "Empty continuation line".to_string(),
        );
    }
    let (meta, mut stages) = c.group(df);
    if stages.is_empty() {
        if let Some(first) = df.children.first() {
            c.error_at(first, "dockerfile contains no stages to build".to_string());
        }
    }
    c.casing(&stages);
    c.stage_names(&stages);
    let global = c.expand_from(&meta, &mut stages);
    c.dispatch(&stages, &global);
    c.dependencies(&stages);
    let mut findings = c.findings;
    findings.sort_by_key(|f| (f.location.line, f.location.column));
    findings
}

/// `# check=skip=...;error=true`.
#[derive(Default)]
struct LintConfig {
    skip_all: bool,
    skip: Vec<String>,
    error: bool,
}

/// Why a `# check=` directive cannot be read (BuildKit's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum LintConfigError {
    /// A part without `=`, or a key other than skip, error and experimental.
    #[error("invalid check option {}", super::dump::go_quote(.0))]
    Option(String),
    /// `error=` with a value that is not a Go boolean.
    #[error("failed to parse check option {}", super::dump::go_quote(.0))]
    Bool(String),
}

impl LintConfig {
    /// BuildKit's `ParseLintOptions`.
    fn parse(s: &str) -> Result<LintConfig, LintConfigError> {
        let mut cfg = LintConfig::default();
        let s = s.trim();
        if s.is_empty() {
            return Ok(cfg);
        }
        for part in s.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(LintConfigError::Option(part.to_string()));
            };
            match k.trim() {
                "skip" => {
                    let v = v.trim();
                    if v == "all" {
                        cfg.skip_all = true;
                    } else {
                        cfg.skip = v.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "error" => {
                    cfg.error = goparse::parse_bool(v.trim())
                        .ok_or_else(|| LintConfigError::Bool(part.to_string()))?;
                }
                // Experimental rules are not implemented; enabling them changes nothing.
                "experimental" => {}
                k => return Err(LintConfigError::Option(k.to_string())),
            }
        }
        Ok(cfg)
    }
}

/// A stage as `check` sees it: what could be read of it.
struct CheckStage<'a> {
    /// `stage-N` for unnamed stages, as BuildKit names them in messages.
    display: String,
    name: Option<String>,
    /// The base name, expanded with the global ARGs once `expand_from` has run.
    base: String,
    platform: Option<String>,
    from_node: &'a Node,
    commands: Vec<(&'a Node, Instruction)>,
}

struct Checker<'o> {
    findings: Vec<Finding>,
    config: LintConfig,
    lexer: Lexer,
    options: CheckOptions<'o>,
}

impl<'o> Checker<'o> {
    fn new(df: &Dockerfile, options: &CheckOptions<'o>) -> Self {
        let mut findings = Vec::new();
        let config = match df.directives.iter().find(|d| d.name == "check") {
            Some(d) => LintConfig::parse(&d.value).unwrap_or_else(|e| {
                findings.push(Finding {
                    severity: Severity::Error,
                    rule: None,
                    message: format!("failed to parse check options: {e}"),
                    help: None,
                    location: Location {
                        line: d.line,
                        column: 1,
                    },
                    width: 1,
                });
                LintConfig::default()
            }),
            None => LintConfig::default(),
        };
        Checker {
            findings,
            config,
            lexer: Lexer::new(df.escape),
            options: *options,
        }
    }

    fn warn(&mut self, rule: &'static str, location: Location, width: usize, message: String) {
        if self.config.skip_all || self.config.skip.iter().any(|s| s == rule) {
            return;
        }
        self.findings.push(Finding {
            severity: if self.config.error {
                Severity::Error
            } else {
                Severity::Warning
            },
            rule: Some(rule),
            message,
            help: None,
            location,
            width: width.max(1),
        });
    }

    fn warn_at(&mut self, rule: &'static str, node: &Node, message: String) {
        self.warn(rule, node.location(), node.keyword.chars().count(), message);
    }

    fn error(&mut self, place: (Location, usize), message: String) {
        self.findings.push(Finding {
            severity: Severity::Error,
            rule: None,
            message,
            help: None,
            location: place.0,
            width: place.1.max(1),
        });
    }

    fn error_at(&mut self, node: &Node, message: String) {
        self.error(keyword_place(node), message);
    }

    /// Read every instruction, group them into stages, and report what cannot be read.
    fn group<'a>(&mut self, df: &'a Dockerfile) -> (Vec<(ArgDef, &'a Node)>, Vec<CheckStage<'a>>) {
        let mut meta = Vec::new();
        let mut stages: Vec<CheckStage<'a>> = Vec::new();
        for node in &df.children {
            // BuildKit lints FROM and MAINTAINER before reading them, so these warnings
            // appear even when the instruction then fails.
            match node.instruction().as_str() {
                "from" => self.lint_from(node),
                "maintainer" => self.warn_at(
                    "MaintainerDeprecated",
                    node,
                    "Maintainer instruction is deprecated in favor of using label".to_string(),
                ),
                _ => {}
            }
            let parsed = parse_instruction(node);
            if let Err(e) = &parsed {
                self.findings.push(Finding::from_error(e));
            }
            match parsed {
                Ok(Instruction::Arg(a)) if stages.is_empty() => {
                    meta.extend(a.args.into_iter().map(|d| (d, node)));
                }
                Ok(Instruction::From(f)) => stages.push(CheckStage {
                    display: f
                        .stage_name
                        .clone()
                        .unwrap_or_else(|| format!("stage-{}", stages.len())),
                    name: f.stage_name,
                    base: f.base,
                    platform: f.platform,
                    from_node: node,
                    commands: Vec::new(),
                }),
                // A FROM that cannot be read still starts a stage, so that what follows is
                // not also reported as outside any stage.
                Err(_) if node.instruction() == "from" => stages.push(CheckStage {
                    display: format!("stage-{}", stages.len()),
                    name: None,
                    base: String::new(),
                    platform: None,
                    from_node: node,
                    commands: Vec::new(),
                }),
                Ok(ins) => match stages.last_mut() {
                    Some(stage) => stage.commands.push((node, ins)),
                    None => self.findings.push(Finding::from_error(&InstructionError {
                        kind: InstructionErrorKind::NoBuildStage,
                        location: node.location(),
                        width: node.keyword.chars().count(),
                        line: node.start_line,
                        end_line: node.end_line,
                    })),
                },
                Err(_) => {}
            }
        }
        (meta, stages)
    }

    /// StageNameCasing and FromAsCasing, on FROM's arguments as written.
    fn lint_from(&mut self, node: &Node) {
        let args = &node.args;
        if let [_, _, name] = args.as_slice() {
            if *name != name.to_lowercase() {
                self.warn_at(
                    "StageNameCasing",
                    node,
                    format!("Stage name '{name}' should be lowercase"),
                );
            }
        }
        if let Some(as_kw) = args.get(1).filter(|_| args.len() >= 3) {
            let kw = &node.keyword;
            let lower = *kw == kw.to_lowercase();
            let upper = *kw == kw.to_uppercase();
            // A keyword in mixed case is ConsistentInstructionCasing's business.
            let mismatch = if lower {
                *as_kw != as_kw.to_lowercase()
            } else if upper {
                *as_kw != as_kw.to_uppercase()
            } else {
                false
            };
            if mismatch {
                self.warn_at(
                    "FromAsCasing",
                    node,
                    format!("'{as_kw}' and '{kw}' keywords' casing do not match"),
                );
            }
        }
    }

    /// ConsistentInstructionCasing over the instructions of all stages.
    fn casing(&mut self, stages: &[CheckStage<'_>]) {
        let nodes: Vec<&Node> = stages
            .iter()
            .flat_map(|s| std::iter::once(s.from_node).chain(s.commands.iter().map(|(n, _)| *n)))
            .collect();
        let (mut lower, mut upper) = (0, 0);
        for n in &nodes {
            let k = &n.keyword;
            if *k == k.to_lowercase() {
                lower += 1;
            } else if *k == k.to_uppercase() {
                upper += 1;
            }
        }
        // A tie counts as an upper-case majority, as in BuildKit.
        let majority_lower = lower > upper;
        for n in nodes {
            let k = &n.keyword;
            let casing = if majority_lower && *k != k.to_lowercase() {
                "lowercase"
            } else if !majority_lower && *k != k.to_uppercase() {
                "uppercase"
            } else {
                continue;
            };
            self.warn_at(
                "ConsistentInstructionCasing",
                n,
                format!("Command '{k}' should match the case of the command majority ({casing})"),
            );
        }
    }

    /// DuplicateStageName and ReservedStageName.
    fn stage_names(&mut self, stages: &[CheckStage<'_>]) {
        let mut seen: Vec<&str> = Vec::new();
        for s in stages {
            let Some(name) = s.name.as_deref() else {
                continue;
            };
            if matches!(name, "context" | "scratch") {
                self.warn_at(
                    "ReservedStageName",
                    s.from_node,
                    format!(
                        "Stage name should not use the same name as reserved stage {}",
                        super::dump::go_quote(name)
                    ),
                );
            }
            // BuildKit builds such a file: a later reference finds the last stage of that
            // name. So this is a warning, not an error.
            if seen.contains(&name) {
                self.warn_at(
                    "DuplicateStageName",
                    s.from_node,
                    format!(
                        "Duplicate stage name {}, stage names should be unique",
                        super::dump::go_quote(name)
                    ),
                );
            }
            seen.push(name);
        }
    }

    /// The global ARGs' values over `env` (the predefined ARGs), BuildKit's `buildMetaArgs`:
    /// a build argument wins over the default, which is expanded with the ARGs before it.
    /// `None` when a default cannot be expanded; `report` says whether that is an error here.
    fn meta_args(
        &mut self,
        meta: &[(ArgDef, &Node)],
        mut env: HashMap<String, String>,
        build_args: &HashMap<String, String>,
        report: bool,
    ) -> Option<HashMap<String, String>> {
        let mut ok = true;
        for (def, node) in meta {
            let value = match (build_args.get(&def.name), &def.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(v)) => match self.lexer.process_word(v, &env) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        if report {
                            self.error_at(node, e.to_string());
                        }
                        ok = false;
                        None
                    }
                },
                (None, None) => None,
            };
            if let Some(v) = value {
                env.insert(def.name.clone(), v);
            }
        }
        (ok || report).then_some(env)
    }

    /// InvalidDefaultArgInFrom: a base name that, with the ARGs' defaults alone (no build
    /// arguments), is empty or no valid image name. BuildKit warns even when the build
    /// arguments given make it valid, and stops judging at the first name it cannot expand.
    fn invalid_default_args(
        &mut self,
        defaults: &HashMap<String, String>,
        stages: &[CheckStage<'_>],
    ) {
        let valid = self.options.valid_image_name;
        for s in stages {
            // A FROM that could not be read has been reported already.
            if s.base.is_empty() {
                continue;
            }
            let Ok(x) = self.lexer.process_word_with_matches(&s.base, defaults) else {
                return;
            };
            let name = x.result;
            if name.is_empty() || valid.is_some_and(|f| !f(&name)) {
                self.warn_at(
                    "InvalidDefaultArgInFrom",
                    s.from_node,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        s.base
                    ),
                );
            }
        }
    }

    /// Expand FROM's base name and platform with the global ARGs, as BuildKit does before
    /// anything else: InvalidDefaultArgInFrom with their defaults; then, with the build
    /// arguments, UndefinedArgInFrom for variables that are neither global ARGs nor
    /// predefined, and errors for what cannot be expanded or expands to nothing (so a blank
    /// name stays an error unless a build argument fills it, as in BuildKit's check). Leaves
    /// each stage's `base` expanded, so that `FROM $STAGE` finds the stage it names, and
    /// returns the global ARGs' values, which a stage's `ARG NAME` takes.
    fn expand_from(
        &mut self,
        meta: &[(ArgDef, &Node)],
        stages: &mut [CheckStage<'_>],
    ) -> HashMap<String, String> {
        let lexer = self.lexer;
        let target = stages
            .last()
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        let predefined = predefined_args(&target);
        let none = HashMap::new();
        if let Some(defaults) = self.meta_args(meta, predefined.clone(), &none, false) {
            self.invalid_default_args(&defaults, stages);
        }
        let build_args = self.options.build_args.unwrap_or(&none);
        let env = self
            .meta_args(meta, predefined, build_args, true)
            .unwrap_or_default();
        let mut known: Vec<String> = meta.iter().map(|(d, _)| d.name.clone()).collect();
        known.extend(PREDEFINED_ARGS.iter().map(|a| a.to_string()));
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        for s in stages.iter_mut() {
            // A FROM that could not be read has been reported already.
            if s.base.is_empty() {
                continue;
            }
            match lexer.process_word_with_matches(&s.base, &env) {
                Ok(x) => {
                    self.undefined_from_args(s.from_node, &x.unmatched, &known);
                    if x.result.is_empty() {
                        self.error_at(
                            s.from_node,
                            format!("base name ({}) should not be blank", s.base),
                        );
                    }
                    s.base = x.result;
                }
                Err(e) => {
                    self.error_at(s.from_node, e.to_string());
                    // Not a name a later stage or an image lookup could use.
                    s.base.clear();
                }
            }
            let Some(platform) = s.platform.clone() else {
                continue;
            };
            match lexer.process_word_with_matches(&platform, &env) {
                Ok(x) => {
                    self.undefined_from_args(s.from_node, &x.unmatched, &known);
                    if x.result.is_empty() {
                        self.error_at(
                            s.from_node,
                            format!("empty platform value from expression {platform}"),
                        );
                    }
                }
                Err(e) => self.error_at(
                    s.from_node,
                    format!("failed to process arguments for platform {platform}: {e}"),
                ),
            }
        }
        env
    }

    /// UndefinedArgInFrom for each variable FROM used that nothing declares.
    fn undefined_from_args(&mut self, node: &Node, unmatched: &BTreeSet<String>, known: &[&str]) {
        for var in unmatched {
            if known.contains(&var.as_str()) {
                continue;
            }
            let mut message = format!("FROM argument '{var}' is not declared");
            if let Some(m) = suggest(var, known, true) {
                message.push_str(&format!(" (did you mean {m}?)"));
            }
            self.warn_at("UndefinedArgInFrom", node, message);
        }
    }

    /// The lints BuildKit runs while it converts each stage, and RUN mounts read after
    /// expansion. Stage state (shell set, workdir set, variables) carries over to stages
    /// built on them. `global` holds the global ARGs' values.
    fn dispatch(&mut self, stages: &[CheckStage<'_>], global: &HashMap<String, String>) {
        let bases = base_stages(stages);
        let mut states: Vec<StageState> = Vec::with_capacity(stages.len());
        for (i, s) in stages.iter().enumerate() {
            let mut st = match bases.get(i).copied().flatten().and_then(|b| states.get(b)) {
                Some(base) => StageState {
                    shell_set: base.shell_set,
                    workdir_set: base.workdir_set,
                    vars: base.vars.clone(),
                    ..StageState::default()
                },
                None => StageState {
                    vars: self.image_vars(&s.base),
                    ..StageState::default()
                },
            };
            for (node, ins) in &s.commands {
                self.dispatch_one(node, ins, &mut st, global);
            }
            states.push(st);
        }
    }

    /// The variables a stage starts with on the image `base`: its Env, and PATH, which
    /// BuildKit always sets. `None` when the image's Env is not known.
    fn image_vars(&self, base: &str) -> Option<Vars> {
        let env = match base {
            "" => return None,
            "scratch" => Vec::new(),
            name => self.options.image_env.and_then(|f| f(name))?,
        };
        let mut vars = Vars::default();
        for e in &env {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            vars.set(k, v.to_string());
        }
        if !vars.is_set("PATH") {
            vars.set("PATH", DEFAULT_PATH.to_string());
        }
        Some(vars)
    }

    /// UndefinedVar, for the words BuildKit expands before it dispatches an instruction
    /// (not RUN's, CMD's or ENTRYPOINT's command, which the shell expands, nor EXPOSE's,
    /// which BuildKit expands without looking), judged against what the stage has defined
    /// so far; then what the instruction defines. A stage whose base image Env is unknown
    /// (not in the store, or no lookup given) is skipped: any name might come from it.
    fn undefined_vars(
        &mut self,
        node: &Node,
        ins: &Instruction,
        st: &mut StageState,
        global: &HashMap<String, String>,
    ) {
        let Some(vars) = st.vars.as_mut() else {
            return;
        };
        let no_args = HashMap::new();
        let build_args = self.options.build_args.unwrap_or(&no_args);
        let mut scan = WordScan::new(self.lexer, vars);
        scan.instruction(ins, build_args, global);
        let unmatched = scan.unmatched;
        let known: Vec<&str> = st
            .vars
            .iter()
            .flat_map(|v| v.env.iter().map(|(k, _)| k.as_str()))
            .collect();
        for m in undefined_var_messages(&unmatched, &known) {
            self.warn_at("UndefinedVar", node, m);
        }
    }

    fn dispatch_one(
        &mut self,
        node: &Node,
        ins: &Instruction,
        st: &mut StageState,
        global: &HashMap<String, String>,
    ) {
        self.undefined_vars(node, ins, st, global);
        match ins {
            Instruction::Cmd(c) => {
                self.used_once(node, &mut st.cmd);
                self.json_args(node, &c.cmd, st.shell_set);
            }
            Instruction::Entrypoint(e) => {
                self.used_once(node, &mut st.entrypoint);
                self.json_args(node, &e.cmd, st.shell_set);
            }
            Instruction::Healthcheck(_) => self.used_once(node, &mut st.healthcheck),
            Instruction::Shell(_) => st.shell_set = true,
            Instruction::Workdir(w) => {
                // A path with variables is only known after expansion; BuildKit judges the
                // expanded path, which a check without build arguments cannot.
                if !st.workdir_set && !w.path.starts_with('/') && !w.path.contains('$') {
                    self.warn_at(
                        "WorkdirRelativePath",
                        node,
                        format!(
                            "Relative workdir {} can have unexpected results if the base image changes",
                            super::dump::go_quote(&w.path)
                        ),
                    );
                }
                st.workdir_set = true;
            }
            Instruction::Env(e) => {
                for kv in &e.pairs {
                    self.legacy_key_value(node, kv.legacy);
                    self.secret_name(node, "ENV", &kv.key);
                }
            }
            Instruction::Label(l) => {
                for kv in &l.pairs {
                    self.legacy_key_value(node, kv.legacy);
                }
            }
            Instruction::Arg(a) => {
                for d in &a.args {
                    self.secret_name(node, "ARG", &d.name);
                }
            }
            Instruction::Expose(e) => {
                for port in &e.ports {
                    if let Some((_, proto)) = port.split_once('/') {
                        if *proto != proto.to_lowercase() {
                            self.warn_at(
                                "ExposeProtoCasing",
                                node,
                                format!(
                                    "Defined protocol '{port}' in EXPOSE instruction should be lowercase"
                                ),
                            );
                        }
                    }
                }
            }
            Instruction::Add(a) => {
                // A value with variables is judged after expansion, at build time; the others
                // exactly as the planner judges them.
                let escape = self.lexer.escape();
                if let Some(Err(e)) = a
                    .checksum
                    .as_deref()
                    .filter(|w| super::instructions::is_literal(w, escape))
                    .map(super::instructions::parse_checksum)
                {
                    let place = super::instructions::last_flag_place(node, "checksum")
                        .unwrap_or_else(|| keyword_place(node));
                    self.error(place, e.to_string());
                }
            }
            Instruction::Run(r) => {
                for (i, m) in r.mounts.iter().enumerate() {
                    // Values with variables are judged after expansion, at build time; the
                    // others exactly as the planner judges them.
                    if let Some(Err(e)) = m.parse_literal(self.lexer.escape()) {
                        let place =
                            nth_flag_place(node, "mount", i).unwrap_or_else(|| keyword_place(node));
                        let (message, help) = split_suggestion(&e.to_string());
                        self.error(place, message);
                        if let Some(last) = self.findings.last_mut() {
                            last.help = help;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// MultipleInstructionsDisallowed: the earlier instruction is the one ignored.
    fn used_once(&mut self, node: &Node, previous: &mut Option<(Location, usize)>) {
        if let Some((location, width)) = *previous {
            self.warn(
                "MultipleInstructionsDisallowed",
                location,
                width,
                format!(
                    "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                    node.keyword
                ),
            );
        }
        *previous = Some(keyword_place(node));
    }

    /// JSONArgsRecommended: CMD or ENTRYPOINT in shell form, with the default shell.
    fn json_args(&mut self, node: &Node, cmd: &ShellOrExec, shell_set: bool) {
        if cmd.prepend_shell() && !cmd.cmd_line().is_empty() && !shell_set {
            self.warn_at(
                "JSONArgsRecommended",
                node,
                format!(
                    "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                    node.keyword
                ),
            );
        }
    }

    fn legacy_key_value(&mut self, node: &Node, legacy: bool) {
        if legacy {
            let k = &node.keyword;
            self.warn_at(
                "LegacyKeyValueFormat",
                node,
                format!(
                    "\"{k} key=value\" should be used instead of legacy \"{k} key value\" format"
                ),
            );
        }
    }

    /// SecretsUsedInArgOrEnv: names like `API_KEY` or `GITHUB_TOKEN`, unless marked public.
    fn secret_name(&mut self, node: &Node, instruction: &str, name: &str) {
        const SECRET: &[&str] = &[
            "apikey",
            "auth",
            "credential",
            "credentials",
            "key",
            "password",
            "pword",
            "passwd",
            "secret",
            "token",
        ];
        let has_part = |parts: &[&str]| {
            let lower = name.to_lowercase();
            let words: Vec<&str> = lower.split('_').collect();
            // BuildKit's pattern `(?:_|^)(?:token|...)(?:_|$)`: a whole `_`-separated part.
            words.iter().any(|w| parts.contains(w))
        };
        if has_part(SECRET) && !has_part(&["public"]) {
            self.warn_at(
                "SecretsUsedInArgOrEnv",
                node,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
                    super::dump::go_quote(name)
                ),
            );
        }
    }

    /// Stage references through `COPY --from` and `RUN --mount=from`, and cycles among them
    /// and `FROM <stage>`.
    fn dependencies(&mut self, stages: &[CheckStage<'_>]) {
        // Later references find the last stage of a name, as BuildKit's name map does.
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, s) in stages.iter().enumerate() {
            if let Some(n) = s.name.as_deref() {
                by_name.insert(n, i);
            }
        }
        let bases = base_stages(stages);
        // edges[i]: (stage it needs, where the need is written)
        let mut edges: Vec<Vec<(usize, (Location, usize))>> = vec![Vec::new(); stages.len()];
        for (i, s) in stages.iter().enumerate() {
            if let Some(b) = bases.get(i).copied().flatten() {
                edges[i].push((b, keyword_place(s.from_node)));
            }
            for (node, ins) in &s.commands {
                match ins {
                    Instruction::Copy(c) => {
                        let Some(from) = c.from.as_deref().filter(|f| !f.contains('$')) else {
                            continue;
                        };
                        let place =
                            last_flag_place(node, "from").unwrap_or_else(|| keyword_place(node));
                        match go_atoi(from) {
                            Some(index) => match usize::try_from(index)
                                .ok()
                                .filter(|&x| x < stages.len())
                            {
                                Some(x) => edges[i].push((x, place)),
                                None => self.error(place, format!("invalid stage index {index}")),
                            },
                            None => {
                                if let Some(&x) = by_name.get(from.to_lowercase().as_str()) {
                                    edges[i].push((x, place));
                                }
                            }
                        }
                    }
                    Instruction::Run(r) => {
                        for (m, spec) in r.mounts.iter().enumerate() {
                            // BuildKit looks every mount up by name, `scratch` when it has
                            // no `from=`.
                            let from = spec.from.as_deref().unwrap_or("scratch").to_lowercase();
                            if let Some(&x) = by_name.get(from.as_str()) {
                                let place = nth_flag_place(node, "mount", m)
                                    .unwrap_or_else(|| keyword_place(node));
                                edges[i].push((x, place));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for cycle in cycles(&edges) {
            // Name the cycle after its first stage, and point at that stage's reference into it.
            let Some(&first) = cycle.iter().min() else {
                continue;
            };
            let place = edges[first]
                .iter()
                .find(|(to, _)| cycle.contains(to))
                .map(|(_, p)| *p)
                .unwrap_or_else(|| keyword_place(stages[first].from_node));
            self.error(
                place,
                format!(
                    "circular dependency detected on stage: {}",
                    stages[first].display
                ),
            );
        }
    }
}

/// The build arguments every FROM may use without declaring them.
pub const PREDEFINED_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDOSVERSION",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETOSVERSION",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
];

/// The predefined build arguments with this machine's platform, as a build here would set
/// them (BuildKit's `defaultArgs`).
pub fn predefined_args(target: &str) -> HashMap<String, String> {
    // Go's architecture names for the common Rust ones.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    let os = std::env::consts::OS;
    let platform = format!("{os}/{arch}");
    let pairs = [
        ("BUILDPLATFORM", platform.as_str()),
        ("BUILDOS", os),
        ("BUILDOSVERSION", ""),
        ("BUILDARCH", arch),
        ("BUILDVARIANT", ""),
        ("TARGETPLATFORM", platform.as_str()),
        ("TARGETOS", os),
        ("TARGETOSVERSION", ""),
        ("TARGETARCH", arch),
        ("TARGETVARIANT", ""),
        ("TARGETSTAGE", target),
    ];
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// BuildKit's default PATH, which every stage has when its image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// ARGs BuildKit never puts in the environment, and never reports as undefined.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// The variables a stage has defined so far, for UndefinedVar.
#[derive(Clone, Default)]
struct Vars {
    /// The environment, most recently set last: BuildKit offers suggestions in this order.
    env: Vec<(String, String)>,
    /// The stage's ARG names (and its base stages'), with or without a value.
    declared: BTreeSet<String>,
}

impl Vars {
    fn set(&mut self, key: &str, value: String) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value));
    }

    fn is_set(&self, key: &str) -> bool {
        self.env.iter().any(|(k, _)| k == key)
    }
}

impl super::shell::Env for Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What dispatching a stage has set so far.
#[derive(Default)]
struct StageState {
    /// `None` when the base image's Env is unknown.
    vars: Option<Vars>,
    shell_set: bool,
    workdir_set: bool,
    cmd: Option<(Location, usize)>,
    entrypoint: Option<(Location, usize)>,
    healthcheck: Option<(Location, usize)>,
}

/// One instruction's words expanded as BuildKit expands them before it dispatches the
/// instruction, against a stage's variables, noting the names found undefined. What the
/// instruction defines (ENV, ARG) is set in the variables as it goes.
struct WordScan<'v> {
    lexer: Lexer,
    /// Heredoc bodies are expanded with `\` as escape and quotes kept (BuildKit's
    /// `ExpandRaw`), unless the delimiter was quoted.
    raw: Lexer,
    vars: &'v mut Vars,
    /// Names used but neither set nor declared, in the order met.
    unmatched: Vec<String>,
}

impl<'v> WordScan<'v> {
    fn new(lexer: Lexer, vars: &'v mut Vars) -> WordScan<'v> {
        WordScan {
            lexer,
            raw: Lexer::new('\\').skip_process_quotes(true),
            vars,
            unmatched: Vec::new(),
        }
    }

    /// Scan the words of `ins` that BuildKit expands (not RUN's, CMD's or ENTRYPOINT's
    /// command, which the shell expands, nor EXPOSE's, which BuildKit expands without
    /// looking).
    fn instruction(
        &mut self,
        ins: &Instruction,
        build_args: &HashMap<String, String>,
        global: &HashMap<String, String>,
    ) {
        match ins {
            Instruction::Env(e) => self.env(&e.pairs),
            Instruction::Label(l) => {
                for kv in &l.pairs {
                    self.word(&kv.key);
                    self.word(&kv.value);
                }
            }
            Instruction::Copy(c) => {
                self.words(c.chown.iter().chain(&c.chmod).chain(&c.sources));
                self.word(&c.dest);
                self.heredocs(&c.contents);
            }
            Instruction::Add(a) => {
                let flags = a.chown.iter().chain(&a.chmod).chain(&a.checksum);
                self.words(flags.chain(&a.sources));
                self.word(&a.dest);
                self.heredocs(&a.contents);
            }
            Instruction::Workdir(w) => self.words([&w.path]),
            Instruction::User(u) => self.words([&u.user]),
            Instruction::Volume(v) => self.words(&v.volumes),
            Instruction::Stopsignal(s) => self.words([&s.signal]),
            Instruction::Run(r) => self.mounts(&r.mounts),
            Instruction::Arg(a) => self.args(&a.args, build_args, global),
            _ => {}
        }
    }

    /// Expand one word; `None` when it cannot be expanded.
    fn word(&mut self, w: &str) -> Option<String> {
        expand_noting(&self.lexer, w, self.vars, &mut self.unmatched)
    }

    fn words<'w>(&mut self, words: impl IntoIterator<Item = &'w String>) {
        for w in words {
            self.word(w);
        }
    }

    fn heredocs(&mut self, contents: &[SourceContent]) {
        for f in contents.iter().filter(|f| f.expand) {
            expand_noting(&self.raw, &f.data, self.vars, &mut self.unmatched);
        }
    }

    /// Every pair is expanded before any is set: `ENV A=1 B=$A` uses the old A.
    fn env(&mut self, pairs: &[KeyValue]) {
        let set: Vec<_> = pairs
            .iter()
            .map(|kv| {
                let k = self.word(&kv.key);
                let v = self.word(&kv.value);
                k.zip(v)
            })
            .collect();
        for (k, v) in set.into_iter().flatten() {
            self.vars.set(&k, v);
        }
    }

    /// Only the values of `--mount` fields, as BuildKit reads them.
    fn mounts(&mut self, mounts: &[MountSpec]) {
        let found = std::cell::RefCell::new(Vec::new());
        for m in mounts {
            let _ = parse_mount(&m.raw, &|v| {
                let mut found = found.borrow_mut();
                expand_noting(&self.lexer, v, self.vars, &mut found).ok_or_else(String::new)
            });
        }
        self.unmatched.extend(found.into_inner());
    }

    /// BuildKit's dispatchArg: a build argument, else the global value when there is no
    /// default, else the default, expanded.
    fn args(
        &mut self,
        args: &[ArgDef],
        build_args: &HashMap<String, String>,
        global: &HashMap<String, String>,
    ) {
        for d in args {
            let value = match (build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, None) => global.get(&d.name).cloned(),
                (None, Some(v)) => self.word(v),
            };
            self.vars.declared.insert(d.name.clone());
            if let Some(v) = value.filter(|_| !NON_ENV_ARGS.contains(&d.name.as_str())) {
                self.vars.set(&d.name, v);
            }
        }
    }
}

/// Expand one word with `lexer`, adding its undefined names (those not declared by an ARG)
/// to `unmatched`; `None` when it cannot be expanded.
fn expand_noting(
    lexer: &Lexer,
    w: &str,
    vars: &Vars,
    unmatched: &mut Vec<String>,
) -> Option<String> {
    let x = lexer.process_word_with_matches(w, vars).ok()?;
    unmatched.extend(
        x.unmatched
            .into_iter()
            .filter(|n| !vars.declared.contains(n)),
    );
    Some(x.result)
}

/// BuildKit's UndefinedVar messages for the names in `unmatched`, suggesting the closest of
/// the stage's `known` variables.
fn undefined_var_messages(unmatched: &[String], known: &[&str]) -> Vec<String> {
    let mut messages = Vec::new();
    for name in unmatched {
        if NON_ENV_ARGS.contains(&name.as_str()) {
            continue;
        }
        let mut message = format!("Usage of undefined variable '${name}'");
        // An empty name (`ENV ${UNSET}=1`) may be the nearest, and then, as in
        // BuildKit, there is no suggestion.
        if let Some(m) = suggest(name, known, true).filter(|m| !m.is_empty()) {
            message.push_str(&format!(" (did you mean ${m}?)"));
        }
        messages.push(message);
    }
    messages
}

fn keyword_place(node: &Node) -> (Location, usize) {
    (node.location(), node.keyword.chars().count())
}

/// For each stage, the earlier stage its FROM names, if any: BuildKit resolves a base name
/// only against stages defined before it, so `FROM x AS x` is the image `x`.
fn base_stages(stages: &[CheckStage<'_>]) -> Vec<Option<usize>> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(stages.len());
    for (i, s) in stages.iter().enumerate() {
        out.push(by_name.get(s.base.as_str()).copied());
        if let Some(n) = s.name.as_deref() {
            by_name.insert(n, i);
        }
    }
    out
}

/// Go's `strconv.Atoi`: optional sign, decimal digits.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The stage sets that depend on themselves: strongly connected components with more than
/// one stage, or one stage that references itself. Each is sorted.
fn cycles(edges: &[Vec<(usize, (Location, usize))>]) -> Vec<Vec<usize>> {
    // Tarjan's algorithm, iterative so a long chain of stages cannot overflow the stack.
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = work.last_mut() {
            if let Some(&(w, _)) = edges[v].get(*e) {
                *e += 1;
                if index[w] == usize::MAX {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                let self_loop = edges[v].iter().any(|(to, _)| *to == v);
                if comp.len() > 1 || self_loop {
                    comp.sort_unstable();
                    out.push(comp);
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_directive_errors_are_typed_kinds() {
        let kind = |s: &str| LintConfig::parse(s).err();
        assert_eq!(
            kind("skip=all;bogus=1"),
            Some(LintConfigError::Option("bogus".into()))
        );
        assert_eq!(kind("skip"), Some(LintConfigError::Option("skip".into())));
        assert_eq!(
            kind("error=maybe"),
            Some(LintConfigError::Bool("error=maybe".into()))
        );
        assert_eq!(kind("skip=all;error=true;experimental=x"), None);
    }

    /// (rule or "error", line, message) of each finding.
    fn findings(src: &str) -> Vec<(String, usize, String)> {
        check_source(src)
            .into_iter()
            .map(|f| {
                (
                    f.rule.unwrap_or("error").to_string(),
                    f.location.line,
                    f.message,
                )
            })
            .collect()
    }

    fn has(src: &str, rule: &str, line: usize, message: &str) {
        let all = findings(src);
        assert!(
            all.iter()
                .any(|(r, l, m)| r == rule && *l == line && m == message),
            "{src:?}: want {rule} on line {line}: {message}\ngot {all:#?}"
        );
    }

    fn clean(src: &str) {
        let all = findings(src);
        assert!(all.is_empty(), "{src:?}: want no findings, got {all:#?}");
    }

    #[test]
    fn clean_file() {
        clean("ARG BASE=alpine\nFROM $BASE AS build\nWORKDIR /src\nCOPY . .\nRUN make\n\nFROM build\nCOPY --from=build /out /out\nCMD [\"/out\"]\n");
    }

    #[test]
    fn keeps_going_after_errors() {
        let src = "FROM alpine\nRUNN x\nCOPY a\nEXPOSE\nFROM a AS 1x\nRUN y\n";
        let all = findings(src);
        let errors: Vec<_> = all.iter().filter(|(r, _, _)| r == "error").collect();
        assert_eq!(errors.len(), 4, "{all:#?}");
        has(src, "error", 2, "unknown instruction: RUNN");
        has(src, "error", 4, "EXPOSE requires at least one argument");
    }

    #[test]
    fn error_rules() {
        let cases: &[(&str, usize, &str)] = &[
            ("RUN x\nFROM a", 1, "no build stage in current context"),
            ("ARG a", 1, "dockerfile contains no stages to build"),
            ("FROM busybox AS stage0\nCOPY --from=stage0 f1 /sub/\n", 2, "circular dependency detected on stage: stage0"),
            (
                "FROM busybox AS stage0\nCOPY --from=stage2 f1 /sub/\nFROM busybox AS stage1\nCOPY --from=stage0 f2 /sub/\nFROM busybox AS stage2\nCOPY --from=stage1 f2 /sub/\n",
                2,
                "circular dependency detected on stage: stage0",
            ),
            ("FROM busybox\nCOPY --from=0 f /\n", 2, "circular dependency detected on stage: stage-0"),
            ("FROM a AS x\nRUN --mount=from=x,target=/y ls\n", 2, "circular dependency detected on stage: x"),
            // A stage built on a later one that depends back on it.
            ("FROM a AS x\nCOPY --from=y f /\nFROM x AS y\n", 2, "circular dependency detected on stage: x"),
            ("FROM a\nCOPY --from=3 f /\n", 2, "invalid stage index 3"),
            ("FROM $NOPE\n", 1, "base name ($NOPE) should not be blank"),
            ("ARG V\nFROM a:${V:?unset}\n", 2, "failed to process \"a:${V:?unset}\": V: unset"),
            ("FROM --platform=$P a\n", 1, "empty platform value from expression $P"),
            // A global ARG that names a stage makes FROM use that stage.
            ("ARG B=x\nFROM a AS x\nCOPY --from=y f /\nFROM $B AS y\n", 3, "circular dependency detected on stage: x"),
            ("FROM a\nRUN --mount=type=foo x\n", 2, "unsupported mount type \"foo\""),
            ("FROM a\nADD --checksum=md5:x http://e/a /a\n", 2, "invalid --checksum=md5:x: expected sha256:<64 hexadecimal digits>"),
            ("FROM a\nRUN --mount=type=cache,target=/c,size=1m x\n", 2, "unexpected key 'size' for mount type 'cache'"),
            ("# check=skip=all;bogus=1\nFROM a", 1, "failed to parse check options: invalid check option \"bogus\""),
        ];
        for (src, line, message) in cases {
            has(src, "error", *line, message);
        }
    }

    #[test]
    fn not_cycles() {
        // BuildKit resolves a FROM name only against earlier stages: this is the image `x`.
        clean("FROM x AS x\nRUN true\n");
        // A later stage may be copied from, as long as nothing loops.
        clean("FROM a AS one\nCOPY --from=two f /\nFROM b AS two\nRUN true\n");
        // Variables in --mount values are judged at build time.
        clean("FROM a\nARG T=cache\nRUN --mount=type=$T,target=/c x\n");
    }

    #[test]
    fn warning_rules() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("FROM a\nMAINTAINER me\n", "MaintainerDeprecated", 2, "Maintainer instruction is deprecated in favor of using label"),
            ("FROM a AS Build\n", "StageNameCasing", 1, "Stage name 'Build' should be lowercase"),
            ("FROM a as b\n", "FromAsCasing", 1, "'as' and 'FROM' keywords' casing do not match"),
            ("from a AS b\n", "FromAsCasing", 1, "'AS' and 'from' keywords' casing do not match"),
            ("FROM a\nCMD echo hi\n", "JSONArgsRecommended", 2, "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"),
            ("FROM a\nentrypoint run\nRUN x\nCMD [\"y\"]\n", "ConsistentInstructionCasing", 2, "Command 'entrypoint' should match the case of the command majority (uppercase)"),
            ("from a\nrun x\nRUN y\n", "ConsistentInstructionCasing", 3, "Command 'RUN' should match the case of the command majority (lowercase)"),
            ("FROM a\nWORKDIR app\n", "WorkdirRelativePath", 2, "Relative workdir \"app\" can have unexpected results if the base image changes"),
            ("FROM a AS b\nFROM c AS b\n", "DuplicateStageName", 2, "Duplicate stage name \"b\", stage names should be unique"),
            ("FROM a AS scratch\n", "ReservedStageName", 1, "Stage name should not use the same name as reserved stage \"scratch\""),
            ("FROM a\nCMD [\"a\"]\nCMD [\"b\"]\n", "MultipleInstructionsDisallowed", 2, "Multiple CMD instructions should not be used in the same stage because only the last one will be used"),
            ("FROM a\nHEALTHCHECK NONE\nHEALTHCHECK NONE\n", "MultipleInstructionsDisallowed", 2, "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used"),
            ("FROM a\nENV k v\n", "LegacyKeyValueFormat", 2, "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"),
            ("FROM a\nEXPOSE 80/TCP\n", "ExposeProtoCasing", 1 + 1, "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase"),
            ("FROM a\nARG GITHUB_TOKEN\n", "SecretsUsedInArgOrEnv", 2, "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")"),
            ("ARG VERSION\nFROM a:$VERSON\n", "UndefinedArgInFrom", 2, "FROM argument 'VERSON' is not declared (did you mean VERSION?)"),
            ("FROM a\nRUN a \\\n\n  b\n", "NoEmptyContinuation", 2, "Empty continuation line"),
        ];
        for (src, rule, line, message) in cases {
            has(src, rule, *line, message);
        }
    }

    #[test]
    fn warnings_not_raised() {
        // An explicit SHELL makes shell-form CMD deliberate.
        clean("FROM a\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\n");
        // ... also when set in the stage this one is built on.
        clean("FROM a AS base\nSHELL [\"/bin/bash\", \"-c\"]\nFROM base\nCMD echo hi\n");
        // A relative WORKDIR after an absolute one, in this stage or its base.
        clean("FROM a AS base\nWORKDIR /app\nFROM base\nWORKDIR sub\n");
        clean("FROM a\nARG PUBLIC_KEY\nENV DEBUG=1\n");
        clean("FROM --platform=$BUILDPLATFORM a\n");
        clean("ARG TAG=3\nARG IMG=alpine:${TAG}\nFROM ${IMG}-$TARGETARCH AS x\n");
        clean("FROM a\nEXPOSE 80/tcp 53/udp\n");
    }

    #[test]
    fn check_directive_controls_warnings() {
        clean(
            "# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM a\nCMD x\nMAINTAINER me\n",
        );
        let all = check_source("# check=error=true\nFROM a\nCMD x\n");
        assert_eq!(all.len(), 1);
        assert!(all[0].is_error());
    }

    #[test]
    fn renders_like_docker() {
        let src = "FROM alpine\nCMD echo hi\n";
        let f = &check_source(src)[0];
        assert_eq!(
            f.to_diagnostic("Dockerfile", src).to_string(),
            "warning: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n --> Dockerfile:2:1\n  |\n2 | CMD echo hi\n  | ^^^"
        );
    }

    fn rules_of(findings: &[Finding], rule: &str) -> Vec<(usize, String)> {
        findings
            .iter()
            .filter(|f| f.rule == Some(rule))
            .map(|f| (f.location.line, f.message.clone()))
            .collect()
    }

    #[test]
    fn from_arg_without_default_warns_invalid_default_arg_in_from() {
        // Was only the blank-name error; BuildKit's check also warns, since a build with
        // `--build-arg BASE=...` works.
        let src = "ARG BASE\nFROM $BASE AS x\n";
        has(
            src,
            "InvalidDefaultArgInFrom",
            2,
            "Default value for ARG $BASE results in empty or invalid base image name",
        );
        // Without a value for BASE, BuildKit's check also gives this error.
        has(src, "error", 2, "base name ($BASE) should not be blank");
        // With one, only the warning: it judges the defaults.
        let args = HashMap::from([("BASE".to_string(), "busybox".to_string())]);
        let with_arg = check_source_with(
            src,
            &CheckOptions {
                build_args: Some(&args),
                ..CheckOptions::default()
            },
        );
        assert_eq!(with_arg.len(), 1, "{with_arg:#?}");
        assert_eq!(with_arg[0].rule, Some("InvalidDefaultArgInFrom"));
        assert!(!with_arg[0].is_error());
        clean("ARG BASE=busybox\nFROM $BASE AS x\n");
        // The name's syntax is the caller's (the parser knows no image references).
        let valid = |n: &str| n.chars().all(|c| !c.is_ascii_uppercase()) && !n.is_empty();
        let opts = CheckOptions {
            valid_image_name: Some(&valid),
            ..CheckOptions::default()
        };
        let f = check_source_with("ARG B=Bad\nFROM ${B}\n", &opts);
        assert_eq!(
            rules_of(&f, "InvalidDefaultArgInFrom"),
            vec![(
                2,
                "Default value for ARG ${B} results in empty or invalid base image name"
                    .to_string()
            )]
        );
        clean("# check=skip=InvalidDefaultArgInFrom,UndefinedArgInFrom\nARG BASE=\nFROM ${BASE:-busybox}\n");
    }

    #[test]
    fn undefined_var_matches_buildkit() {
        // Each expected line was produced by BuildKit's linter (73ed6825) on this file.
        let src = "FROM scratch\nCOPY $TARGETARCH /x\nENV A=1 B=$A\nENV PATHX=$PATH C=$PAHT\nARG D\nARG E=$D$F\nRUN echo $G\nCMD [\"$H\"]\nEXPOSE $I\nUSER $J\nWORKDIR /$K\nLABEL $L=$M\nVOLUME /v$N\nSTOPSIGNAL 9$O\nCOPY --chown=$P --chmod=$Q a$R $S\nRUN --mount=type=cache,target=/t$T,id=$U echo\nCOPY <<EOF /y\n$V\nEOF\nFROM scratch AS two\nARG GLOB\nFROM two\nCOPY $GLOB $A $W /\n";
        let want: Vec<(usize, String)> = [
            (2, "TARGETARCH", ""),
            (3, "A", ""),
            (4, "PAHT", "PATH"),
            (6, "F", "A"),
            (10, "J", "A"),
            (11, "K", "A"),
            (12, "L", "A"),
            (12, "M", "A"),
            (13, "N", "A"),
            (14, "O", "A"),
            (15, "P", "A"),
            (15, "Q", "A"),
            (15, "R", "A"),
            (15, "S", "A"),
            (16, "T", "A"),
            (16, "U", "A"),
            (17, "V", "A"),
            (23, "A", ""),
            (23, "W", ""),
        ]
        .iter()
        .map(|(l, v, m)| {
            let mut msg = format!("Usage of undefined variable '${v}'");
            if !m.is_empty() {
                msg.push_str(&format!(" (did you mean ${m}?)"));
            }
            (*l, msg)
        })
        .collect();
        let mut got = rules_of(&check_source(src), "UndefinedVar");
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want);
        // A build argument for an ARG means its default is not expanded.
        let args = HashMap::from([("E".to_string(), "1".to_string())]);
        let got = rules_of(
            &check_source_with(
                src,
                &CheckOptions {
                    build_args: Some(&args),
                    ..CheckOptions::default()
                },
            ),
            "UndefinedVar",
        );
        assert!(!got.iter().any(|(l, _)| *l == 6), "{got:#?}");
    }

    #[test]
    fn undefined_var_in_more_places_like_buildkit() {
        // Also from BuildKit's linter: ADD's flags and sources, heredocs unless the
        // delimiter is quoted, ENV names, JSON VOLUME; not HEALTHCHECK, SHELL or ONBUILD.
        let src = "FROM scratch\nARG BUILDKIT_SBOM_SCAN_STAGE=$X1\nADD --checksum=$X2 --chown=$X3 http://e/a$X4 /\nCOPY <<\"EOF\" /y\n$X5\nEOF\nENV ${X6}=1\nARG Q=\"$X7\"\nVOLUME [\"/v$X8\"]\nHEALTHCHECK CMD echo $X9\nSHELL [\"$X10\"]\nONBUILD COPY $X11 /\nCOPY <<EOF /z\n$X13 \"$X14\"\nEOF\nFROM scratch AS s3\nENV A=1\nFROM s3\nCOPY $A $PATH $X15 /\n";
        let mut got = rules_of(&check_source(src), "UndefinedVar");
        got.sort();
        let mut want: Vec<(usize, String)> = [
            (2, "X1"),
            (3, "X2"),
            (3, "X3"),
            (3, "X4"),
            (7, "X6"),
            (8, "X7"),
            (9, "X8"),
            (13, "X13"),
            (13, "X14"),
            (19, "X15"),
        ]
        .iter()
        .map(|(l, v)| (*l, format!("Usage of undefined variable '${v}'")))
        .collect();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn undefined_var_needs_the_base_image_env() {
        // The check cannot see an image's Env without help: nothing is reported there.
        clean("FROM busybox\nCOPY $NOPE /x\n");
        clean("FROM busybox AS b\nFROM b\nCOPY $NOPE /x\n");
        let env =
            |name: &str| (name == "img").then(|| vec!["FOO=1".to_string(), "NOVALUE".to_string()]);
        let opts = CheckOptions {
            image_env: Some(&env),
            ..CheckOptions::default()
        };
        let got = check_source_with(
            "FROM img\nCOPY $FOO $NOVALUE $PATH $FOOO /x\nFROM other\nCOPY $NOPE /\n",
            &opts,
        );
        assert_eq!(
            rules_of(&got, "UndefinedVar"),
            vec![(
                2,
                "Usage of undefined variable '$FOOO' (did you mean $FOO?)".to_string()
            )]
        );
        // A stage built on one with a known env knows it too, with its ENVs and ARGs.
        let got = check_source_with(
            "FROM img AS base\nENV E=1\nARG A\nFROM base\nCOPY $FOO $E $A $B /\n",
            &opts,
        );
        assert_eq!(
            rules_of(&got, "UndefinedVar"),
            vec![(
                5,
                "Usage of undefined variable '$B' (did you mean $E?)".to_string()
            )]
        );
    }

    #[test]
    fn undefined_var_arg_scoping() {
        // A global ARG is defined in a stage only once declared there again.
        has(
            "ARG G=1\nFROM scratch\nCOPY $G /x\n",
            "UndefinedVar",
            3,
            "Usage of undefined variable '$G'",
        );
        clean("ARG G=1\nFROM scratch\nARG G\nCOPY $G /x\n");
        // A declared ARG counts even without a value; it is defined only after it.
        clean("FROM scratch\nARG V\nWORKDIR /$V\n");
        has(
            "FROM scratch\nWORKDIR /$V\nARG V\n",
            "UndefinedVar",
            2,
            "Usage of undefined variable '$V'",
        );
        clean("FROM scratch\nARG A=1 B=$A\n");
        // Automatic platform ARGs too need declaring in the stage.
        clean("FROM scratch\nARG TARGETARCH\nCOPY $TARGETARCH /x\n");
        clean("# check=skip=UndefinedVar\nFROM scratch\nCOPY $NOPE /x\n");
    }

    #[test]
    fn undefined_var_not_in_shell_commands() {
        // BuildKit leaves the command of RUN, CMD, ENTRYPOINT and HEALTHCHECK to the shell.
        let src = "FROM scratch\nRUN echo $A\nRUN [\"echo\", \"$B\"]\nCMD [\"$C\"]\nENTRYPOINT [\"$D\"]\nEXPOSE $E\nRUN <<EOF\necho $F\nEOF\n";
        assert_eq!(rules_of(&check_source(src), "UndefinedVar"), vec![]);
    }

    proptest::proptest! {
        /// Whatever the text, checking it reports findings and never panics.
        #[test]
        fn never_panics(lines in proptest::collection::vec(
            r#"(FROM|from|RUN|COPY|ADD|ONBUILD|HEALTHCHECK|ENV|LABEL|ARG|EXPOSE|WORKDIR|CMD|ENTRYPOINT|SHELL|VOLUME|USER|STOPSIGNAL|MAINTAINER|FOO)( --[a-z]{1,8}(=[a-z0-9=,$"'/<-]{0,12})?){0,3}( [a-zA-Z0-9$<>"'=:/.\\\[\],{}é-]{0,10}){0,4}"#,
            1..12,
        )) {
            let src = lines.join("\n");
            for f in check_source(&src) {
                let _ = f.to_diagnostic("Dockerfile", &src).to_string();
            }
        }
    }
}
