//! `kiln build`: flags, reading the Dockerfile and `.dockerignore`, progress output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clap::{Args, ValueEnum};

use kiln::build::{self, BuildEvent, BuildRequest, Progress};
use kiln::common::platform::Platform;
use kiln::image::Reference;
use kiln::parser;
use kiln::store::Store;

use super::values::{
    BuildPull, Entitlement, Network, OnError, OutputType, ProgressMode, PushCompression,
};

mod input;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); may be repeated
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Name of the Dockerfile (default: PATH/Dockerfile; `-` reads standard input)
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable (`K=V`, or `K` to take it from the environment)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build this stage and what it needs, not the last one
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache
    #[arg(long)]
    pub no_cache: bool,
    /// Build for this platform (`os/arch[/variant]`: linux/arm64, linux/arm/v7), or for
    /// several, comma-separated, into one image index; RUN steps of a foreign platform run
    /// under QEMU's user-mode emulation (see `kiln info`)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Do not use the cache for these stages (by name); may be repeated
    #[arg(long = "no-cache-filter")]
    pub no_cache_filter: Vec<String>,
    /// Always attempt to pull all referenced images (`--pull` alone, or `--pull=true`); also
    /// `--pull=false|missing` (only images the store lacks, the default), `--pull=always` and
    /// `--pull=never`
    #[arg(
        long,
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = BuildPull::Missing,
        hide_possible_values = true,
        hide_default_value = true
    )]
    pub pull: BuildPull,
    /// Push the image to its registry under every `-t` name (`--output type=registry`)
    #[arg(long)]
    pub push: bool,
    /// Layer compression when pushing: gzip (default) or zstd
    #[arg(long, value_enum, default_value_t = PushCompression::Gzip)]
    pub compression: PushCompression,
    /// Network for RUN steps: `default` (a network namespace of their own with outbound
    /// access through pasta, and no way to the host's loopback), `host` (the host's network,
    /// its loopback services included) or `none` (loopback only)
    #[arg(long, value_enum, default_value_t = Network::Default)]
    pub network: Network,
    /// Grant an entitlement: `network.host` lets `RUN --network=host` use the host's network
    #[arg(long = "allow", value_enum)]
    pub allow: Vec<Entitlement>,
    /// Progress output: auto (tty on a terminal, else plain), tty (a live view), plain,
    /// json or quiet
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Set metadata on the image (`K=V`); may be repeated
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip) for RUN steps
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Write the image ID to this file
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata (image ID, manifest digest, names) to this JSON file
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Print only the image ID
    #[arg(short, long)]
    pub quiet: bool,
    /// Check the Dockerfile for errors and warnings without building
    #[arg(long)]
    pub check: bool,
    /// Print every input of every step's cache key beside the previous build's
    #[arg(long)]
    pub explain: bool,
    /// Also export the result: `type=oci|docker,dest=FILE` (an image archive `docker load`,
    /// `podman load` and `skopeo` read), `type=tar,dest=FILE` or `type=local,dest=DIR` (the
    /// image's files); `dest=-` writes to standard output
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VAR`
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Export the build cache: `type=local,dest=DIR[,mode=min|max]` (an OCI image layout)
    /// or `type=registry,ref=HOST/REPO:TAG[,mode=min|max]` (an OCI artifact in a registry)
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Use an exported build cache: `type=local,src=DIR` or `type=registry,ref=HOST/REPO:TAG`
    /// (a bare `HOST/REPO:TAG` is the latter); may be repeated
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// An ssh-agent for `RUN --mount=type=ssh`: `default` (from `$SSH_AUTH_SOCK`),
    /// `ID=SOCKET` or `ID=KEY[,KEY...]` (key files, served by a private ssh-agent)
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// When a RUN step fails: `fail` (the build ends) or `shell` (first, on a terminal, a shell
    /// in the step's sandbox on the files it left; nothing the shell does is kept)
    #[arg(long = "on-error", value_enum, default_value_t = OnError::Fail)]
    pub on_error: OnError,
    /// With `--on-error=shell`: mount the step's secrets and ssh agents in the shell too
    #[arg(long = "debug-secrets")]
    pub debug_secrets: bool,
    /// Additional build contexts (`NAME=PATH`, `NAME=docker-image://REF`,
    /// `NAME=oci-layout://DIR[:TAG][@DIGEST]`, `NAME=https://…`), used by `FROM NAME`,
    /// `COPY --from=NAME` and `RUN --mount=from=NAME`; may be repeated
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Size of `/dev/shm` in RUN steps (`64m`, `1g`; default 64 MiB)
    #[arg(long = "shm-size", value_name = "BYTES")]
    pub shm_size: Option<String>,
    /// Resource limits of RUN steps (`nofile=1024:2048`; at most kiln's own hard limit); may
    /// be repeated
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// No effect: RUN steps leave no intermediate containers (accepted for Docker's scripts)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true)]
    #[arg(default_missing_value = "true")]
    pub rm: Option<bool>,
    /// No effect: RUN steps leave no intermediate containers (accepted for Docker's scripts)
    #[arg(long = "force-rm", value_name = "BOOL", num_args = 0..=1, require_equals = true)]
    #[arg(default_missing_value = "true")]
    pub force_rm: Option<bool>,
    /// No effect: the image is always in kiln's store (Docker's `--output=type=docker`)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true)]
    #[arg(default_missing_value = "true")]
    pub load: Option<bool>,
    /// Build context directory, or `-` to read a Dockerfile or a context tar from standard
    /// input
    pub path: PathBuf,
    /// A second path only `--pull VALUE PATH` (kiln's old form of `--pull=VALUE`) gives
    #[arg(hide = true)]
    pub extra_path: Option<PathBuf>,
}

