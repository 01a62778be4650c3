//! Typed instructions: one syntax-tree node checked and turned into one [`Instruction`]
//! (BuildKit's `frontend/dockerfile/instructions`), with BuildKit's rules and wording.

use std::time::Duration;

use super::ast::{Heredoc, Location, Node};
use super::diag::{suggest, Diagnostic};
use super::dump::go_quote;
use super::error::ParseError;
use super::flags::{parse_flags, FlagError, FlagSpec, Flags};
use super::goparse;
use super::heredoc;
use super::runflags::{Device, MountSpec, NetworkMode, RunFlagError, SecurityMode};

/// The instructions of the Dockerfile reference, lowercase, in alphabetical order (the order
/// decides between equally close "did you mean" candidates).
pub const INSTRUCTION_NAMES: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// A command line in shell form (`RUN make`) or exec form (`RUN ["make"]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShellOrExec {
    /// Shell form: the text is run by the stage's shell. Empty when the instruction had no
    /// arguments.
    Shell(String),
    /// Exec form: the JSON array, run without a shell.
    Exec(Vec<String>),
}

impl ShellOrExec {
    fn new(args: &[String], json: bool) -> Self {
        if json {
            ShellOrExec::Exec(args.to_vec())
        } else {
            ShellOrExec::Shell(args.join(" "))
        }
    }

    /// BuildKit's `CmdLine`: the exec array, or the shell text as the only element (no
    /// element for an empty shell form).
    pub fn cmd_line(&self) -> Vec<String> {
        match self {
            ShellOrExec::Shell(s) if s.is_empty() => Vec::new(),
            ShellOrExec::Shell(s) => vec![s.clone()],
            ShellOrExec::Exec(v) => v.clone(),
        }
    }

    /// BuildKit's `PrependShell`: true for the shell form.
    pub fn prepend_shell(&self) -> bool {
        matches!(self, ShellOrExec::Shell(_))
    }
}

/// BuildKit's `handleJSONArgs`: exec-form arguments as they are, shell-form arguments joined
/// with single spaces into one.
pub fn handle_json_args(args: &[String], json: bool) -> Vec<String> {
    if args.is_empty() || json {
        return args.to_vec();
    }
    vec![args.join(" ")]
}

/// A heredoc given to RUN: a file the shell reads (`RUN <<EOF`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc delimiter, e.g. `EOF`.
    pub name: String,
    /// The body verbatim (for RUN, tabs are stripped by the consumer when `chomp` is set).
    pub data: String,
    /// True for `<<-`.
    pub chomp: bool,
}

/// A heredoc source of COPY or ADD: a file created from the Dockerfile's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceContent {
    /// The file name: the heredoc delimiter.
    pub path: String,
    /// The body, leading tabs already removed for `<<-`.
    pub data: String,
    /// False when the delimiter was quoted: variables in the body are not expanded.
    pub expand: bool,
}

/// One `key=value` of ENV or LABEL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key as written (quotes are removed by expansion later).
    pub key: String,
    /// The value as written.
    pub value: String,
    /// Written in the legacy `ENV key value` form.
    pub legacy: bool,
}

/// One name of an ARG instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgDef {
    /// The variable name.
    pub name: String,
    /// The default after `=`, as written; `None` when there is no `=`.
    pub default: Option<String>,
    /// Its doc comment (`# name text` directly above), without the name.
    pub comment: String,
}

/// `FROM [--platform=p] base [AS name]`: the start of a build stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct From {
    /// The base image or earlier stage, as written (variables not expanded).
    pub base: String,
    /// The stage name, lowercased.
    pub stage_name: Option<String>,
    /// `--platform`, as written.
    pub platform: Option<String>,
    /// The stage's doc comment (`# name text` directly above), without the name.
    pub comment: String,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub cmd: ShellOrExec,
    /// Heredoc bodies the command reads.
    pub files: Vec<InlineFile>,
    /// `--mount` values, syntax-checked; typed after expansion by
    /// [`parse_mount`](super::runflags::parse_mount).
    pub mounts: Vec<MountSpec>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--security`.
    pub security: SecurityMode,
    /// `--device` requests.
    pub devices: Vec<Device>,
    /// Names of the flags given, sorted.
    pub flags_used: Vec<String>,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `CMD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    /// The default command.
    pub cmd: ShellOrExec,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `ENTRYPOINT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entrypoint {
    /// The entry point.
    pub cmd: ShellOrExec,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `COPY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// Source paths or patterns (not heredocs).
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub contents: Vec<SourceContent>,
    /// The destination.
    pub dest: String,
    /// `--from`: a stage name, stage index, image or named context.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--parents`.
    pub parents: bool,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `ADD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Add {
    /// Source paths, patterns or URLs (not heredocs).
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub contents: Vec<SourceContent>,
    /// The destination.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--unpack`, when given.
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `ENV`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// The variables, in order.
    pub pairs: Vec<KeyValue>,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `LABEL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// The labels, in order.
    pub pairs: Vec<KeyValue>,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `ARG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    /// The names declared, in order.
    pub args: Vec<ArgDef>,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `EXPOSE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expose {
    /// Ports as written (`80`, `53/udp`), sorted as BuildKit sorts them.
    pub ports: Vec<String>,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `VOLUME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// The mount points, trimmed.
    pub volumes: Vec<String>,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `USER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// `user[:group]`, as written.
    pub user: String,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `WORKDIR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workdir {
    /// The directory, as written.
    pub path: String,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `ONBUILD`: an instruction stored in the image, run by builds that use it as a base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Onbuild {
    /// The trigger instruction's text, heredoc bodies appended as BuildKit stores them.
    pub expression: String,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `STOPSIGNAL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopsignal {
    /// The signal, as written.
    pub signal: String,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// The health check settings of `HEALTHCHECK CMD`. Zero durations and retries mean "use the
/// default", as in the image configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// `["CMD", args...]` for exec form, `["CMD-SHELL", command]` for shell form.
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: Duration,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--start-period`.
    pub start_period: Duration,
    /// `--start-interval`.
    pub start_interval: Duration,
    /// `--retries`.
    pub retries: u32,
}

/// What a `HEALTHCHECK` sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK CMD ...`.
    Cmd(HealthConfig),
}

