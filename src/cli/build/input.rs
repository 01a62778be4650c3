//! Where `kiln build` takes its Dockerfile and context from, as Docker does: a directory
//! (`-f` resolved against the current directory, not the context), or standard input
//! (`kiln build -`): a Dockerfile, with an empty context, or a context tar (plain, gzip,
//! bzip2, xz or zstd), told apart by their first bytes and the tar unpacked by kiln's
//! hardened extractor into a private directory of the store (0700) that goes away with the
//! build. Also the one positional quirk `--pull` brings (see [`positional`]).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use kiln::build::PullPolicy;
use kiln::common::atomic::TempPath;
use kiln::context::IgnoreRules;

use super::super::debug::{display_name, read_dockerfile};
use super::BuildArgs;

/// Why the input cannot be read: the message, and the exit code (Docker's).
pub(crate) struct InputError {
    pub message: String,
    pub code: i32,
}

impl From<String> for InputError {
    fn from(message: String) -> InputError {
        InputError { message, code: 1 }
    }
}

/// The Dockerfile and the context the build uses.
pub(crate) struct Source {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile's bytes.
    pub dockerfile: Vec<u8>,
    /// The Dockerfile's name in messages (`<stdin>` for standard input).
    pub name: String,
    /// The `.dockerignore` rules of the context.
    pub ignore: IgnoreRules,
    /// `--pull`, as the flag (and the `--pull VALUE PATH` form) says.
    pub pull: PullPolicy,
    /// The private directory a context from standard input lives in, removed on drop.
    _temp: Option<TempPath>,
}

/// The words `--pull` took before it needed an `=`: `kiln build --pull never DIR` (kiln's
/// old form) still means `--pull=never`.
const PULL_WORDS: &[&str] = &["missing", "always", "never", "true", "false"];

/// The context argument and the pull policy. `--pull` alone is Docker's bool flag, so in
/// `--pull never DIR` clap sees two paths: when the bare flag was given and one of them is a
/// pull word, that word is the flag's value. Any other second path is Docker's usage error.
fn positional(args: &BuildArgs) -> Result<(PathBuf, PullPolicy), InputError> {
    let flag = args.pull.into();
    let Some(extra) = &args.extra_path else {
        return Ok((args.path.clone(), flag));
    };
    let bare = args.pull == super::BuildPull::True;
    let word = |p: &Path| {
        p.to_str()
            .filter(|w| PULL_WORDS.contains(w))
            .and_then(|w| <super::BuildPull as clap::ValueEnum>::from_str(w, false).ok())
    };
    match (bare, word(&args.path), word(extra)) {
        (true, Some(p), _) => Ok((extra.clone(), p.into())),
        (true, None, Some(p)) => Ok((args.path.clone(), p.into())),
        _ => Err(InputError {
            message: "\"kiln build\" requires exactly 1 argument.\nSee 'kiln build --help'.\n\n\
                      Usage:  kiln build [OPTIONS] PATH | -"
                .to_string(),
            code: 1,
        }),
    }
}

impl Source {
    /// Reads the arguments: the context (a directory, or `-`), `-f`, and `--pull`.
    pub fn read(root: &Path, args: &BuildArgs) -> Result<Source, InputError> {
        let (context, pull) = positional(args)?;
        if context == Path::new("-") {
            return Ok(Source {
                pull,
                ..stdin(root, args)?
            });
        }
        let file = args
            .file
            .clone()
            .unwrap_or_else(|| context.join("Dockerfile"));
        let dockerfile = read_dockerfile(&file)?;
        let dockerfile_path = (file != Path::new("-")).then_some(file.as_path());
        let ignore = kiln::context::files::load_ignore(&context, dockerfile_path)
            .map_err(|e| format!("error: {e}"))?;
        Ok(Source {
            context,
            dockerfile,
            name: display_name(&file),
            ignore,
            pull,
            _temp: None,
        })
    }
}

