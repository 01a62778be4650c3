//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`: Docker's flags and
//! messages over the library's registry client, with per-layer progress.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;

use clap::Args;

use kiln::common::platform::Platform;
use kiln::image::Reference;
use kiln::registry::credentials::{config_dir, Credentials, DockerConfig};
use kiln::registry::pull::{self, PullOptions, Status};
use kiln::registry::push::{self, PushOptions};
use kiln::registry::{Client, ClientOptions, Compression};
use kiln::store::Store;

use super::units::human_size;
use super::values::PushCompression;
use super::{fail, open_store, out};

/// `kiln pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Pull the image for this platform (os/arch[/variant]) from a multi-platform index
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull every platform of a multi-platform index and keep the index under the tag
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// NAME[:TAG|@DIGEST]
    pub name: String,
}

/// `kiln push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Push all tags of the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Layer compression: gzip (default) or zstd
    #[arg(long, value_enum, default_value_t = PushCompression::Gzip)]
    pub compression: PushCompression,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// NAME[:TAG]
    pub name: String,
}

/// `kiln login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// The registry (default: Docker Hub)
    pub server: Option<String>,
}

/// `kiln logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub)
    pub server: Option<String>,
}

/// `https://host:5000/v2/` → `host:5000`; none → `docker.io`.
fn server_name(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => "docker.io".into(),
        h => h.to_string(),
    }
}

/// Client options from the environment and `--insecure-registry`, with Ctrl-C wired in.
pub(crate) fn client_options() -> ClientOptions {
    let mut o = ClientOptions::from_env();
    o.cancel = Some(super::build::cancel_on_signals());
    o
}

/// Where pull progress goes: standard output for `kiln pull`, standard error for `kiln run`
/// and `create` (whose standard output is the container's, or its ID), as Docker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sink {
    Stdout,
    Stderr,
}

impl Sink {
    fn write(self, text: &str) {
        match self {
            Sink::Stdout => out(text),
            Sink::Stderr => {
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(text.as_bytes());
                let _ = e.flush();
            }
        }
    }