/// `HEALTHCHECK`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healthcheck {
    /// The check.
    pub health: Health,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `SHELL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shell {
    /// The shell and its arguments.
    pub shell: Vec<String>,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// `MAINTAINER` (deprecated in favour of a label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maintainer {
    /// The author, as written.
    pub maintainer: String,
    /// Where the instruction starts.
    pub location: Location,
    /// The instruction's text (the logical line, trimmed).
    pub code: String,
}

/// One checked Dockerfile instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// `ADD`.
    Add(Add),
    /// `ARG`.
    Arg(Arg),
    /// `CMD`.
    Cmd(Cmd),
    /// `COPY`.
    Copy(Copy),
    /// `ENTRYPOINT`.
    Entrypoint(Entrypoint),
    /// `ENV`.
    Env(Env),
    /// `EXPOSE`.
    Expose(Expose),
    /// `FROM`.
    From(From),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `LABEL`.
    Label(Label),
    /// `MAINTAINER`.
    Maintainer(Maintainer),
    /// `ONBUILD`.
    Onbuild(Onbuild),
    /// `RUN`.
    Run(Run),
    /// `SHELL`.
    Shell(Shell),
    /// `STOPSIGNAL`.
    Stopsignal(Stopsignal),
    /// `USER`.
    User(User),
    /// `VOLUME`.
    Volume(Volume),
    /// `WORKDIR`.
    Workdir(Workdir),
}

macro_rules! each_instruction {
    ($self:expr, $i:ident => $e:expr) => {
        match $self {
            Instruction::Add($i) => $e,
            Instruction::Arg($i) => $e,
            Instruction::Cmd($i) => $e,
            Instruction::Copy($i) => $e,
            Instruction::Entrypoint($i) => $e,
            Instruction::Env($i) => $e,
            Instruction::Expose($i) => $e,
            Instruction::From($i) => $e,
            Instruction::Healthcheck($i) => $e,
            Instruction::Label($i) => $e,
            Instruction::Maintainer($i) => $e,
            Instruction::Onbuild($i) => $e,
            Instruction::Run($i) => $e,
            Instruction::Shell($i) => $e,
            Instruction::Stopsignal($i) => $e,
            Instruction::User($i) => $e,
            Instruction::Volume($i) => $e,
            Instruction::Workdir($i) => $e,
        }
    };
}

impl Instruction {
    /// Where the instruction starts.
    pub fn location(&self) -> Location {
        each_instruction!(self, i => i.location)
    }

    /// The instruction's text (the logical line, trimmed), as image history records it.
    pub fn code(&self) -> &str {
        each_instruction!(self, i => &i.code)
    }

    /// The instruction's name in upper case (`RUN`).
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::Add(_) => "ADD",
            Instruction::Arg(_) => "ARG",
            Instruction::Cmd(_) => "CMD",
            Instruction::Copy(_) => "COPY",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Env(_) => "ENV",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::From(_) => "FROM",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Run(_) => "RUN",
            Instruction::Shell(_) => "SHELL",
            Instruction::Stopsignal(_) => "STOPSIGNAL",
            Instruction::User(_) => "USER",
            Instruction::Volume(_) => "VOLUME",
            Instruction::Workdir(_) => "WORKDIR",
        }
    }
}

/// What is wrong with an instruction. Messages are BuildKit's, word for word.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InstructionErrorKind {
    /// No arguments where some are needed.
    #[error("{0} requires at least one argument")]
    AtLeastOneArgument(&'static str),
    /// Not exactly one argument.
    #[error("{0} requires exactly one argument")]
    ExactlyOneArgument(&'static str),
    /// COPY or ADD with one argument.
    #[error("{0} requires at least two arguments, but only one was provided. Destination could not be determined")]
    NoDestination(&'static str),
    /// An empty ENV, LABEL or ARG name.
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
    /// ENV or LABEL arguments that are not (key, value, separator) triples.
    #[error("Bad input to {0}, too many arguments")]
    TooManyArguments(&'static str),
    /// FROM with two, or more than three, arguments.
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    /// A stage name outside `[a-z][a-z0-9-_.]*`.
    #[error("invalid name for build stage: {}, name can't start with a number or contain symbols", go_quote(.0))]
    InvalidStageName(String),
    /// `ONBUILD ONBUILD`.
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    /// `ONBUILD FROM` or `ONBUILD MAINTAINER`.
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    /// A heredoc as COPY's or ADD's destination.
    #[error("{0} cannot accept a heredoc as a destination")]
    HeredocDestination(&'static str),
    /// SHELL in shell form.
    #[error("{command} requires the arguments to be in JSON form{hint}")]
    NotJson {
        /// The instruction.
        command: &'static str,
        /// BuildKit's hint about unescaped Windows paths, or empty.
        hint: String,
    },
    /// `HEALTHCHECK NONE x`.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    /// `HEALTHCHECK CMD` with nothing after it.
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    /// A HEALTHCHECK type other than CMD or NONE.
    #[error("Unknown type {} in HEALTHCHECK (try CMD)", go_quote(.0))]
    HealthcheckType(String),
    /// A non-zero health check duration below one millisecond.
    #[error("Interval {} cannot be less than 1ms", go_quote(.0))]
    IntervalTooShort(&'static str),
    /// A duration Go's `time.ParseDuration` refuses (its message).
    #[error(transparent)]
    Duration(crate::common::duration::DurationError),
    /// A `--retries` Go's `strconv.ParseInt` refuses (its message).
    #[error(transparent)]
    Retries(goparse::ParseIntError),
    /// A negative `--retries`.
    #[error("--retries cannot be negative ({0})")]
    NegativeRetries(i64),
    /// An empty VOLUME entry.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// A `--network` other than default, none or host.
    #[error("invalid network mode {}", go_quote(.0))]
    Network(String),
    /// A `--security` other than sandbox or insecure.
    #[error("security {} is not valid", go_quote(.0))]
    Security(String),
    /// A bad flag.
    #[error(transparent)]
    Flag(FlagError),
    /// A bad `--mount` or `--device` value.
    #[error(transparent)]
    RunFlag(RunFlagError),
    /// A keyword that is no instruction.
    #[error("unknown instruction: {keyword}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownInstruction {
        /// The keyword as written.
        keyword: String,
        /// A close instruction name, in the keyword's case.
        suggestion: Option<String>,
    },
    /// An instruction other than ARG before the first FROM.
    #[error("no build stage in current context")]
    NoBuildStage,
}

/// An instruction that cannot be accepted, with the place in the Dockerfile it refers to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct InstructionError {
    /// What is wrong.
    pub kind: InstructionErrorKind,
    /// Where to point: the keyword, or the flag or argument at fault when its column is known.
    pub location: Location,
    /// Characters to underline.
    pub width: usize,
    /// First line of the instruction.
    pub line: usize,
    /// Last line of the instruction.
    pub end_line: usize,
}

impl InstructionError {
    fn at_keyword(node: &Node, kind: InstructionErrorKind) -> Self {
        InstructionError {
            kind,
            location: node.location(),
            width: node.keyword.chars().count(),
            line: node.start_line,
            end_line: node.end_line,
        }
    }

    fn at(node: &Node, place: Option<(Location, usize)>, kind: InstructionErrorKind) -> Self {
        let mut e = Self::at_keyword(node, kind);
        if let Some((location, width)) = place {
            e.location = location;
            e.width = width;
        }
        e
    }

    /// The message as BuildKit's whole-file parse reports it: `dockerfile parse error on line
    /// N: ...` (except for an instruction outside any stage, which BuildKit does not prefix).
    pub fn buildkit_message(&self) -> String {
        match self.kind {
            InstructionErrorKind::NoBuildStage => self.kind.to_string(),
            _ => format!(
                "dockerfile parse error on line {}: {}",
                self.line, self.kind
            ),
        }
    }

    /// The message without a "did you mean" suffix, and the suggestion as a separate hint.
    pub fn message_and_help(&self) -> (String, Option<String>) {
        match &self.kind {
            InstructionErrorKind::UnknownInstruction {
                keyword,
                suggestion,
            } => (
                format!("unknown instruction: {keyword}"),
                suggestion.as_ref().map(|s| format!("did you mean {s}?")),
            ),
            InstructionErrorKind::Flag(f) => f.message_and_help(),
            k => split_suggestion(&k.to_string()),
        }
    }

    /// The same error as a [`ParseError`], for callers that report both kinds alike.
    pub fn to_parse_error(&self) -> ParseError {
        let (message, help) = self.message_and_help();
        let e = ParseError::new(message, self.location.line, self.location.column)
            .with_width(self.width)
            .with_end_line(self.end_line);
        match help {
            Some(h) => e.with_help(h),
            None => e,
        }
    }

    /// A displayable diagnostic for this error in `file`, whose text is `source`.
    pub fn to_diagnostic(&self, file: &str, source: &str) -> Diagnostic {
        self.to_parse_error().to_diagnostic(file, source)
    }
}

