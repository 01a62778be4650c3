//! `kiln image …` and the short forms (`kiln images`, `kiln rmi`, `kiln import`, …): Docker's
//! flags, columns, messages and exit codes over the library's image operations.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Args, Subcommand};
use serde_json::{json, Value};

use kiln::common::platform::Platform;
use kiln::common::time::Timestamp;
use kiln::image::compression::Compression;
use kiln::image::Reference;
use kiln::imageops::change::Changes;
use kiln::imageops::import::{import_rootfs, ImportOptions};
use kiln::imageops::inspect::{history, inspect, HistoryEntry};
use kiln::imageops::list::{self, ImageFilters, ImageSummary};
use kiln::imageops::load::{load, LoadLimits};
use kiln::imageops::remove::{remove_images, RemoveEvent};
use kiln::imageops::save::{resolve_for_save, save_compressed};
use kiln::imageops::{self, ImageOpsError};
use kiln::store::ImageRecord;
use kiln::store::Store;

use super::format::{Report, Row};
use super::units::{human_duration, human_size, human_size_precision};
use super::values::SaveCompression;
use super::{fail, open_store, out};

/// Manage images.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// List images
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more images
    Inspect(InspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove unused images
    Prune(PruneArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(LoadArgs),
    /// Download an image from a registry
    Pull(super::registry::PullArgs),
    /// Upload an image to a registry
    Push(super::registry::PushArgs),
}

/// `kiln image import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    pub change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
    /// Record this platform (os/arch[/variant]) instead of the host's
    #[arg(long)]
    pub platform: Option<String>,
    /// The rootfs tarball (plain, gzip or zstd), or `-` for standard input
    #[arg(value_name = "file|-")]
    pub source: String,
    /// Name for the image
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub repository: Option<String>,
}

/// `kiln image ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Show all images (default hides intermediate images; kiln has none)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template: 'table', 'table TEMPLATE', 'json', or a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Only images whose name matches
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

/// `kiln image inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// The images
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `kiln image history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, action = ArgAction::Set, default_value_t = true,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub human: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The image
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

/// `kiln image tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// The image to tag
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    pub source: String,
    /// The new name
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    pub target: String,
}

/// `kiln image rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Do not delete untagged parents (kiln images have none)
    #[arg(long)]
    pub no_prune: bool,
    /// The images
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `kiln image prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Provide filter values (e.g. "until=24h", "label=key=value", "label!=key")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `kiln image save`.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Compress the layers: none (default), gzip or zstd
    #[arg(long, value_enum, default_value_t = SaveCompression::None)]
    pub compression: SaveCompression,
    /// The images
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `kiln image load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short = 'i', long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Runs one `kiln image` subcommand.
pub fn run(root: &Path, cmd: ImageCommand) -> i32 {
    let cmd = match cmd {
        ImageCommand::Pull(a) => return super::registry::pull(root, &a),
        ImageCommand::Push(a) => return super::registry::push_cli(root, &a),
        other => other,
    };
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = match cmd {
        ImageCommand::Import(a) => import(&store, &a),
        ImageCommand::Ls(a) => return ls(&store, &a),
        ImageCommand::Inspect(a) => return inspect_cmd(&store, &a),
        ImageCommand::History(a) => return history_cmd(&store, &a),
        ImageCommand::Tag(a) => tag(&store, &a),
        ImageCommand::Rm(a) => return rm(&store, &a),
        ImageCommand::Prune(a) => prune(&store, &a),
        ImageCommand::Save(a) => save_cmd(&store, &a),
        ImageCommand::Load(a) => load_cmd(&store, &a),
        ImageCommand::Pull(_) | ImageCommand::Push(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

type CmdResult = Result<(), String>;

fn msg(e: ImageOpsError) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------
// import

/// `SOURCE_DATE_EPOCH` from the environment, if set.
fn source_date_epoch() -> Result<Option<i64>, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("invalid SOURCE_DATE_EPOCH {v:?}: expected seconds since 1970")),
        Err(_) => Ok(None),
    }
}