/// `kiln build -`: a context tar or a Dockerfile on standard input, told apart as Docker's
/// CLI does: compressed (by magic bytes) or a valid tar header in the first 512 bytes is a
/// context; anything else is the Dockerfile.
fn stdin(root: &Path, args: &BuildArgs) -> Result<Source, InputError> {
    let mut input = std::io::stdin().lock();
    let mut head = Vec::with_capacity(512);
    (&mut input)
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| format!("error: reading standard input: {e}"))?;
    let compressed = kiln::image::compression::Compression::detect(&head)
        != kiln::image::compression::Compression::None;
    let is_tar = compressed || kiln::archive::is_tar_header(&head);
    let store = kiln::store::Store::open(root).map_err(|e| format!("error: {e}"))?;
    let temp = TempPath::new(
        kiln::common::atomic::create_temp_dir(&store.tmp_dir(), "stdin-context", 0o700)
            .map_err(|e| format!("error: {e}"))?,
    );
    let dir = temp.path().join("context");
    if !is_tar {
        // Docker's wording, when both name a Dockerfile.
        if args.file.is_some() {
            return Err("unable to prepare context: ambiguous Dockerfile source: both stdin and flag correspond to Dockerfiles".to_string().into());
        }
        let mut dockerfile = head;
        (&mut input)
            .take(kiln::context::files::DOCKERFILE_LIMIT + 1)
            .read_to_end(&mut dockerfile)
            .map_err(|e| format!("error: reading the Dockerfile from standard input: {e}"))?;
        if dockerfile.len() as u64 > kiln::context::files::DOCKERFILE_LIMIT {
            return Err(
                "error: the Dockerfile on standard input is larger than kiln's limit of 10 MiB"
                    .to_string()
                    .into(),
            );
        }
        std::fs::create_dir(&dir).map_err(|e| format!("error: {}: {e}", dir.display()))?;
        return Ok(Source {
            context: dir,
            dockerfile,
            name: "<stdin>".to_string(),
            ignore: IgnoreRules::default(),
            pull: PullPolicy::Missing,
            _temp: Some(temp),
        });
    }
    if args.file.as_deref() == Some(Path::new("-")) {
        return Err(
            "error: -f - with a context on standard input: both cannot come from standard input"
                .to_string()
                .into(),
        );
    }
    unpack(std::io::Cursor::new(head).chain(input), &dir)?;
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from("Dockerfile"));
    let dockerfile = dockerfile_in(&dir, &file)?;
    let ignore = kiln::context::files::load_ignore(&dir, Some(&dir.join(&file)))
        .map_err(|e| format!("error: {e}"))?;
    Ok(Source {
        context: dir,
        dockerfile,
        name: file.display().to_string(),
        ignore,
        pull: PullPolicy::Missing,
        _temp: Some(temp),
    })
}

/// Unpacks the context tar into `dir` (made 0700): every entry confined to it, devices left
/// out, whiteout names refused (a context has no layers below it), bzip2 and xz read too.
fn unpack(tar: impl Read, dir: &Path) -> Result<(), InputError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("error: {}: {e}", dir.display()))?;
    let opts = kiln::archive::ExtractOptions {
        whiteouts: kiln::archive::WhiteoutMode::Refuse,
        root_mode: Some(0o700),
        bzip2_xz: true,
        ..Default::default()
    };
    kiln::archive::extract(std::io::BufReader::new(tar), dir, &opts)
        .map_err(|e| format!("error: the build context on standard input: {e}"))?;
    Ok(())
}

/// The Dockerfile `file` of an unpacked context, resolved inside it (a symlink in the tar
/// cannot lead out), a regular file within kiln's size limit.
fn dockerfile_in(dir: &Path, file: &Path) -> Result<Vec<u8>, InputError> {
    let shown = file.display();
    let rel = file
        .to_str()
        .ok_or_else(|| format!("error: {shown}: not UTF-8"))?;
    let fd = kiln::rootfs::lookup::open_in_root(dir, rel, libc::O_RDONLY | libc::O_NONBLOCK)
        .map_err(|e| {
            format!(
                "error: cannot locate the Dockerfile {shown} in the context on standard input: {e}"
            )
        })?;
    let f = std::fs::File::from(fd);
    let meta = f
        .metadata()
        .map_err(|e| format!("error: {shown} (fd {}): {e}", f.as_raw_fd()))?;
    if !meta.is_file() {
        return Err(format!("error: the Dockerfile {shown} is not a regular file").into());
    }
    let limit = kiln::context::files::DOCKERFILE_LIMIT;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("error: reading {shown}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(
            format!("error: the Dockerfile {shown} is larger than kiln's limit of 10 MiB").into(),
        );
    }
    Ok(bytes)
}