/// Split BuildKit's ` (did you mean x?)` suffix off a message, as a separate hint.
pub(crate) fn split_suggestion(message: &str) -> (String, Option<String>) {
    if let Some(body) = message.strip_suffix("?)") {
        if let Some((head, word)) = body.rsplit_once(" (did you mean ") {
            return (head.to_string(), Some(format!("did you mean {word}?")));
        }
    }
    (message.to_string(), None)
}

/// Turn one syntax-tree node into a checked instruction.
pub fn parse_instruction(node: &Node) -> Result<Instruction, InstructionError> {
    let req = Request::new(node);
    match node.instruction().as_str() {
        "add" => parse_add(&req).map(Instruction::Add),
        "arg" => parse_arg(&req).map(Instruction::Arg),
        "cmd" => parse_cmd(&req).map(|cmd| {
            Instruction::Cmd(Cmd {
                cmd,
                location: req.location(),
                code: req.code(),
            })
        }),
        "copy" => parse_copy(&req).map(Instruction::Copy),
        "entrypoint" => parse_cmd(&req).map(|cmd| {
            Instruction::Entrypoint(Entrypoint {
                cmd,
                location: req.location(),
                code: req.code(),
            })
        }),
        "env" => parse_key_values(&req, "ENV").map(|pairs| {
            Instruction::Env(Env {
                pairs,
                location: req.location(),
                code: req.code(),
            })
        }),
        "expose" => parse_expose(&req).map(Instruction::Expose),
        "from" => parse_from(&req).map(Instruction::From),
        "healthcheck" => parse_healthcheck(&req).map(Instruction::Healthcheck),
        "label" => parse_key_values(&req, "LABEL").map(|pairs| {
            Instruction::Label(Label {
                pairs,
                location: req.location(),
                code: req.code(),
            })
        }),
        "maintainer" => parse_single(&req, "MAINTAINER", true).map(|maintainer| {
            Instruction::Maintainer(Maintainer {
                maintainer,
                location: req.location(),
                code: req.code(),
            })
        }),
        "onbuild" => parse_onbuild(&req).map(Instruction::Onbuild),
        "run" => parse_run(&req).map(Instruction::Run),
        "shell" => parse_shell(&req).map(Instruction::Shell),
        // BuildKit does not read STOPSIGNAL's flags at all.
        "stopsignal" => parse_single(&req, "STOPSIGNAL", false).map(|signal| {
            Instruction::Stopsignal(Stopsignal {
                signal,
                location: req.location(),
                code: req.code(),
            })
        }),
        "user" => parse_single(&req, "USER", true).map(|user| {
            Instruction::User(User {
                user,
                location: req.location(),
                code: req.code(),
            })
        }),
        "volume" => parse_volume(&req).map(Instruction::Volume),
        "workdir" => parse_single(&req, "WORKDIR", true).map(|path| {
            Instruction::Workdir(Workdir {
                path,
                location: req.location(),
                code: req.code(),
            })
        }),
        _ => {
            let upper: Vec<String> = INSTRUCTION_NAMES.iter().map(|n| n.to_uppercase()).collect();
            let names: Vec<&str> = upper.iter().map(String::as_str).collect();
            Err(InstructionError::at(
                node,
                None,
                InstructionErrorKind::UnknownInstruction {
                    keyword: node.keyword.clone(),
                    suggestion: suggest(&node.keyword, &names, false),
                },
            ))
        }
    }
}

/// One node, with BuildKit's view of its arguments.
struct Request<'a> {
    node: &'a Node,
    /// The arguments; for ONBUILD, the nested keyword followed by its arguments.
    args: Vec<String>,
}

impl<'a> Request<'a> {
    fn new(node: &'a Node) -> Self {
        let args = match &node.next {
            Some(next) => std::iter::once(next.keyword.clone())
                .chain(next.args.iter().cloned())
                .collect(),
            None => node.args.clone(),
        };
        Request { node, args }
    }

    fn location(&self) -> Location {
        self.node.location()
    }

    fn code(&self) -> String {
        self.node.original.trim().to_string()
    }

    fn fail(&self, kind: InstructionErrorKind) -> InstructionError {
        InstructionError::at_keyword(self.node, kind)
    }