/// Plain progress in BuildKit's `--progress=plain` shape, on standard error.
struct Plain {
    out: Mutex<std::io::Stderr>,
}

impl Progress for Plain {
    fn event(&self, e: BuildEvent) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = match e {
            BuildEvent::Step { id, stage, text } => writeln!(out, "#{id} [{stage}] {text}"),
            BuildEvent::Cached { id, from: None } => writeln!(out, "#{id} CACHED"),
            BuildEvent::Cached { id, from: Some(c) } => writeln!(out, "#{id} CACHED (from {c})"),
            BuildEvent::Miss { id, reason } => writeln!(out, "#{id} cache miss: {reason}"),
            BuildEvent::Explain { id, lines } => {
                for l in lines {
                    let _ = writeln!(out, "#{id}   {l}");
                }
                Ok(())
            }
            BuildEvent::Done { id, seconds } => writeln!(out, "#{id} DONE {seconds:.1}s"),
            BuildEvent::Output { id, text } => {
                for line in text.lines() {
                    let _ = writeln!(out, "#{id} {line}");
                }
                Ok(())
            }
            BuildEvent::Warning(w) => writeln!(out, "[Warning] {w}"),
        };
    }
}

/// `--progress=json`: one JSON object per event on standard error, for tools.
struct Json {
    out: Mutex<std::io::Stderr>,
}

impl Progress for Json {
    fn event(&self, e: BuildEvent) {
        let v = match e {
            BuildEvent::Step { id, stage, text } => {
                serde_json::json!({"event": "step", "id": id, "stage": stage, "instruction": text})
            }
            BuildEvent::Cached { id, from: None } => {
                serde_json::json!({"event": "cached", "id": id})
            }
            BuildEvent::Cached { id, from: Some(c) } => {
                serde_json::json!({"event": "cached", "id": id, "from": c})
            }
            BuildEvent::Miss { id, reason } => {
                serde_json::json!({"event": "cache-miss", "id": id, "reason": reason})
            }
            BuildEvent::Explain { id, lines } => {
                serde_json::json!({"event": "explain", "id": id, "inputs": lines})
            }
            BuildEvent::Done { id, seconds } => {
                serde_json::json!({"event": "done", "id": id, "seconds": seconds})
            }
            BuildEvent::Output { id, text } => {
                serde_json::json!({"event": "output", "id": id, "text": text})
            }
            BuildEvent::Warning(w) => serde_json::json!({"event": "warning", "message": w}),
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{v}");
    }
}

/// This build's log directory, `<root>/logs/<time>-<pid>`; only the newest 20 are kept.
fn logs_dir(root: &Path) -> PathBuf {
    let base = root.join("logs");
    if let Ok(rd) = std::fs::read_dir(&base) {
        let mut old: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        old.sort();
        let keep = 19;
        if old.len() > keep {
            for p in &old[..old.len() - keep] {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    base.join(format!("{now:024}-{}", std::process::id()))
}

struct Silent;

impl Progress for Silent {
    fn event(&self, _: BuildEvent) {}
}

fn key_values(items: &[String], from_env: bool) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for it in items {
        match it.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            // `--build-arg K` takes K from the environment, and is dropped when unset.
            None if from_env => {
                if let Ok(v) = std::env::var(it) {
                    out.insert(it.clone(), v);
                }
            }
            None => return Err(format!("invalid value {it:?}: expected KEY=VALUE")),
        }
    }
    Ok(out)
}

pub fn run(root: &Path, args: &BuildArgs) -> i32 {
    let source = match input::Source::read(root, args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}", e.message);
            return e.code;
        }
    };
    if args.check {
        let build_args = match key_values(&args.build_args, true) {
            Ok(a) => a.into_iter().collect(),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        return super::debug::check(root, &source.name, &source.dockerfile, &build_args);
    }
    match build_image(root, args, source) {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("{msg}");
            1
        }
    }
}