fn import(store: &Store, a: &ImportArgs) -> CmdResult {
    let mut opts = ImportOptions {
        changes: Changes::parse(&a.change).map_err(msg)?,
        message: a.message.clone(),
        ..ImportOptions::default()
    };
    if let Some(p) = &a.platform {
        opts.platform = Platform::parse(p).map_err(|e| e.to_string())?;
    }
    if let Some(epoch) = source_date_epoch()? {
        opts.created = Timestamp::from_secs(epoch);
        opts.clamp_mtime = Some(epoch);
    }
    if let Some(repo) = &a.repository {
        let r = Reference::parse_normalized_named(repo).map_err(|e| e.to_string())?;
        if r.digest().is_some() {
            return Err(format!(
                "cannot import digest reference {repo:?}: give REPOSITORY[:TAG]"
            ));
        }
        opts.tag = Some(r.with_default_tag());
    }
    let source = &a.source;
    if source.starts_with("http://") || source.starts_with("https://") {
        return Err(msg(ImageOpsError::ImportSource {
            source_name: source.clone(),
            reason: "importing from a URL is not supported; download the file first".into(),
        }));
    }
    let imported = if source == "-" {
        let stdin = io::stdin();
        if stdin.is_terminal() {
            return Err("requested import from stdin, but stdin is a terminal".into());
        }
        import_rootfs(store, stdin.lock(), &opts)
    } else {
        let f = File::open(source).map_err(|e| format!("open {source}: {e}"))?;
        import_rootfs(store, io::BufReader::new(f), &opts)
    }
    .map_err(|e| format!("importing {source}: {e}"))?;
    out(&format!("{}\n", imported.image.id));
    Ok(())
}

// ---------------------------------------------------------------------------
// ls

/// Column titles of Docker's image and history tables.
fn title(field: &str) -> String {
    match field {
        "ID" => "IMAGE ID",
        "CreatedSince" => "CREATED",
        "CreatedAt" => "CREATED AT",
        "CreatedBy" => "CREATED BY",
        "SharedSize" => "SHARED SIZE",
        "UniqueSize" => "UNIQUE SIZE",
        "VirtualSize" => "VIRTUAL SIZE",
        other => return other.to_uppercase(),
    }
    .to_owned()
}

/// Seconds since `t`, with an unknown time as the epoch (as Docker shows it).
fn since(now: Timestamp, t: Option<Timestamp>) -> String {
    let t = t.unwrap_or(Timestamp::from_secs(0));
    format!("{} ago", human_duration(t.seconds_until(now)))
}

fn image_rows(store: &Store, images: &[ImageSummary], no_trunc: bool) -> Vec<Value> {
    let now = Timestamp::now();
    let mut rows = Vec::new();
    // What Docker counts: the layers' unpacked files (see `imageops::size`).
    let mut sizes = kiln::imageops::size::Sizes::new(store);
    for s in images {
        let id = if no_trunc {
            s.id().to_string()
        } else {
            s.id().short().to_owned()
        };
        let size = sizes.image(&s.image).unwrap_or_else(|_| s.image.size());
        for (repo, tag) in s.rows() {
            rows.push(json!({
                "Containers": "N/A",
                "CreatedAt": s.created.unwrap_or(Timestamp::from_secs(0)).to_go_string(),
                "CreatedSince": since(now, s.created),
                "Digest": s.digest().to_string(),
                "ID": id,
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": human_size(size),
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size_precision(size, 4),
            }));
        }
    }
    rows
}