    fn fail_at(
        &self,
        place: Option<(Location, usize)>,
        kind: InstructionErrorKind,
    ) -> InstructionError {
        InstructionError::at(self.node, place, kind)
    }

    /// Parse the node's flags against `specs`, pointing a failure at the flag at fault.
    fn flags<'s>(&self, specs: &'s [FlagSpec<'s>]) -> Result<Flags<'s>, InstructionError> {
        parse_flags(specs, &self.node.flags).map_err(|e| {
            let place = flag_places(self.node).get(e.index).copied().flatten();
            self.fail_at(place, InstructionErrorKind::Flag(e))
        })
    }

    /// Where the `n`-th flag word named `name` is, if known.
    fn flag_place(&self, name: &str, n: usize) -> Option<(Location, usize)> {
        nth_flag_place(self.node, name, n)
    }

    /// The last flag word named `name` (the one whose value counts).
    fn last_flag_place(&self, name: &str) -> Option<(Location, usize)> {
        last_flag_place(self.node, name)
    }
}

/// Where the `n`-th flag word named `name` of `node` is written, and its width, when known.
pub(crate) fn nth_flag_place(node: &Node, name: &str, n: usize) -> Option<(Location, usize)> {
    let index = node
        .flags
        .iter()
        .enumerate()
        .filter(|(_, f)| flag_name(f) == name)
        .nth(n)
        .map(|(i, _)| i)?;
    flag_places(node).get(index).copied().flatten()
}

/// A `--checksum` value that is not `sha256:<64 hex>`, the only digest BuildKit accepts for
/// a URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid --checksum={0}: expected sha256:<64 hexadecimal digits>")]
pub struct ChecksumError(pub String);

/// Read an `ADD --checksum` value, once expanded: the digest, its hex lowercased. The parser
/// keeps the word (BuildKit's parser does not judge it); the planner judges a value without
/// variables, and `kiln build --check` the same, so both refuse it before any step runs.
pub fn parse_checksum(s: &str) -> Result<String, ChecksumError> {
    match s.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()) => {
            Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
        }
        _ => Err(ChecksumError(s.to_string())),
    }
}

/// Whether expanding `word` would change nothing: no `$`, no quote, no `escape` character.
pub fn is_literal(word: &str, escape: char) -> bool {
    !word
        .chars()
        .any(|c| matches!(c, '$' | '\'' | '"') || c == escape)
}

/// Where the last flag word named `name` of `node` (the one whose value counts) is written.
pub(crate) fn last_flag_place(node: &Node, name: &str) -> Option<(Location, usize)> {
    let count = node.flags.iter().filter(|f| flag_name(f) == name).count();
    nth_flag_place(node, name, count.checked_sub(1)?)
}

/// A flag word's name: the text between `--` and `=`.
fn flag_name(flag: &str) -> &str {
    let body = flag.strip_prefix("--").unwrap_or(flag);
    body.split_once('=').map_or(body, |(n, _)| n)
}

/// True when the instruction's logical line is one physical line, so offsets into
/// `original` are columns. Heredoc bodies follow the line and do not count.
fn single_physical_line(node: &Node) -> bool {
    let heredoc_lines: usize = node
        .heredocs
        .iter()
        .map(|h| h.content.matches('\n').count() + 1)
        .sum();
    node.end_line == node.start_line + heredoc_lines
}

/// The place of byte `offset` of the node's logical line, when it can be known.
fn place_of(node: &Node, offset: usize, len: usize) -> Option<(Location, usize)> {
    if !single_physical_line(node) {
        return None;
    }
    let before = node.original.get(..offset)?;
    let text = node.original.get(offset..offset + len)?;
    Some((
        Location {
            line: node.start_line,
            column: node.column + before.chars().count(),
        },
        text.chars().count().max(1),
    ))
}

/// Where each flag word is written, found by searching the logical line for `--name` in
/// order. Quoting can make the written form differ from the word; those stay unknown.
fn flag_places(node: &Node) -> Vec<Option<(Location, usize)>> {
    let text = &node.original;
    let mut cursor = node.keyword.len();
    node.flags
        .iter()
        .map(|flag| {
            let head = flag.split_once('=').map_or(flag.as_str(), |(n, _)| n);
            let found = text.get(cursor..).and_then(|rest| {
                rest.match_indices(head)
                    .map(|(i, _)| cursor + i)
                    .find(|&at| text[..at].ends_with(char::is_whitespace))
            })?;
            cursor = found + head.len();
            let len = if text[found..].starts_with(flag.as_str()) {
                flag.len()
            } else {
                head.len()
            };
            place_of(node, found, len)
        })
        .collect()
}

/// Where an argument is written, searching from the end of the line (for the last
/// arguments: a destination, a stage name).
fn last_arg_place(node: &Node, arg: &str) -> Option<(Location, usize)> {
    if arg.is_empty() {
        return None;
    }
    let at = node.original.rfind(arg)?;
    place_of(node, at, arg.len())
}

/// BuildKit's `getComment`: the first comment line starting with `name ` gives the rest.
fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .unwrap_or("")
        .to_string()
}

const ADD_FLAGS: &[FlagSpec<'static>] = &[
    FlagSpec::strings("exclude"),
    FlagSpec::string("chown", ""),
    FlagSpec::string("chmod", ""),
    FlagSpec::bool("link", false),
    FlagSpec::bool("keep-git-dir", false),
    FlagSpec::string("checksum", ""),
    FlagSpec::bool("unpack", false),
];

const COPY_FLAGS: &[FlagSpec<'static>] = &[
    FlagSpec::strings("exclude"),
    FlagSpec::bool("parents", false),
    FlagSpec::string("chown", ""),
    FlagSpec::string("from", ""),
    FlagSpec::string("chmod", ""),
    FlagSpec::bool("link", false),
];