/// The build itself: read the flags into a request, run it with the chosen progress view,
/// then hand the result where the flags say and tell the user.
fn build_image(root: &Path, args: &BuildArgs, source: input::Source) -> Result<(), String> {
    let tags = parse_tags(&args.tags)?;
    let inputs = Inputs::read(args)?;
    let store = Store::open(root).map_err(|e| format!("error: {e}"))?;
    super::warn_tightened(&store);
    // Agents kiln starts for key files live until the build is over.
    let ssh_agents = super::ssh::agents(&args.ssh)?;
    let (name, src) = (&source.name, &source.dockerfile);
    let req = request(root, args, &source, inputs, &tags, &ssh_agents)?;
    let view = View::new(args);
    let failed = |e: build::BuildError| {
        let msg = match e.location() {
            Some(loc) if loc.line > 0 => {
                let text = String::from_utf8_lossy(src);
                parser::Diagnostic::error(name, &text, loc, e.to_string()).to_string()
            }
            _ => format!("error: {e}"),
        };
        format!("{msg}{}", logs_note(req.logs_dir.as_deref()))
    };
    let several = platforms(args.platform.as_deref())?;
    if several.len() > 1 {
        // One build per platform, stored as an OCI index under the tags.
        let result = view
            .around(|| build::multi::build_platforms(&store, &req, &several, view.progress()))
            .map_err(failed)?;
        let built = Built::Index(&result);
        deliver(&store, args, built, &tags, view.quiet)?;
        report(built, &tags, view.quiet, req.logs_dir.as_deref());
        if tags.is_empty() && args.outputs.is_empty() && !view.quiet {
            eprintln!("WARNING: the image index is not named: give -t NAME to keep it");
        }
        return Ok(());
    }
    let result = view.around(|| build::build(&store, &req, view.progress()));
    let result = super::debug::after_build(root, &store, &req, args, result).map_err(failed)?;
    deliver(&store, args, Built::Image(&result), &tags, view.quiet)?;
    report(
        Built::Image(&result),
        &tags,
        view.quiet,
        req.logs_dir.as_deref(),
    );
    Ok(())
}

/// What a build made: one image, or an index of several platforms' images.
#[derive(Clone, Copy)]
enum Built<'a> {
    Image(&'a build::BuildResult),
    Index(&'a build::multi::MultiBuildResult),
}

impl Built<'_> {
    /// What names it: the image ID, or the index's digest (Docker's containerd store shows
    /// an index's digest as its ID).
    fn id(&self) -> &kiln::image::Digest {
        match self {
            Built::Image(r) => &r.image_id,
            Built::Index(r) => &r.index_digest,
        }
    }

    /// The manifest's digest, or the index's.
    fn digest(&self) -> &kiln::image::Digest {
        match self {
            Built::Image(r) => &r.manifest_digest,
            Built::Index(r) => &r.index_digest,
        }
    }

    fn media_type(&self) -> &'static str {
        match self {
            Built::Image(_) => kiln::image::config::MEDIA_TYPE_MANIFEST,
            Built::Index(_) => kiln::image::config::MEDIA_TYPE_INDEX,
        }
    }
}