fn ls(store: &Store, a: &LsArgs) -> i32 {
    let list = || -> Result<_, ImageOpsError> {
        let mut filters = ImageFilters::parse(store, &a.filter)?;
        if let Some(r) = &a.reference {
            filters.add_reference(r)?;
        }
        list::list(store, &filters)
    };
    let images = match list() {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    const TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
    const TABLE_DIGESTS: &str =
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
    let template = match a.format.as_deref() {
        None | Some("" | "table") if a.quiet => "{{.ID}}".to_owned(),
        None | Some("" | "table") if a.digests => TABLE_DIGESTS.to_owned(),
        None | Some("" | "table") => TABLE.to_owned(),
        Some("json") => "{{json .}}".to_owned(),
        Some(f) if f.starts_with("table") && a.digests && !f.contains("{{.Digest}}") => {
            format!("{f}\t{{{{.Digest}}}}")
        }
        Some(f) => f.to_owned(),
    };
    let rows: Vec<Row> = image_rows(store, &images, a.no_trunc)
        .into_iter()
        .map(Row::from)
        .collect();
    super::format::print_rows(&template, &rows, &title, Report::List)
}

// ---------------------------------------------------------------------------
// inspect

fn inspect_cmd(store: &Store, a: &InspectArgs) -> i32 {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in &a.images {
        let doc = match store.resolve_stored(name) {
            Ok(kiln::store::Stored::Index(ix)) => imageops::inspect::inspect_index(store, &ix),
            _ => imageops::resolve(store, name).and_then(|i| inspect(store, &i)),
        };
        match doc {
            Ok(d) => docs.push(d),
            Err(e) => errors.push(e.to_string()),
        }
    }
    super::inspect::print_docs(&docs, a.format.as_deref(), &errors)
}

// ---------------------------------------------------------------------------
// history

/// Docker's `Ellipsis`: at most `max` characters, the last one `…` when cut.
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn history_rows(entries: &[HistoryEntry], a: &HistoryArgs) -> Vec<Value> {
    let now = Timestamp::now();
    entries
        .iter()
        .map(|e| {
            let id = match &e.id {
                Some(d) if a.no_trunc => d.to_string(),
                Some(d) => d.short().to_owned(),
                None => "<missing>".to_owned(),
            };
            let created = e.created.unwrap_or(Timestamp::from_secs(0));
            let created_by = e.created_by.replace('\t', " ");
            json!({
                "Comment": e.comment,
                "CreatedAt": created.to_rfc3339_secs(),
                "CreatedBy": if a.no_trunc { created_by } else { ellipsis(&created_by, 45) },
                "CreatedSince": if a.human { since(now, e.created) } else { created.to_rfc3339_secs() },
                "ID": id,
                "Size": if a.human { human_size(e.size) } else { e.size.to_string() },
            })
        })
        .collect()
}

fn history_cmd(store: &Store, a: &HistoryArgs) -> i32 {
    let entries = match imageops::resolve(store, &a.image).and_then(|i| history(store, &i)) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let template = match a.format.as_deref() {
        None | Some("" | "table") if a.quiet => "{{.ID}}",
        None | Some("" | "table") => {
            "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
        }
        Some("json") => "{{json .}}",
        Some(f) => f,
    };
    let history_title = |f: &str| {
        if f == "ID" {
            "IMAGE".to_owned()
        } else {
            title(f)
        }
    };
    let rows: Vec<Row> = history_rows(&entries, a)
        .into_iter()
        .map(Row::from)
        .collect();
    super::format::print_rows(template, &rows, &history_title, Report::List)
}

// ---------------------------------------------------------------------------
// tag, rm, prune

fn tag(store: &Store, a: &TagArgs) -> CmdResult {
    // A name that holds an index of several platforms tags the index.
    let digest = match store.resolve_stored(&a.source) {
        Ok(kiln::store::Stored::Index(ix)) => ix.digest,
        _ => {
            imageops::resolve(store, &a.source)
                .map_err(msg)?
                .manifest_digest
        }
    };
    let target = Reference::parse_normalized_named(&a.target).map_err(|e| e.to_string())?;
    if target.digest().is_some() {
        return Err("refusing to create a tag with a digest reference".into());
    }
    store
        .tag(&target.with_default_tag(), &digest)
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn rm(store: &Store, a: &RmArgs) -> i32 {
    let report = remove_images(
        store,
        &a.images,
        a.force,
        &super::container::users(store.root()),
    );
    let mut text = String::new();
    for e in &report.events {
        match e {
            RemoveEvent::Untagged(n) => text.push_str(&format!("Untagged: {n}\n")),
            RemoveEvent::Deleted(d) => text.push_str(&format!("Deleted: {d}\n")),
        }
    }
    out(&text);
    if let Some(Err(e)) = &report.gc {
        eprintln!("Warning: unused layers are kept until the next prune: {e}");
    }
    for (_, e) in &report.errors {
        eprintln!("Error: {e}");
    }
    i32::from(!report.errors.is_empty())
}

/// `image prune --filter`: `until=<time or duration>` (created before it), `label=k[=v]`,
/// `label!=k[=v]`.
fn prune_filter(filters: &[String]) -> Result<impl Fn(&ImageRecord) -> bool, String> {
    let now = kiln::common::time::Timestamp::now();
    let mut until = None;
    let mut labels: Vec<(bool, String, Option<String>)> = Vec::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| format!("Error: bad format of filter (expected name=value): {f}"))?;
        match k {
            "until" => {
                until = Some(
                    kiln::common::time::parse_time_filter(v, now)
                        .map_err(|e| format!("Error: {e}"))?,
                )
            }
            "label" | "label!" => {
                let (lk, lv) = match v.split_once('=') {
                    Some((a, b)) => (a.to_string(), Some(b.to_string())),
                    None => (v.to_string(), None),
                };
                labels.push((k == "label", lk, lv));
            }
            _ => return Err(format!("Error: invalid filter '{k}'")),
        }
    }
    Ok(move |img: &ImageRecord| {
        if let Some(u) = until {
            if list::created_of(img).is_none_or(|c| c >= u) {
                return false;
            }
        }
        let image_labels = list::labels_of(img);
        labels
            .iter()
            .all(|(want, k, v)| list::has_label(&image_labels, k, v.as_deref()) == *want)
    })
}