const FROM_FLAGS: &[FlagSpec<'static>] = &[FlagSpec::string("platform", "")];

const RUN_FLAGS: &[FlagSpec<'static>] = &[
    FlagSpec::strings("mount"),
    FlagSpec::string("network", "default"),
    FlagSpec::string("security", "sandbox"),
    FlagSpec::strings("device"),
];

const HEALTHCHECK_FLAGS: &[FlagSpec<'static>] = &[
    FlagSpec::string("interval", ""),
    FlagSpec::string("timeout", ""),
    FlagSpec::string("start-period", ""),
    FlagSpec::string("start-interval", ""),
    FlagSpec::string("retries", ""),
];

/// BuildKit's `MustParseHeredoc`: the heredoc marker in `word`, or `None` when it is not
/// one (or its quotes do not balance).
fn heredoc_marker(word: &str) -> Option<Heredoc> {
    heredoc::parse_word(word).ok().flatten()
}

type SourcesAndDest = (Vec<String>, Vec<SourceContent>, String);

fn sources_and_dest(
    req: &Request<'_>,
    command: &'static str,
) -> Result<SourcesAndDest, InstructionError> {
    let Some((dest, srcs)) = req.args.split_last() else {
        return Err(req.fail(InstructionErrorKind::NoDestination(command)));
    };
    if heredoc_marker(dest).is_some() {
        return Err(req.fail_at(
            last_arg_place(req.node, dest),
            InstructionErrorKind::HeredocDestination(command),
        ));
    }
    let mut sources = Vec::new();
    let mut contents = Vec::new();
    for src in srcs {
        match heredoc_marker(src) {
            Some(m) => {
                // Like BuildKit's lookup map, a repeated name takes the last body; a name
                // without a body (heredocs not read) gives an empty file.
                let body = req
                    .node
                    .heredocs
                    .iter()
                    .rev()
                    .find(|h| h.name == m.name)
                    .map_or("", |h| h.content.as_str());
                contents.push(SourceContent {
                    data: if m.chomp {
                        heredoc::chomp(body)
                    } else {
                        body.to_string()
                    },
                    path: m.name,
                    expand: m.expand,
                });
            }
            None => sources.push(src.clone()),
        }
    }
    Ok((sources, contents, dest.clone()))
}

fn parse_add(req: &Request<'_>) -> Result<Add, InstructionError> {
    if req.args.len() < 2 {
        return Err(req.fail(InstructionErrorKind::NoDestination("ADD")));
    }
    let f = req.flags(ADD_FLAGS)?;
    let (sources, contents, dest) = sources_and_dest(req, "ADD")?;
    Ok(Add {
        sources,
        contents,
        dest,
        chown: f.non_empty("chown"),
        chmod: f.non_empty("chmod"),
        link: f.bool("link"),
        keep_git_dir: f.bool("keep-git-dir"),
        checksum: f.non_empty("checksum"),
        unpack: f.is_used("unpack").then(|| f.bool("unpack")),
        exclude: f.strings("exclude").to_vec(),
        location: req.location(),
        code: req.code(),
    })
}

fn parse_copy(req: &Request<'_>) -> Result<Copy, InstructionError> {
    if req.args.len() < 2 {
        return Err(req.fail(InstructionErrorKind::NoDestination("COPY")));
    }
    let f = req.flags(COPY_FLAGS)?;
    let (sources, contents, dest) = sources_and_dest(req, "COPY")?;
    Ok(Copy {
        sources,
        contents,
        dest,
        from: f.non_empty("from"),
        chown: f.non_empty("chown"),
        chmod: f.non_empty("chmod"),
        link: f.bool("link"),
        exclude: f.strings("exclude").to_vec(),
        parents: f.bool("parents"),
        location: req.location(),
        code: req.code(),
    })
}

fn parse_arg(req: &Request<'_>) -> Result<Arg, InstructionError> {
    if req.args.is_empty() {
        return Err(req.fail(InstructionErrorKind::AtLeastOneArgument("ARG")));
    }
    // BuildKit never reads ARG's flags, so `ARG --x a` is accepted with the flag ignored.
    let mut args = Vec::with_capacity(req.args.len());
    for arg in &req.args {
        let (name, default) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        if name.is_empty() {
            return Err(req.fail(InstructionErrorKind::BlankName("ARG")));
        }
        args.push(ArgDef {
            name: name.to_string(),
            default,
            comment: doc_comment(&req.node.prev_comment, name),
        });
    }
    Ok(Arg {
        args,
        location: req.location(),
        code: req.code(),
    })
}

/// CMD and ENTRYPOINT (no flags; no arguments is allowed and clears the setting).
fn parse_cmd(req: &Request<'_>) -> Result<ShellOrExec, InstructionError> {
    req.flags(&[])?;
    Ok(ShellOrExec::new(&req.args, req.node.json))
}

/// ENV and LABEL: (key, value, separator) triples from the parser.
fn parse_key_values(
    req: &Request<'_>,
    command: &'static str,
) -> Result<Vec<KeyValue>, InstructionError> {
    req.flags(&[])?;
    if req.args.is_empty() {
        return Err(req.fail(InstructionErrorKind::AtLeastOneArgument(command)));
    }
    if !req.args.len().is_multiple_of(3) {
        return Err(req.fail(InstructionErrorKind::TooManyArguments(command)));
    }
    req.args
        .chunks_exact(3)
        .map(|t| match t {
            [key, value, sep] if !key.is_empty() => Ok(KeyValue {
                key: key.clone(),
                value: value.clone(),
                legacy: sep.is_empty(),
            }),
            _ => Err(req.fail(InstructionErrorKind::BlankName(command))),
        })
        .collect()
}

fn parse_expose(req: &Request<'_>) -> Result<Expose, InstructionError> {
    if req.args.is_empty() {
        return Err(req.fail(InstructionErrorKind::AtLeastOneArgument("EXPOSE")));
    }
    req.flags(&[])?;
    let mut ports = req.args.clone();
    ports.sort();
    Ok(Expose {
        ports,
        location: req.location(),
        code: req.code(),
    })
}

fn parse_from(req: &Request<'_>) -> Result<From, InstructionError> {
    let stage_name = match req.args.as_slice() {
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            if !valid_stage_name(&lower) {
                return Err(req.fail_at(
                    last_arg_place(req.node, name),
                    InstructionErrorKind::InvalidStageName(name.clone()),
                ));
            }
            Some(lower)
        }
        [_] => None,
        _ => return Err(req.fail(InstructionErrorKind::FromArguments)),
    };
    let f = req.flags(FROM_FLAGS)?;
    let base = req.args.first().cloned().unwrap_or_default();
    Ok(From {
        base,
        comment: doc_comment(&req.node.prev_comment, stage_name.as_deref().unwrap_or("")),
        stage_name,
        platform: f.non_empty("platform"),
        location: req.location(),
        code: req.code(),
    })
}