/// `-t` names.
fn parse_tags(tags: &[String]) -> Result<Vec<Reference>, String> {
    tags.iter()
        .map(|t| Reference::parse(t).map_err(|e| format!("error: invalid tag {t:?}: {e}")))
        .collect()
}

/// The flags read before the store is opened: variables, labels, the epoch, named contexts,
/// RUN steps' limits.
struct Inputs {
    build_args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    source_date_epoch: Option<i64>,
    contexts: BTreeMap<String, build::NamedContext>,
    shm_size: Option<u64>,
    ulimits: Vec<kiln::executor::rlimit::Ulimit>,
}

impl Inputs {
    fn read(args: &BuildArgs) -> Result<Inputs, String> {
        let build_args = key_values(&args.build_args, true).map_err(|e| format!("error: {e}"))?;
        let labels = key_values(&args.labels, false).map_err(|e| format!("error: {e}"))?;
        // A `--build-arg SOURCE_DATE_EPOCH` wins over the environment.
        let source_date_epoch = build_args
            .get("SOURCE_DATE_EPOCH")
            .cloned()
            .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    format!("error: invalid SOURCE_DATE_EPOCH {v:?}: expected seconds")
                })
            })
            .transpose()?;
        let mut contexts = BTreeMap::new();
        for spec in &args.build_contexts {
            let (name, ctx) =
                build::parse_build_context(spec).map_err(|e| format!("error: {e}"))?;
            contexts.insert(name, ctx);
        }
        let shm_size = match args.shm_size.as_deref() {
            None => None,
            Some(s) => match kiln::container::cgroups::parse_bytes(s) {
                Some(0) => None,
                Some(n) if n > 0 => Some(n as u64),
                _ => {
                    return Err(format!(
                        "error: invalid argument {s:?} for \"--shm-size\" flag: \
                         expected a size such as 64m or 1g"
                    ))
                }
            },
        };
        let ulimits = args
            .ulimits
            .iter()
            .map(|u| kiln::executor::rlimit::Ulimit::parse(u))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("error: {e}"))?;
        Ok(Inputs {
            build_args,
            labels,
            source_date_epoch,
            contexts,
            shm_size,
            ulimits,
        })
    }
}

/// The library's build request from the flags. Installs the signal handlers that cancel the
/// build, reads the secrets and makes this build's log directory.
fn request(
    root: &Path,
    args: &BuildArgs,
    source: &input::Source,
    inputs: Inputs,
    tags: &[Reference],
    ssh_agents: &super::ssh::SshAgents,
) -> Result<BuildRequest, String> {
    Ok(BuildRequest {
        platform: platform(args.platform.as_deref())?,
        binfmt_dir: None,
        context_dir: source.context.clone(),
        dockerfile: source.dockerfile.clone(),
        dockerfile_name: source.name.clone(),
        ignore: source.ignore.clone(),
        tags: tags.to_vec(),
        build_args: inputs.build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        labels: inputs.labels,
        source_date_epoch: inputs.source_date_epoch,
        network: args.network.into(),
        allow_network_host: args.allow.contains(&Entitlement::NetworkHost),
        extra_hosts: args
            .add_host
            .iter()
            .map(|h| kiln::container::ops::parse_add_host(h))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("error: {e}"))?,
        cancel: Some(cancel_on_signals()),
        explain: args.explain,
        secrets: secrets(&args.secrets)?,
        ssh: ssh_agents.sockets.clone(),
        no_cache_filter: args.no_cache_filter.clone(),
        logs_dir: Some(logs_dir(root)),
        cache_to: args
            .cache_to
            .iter()
            .map(|s| kiln::cache::transfer::parse_cache_to(s))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("error: {e}"))?,
        cache_from: args
            .cache_from
            .iter()
            .map(|s| kiln::cache::transfer::parse_cache_from(s))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("error: {e}"))?,
        pull: source.pull,
        contexts: inputs.contexts,
        shm_size: inputs.shm_size,
        ulimits: inputs.ulimits,
    })
}