    fn is_terminal(self) -> bool {
        match self {
            Sink::Stdout => std::io::stdout().is_terminal(),
            Sink::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

/// Per-layer progress lines, as Docker prints them: redrawn in place on a
/// terminal, one line per change of state otherwise.
pub(crate) struct LayerView {
    tty: bool,
    quiet: bool,
    sink: Sink,
    state: Mutex<(Vec<String>, HashMap<String, Status>)>,
}

impl LayerView {
    pub(crate) fn new(quiet: bool) -> LayerView {
        LayerView::to(quiet, Sink::Stdout)
    }

    fn to(quiet: bool, sink: Sink) -> LayerView {
        LayerView {
            tty: sink.is_terminal(),
            quiet,
            sink,
            state: Mutex::new((Vec::new(), HashMap::new())),
        }
    }

    fn line(id: &str, s: &Status) -> String {
        let bar = |done: u64, total: u64| {
            let width = 50u64;
            let filled = (done.min(total) * width).checked_div(total).unwrap_or(0) as usize;
            let mut b = "=".repeat(filled);
            if filled < width as usize {
                b.push('>');
            }
            format!("[{b:<50}] {:>9}/{}", human_size(done), human_size(total))
        };
        match s {
            Status::Downloading(d, t) | Status::Pushing(d, t) => {
                format!("{id}: {s} {}", bar(*d, *t))
            }
            _ => format!("{id}: {s}"),
        }
    }

    pub(crate) fn event(&self, id: &str, s: Status) {
        if self.quiet {
            return;
        }
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (order, states) = &mut *g;
        let same_kind = states
            .get(id)
            .is_some_and(|old| std::mem::discriminant(old) == std::mem::discriminant(&s));
        if !order.iter().any(|o| o == id) {
            order.push(id.to_string());
            if self.tty {
                self.sink.write("\n");
            }
        }
        states.insert(id.to_string(), s.clone());
        if self.tty {
            let mut text = format!("\x1b[{}A", order.len());
            for o in order.iter() {
                if let Some(st) = states.get(o) {
                    text.push_str(&format!("\r\x1b[2K{}\n", Self::line(o, st)));
                }
            }
            self.sink.write(&text);
        } else if !same_kind {
            let text = match &s {
                Status::Downloading(..) | Status::Pushing(..) => format!("{id}: {s}\n"),
                _ => format!("{}\n", Self::line(id, &s)),
            };
            self.sink.write(&text);
        }
    }
}

fn parse_name(name: &str) -> Result<Reference, String> {
    Reference::parse_normalized_named(name).map_err(|e| format!("invalid reference {name:?}: {e}"))
}

pub fn pull(root: &Path, args: &PullArgs) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match pull_cmd(&store, args) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

fn pull_cmd(store: &Store, args: &PullArgs) -> Result<(), String> {
    let reference = parse_name(&args.name)?;
    let platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let opts = client_options();
    let client = Client::new(reference.domain(), &opts).map_err(|e| e.to_string())?;
    let refs = if args.all_tags {
        if reference.tag().is_some() || reference.digest().is_some() {
            return Err("tag can't be used with --all-tags/-a".into());
        }
        if !args.quiet {
            out(&format!(
                "Pulling all tags of {}\n",
                reference.familiar_name()
            ));
        }
        pull::all_tags(&client, &reference).map_err(|e| e.to_string())?
    } else {
        if reference.is_name_only() && !args.quiet {
            out("Using default tag: latest\n");
        }
        vec![reference.clone().with_default_tag()]
    };
    let what = if args.all_platforms {
        What::AllPlatforms
    } else {
        What::One(PullOptions { platform })
    };
    for r in refs {
        pull_one(store, &client, &r, &what, args.quiet)?;
    }
    Ok(())
}

/// What a pull fetches of an index: one platform's image, or all of them.
pub(crate) enum What {
    One(PullOptions),
    AllPlatforms,
}

/// Pulls one reference with Docker's messages.
pub(crate) fn pull_one(
    store: &Store,
    client: &Client,
    r: &Reference,
    what: &What,
    quiet: bool,
) -> Result<(), String> {
    pull_reporting(store, client, r, what, quiet, Sink::Stdout)?;
    // `docker pull` ends with the reference; `run` and `create` do not.
    out(&format!("{r}\n"));
    Ok(())
}

/// Pulls `r` (tagged `latest` if it names no tag) for `kiln run` and `kiln create`: Docker's
/// messages and progress on standard error.
pub(crate) fn pull_for_run(
    store: &Store,
    r: &Reference,
    platform: Option<&Platform>,
) -> Result<(), String> {
    let r = r.clone().with_default_tag();
    let client = Client::new(r.domain(), &client_options()).map_err(|e| e.to_string())?;
    pull_reporting(
        store,
        &client,
        &r,
        &What::One(PullOptions {
            platform: platform.cloned(),
        }),
        false,
        Sink::Stderr,
    )
}

/// Pulls one reference, reporting to `sink` as Docker does, up to its status line.
fn pull_reporting(
    store: &Store,
    client: &Client,
    r: &Reference,
    what: &What,
    quiet: bool,
    sink: Sink,
) -> Result<(), String> {
    if !quiet {
        let what = r
            .tag()
            .map(str::to_string)
            .or_else(|| r.digest().map(|d| d.to_string()))
            .unwrap_or_default();
        sink.write(&format!("{what}: Pulling from {}\n", r.path()));
    }
    let view = LayerView::to(quiet, sink);
    let progress = |id: &str, s| view.event(id, s);
    let pulled = match what {
        What::One(popts) => pull::pull(store, client, r, popts, &progress),
        What::AllPlatforms => pull::pull_all_platforms(store, client, r, &progress),
    }
    .map_err(|e| e.to_string())?;
    if !quiet {
        sink.write(&format!("Digest: {}\n", pulled.digest));
        let shown = r.familiar_string();
        if pulled.changed {
            sink.write(&format!("Status: Downloaded newer image for {shown}\n"));
        } else {
            sink.write(&format!("Status: Image is up to date for {shown}\n"));
        }
    }
    Ok(())
}

pub fn push_cli(root: &Path, args: &PushArgs) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let compression = Compression::from(args.compression);
    let result = parse_name(&args.name).and_then(|reference| {
        let targets = if args.all_tags {
            // Images' tags and indexes' (each pushed as what it names).
            let images = store.list_images().map_err(|e| e.to_string())?;
            let indexes = store.list_indexes().map_err(|e| e.to_string())?;
            let mut tags: Vec<Reference> = images
                .iter()
                .flat_map(|i| i.tags().cloned().collect::<Vec<_>>())
                .chain(
                    indexes
                        .iter()
                        .flat_map(|i| i.tags().cloned().collect::<Vec<_>>()),
                )
                .filter(|t| t.name() == reference.name())
                .collect();
            tags.sort();
            tags.dedup();
            if tags.is_empty() {
                return Err(format!(
                    "no tags of {} in the store",
                    reference.familiar_name()
                ));
            }
            tags
        } else {
            vec![reference.with_default_tag()]
        };
        for t in targets {
            push_one(&store, &t, &t.to_string(), compression, args.quiet)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// `kiln build --push`: pushes the image whose manifest is `manifest` as
/// `target`, progress on standard error (standard output may carry `-q`'s ID).
pub(crate) fn push_image_by_manifest(
    store: &Store,
    target: &Reference,
    manifest: &str,
    compression: Compression,
    quiet: bool,
) -> Result<(), String> {
    let digest = kiln::image::Digest::parse(manifest).map_err(|e| e.to_string())?;
    // A build of several platforms made an index.
    let stored = match store.index_blob(&digest) {
        Ok(index) => kiln::store::Stored::Index(Box::new(index)),
        Err(_) => {
            kiln::store::Stored::Image(Box::new(store.image(&digest).map_err(|e| e.to_string())?))
        }
    };
    let opts = client_options();
    let client = Client::new(target.domain(), &opts).map_err(|e| e.to_string())?;
    let seen = Mutex::new(std::collections::HashSet::new());
    let report = |id: &str, s: Status| {
        if quiet {
            return;
        }
        let line = format!("{id}: {s}");
        if seen
            .lock()
            .map(|mut v| v.insert(line.clone()))
            .unwrap_or(false)
        {
            eprintln!("{line}");
        }
    };
    let pushed = push::push_stored(
        store,
        &client,
        &stored,
        target,
        &PushOptions { compression },
        &report,
    )
    .map_err(|e| e.to_string())?;
    if !quiet {
        eprintln!(
            "pushing {target} done: digest: {} size: {}",
            pushed.digest, pushed.size
        );
    }
    Ok(())
}

/// Pushes the stored image `source` as `target`, with Docker's messages.
pub(crate) fn push_one(
    store: &Store,
    target: &Reference,
    source: &str,
    compression: Compression,
    quiet: bool,
) -> Result<(), String> {
    let stored = store.resolve_stored(source).map_err(|_| {
        format!(
            "An image does not exist locally with the tag: {}",
            target.familiar_name()
        )
    })?;
    let opts = client_options();
    let client = Client::new(target.domain(), &opts).map_err(|e| e.to_string())?;
    if !quiet {
        out(&format!(
            "The push refers to repository [{}]\n",
            target.repository()
        ));
    }
    let view = LayerView::new(quiet);
    // An index of several platforms: each platform's image, then the index.
    let pushed = push::push_stored(
        store,
        &client,
        &stored,
        target,
        &PushOptions { compression },
        &|id, s| view.event(id, s),
    )
    .map_err(|e| e.to_string())?;
    if quiet {
        out(&format!("{target}\n"));
    } else {
        out(&format!(
            "{}: digest: {} size: {}\n",
            target.tag().unwrap_or("latest"),
            pushed.digest,
            pushed.size
        ));
    }
    Ok(())
}

fn prompt(text: &str, hide: bool) -> Result<String, String> {
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let saved = if hide {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        tcgetattr(&stdin).ok().inspect(|t| {
            let mut quiet = t.clone();
            quiet.local_flags.remove(LocalFlags::ECHO);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
        })
    } else {
        None
    };
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &t);
        eprintln!();
    }
    r.map_err(|e| format!("reading from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn login(args: &LoginArgs) -> i32 {
    match login_cmd(args) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

fn login_cmd(args: &LoginArgs) -> Result<(), String> {
    let server = server_name(args.server.as_deref());
    if args.password.is_some() && args.password_stdin {
        return Err("--password and --password-stdin are mutually exclusive".into());
    }
    if args.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let tty = std::io::stdin().is_terminal();
    let username = match &args.username {
        Some(u) => u.clone(),
        None if args.password_stdin => {
            return Err("Must provide --username with --password-stdin".into())
        }
        None if tty => prompt("Username: ", false)?,
        None => return Err("cannot perform an interactive login from a non TTY device".into()),
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut s)
                .map_err(|e| format!("reading the password from standard input: {e}"))?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if tty => prompt("Password: ", true)?,
        (None, false) => {
            return Err("cannot perform an interactive login from a non TTY device".into())
        }
    };
    if username.is_empty() || password.is_empty() {
        return Err("username and password are required".into());
    }
    let creds = Credentials {
        username,
        secret: password,
    };
    let opts = client_options();
    Client::with_credentials(&server, &opts, Some(creds.clone()))
        .ping()
        .map_err(|e| format!("login to {server} failed: {e}"))?;
    let mut config = DockerConfig::load(&config_dir()).map_err(|e| e.to_string())?;
    config.store(&server, &creds).map_err(|e| e.to_string())?;
    out("Login Succeeded\n");
    Ok(())
}

pub fn logout(args: &LogoutArgs) -> i32 {
    let server = server_name(args.server.as_deref());
    let result = DockerConfig::load(&config_dir()).and_then(|mut c| c.remove(&server));
    match result {
        Ok(true) => {
            out(&format!("Removing login credentials for {server}\n"));
            0
        }
        Ok(false) => {
            out(&format!("Not logged in to {server}\n"));
            0
        }
        Err(e) => fail(e),
    }
}