/// `^[a-z][a-z0-9-_.]*$`.
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_healthcheck(req: &Request<'_>) -> Result<Healthcheck, InstructionError> {
    let Some((typ, args)) = req.args.split_first() else {
        return Err(req.fail(InstructionErrorKind::AtLeastOneArgument("HEALTHCHECK")));
    };
    let typ = typ.to_uppercase();
    let done = |health| Healthcheck {
        health,
        location: req.location(),
        code: req.code(),
    };
    if typ == "NONE" {
        // BuildKit reads no flags for NONE: `HEALTHCHECK --interval=1s NONE` is accepted.
        if !args.is_empty() {
            return Err(req.fail(InstructionErrorKind::HealthcheckNoneArguments));
        }
        return Ok(done(Health::None));
    }
    let f = req.flags(HEALTHCHECK_FLAGS)?;
    if typ != "CMD" {
        return Err(req.fail(InstructionErrorKind::HealthcheckType(typ)));
    }
    let cmd = handle_json_args(args, req.node.json);
    if cmd.is_empty() {
        return Err(req.fail(InstructionErrorKind::HealthcheckMissingCommand));
    }
    let head = if req.node.json { "CMD" } else { "CMD-SHELL" };
    let test = std::iter::once(head.to_string()).chain(cmd).collect();
    let interval = |name: &'static str| -> Result<Duration, InstructionError> {
        let value = f.string(name);
        if value.is_empty() {
            return Ok(Duration::ZERO);
        }
        let place = req.last_flag_place(name);
        let d = crate::common::duration::parse_duration(value)
            .map_err(|m| req.fail_at(place, InstructionErrorKind::Duration(m)))?;
        // Zero means "inherit"; anything else must be at least a millisecond (negative too).
        if d != 0 && d < 1_000_000 {
            return Err(req.fail_at(place, InstructionErrorKind::IntervalTooShort(name)));
        }
        Ok(crate::common::duration::nanos_to_duration(d))
    };
    let retries = match f.string("retries") {
        "" => 0,
        v => {
            let place = req.last_flag_place("retries");
            let n = goparse::parse_int32(v)
                .map_err(|m| req.fail_at(place, InstructionErrorKind::Retries(m)))?;
            u32::try_from(n)
                .map_err(|_| req.fail_at(place, InstructionErrorKind::NegativeRetries(n)))?
        }
    };
    Ok(done(Health::Cmd(HealthConfig {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })))
}

fn parse_onbuild(req: &Request<'_>) -> Result<Onbuild, InstructionError> {
    let Some(trigger) = req.args.first() else {
        return Err(req.fail(InstructionErrorKind::AtLeastOneArgument("ONBUILD")));
    };
    req.flags(&[])?;
    let trigger = trigger.trim().to_uppercase();
    // The nested keyword's column is only right when the line was not continued.
    let trigger_place = req
        .node
        .next
        .as_ref()
        .filter(|_| single_physical_line(req.node))
        .map(|n| (n.location(), n.keyword.chars().count().max(1)));
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(req.fail_at(trigger_place, InstructionErrorKind::OnbuildChain));
        }
        "MAINTAINER" | "FROM" => {
            return Err(req.fail_at(trigger_place, InstructionErrorKind::OnbuildTrigger(trigger)));
        }
        _ => {}
    }
    let mut expression = strip_onbuild(&req.node.original).to_string();
    for h in &req.node.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Ok(Onbuild {
        expression,
        location: req.location(),
        code: req.code(),
    })
}

/// The text after `(?i)^\s*ONBUILD\s*` (Go's `\s`: ASCII blanks without vertical tab).
fn strip_onbuild(original: &str) -> &str {
    let go_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r');
    let s = original.trim_start_matches(go_space);
    match s.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => s[7..].trim_start_matches(go_space),
        _ => original,
    }
}