/// `--platform`: the platforms, comma-separated, each normalized as BuildKit does
/// (`linux/arm` is `linux/arm/v7`); a platform given twice counts once.
fn platforms(value: Option<&str>) -> Result<Vec<Platform>, String> {
    let mut out: Vec<Platform> = Vec::new();
    for v in value.unwrap_or("").split(',').map(str::trim) {
        if v.is_empty() {
            continue;
        }
        let p = Platform::parse(v)
            .map(|p| p.normalized())
            .map_err(|e| format!("error: {e}"))?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The platform of a build of one platform (`None`: the host's, or several).
fn platform(value: Option<&str>) -> Result<Option<Platform>, String> {
    let mut ps = platforms(value)?;
    Ok(if ps.len() == 1 { ps.pop() } else { None })
}

/// Where the build's progress goes, as `--progress` and `--quiet` chose.
struct View {
    quiet: bool,
    json: bool,
    plain: Plain,
    json_lines: Json,
    tty: Option<super::tty::Tty>,
}

impl View {
    fn new(args: &BuildArgs) -> View {
        View {
            quiet: args.quiet || args.progress == ProgressMode::Quiet,
            json: args.progress == ProgressMode::Json,
            plain: Plain {
                out: Mutex::new(std::io::stderr()),
            },
            json_lines: Json {
                out: Mutex::new(std::io::stderr()),
            },
            tty: (args.progress == ProgressMode::Tty
                || (args.progress == ProgressMode::Auto && super::tty::wanted()))
            .then(super::tty::Tty::new),
        }
    }

    fn progress(&self) -> &dyn Progress {
        if self.quiet {
            &Silent
        } else if self.json {
            &self.json_lines
        } else if let Some(t) = &self.tty {
            t
        } else {
            &self.plain
        }
    }

    /// Run `f` (the build), with the live view redrawn around it when that view is shown.
    fn around<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.tty {
            Some(t) if !self.quiet && !self.json => t.around(f),
            _ => f(),
        }
    }
}

/// Where this build's step logs are, when it wrote any (a line to append to a message).
fn logs_note(logs: Option<&Path>) -> String {
    match logs {
        Some(d) if d.exists() => format!("\nfull step logs: {}", d.display()),
        _ => String::new(),
    }
}

/// `--output`, `--push`, `--iidfile` and `--metadata-file`, in that order.
fn deliver(
    store: &Store,
    args: &BuildArgs,
    result: Built<'_>,
    tags: &[Reference],
    quiet: bool,
) -> Result<(), String> {
    let compression = kiln::registry::Compression::from(args.compression);
    for o in &args.outputs {
        export(store, result, tags, o, compression, quiet)?;
    }
    if args.push {
        if tags.is_empty() {
            return Err("error: --push needs a name: give -t NAME".into());
        }
        push_tags(store, result, tags, compression, quiet)?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, result.id().to_string())
            .map_err(|e| format!("error: writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        write_metadata(path, result, tags)?;
    }
    Ok(())
}

/// `--metadata-file`: BuildKit's keys, for CI scripts that read them.
fn write_metadata(path: &Path, result: Built<'_>, tags: &[Reference]) -> Result<(), String> {
    let names: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    let mut doc = serde_json::json!({
        "containerimage.digest": result.digest().to_string(),
        "containerimage.descriptor": {
            "mediaType": result.media_type(),
            "digest": result.digest().to_string(),
        },
        "image.name": names.join(","),
    });
    if let Built::Image(r) = result {
        doc["containerimage.config.digest"] = r.image_id.to_string().into();
    }
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    std::fs::write(path, text + "\n").map_err(|e| format!("error: writing {}: {e}", path.display()))
}

/// The last lines: the image ID alone when quiet, else what was exported, written and named.
fn report(result: Built<'_>, tags: &[Reference], quiet: bool, logs: Option<&Path>) {
    if quiet {
        println!("{}", result.id());
        return;
    }
    let exports = match result {
        Built::Image(r) => &r.cache_exports,
        Built::Index(r) => &r.cache_exports,
    };
    for (dest, r) in exports {
        eprintln!(
            "exporting cache to {dest} done ({} records, {} blobs written, {} already there)",
            r.records, r.written, r.skipped
        );
    }
    match result {
        Built::Image(r) => eprintln!("writing image {} done", r.image_id),
        Built::Index(r) => {
            for (p, image) in &r.images {
                eprintln!("writing image {} for {p} done", image.image_id);
            }
            eprintln!("writing image index {} done", r.index_digest);
        }
    }
    for t in tags {
        eprintln!("naming to {t} done");
    }
    let note = logs_note(logs);
    if !note.is_empty() {
        eprintln!("{}", note.trim_start());
    }
}

/// A flag set by SIGINT and SIGTERM: running steps are killed, the store stays valid.
pub(crate) fn cancel_on_signals() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let flag = FLAG
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    extern "C" fn on_signal(_: libc::c_int) {
        if let Some(f) = FLAG.get() {
            f.store(true, Ordering::SeqCst);
        }
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    flag
}

/// `--secret id=ID,src=FILE` / `id=ID,env=VAR` (Docker's syntax; `source=` and `type=file`
/// accepted too). Values are read now and kept only in memory.
fn secrets(specs: &[String]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(v.to_string()),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file" | "env")) => {}
                _ => {
                    return Err(format!(
                    "error: invalid --secret {spec:?}: expected id=ID,src=FILE or id=ID,env=VAR"
                ))
                }
            }
        }
        let id = id
            .or_else(|| env.clone())
            .ok_or_else(|| format!("error: invalid --secret {spec:?}: no id"))?;
        let value = match (src, env) {
            (Some(path), _) => std::fs::read(&path)
                .map_err(|e| format!("error: reading secret {id} from {path}: {e}"))?,
            (None, Some(var)) => std::env::var(&var)
                .map_err(|_| format!("error: secret {id}: environment variable {var} is not set"))?
                .into_bytes(),
            (None, None) => std::env::var(&id)
                .map_err(|_| format!("error: secret {id}: give src=FILE or env=VAR"))?
                .into_bytes(),
        };
        out.insert(id, value);
    }
    Ok(out)
}