fn prune(store: &Store, a: &PruneArgs) -> CmdResult {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !super::confirm_unless(a.force, warning) {
        return Ok(());
    }
    let selected = prune_filter(&a.filter)?;
    let report = kiln::imageops::remove::prune_images_where(
        store,
        a.all,
        &selected,
        &super::container::users(store.root()),
    )
    .map_err(msg)?;
    let mut text = String::new();
    if !report.events.is_empty() {
        text.push_str("Deleted Images:\n");
        for e in &report.events {
            match e {
                RemoveEvent::Untagged(n) => text.push_str(&format!("untagged: {n}\n")),
                RemoveEvent::Deleted(d) => text.push_str(&format!("deleted: {d}\n")),
            }
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(report.reclaimed())
    ));
    out(&text);
    if let Err(e) = &report.gc {
        eprintln!("Warning: unused layers are kept until the next prune: {e}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// save, load

/// A file written next to its destination and renamed over it once
/// complete, so a failed save leaves nothing behind.
struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl AtomicFile {
    fn create(dest: &Path) -> Result<(AtomicFile, File), String> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        remove_stale_temps(&dir, &name);
        let tmp = dir.join(format!(".{name}.kiln-{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| format!("failed to save image: open {}: {e}", tmp.display()))?;
        Ok((
            AtomicFile {
                tmp,
                dest: dest.to_path_buf(),
                done: false,
            },
            file,
        ))
    }

    fn commit(mut self, file: File) -> Result<(), String> {
        file.sync_all()
            .map_err(|e| format!("failed to save image: {e}"))?;
        fs::rename(&self.tmp, &self.dest).map_err(|e| {
            format!(
                "failed to save image: rename to {}: {e}",
                self.dest.display()
            )
        })?;
        self.done = true;
        Ok(())
    }
}

/// Removes `.<name>.kiln-<pid>.tmp` files that a killed `save -o <name>` left beside the
/// destination: those whose process is gone.
fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.kiln-");
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".tmp"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if pid > 0 && gone && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// What `kiln save` writes: images, or one index of several platforms under its name.
enum ToSave {
    Images(Vec<kiln::imageops::save::SaveItem>),
    Index(Box<kiln::store::IndexRecord>, Vec<Reference>),
}

impl ToSave {
    fn find(store: &Store, names: &[String]) -> Result<ToSave, String> {
        let index = names.iter().find_map(|n| match store.resolve_stored(n) {
            Ok(kiln::store::Stored::Index(ix)) => Some((n, ix)),
            _ => None,
        });
        match index {
            None => Ok(ToSave::Images(resolve_for_save(store, names).map_err(msg)?)),
            Some((n, ix)) if names.len() == 1 => {
                let tags = Reference::parse_normalized_named(n)
                    .ok()
                    .filter(|r| r.digest().is_none())
                    .map(|r| vec![r.with_default_tag()])
                    .unwrap_or_default();
                Ok(ToSave::Index(ix, tags))
            }
            Some((n, _)) => Err(format!(
                "{n} is an image index of several platforms: save it on its own"
            )),
        }
    }

    fn write<W: Write>(&self, store: &Store, w: W, compression: Compression) -> Result<W, String> {
        match self {
            ToSave::Images(items) => save_compressed(store, items, w, compression),
            ToSave::Index(ix, tags) => {
                kiln::imageops::save::save_index(store, ix, tags, w, compression)
            }
        }
        .map_err(msg)
    }
}

fn save_cmd(store: &Store, a: &SaveArgs) -> CmdResult {
    let items = ToSave::find(store, &a.images)?;
    let compression = Compression::from(a.compression);
    match &a.output {
        Some(path) if path != Path::new("-") => {
            let (guard, file) = AtomicFile::create(path)?;
            let w = items.write(store, BufWriter::new(file), compression)?;
            let file = w
                .into_inner()
                .map_err(|e| format!("failed to save image: {}", e.error()))?;
            guard.commit(file)
        }
        _ => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                return Err(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                );
            }
            let mut w = items.write(store, BufWriter::new(stdout.lock()), compression)?;
            w.flush().map_err(|e| format!("failed to save image: {e}"))
        }
    }
}

fn load_cmd(store: &Store, a: &LoadArgs) -> CmdResult {
    let limits = LoadLimits::default();
    let loaded = match &a.input {
        Some(path) if path != Path::new("-") => {
            let f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
            load(store, io::BufReader::new(f), &limits)
        }
        _ => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                return Err("requested load from stdin, but stdin is empty".into());
            }
            load(store, stdin.lock(), &limits)
        }
    }
    .map_err(msg)?;
    let mut text = String::new();
    for l in &loaded {
        for (t, old) in &l.replaced {
            text.push_str(&format!(
                "The image {} already exists, renaming the old one with ID {old} to empty string\n",
                t.familiar_string()
            ));
        }
        if l.tags.is_empty() {
            text.push_str(&format!("Loaded image ID: {}\n", l.image.id));
        }
        for t in &l.tags {
            text.push_str(&format!("Loaded image: {}\n", t.familiar_string()));
        }
    }
    out(&text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipsis_cuts_as_docker() {
        assert_eq!(ellipsis("short", 45), "short");
        let long = "/bin/sh -c #(nop)  CMD [\"/bin/sh\" \"-c\" \"echo hello world\"]";
        let cut = ellipsis(long, 45);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn titles_as_docker() {
        assert_eq!(title("ID"), "IMAGE ID");
        assert_eq!(title("CreatedSince"), "CREATED");
        assert_eq!(title("Repository"), "REPOSITORY");
    }

    #[test]
    fn renders_tables_and_lines() {
        use crate::cli::format::render;
        let rows = vec![
            json!({"A": "x", "B": "y"}),
            json!({"A": "long value", "B": "z"}),
        ];
        let t = render("table {{.A}}\t{{.B}}", &rows, &title).unwrap();
        assert_eq!(t, "A            B\nx            y\nlong value   z\n");
        let l = render("{{.A}}:{{.B}}", &rows, &title).unwrap();
        assert_eq!(l, "x:y\nlong value:z\n");
    }
}