fn parse_run(req: &Request<'_>) -> Result<Run, InstructionError> {
    let f = req.flags(RUN_FLAGS)?;
    let cmd = ShellOrExec::new(&req.args, req.node.json);
    let files = req
        .node
        .heredocs
        .iter()
        .map(|h| InlineFile {
            name: h.name.clone(),
            data: h.content.clone(),
            chomp: h.chomp,
        })
        .collect();
    // BuildKit's RUN flag hooks run in source-file order: device, mount, network, security.
    let devices = f
        .strings("device")
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            Device::parse(raw).map_err(|e| {
                req.fail_at(
                    req.flag_place("device", i),
                    InstructionErrorKind::RunFlag(e),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mounts = f
        .strings("mount")
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            MountSpec::parse(raw).map_err(|e| {
                req.fail_at(req.flag_place("mount", i), InstructionErrorKind::RunFlag(e))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let network = f.string("network");
    let network = NetworkMode::parse(network).ok_or_else(|| {
        req.fail_at(
            req.last_flag_place("network"),
            InstructionErrorKind::Network(network.to_string()),
        )
    })?;
    let security = f.string("security");
    let security = SecurityMode::parse(security).ok_or_else(|| {
        req.fail_at(
            req.last_flag_place("security"),
            InstructionErrorKind::Security(security.to_string()),
        )
    })?;
    Ok(Run {
        cmd,
        files,
        mounts,
        network,
        security,
        devices,
        flags_used: f.used().into_iter().map(str::to_string).collect(),
        location: req.location(),
        code: req.code(),
    })
}

fn parse_shell(req: &Request<'_>) -> Result<Shell, InstructionError> {
    req.flags(&[])?;
    let shell = handle_json_args(&req.args, req.node.json);
    if shell.is_empty() {
        return Err(req.fail(InstructionErrorKind::AtLeastOneArgument("SHELL")));
    }
    if !req.node.json {
        return Err(req.fail(InstructionErrorKind::NotJson {
            command: "SHELL",
            hint: windows_path_hint("SHELL", &req.node.original),
        }));
    }
    Ok(Shell {
        shell,
        location: req.location(),
        code: req.code(),
    })
}

/// BuildKit's hint for a JSON array holding an unescaped Windows path (`["c:\windows"]`).
fn windows_path_hint(command: &str, original: &str) -> String {
    let lower = original
        .to_lowercase()
        .replace(&format!("{} ", command.to_lowercase()), "");
    let bytes = lower.as_bytes();
    let drive_path = bytes
        .windows(4)
        .any(|w| w[0] == b'"' && w[1].is_ascii_lowercase() && w[2] == b':' && w[3] == b'\\');
    if drive_path && !lower.contains("\\\\") && lower.contains('[') && lower.contains(']') {
        format!(
            ". It looks like '{lower}' includes a file path without an escaped back-slash. JSON requires back-slashes to be escaped such as [\"c:\\\\path\\\\to\\\\file.exe\", \"/parameter\"]"
        )
    } else {
        String::new()
    }
}

/// MAINTAINER, USER, WORKDIR, STOPSIGNAL: exactly one argument.
fn parse_single(
    req: &Request<'_>,
    command: &'static str,
    read_flags: bool,
) -> Result<String, InstructionError> {
    let [arg] = req.args.as_slice() else {
        return Err(req.fail(InstructionErrorKind::ExactlyOneArgument(command)));
    };
    if read_flags {
        req.flags(&[])?;
    }
    Ok(arg.clone())
}

fn parse_volume(req: &Request<'_>) -> Result<Volume, InstructionError> {
    if req.args.is_empty() {
        return Err(req.fail(InstructionErrorKind::AtLeastOneArgument("VOLUME")));
    }
    req.flags(&[])?;
    let volumes = req
        .args
        .iter()
        .map(|v| {
            let v = v.trim();
            if v.is_empty() {
                Err(req.fail(InstructionErrorKind::EmptyVolume))
            } else {
                Ok(v.to_string())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Volume {
        volumes,
        location: req.location(),
        code: req.code(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    fn first(src: &str) -> Result<Instruction, InstructionError> {
        let df = parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        parse_instruction(&df.children[0])
    }

    fn error(src: &str) -> InstructionError {
        match first(src) {
            Ok(i) => panic!("{src:?} parsed as {i:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn argument_errors() {
        let cases: &[(&str, &str)] = &[
            ("USER", "USER requires exactly one argument"),
            ("ENV", "ENV requires at least one argument"),
            ("ADD a", "ADD requires at least two arguments, but only one was provided. Destination could not be determined"),
            ("FROM a b", "FROM requires either one or three arguments"),
            ("FROM a AS 1x", "invalid name for build stage: \"1x\", name can't start with a number or contain symbols"),
            ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
            ("ONBUILD onbuild RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
            ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
            ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
            ("HEALTHCHECK foo", "Unknown type \"FOO\" in HEALTHCHECK (try CMD)"),
            ("HEALTHCHECK --interval=1 CMD x", "time: missing unit in duration \"1\""),
            ("HEALTHCHECK --timeout=10us CMD x", "Interval \"timeout\" cannot be less than 1ms"),
            ("HEALTHCHECK --start-interval=-1s CMD x", "Interval \"start-interval\" cannot be less than 1ms"),
            ("HEALTHCHECK --retries=x CMD x", "strconv.ParseInt: parsing \"x\": invalid syntax"),
            ("HEALTHCHECK --retries=-2 CMD x", "--retries cannot be negative (-2)"),
            ("SHELL sh -c", "SHELL requires the arguments to be in JSON form"),
            ("SHELL []", "SHELL requires at least one argument"),
            ("VOLUME [\" \"]", "VOLUME specified can not be an empty string"),
            ("RUN --network=bridge x", "invalid network mode \"bridge\""),
            ("RUN --security=foo x", "security \"foo\" is not valid"),
            ("RUN --mount=from=$X x", "'from' doesn't support variable expansion, define alias stage instead"),
            ("RUN --device=a,b x", "invalid field 'b' must be a key=value pair"),
            ("RUNN x", "unknown instruction: RUNN (did you mean RUN?)"),
            ("Foo x", "unknown instruction: Foo (did you mean from?)"),
            ("COPY a <<EOF\nEOF", "COPY cannot accept a heredoc as a destination"),
            ("USER --x a", "unknown flag: --x"),
        ];
        for (src, want) in cases {
            assert_eq!(error(src).to_string(), *want, "source {src:?}");
        }
    }

    #[test]
    fn retries_refusals_are_typed() {
        // `--retries` kept only Go's message as a string; a caller now matches the kind.
        use goparse::ParseIntError;
        let cases = [
            ("x", ParseIntError::Syntax("x".to_string())),
            (
                "2147483648",
                ParseIntError::OutOfRange("2147483648".to_string()),
            ),
        ];
        for (value, want) in cases {
            let e = error(&format!("HEALTHCHECK --retries={value} CMD x"));
            assert_eq!(e.kind, InstructionErrorKind::Retries(want), "{value}");
            assert_eq!(
                std::error::Error::source(&e.kind).map(|s| s.to_string()),
                None,
                "the message is Go's alone, not repeated by a cause"
            );
        }
    }

    #[test]
    fn duration_refusals_are_typed() {
        // A bad `--interval` kept only Go's message as a string; a caller now matches the kind.
        use crate::common::duration::DurationError;
        let e = error("HEALTHCHECK --interval=1 CMD x");
        assert_eq!(
            e.kind,
            InstructionErrorKind::Duration(DurationError::MissingUnit("1".to_string()))
        );
        let e = error("HEALTHCHECK --timeout=5d CMD x");
        assert!(matches!(
            e.kind,
            InstructionErrorKind::Duration(DurationError::UnknownUnit { ref unit, .. }) if unit == "d"
        ));
    }

    #[test]
    fn windows_path_hint_like_buildkit() {
        let e = error("SHELL [\"c:\\windows\\cmd.exe\"]");
        assert!(
            e.to_string().contains("without an escaped back-slash"),
            "{e}"
        );
    }

    #[test]
    fn errors_point_at_the_culprit() {
        // (source, line, column, width)
        let cases: &[(&str, usize, usize, usize)] = &[
            ("RUNN apk add curl", 1, 1, 4),
            ("  COPY --chow=1 a b", 1, 8, 8),
            ("COPY --from=a --from=b x y", 1, 15, 8),
            ("RUN --network=foo x", 1, 5, 13),
            ("FROM a AS Bad!", 1, 11, 4),
            ("\nONBUILD FROM x", 2, 9, 4),
            ("COPY x <<EOF\nEOF", 1, 8, 5),
            // A continuation makes columns after the first line unknowable: the keyword.
            ("COPY \\\n --chow=1 a b", 1, 1, 4),
        ];
        for (src, line, column, width) in cases {
            let e = error(src);
            assert_eq!(
                (e.location.line, e.location.column, e.width),
                (*line, *column, *width),
                "source {src:?}: {e}"
            );
        }
    }

    #[test]
    fn renders_with_caret_and_hint() {
        let src = "FROM alpine\nRUNN apk add curl\n";
        let df = parse(src).unwrap();
        let e = parse_instruction(&df.children[1]).unwrap_err();
        assert_eq!(
            e.buildkit_message(),
            "dockerfile parse error on line 2: unknown instruction: RUNN (did you mean RUN?)"
        );
        let shown = e.to_diagnostic("Dockerfile", src).to_string();
        assert_eq!(
            shown,
            "error: unknown instruction: RUNN\n --> Dockerfile:2:1\n  |\n2 | RUNN apk add curl\n  | ^^^^ did you mean RUN?"
        );
    }

    #[test]
    fn typed_values() {
        let Ok(Instruction::Copy(c)) =
            first("COPY --from=build --chown=1:2 --link --exclude=*.md a b /dst/")
        else {
            panic!("not a copy");
        };
        assert_eq!(c.sources, vec!["a", "b"]);
        assert_eq!(c.dest, "/dst/");
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(c.chown.as_deref(), Some("1:2"));
        assert!(c.link && !c.parents);
        assert_eq!(c.exclude, vec!["*.md"]);

        let Ok(Instruction::Add(a)) = first("ADD --unpack=false --checksum=sha256:x u /d") else {
            panic!("not an add");
        };
        assert_eq!(
            (a.unpack, a.checksum.as_deref()),
            (Some(false), Some("sha256:x"))
        );

        let Ok(Instruction::Healthcheck(h)) =
            first("HEALTHCHECK --interval=1m30s --retries=3 CMD [\"curl\", \"-f\", \"x\"]")
        else {
            panic!("not a healthcheck");
        };
        let Health::Cmd(cfg) = h.health else {
            panic!("not CMD")
        };
        assert_eq!(cfg.test, vec!["CMD", "curl", "-f", "x"]);
        assert_eq!(cfg.interval, Duration::from_secs(90));
        assert_eq!(cfg.retries, 3);

        let Ok(Instruction::Run(r)) =
            first("RUN --mount=type=cache,target=/c --network=none --device=x,required make")
        else {
            panic!("not a run");
        };
        assert_eq!(r.cmd, ShellOrExec::Shell("make".into()));
        assert_eq!(r.network, NetworkMode::None);
        assert_eq!(r.mounts.len(), 1);
        assert!(r.devices[0].required);
        assert_eq!(r.flags_used, vec!["device", "mount", "network"]);

        let Ok(Instruction::From(f)) = first("# Build builds\nFROM --platform=$P img AS Build")
        else {
            panic!("not a from");
        };
        assert_eq!(f.stage_name.as_deref(), Some("build"));
        assert_eq!(f.platform.as_deref(), Some("$P"));
        assert_eq!(f.comment, "");

        let Ok(Instruction::Onbuild(o)) = first("ONBUILD  RUN echo hi") else {
            panic!("not onbuild");
        };
        assert_eq!(o.expression, "RUN echo hi");

        let Ok(Instruction::Env(e)) = first("ENV a b c") else {
            panic!("not env");
        };
        assert_eq!(e.pairs[0].value, "b c");
        assert!(e.pairs[0].legacy);
    }

    /// The parser does not read heredoc bodies yet: these nodes carry them as it will.
    #[test]
    fn heredoc_bodies_from_nodes() {
        let doc = |name: &str, content: &str, chomp: bool, expand: bool| Heredoc {
            name: name.to_string(),
            file_descriptor: 0,
            expand,
            chomp,
            content: content.to_string(),
        };
        let node = Node {
            keyword: "COPY".into(),
            args: vec![
                "<<-EOF1".into(),
                "<<'EOF2'".into(),
                "f.txt".into(),
                "/bar".into(),
            ],
            heredocs: vec![
                doc("EOF1", "\tone\n\t\ttwo\n", true, true),
                doc("EOF2", "\tthree\n", false, false),
            ],
            original: "COPY <<-EOF1 <<'EOF2' f.txt /bar".into(),
            start_line: 1,
            end_line: 6,
            column: 1,
            ..Default::default()
        };
        let Ok(Instruction::Copy(c)) = parse_instruction(&node) else {
            panic!("not a copy");
        };
        assert_eq!(c.sources, vec!["f.txt"]);
        let got: Vec<_> = c
            .contents
            .iter()
            .map(|s| (s.path.as_str(), s.data.as_str(), s.expand))
            .collect();
        assert_eq!(
            got,
            vec![("EOF1", "one\ntwo\n", true), ("EOF2", "\tthree\n", false)]
        );
        // Heredoc lines after the logical line still leave its columns known.
        assert!(single_physical_line(&node));

        let node = Node {
            keyword: "RUN".into(),
            args: vec!["<<-EOF".into()],
            heredocs: vec![doc("EOF", "\techo test\n", true, true)],
            original: "RUN <<-EOF".into(),
            start_line: 1,
            end_line: 3,
            column: 1,
            ..Default::default()
        };
        let Ok(Instruction::Run(r)) = parse_instruction(&node) else {
            panic!("not a run");
        };
        // RUN keeps the tabs: the shell strips them.
        assert_eq!(
            r.files,
            vec![InlineFile {
                name: "EOF".into(),
                data: "\techo test\n".into(),
                chomp: true
            }]
        );
        let node = Node {
            keyword: "ONBUILD".into(),
            next: Some(Box::new(Node {
                keyword: "RUN".into(),
                args: vec!["<<EOF".into()],
                ..Default::default()
            })),
            heredocs: vec![doc("EOF", "echo hi\n", false, true)],
            original: "ONBUILD RUN <<EOF".into(),
            start_line: 1,
            end_line: 3,
            column: 1,
            ..Default::default()
        };
        let Ok(Instruction::Onbuild(o)) = parse_instruction(&node) else {
            panic!("not onbuild");
        };
        assert_eq!(o.expression, "RUN <<EOF\necho hi\nEOF");
    }

    #[test]
    fn heredoc_markers() {
        // (word, Some((name, chomp, expand)) when it is a marker)
        type Case = (&'static str, Option<(&'static str, bool, bool)>);
        let cases: &[Case] = &[
            ("<<EOF", Some(("EOF", false, true))),
            ("<<-'EOF'", Some(("EOF", true, false))),
            ("<<EO\"F\"", Some(("EOF", false, false))),
            ("<<\\'EOF", Some(("'EOF", false, true))),
            ("<<'EOF", None),
            ("<<", None),
            ("<EOF", None),
            ("<<<EOF", None),
            ("EOF", None),
        ];
        for (word, want) in cases {
            let got = heredoc_marker(word).map(|m| (m.name, m.chomp, m.expand));
            let want = want.map(|(n, c, e)| (n.to_string(), c, e));
            assert_eq!(got, want, "word {word:?}");
        }
    }
}