/// Pushes the built image under each name (the progress goes to standard error).
fn push_tags(
    store: &Store,
    result: Built<'_>,
    names: &[Reference],
    compression: kiln::registry::Compression,
    quiet: bool,
) -> Result<(), String> {
    let id = result.digest().to_string();
    for t in names {
        let target = t.clone().with_default_tag();
        super::registry::push_image_by_manifest(store, &target, &id, compression, quiet)
            .map_err(|e| format!("error: {e}"))?;
    }
    Ok(())
}

/// `--output`: write the built image (or its files) somewhere.
fn export(
    store: &Store,
    result: Built<'_>,
    tags: &[Reference],
    spec: &str,
    push_compression: kiln::registry::Compression,
    quiet: bool,
) -> Result<(), String> {
    let mut compression = None;
    let mut kind = None;
    let mut dest = None;
    let mut names: Vec<Reference> = Vec::new();
    let mut push = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => {
                kind = Some(OutputType::from_str(v, false).map_err(|_| {
                    format!(
                        "error: --output {spec}: unknown type {v:?} (kiln exports oci, docker, tar, local and registry)"
                    )
                })?)
            }
            Some(("dest", v)) => dest = Some(v.to_string()),
            Some(("name", v)) => {
                for n in v.split(',').filter(|n| !n.is_empty()) {
                    names.push(Reference::parse(n).map_err(|e| {
                        format!("error: invalid --output {spec:?}: name {n:?}: {e}")
                    })?);
                }
            }
            Some(("push", v)) => push = Some(v == "true"),
            Some(("compression", v)) => {
                compression = Some(kiln::registry::Compression::parse(v).ok_or_else(|| {
                    format!(
                        "error: invalid --output {spec:?}: compression {v:?} (none, gzip or zstd)"
                    )
                })?)
            }
            _ if !field.contains('=') && kind.is_none() && dest.is_none() => {
                // `-o DIR` is `type=local,dest=DIR`, as in Docker.
                kind = Some(OutputType::Local);
                dest = Some(field.to_string());
            }
            _ => {
                return Err(format!(
                    "error: invalid --output {spec:?}: unknown field {field:?}"
                ))
            }
        }
    }
    let kind = kind.unwrap_or(OutputType::Local);
    if kind == OutputType::Registry || (kind == OutputType::Image && push == Some(true)) {
        let names = if names.is_empty() {
            tags.to_vec()
        } else {
            names
        };
        if names.is_empty() {
            return Err(format!("error: --output {spec:?} needs name= (or -t NAME)"));
        }
        let compression = compression.unwrap_or(push_compression);
        return push_tags(store, result, &names, compression, quiet);
    }
    let dest = dest.ok_or_else(|| format!("error: --output {spec:?} needs dest="))?;
    let err = |e: String| format!("error: --output {spec}: {e}");
    let compression = compression.unwrap_or(kiln::registry::Compression::None);
    match kind {
        OutputType::Oci | OutputType::Docker => {
            write_archive(store, result, tags, &dest, compression).map_err(err)
        }
        OutputType::Local | OutputType::Tar => match result {
            Built::Image(r) => {
                let image = store
                    .image(&r.manifest_digest)
                    .map_err(|e| err(e.to_string()))?;
                write_files(store, &[(PathBuf::new(), image)], kind, &dest).map_err(err)
            }
            // As BuildKit: each platform's files in a directory named after it
            // (`linux_arm64`, `linux_arm_v7`).
            Built::Index(r) => {
                let mut images = Vec::new();
                for (p, b) in &r.images {
                    let image = store
                        .image_blobs(&b.manifest_digest)
                        .map_err(|e| err(e.to_string()))?;
                    images.push((PathBuf::from(p.to_string().replace('/', "_")), image));
                }
                write_files(store, &images, kind, &dest).map_err(err)
            }
        },
        // `type=image` without `push=true`: kiln has no such export (registry went above).
        OutputType::Image | OutputType::Registry => Err(err(
            "unknown type \"image\" (kiln exports oci, docker, tar, local and registry)".into(),
        )),
    }
}

/// Where an output goes: a file, or standard output for `-`.
fn open_dest(dest: &str) -> Result<Box<dyn Write>, String> {
    if dest == "-" {
        Ok(Box::new(std::io::stdout().lock()))
    } else {
        std::fs::File::create(dest)
            .map(|f| Box::new(std::io::BufWriter::new(f)) as Box<dyn Write>)
            .map_err(|e| format!("{dest}: {e}"))
    }
}

/// `type=oci` and `type=docker`: one archive that is both an OCI layout and a docker-archive
/// (see `kiln::imageops::save`). For an index, the OCI layout holds the index, and
/// `manifest.json` the host's platform (what `docker load` with the classic store reads).
fn write_archive(
    store: &Store,
    result: Built<'_>,
    tags: &[Reference],
    dest: &str,
    compression: kiln::registry::Compression,
) -> Result<(), String> {
    use kiln::imageops::save;
    let mut w = match result {
        Built::Image(r) => {
            let image = store.image(&r.manifest_digest).map_err(|e| e.to_string())?;
            let items = [save::SaveItem {
                image,
                tags: tags.to_vec(),
            }];
            save::save_compressed(store, &items, open_dest(dest)?, compression)
        }
        Built::Index(r) => {
            let index = store
                .index_blob(&r.index_digest)
                .map_err(|e| e.to_string())?;
            save::save_index(store, &index, tags, open_dest(dest)?, compression)
        }
    }
    .map_err(|e| e.to_string())?;
    w.flush().map_err(|e| e.to_string())
}

/// `type=local` and `type=tar`: the images' files, each under its subdirectory of `dest`
/// (an empty one for a single image).
fn write_files(
    store: &Store,
    images: &[(PathBuf, kiln::store::ImageRecord)],
    kind: OutputType,
    dest: &str,
) -> Result<(), String> {
    let dir = if kind == OutputType::Local {
        std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
        PathBuf::from(dest)
    } else {
        store
            .tmp_dir()
            .join(format!("export-{}", std::process::id()))
    };
    let extracted = (|| {
        for (sub, image) in images {
            let to = dir.join(sub);
            std::fs::create_dir_all(&to).map_err(|e| e.to_string())?;
            for d in &image.diff_ids {
                let blob = store.open_blob(d).map_err(|e| e.to_string())?;
                kiln::archive::extract(std::io::BufReader::new(blob), &to, &Default::default())
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok::<(), String>(())
    })();
    if kind == OutputType::Tar {
        let written = extracted.and_then(|()| {
            let w = open_dest(dest)?;
            let (mut w, _) = kiln::archive::write_tree(&dir, w, Default::default())
                .map_err(|e| e.to_string())?;
            w.flush().map_err(|e| e.to_string())
        });
        let _ = std::fs::remove_dir_all(&dir);
        return written;
    }
    extracted
}
