//! `kiln build` flags Docker users type (issue 18, item 7): `--pull` alone, `build -` with a
//! Dockerfile or a context tar on standard input (and hostile tars), `--cache-from REF`,
//! `--build-context` in each of its forms, `--shm-size` and `--ulimit`, `--rm`, `--force-rm`
//! and `--load`, and where `-f` is looked up.
//!
//! Where it is cheap, each is run beside Docker with the same busybox image loaded into it.
//! Docker's daemon here is 20.10 without buildx, so the comparisons are with Docker's legacy
//! builder (its CLI is 28): `--pull`, `build -`, `--shm-size`, `--ulimit` and `-f` behave
//! the same in both of Docker's builders; `--build-context` and `--cache-from` with a
//! registry cache are BuildKit's only, and are checked against BuildKit's documented
//! behaviour instead. Without Docker (or root, for RUN steps) a test fails under CI and
//! skips loudly elsewhere.

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::build_cmd::{cached_steps, write};
use crate::util::{find_tool, require, stderr, stdout, unique_name, Kiln, TestStore};

/// `docker` whose daemon answers, or `None` after reporting it missing.
fn docker_daemon() -> Option<PathBuf> {
    let Some(docker) = find_tool("docker") else {
        require::missing("docker (not installed)");
        return None;
    };
    let up = Command::new(&docker)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        require::missing("a reachable docker daemon (scripts/start-dockerd.sh starts one)");
        return None;
    }
    Some(docker)
}

/// Runs `docker` in `dir`, with `input` on standard input if given.
fn docker_at(docker: &Path, dir: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = Command::new(docker)
        .args(args)
        .current_dir(dir)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running docker");
    if let Some(bytes) = input {
        let mut w = child.stdin.take().expect("stdin");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&bytes);
        });
    }
    child.wait_with_output().expect("docker output")
}

/// Runs kiln with the store of `k` in `dir`.
fn kiln_at(k: &Kiln, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .env("KILN_ROOT", k.root())
        .output()
        .expect("running kiln")
}

#[track_caller]
fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    o
}

/// An image a test loaded into Docker, removed (with what was built from it) when dropped.
struct InDocker {
    docker: PathBuf,
    names: Vec<String>,
}

impl Drop for InDocker {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = Command::new(&self.docker).args(["rmi", "-f", n]).output();
        }
    }
}

/// Puts the image `name` of kiln's store at `root` into Docker under the same name, as
/// `kiln save` and `docker load` carry it.
fn into_docker(
    docker: &Path,
    kiln: &dyn Fn(&[&str]) -> Output,
    tar: &Path,
    name: &str,
) -> InDocker {
    ok(
        kiln(&["save", "-o", tar.to_str().unwrap(), name]),
        "kiln save",
    );
    let loaded = InDocker {
        docker: docker.to_path_buf(),
        names: vec![name.to_string()],
    };
    let dir = tar.parent().unwrap();
    ok(
        docker_at(docker, dir, &["load", "-i", tar.to_str().unwrap()], None),
        "docker load",
    );
    loaded
}

/// The `pulled` label of an image, as `kiln image inspect` shows it.
fn kiln_label(k: &Kiln, image: &str, label: &str) -> String {
    k.inspect(image)["Config"]["Labels"][label]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// `--pull` alone is Docker's bool flag: it pulls every base image (here from a registry that
// is not there, so the build fails), `--pull=false` and no flag use the store's image. kiln
// keeps its policies as values (`--pull=never|missing|always`), and its old `--pull VALUE
// PATH` form, which Docker reads as two paths.
#[test]
fn pull_alone_pulls_as_dockers_bool_flag_does() {
    let k = Kiln::new();
    // A registry nobody serves: a pull fails at once, wherever the test runs.
    let name = format!("127.0.0.1:1/{}:1", unique_name("pull"));
    k.import_busybox(&name, &[]);
    let ctx = k.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM {name}\nLABEL built=yes\n"),
    );
    let c = ctx.to_str().unwrap();
    let dir = k.path("");
    let kiln = |args: &[&str]| kiln_at(&k, &dir, args);
    let uses_store: &[&[&str]] = &[
        &[],
        &["--pull=false"],
        &["--pull=missing"],
        &["--pull=never"],
        &["--pull", "never"],
    ];
    for flags in uses_store {
        let mut args = vec!["build", "-q"];
        args.extend_from_slice(flags);
        args.push(c);
        ok(kiln(&args), &format!("kiln {args:?}"));
    }
    // The old form with the path first still reads the value.
    ok(
        kiln(&["build", "-q", c, "--pull", "missing"]),
        "PATH --pull VALUE",
    );
    for flag in ["--pull", "--pull=true", "--pull=always"] {
        let o = kiln(&["build", "-q", flag, c]);
        assert_eq!(o.status.code(), Some(1), "{flag}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("pulling {name}")),
            "{flag}: {}",
            stderr(&o)
        );
    }
    // Usage errors: a value clap does not know (125), two paths (Docker's message, 1).
    let o = kiln(&["build", "--pull=sometimes", c]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let o = kiln(&["build", c, c]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("\"kiln build\" requires exactly 1 argument"),
        "{}",
        stderr(&o)
    );

    let Some(docker) = docker_daemon() else {
        return;
    };
    let _loaded = into_docker(&docker, &kiln, &k.path("pull.tar"), &name);
    let tag = format!("{}:built", unique_name("pull-out"));
    let _built = InDocker {
        docker: docker.clone(),
        names: vec![tag.clone()],
    };
    for (flags, succeeds) in [
        (&[][..], true),
        (&["--pull=false"][..], true),
        (&["--pull"][..], false),
        (&["--pull=true"][..], false),
    ] {
        let mut args = vec!["build", "-q", "-t", &tag];
        args.extend_from_slice(flags);
        args.push(c);
        let d = docker_at(&docker, &dir, &args, None);
        let mut kargs = vec!["build", "-q"];
        kargs.extend_from_slice(flags);
        kargs.push(c);
        let o = kiln(&kargs);
        assert_eq!(
            d.status.success(),
            succeeds,
            "docker {flags:?}: {}",
            stderr(&d)
        );
        assert_eq!(
            o.status.success(),
            succeeds,
            "kiln {flags:?}: {}",
            stderr(&o)
        );
    }
    // Docker's bool flag takes no policy name; kiln does (its extension).
    let d = docker_at(&docker, &dir, &["build", "--pull=never", c], None);
    assert_eq!(d.status.code(), Some(125), "{}", stderr(&d));
    let d = docker_at(&docker, &dir, &["build", c, c], None);
    assert_eq!(d.status.code(), Some(1), "{}", stderr(&d));
    assert!(stderr(&d).contains("requires 1 argument"), "{}", stderr(&d));
}

/// `entries` as a tar: `(name, Some(content))` is a file, `(name, None)` a directory.
fn tar_of(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, d.as_bytes()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                h.set_cksum();
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// `tar` compressed each way `build -` reads: plain, gzip, bzip2, xz, zstd.
fn compressed(tar: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(tar).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(tar).unwrap();
    vec![
        ("plain", tar.to_vec()),
        ("gzip", gz.finish().unwrap()),
        ("bzip2", bz.finish().unwrap()),
        ("xz", xz.finish().unwrap()),
        ("zstd", zstd::encode_all(tar, 1).unwrap()),
    ]
}

/// Nothing is left in the store's temporary area once a build is over.
#[track_caller]
fn no_temp_left(s: &TestStore) {
    let left: Vec<_> = std::fs::read_dir(s.root().join("tmp"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the store's tmp: {left:?}");
}

// `build -`: standard input is a context when it is a tar (compressed or not, told by its
// first bytes as Docker's CLI tells it), else the Dockerfile, with an empty context; `-f`
// names a file in the tar, and with a Dockerfile on standard input it is Docker's
// "ambiguous Dockerfile source". Compared with Docker (legacy builder) for each form.
#[test]
fn build_from_standard_input_takes_a_dockerfile_or_a_context_tar() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let dir = s.dir.path().to_path_buf();
    let name = format!("{}:1", unique_name("stdin"));
    ok(
        s.kiln(&dir, &["tag", "busybox:local", &name], None),
        "kiln tag",
    );

    // A Dockerfile: the context is empty.
    let df = format!("FROM {name}\nCOPY . /ctx/\nRUN ls -A /ctx | wc -l > /count\n");
    let o = s.kiln(&dir, &["build", "-t", "stdin:df", "-"], Some(df.as_bytes()));
    ok(o, "build - < Dockerfile");
    let files = s.unpack("stdin:df");
    assert_eq!(
        std::fs::read_to_string(files.join("count")).unwrap().trim(),
        "0"
    );
    no_temp_left(&s);

    // A context tar in every compression, its Dockerfile inside, its .dockerignore honoured.
    let df = format!("FROM {name}\nCOPY . /ctx/\n");
    let tar = tar_of(&[
        ("Dockerfile", Some(&df)),
        ("a.txt", Some("from the tar\n")),
        ("skip.log", Some("ignored\n")),
        (".dockerignore", Some("*.log\n")),
        ("sub", None),
        (
            "sub/Other.dockerfile",
            Some(&format!("FROM {name}\nCOPY a.txt /other.txt\n")),
        ),
    ]);
    for (kind, bytes) in compressed(&tar) {
        let tag = format!("stdin:{kind}");
        ok(
            s.kiln(&dir, &["build", "-t", &tag, "-"], Some(&bytes)),
            kind,
        );
        let files = s.unpack(&tag);
        assert_eq!(
            std::fs::read_to_string(files.join("ctx/a.txt")).unwrap(),
            "from the tar\n",
            "{kind}"
        );
        assert!(
            !files.join("ctx/skip.log").exists(),
            "{kind}: .dockerignore"
        );
        no_temp_left(&s);
    }
    // -f names a file of the tar.
    let o = s.kiln(
        &dir,
        &["build", "-t", "stdin:f", "-f", "sub/Other.dockerfile", "-"],
        Some(&tar),
    );
    ok(o, "-f in the tar");
    let files = s.unpack("stdin:f");
    assert_eq!(
        std::fs::read_to_string(files.join("other.txt")).unwrap(),
        "from the tar\n"
    );
    // -f and a Dockerfile on standard input: Docker's message.
    let ambiguous = s.kiln(
        &dir,
        &["build", "-f", "Dockerfile", "-"],
        Some(df.as_bytes()),
    );
    assert_eq!(ambiguous.status.code(), Some(1));
    let msg = "ambiguous Dockerfile source: both stdin and flag correspond to Dockerfiles";
    assert!(stderr(&ambiguous).contains(msg), "{}", stderr(&ambiguous));
    no_temp_left(&s);

    let Some(docker) = docker_daemon() else {
        return;
    };
    let kiln = |args: &[&str]| s.kiln(&dir, args, None);
    let _loaded = into_docker(&docker, &kiln, &dir.join("stdin.tar"), &name);
    let mut built = InDocker {
        docker: docker.clone(),
        names: Vec::new(),
    };
    // Docker 20.10's daemon reads no zstd context (moby learned zstd in 23.0); kiln does.
    for (kind, bytes) in compressed(&tar).into_iter().filter(|(k, _)| *k != "zstd") {
        let tag = format!("{}:{kind}", unique_name("stdin-out"));
        built.names.push(tag.clone());
        let d = docker_at(
            &docker,
            &dir,
            &["build", "-q", "-t", &tag, "-"],
            Some(&bytes),
        );
        ok(d, &format!("docker build - < {kind} tar"));
    }
    let d = docker_at(
        &docker,
        &dir,
        &["build", "-f", "Dockerfile", "-"],
        Some(df.as_bytes()),
    );
    assert_eq!(d.status.code(), ambiguous.status.code());
    assert!(stderr(&d).contains(msg), "{}", stderr(&d));
}

// A context tar is hostile input: `../` names are refused, absolute names and names through
// symlinks land inside the private directory, a Dockerfile that is a symlink to a host file
// is looked up inside the context, and a symlink to a host file copies no host byte.
#[test]
fn a_hostile_context_tar_cannot_reach_the_host() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let dir = s.dir.path().to_path_buf();
    let host = dir.join("host");
    std::fs::create_dir_all(&host).unwrap();
    let marker = host.join("marker");
    std::fs::write(&marker, "host\n").unwrap();
    let host_df = host.join("Dockerfile");
    std::fs::write(&host_df, "FROM busybox:local\nLABEL from=host\n").unwrap();
    let abs = marker.to_str().unwrap().trim_start_matches('/').to_string();

    let tar_with = |extra: &dyn Fn(&mut tar::Builder<Vec<u8>>)| {
        let mut b = tar::Builder::new(Vec::new());
        extra(&mut b);
        b.into_inner().unwrap()
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // Raw names: the tar crate refuses `..` and absolute paths in append_data.
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    };
    let link = |b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_link_name(target).unwrap();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    };
    let df = "FROM busybox:local\nCOPY . /ctx/\n";

    // `../` is refused; nothing is written beside the context.
    let t = tar_with(&|b| {
        file(b, "Dockerfile", df);
        file(b, "../../../../../../../../escaped-dotdot", "evil\n");
    });
    let o = s.kiln(&dir, &["build", "-"], Some(&t));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(".."), "{}", stderr(&o));
    no_temp_left(&s);

    // An absolute name, and a name through a symlink to the host directory: both inside.
    let t = tar_with(&|b| {
        file(b, "Dockerfile", df);
        file(b, &format!("/{abs}"), "evil-abs\n");
        link(b, "up", "../../../../../../../../../../..");
        file(b, &format!("up/{abs}"), "evil-link\n");
        link(b, "passwd", "/etc/passwd");
        link(b, "hostdir", host.to_str().unwrap());
    });
    let o = s.kiln(&dir, &["build", "-t", "hostile:1", "-"], Some(&t));
    ok(o, "a tar with absolute names and symlinks");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "host\n");
    let files = s.unpack("hostile:1");
    let inside = std::fs::read_to_string(files.join("ctx").join(&abs)).unwrap();
    assert!(inside.starts_with("evil"), "{inside}");
    // Symlinks stay symlinks: no host file's bytes are in the image.
    let passwd = files.join("ctx/passwd");
    assert!(std::fs::symlink_metadata(&passwd).unwrap().is_symlink());
    let hostdir = std::fs::symlink_metadata(files.join("ctx/hostdir")).unwrap();
    assert!(
        hostdir.is_symlink(),
        "a symlink, not the host directory's files"
    );
    no_temp_left(&s);

    // COPY of a symlink to a host file resolves inside the context, where there is none.
    let t = tar_with(&|b| {
        file(b, "Dockerfile", "FROM busybox:local\nCOPY marker /m\n");
        link(b, "marker", marker.to_str().unwrap());
    });
    let o = s.kiln(&dir, &["build", "-t", "hostile:2", "-"], Some(&t));
    if o.status.success() {
        let files = s.unpack("hostile:2");
        let got = std::fs::read(files.join("m")).unwrap_or_default();
        assert_ne!(got, b"host\n", "a host file's bytes were copied");
    }
    // A Dockerfile that is a symlink to a host Dockerfile is looked up in the context.
    let t = tar_with(&|b| link(b, "Dockerfile", host_df.to_str().unwrap()));
    let o = s.kiln(&dir, &["build", "-"], Some(&t));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("Dockerfile"), "{}", stderr(&o));
    no_temp_left(&s);
}

// BuildKit's shorthand: `--cache-from REF` without `type=` is `type=registry,ref=REF`.
#[test]
fn cache_from_a_bare_reference_is_a_registry_cache() {
    let Some(reg) = crate::registry::Registry::start(false) else {
        return;
    };
    let Some(a) = crate::build_cache_export::fresh() else {
        return;
    };
    let ctx = crate::build_cache_export::context(&a);
    let cache = format!("{}/cache:bare", reg.host());
    let to = format!("type=registry,ref={cache},mode=max");
    let build = |s: &TestStore, extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain", "-t", "app:1"];
        args.extend_from_slice(extra);
        args.push(".");
        ok(s.kiln(&ctx, &args, None), "build")
    };
    let o = build(&a, &["--cache-to", &to]);
    let steps = crate::build_cache_export::count(&o, "cache miss:");
    assert!(steps > 0, "{}", stderr(&o));

    let Some(b) = crate::build_cache_export::fresh() else {
        return;
    };
    let o = build(&b, &["--cache-from", &cache]);
    let shown = format!("CACHED (from registry {cache})");
    assert_eq!(
        crate::build_cache_export::count(&o, &shown),
        steps,
        "{}",
        stderr(&o)
    );
}

/// A one-file image `kiln-test/ctx-image:1` with `/marker` holding `image`.
fn marker_image(s: &TestStore) {
    let ctx = s.dir.path().join("img-ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nRUN echo image > /marker\n",
    );
    ok(
        s.kiln(
            &ctx,
            &["build", "-q", "-t", "kiln-test/ctx-image:1", "."],
            None,
        ),
        "the marker image",
    );
}

/// Builds a Dockerfile that reads `/marker` of the named context `src` through `FROM src`,
/// `COPY --from=src` and `RUN --mount=from=src`, and of the same context given as `replaced`,
/// which replaces the stage of that name (whose RUN would fail); returns what each saw.
fn through_each_use(s: &TestStore, value: &str) -> [String; 4] {
    let ctx = s.dir.path().join("uses");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local AS replaced\nRUN exit 1\n\
         FROM src AS stage\n\
         FROM busybox:local\n\
         COPY --from=stage /marker /from-stage\n\
         COPY --from=src /marker /copied\n\
         RUN --mount=from=src,target=/m cat /m/marker > /mounted\n\
         COPY --from=replaced /marker /replaced\n",
    );
    let args = uses_args(value);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = s.kiln(&ctx, &args, None);
    let o = ok(o, &format!("--build-context src={value}"));
    assert!(!stderr(&o).contains("exit 1"), "the replaced stage ran");
    let files = s.unpack("uses:1");
    let read = |p: &str| std::fs::read_to_string(files.join(p)).unwrap();
    [
        read("from-stage"),
        read("copied"),
        read("mounted"),
        read("replaced"),
    ]
}

/// The arguments of [`through_each_use`]'s build.
fn uses_args(value: &str) -> Vec<String> {
    [
        "build",
        "--progress=plain",
        "-t",
        "uses:1",
        "--build-context",
        &format!("src={value}"),
        "--build-context",
        &format!("replaced={value}"),
        ".",
    ]
    .map(String::from)
    .to_vec()
}

/// `text` four times, as [`through_each_use`] returns it when every use saw it.
fn four(text: &str) -> [String; 4] {
    [text, text, text, text].map(String::from)
}

// `--build-context NAME=VALUE`, each form, through FROM, COPY --from and RUN --mount=from;
// the context replaces a stage of its name (whose RUN would fail), as in BuildKit. Docker's
// legacy builder has no --build-context, so nothing is compared with Docker here.
#[test]
fn build_contexts_serve_from_copy_and_mounts_in_every_form() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let root = s.dir.path();
    // A directory: its .dockerignore applies, its symlinks stay symlinks.
    let dir = root.join("named-dir");
    write(&dir, "marker", "directory\n");
    write(&dir, "left-out.txt", "no\n");
    write(&dir, ".dockerignore", "left-out.txt\n");
    symlink("/etc/passwd", dir.join("passwd")).unwrap();
    // Owned by someone else on the host; BuildKit's file transfer sends it as root's.
    std::os::unix::fs::chown(dir.join("marker"), Some(1234), Some(1234)).unwrap();
    let seen = through_each_use(&s, dir.to_str().unwrap());
    assert_eq!(seen, four("directory\n"));
    let ctx = root.join("uses");
    let spec = format!("src={}", dir.display());
    let args = uses_args(dir.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let again = ok(s.kiln(&ctx, &args, None), "rebuild");
    assert_eq!(cached_steps(&again), 4, "{}", stderr(&again));
    let probe = root.join("probe");
    write(
        &probe,
        "Dockerfile",
        "FROM busybox:local\nCOPY --from=src / /all/\n",
    );
    let o = s.kiln(
        &probe,
        &[
            "build",
            "-q",
            "-t",
            "probe:1",
            "--build-context",
            &spec,
            ".",
        ],
        None,
    );
    ok(o, "probe");
    let files = s.unpack("probe:1");
    assert!(!files.join("all/left-out.txt").exists(), ".dockerignore");
    let link = std::fs::symlink_metadata(files.join("all/passwd")).unwrap();
    assert!(link.is_symlink());
    let meta = std::fs::metadata(files.join("all/marker")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "owned by root, as BuildKit sends local files"
    );

    // An image of the store.
    marker_image(&s);
    let seen = through_each_use(&s, "docker-image://kiln-test/ctx-image:1");
    assert_eq!(seen, four("image\n"));

    // An image of an OCI layout, by its tag and by its digest.
    let tar = root.join("layout.tar");
    ok(
        s.kiln(
            root,
            &["save", "-o", tar.to_str().unwrap(), "kiln-test/ctx-image:1"],
            None,
        ),
        "save",
    );
    let layout = root.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    tar::Archive::new(std::fs::File::open(&tar).unwrap())
        .unpack(&layout)
        .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap();
    for value in [
        format!("oci-layout://{}:{tag}", layout.display()),
        format!("oci-layout://{}@{digest}", layout.display()),
    ] {
        assert_eq!(through_each_use(&s, &value), four("image\n"), "{value}");
    }

    // A URL: a directory holding the one file, named after the URL's last segment.
    let srv = crate::build_add_url::Server::start();
    srv.put("/files/marker", b"over http\n");
    let seen = through_each_use(&s, &srv.url("/files/marker"));
    assert_eq!(seen, four("over http\n"));

    // A git repository: its checkout.
    let base = root.join("git");
    let work = root.join("git-work");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    crate::build_add_git::git(&base, &["init", "-q", "--bare", "repo.git"]);
    crate::build_add_git::git(&work, &["init", "-q"]);
    write(&work, "marker", "from git\n");
    crate::build_add_git::git(&work, &["add", "-A"]);
    crate::build_add_git::git(&work, &["commit", "-q", "-m", "one"]);
    let remote = base.join("repo.git");
    crate::build_add_git::git(
        &work,
        &[
            "push",
            "-q",
            remote.to_str().unwrap(),
            "HEAD:refs/heads/main",
        ],
    );
    let Some(daemon) = crate::build_add_git::Daemon::start(&base) else {
        return;
    };
    let url = format!("git://127.0.0.1:{}/repo.git#main", daemon.port);
    let seen = through_each_use(&s, &url);
    assert_eq!(seen, four("from git\n"));

    // Bad values are refused before anything is built.
    for bad in [
        "src",
        "Src=/tmp",
        "src=/no/such/dir",
        "src=docker-image://UP",
    ] {
        let o = s.kiln(&ctx, &["build", "--build-context", bad, "."], None);
        assert_eq!(o.status.code(), Some(1), "{bad}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--build-context"),
            "{bad}: {}",
            stderr(&o)
        );
    }
    no_temp_left(&s);
}

// `--shm-size` and `--ulimit` shape RUN steps as Docker's do (compared with Docker's legacy
// builder, which has both); a limit above kiln's own hard limit is refused before the build
// starts (Docker fails the step with runc's "operation not permitted").
#[test]
fn shm_size_and_ulimit_shape_run_steps_as_in_docker() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let dir = s.dir.path().to_path_buf();
    let name = format!("{}:1", unique_name("limits"));
    ok(s.kiln(&dir, &["tag", "busybox:local", &name], None), "tag");
    let ctx = dir.join("ctx");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM {name}\nRUN echo \"shm=$(df -k /dev/shm | tail -1 | awk '{{print $2}}') \
             nofile=$(ulimit -n):$(ulimit -Hn)\"\n"
        ),
    );
    let flags = ["--shm-size", "96m", "--ulimit", "nofile=100:200"];
    let want = "shm=98304 nofile=100:200";
    let mut args = vec!["build", "--progress=plain"];
    args.extend_from_slice(&flags);
    args.push(".");
    let o = ok(s.kiln(&ctx, &args, None), "build with limits");
    assert!(stderr(&o).contains(want), "{}", stderr(&o));
    // Without the flags: Docker's 64 MiB, and kiln's own limits; a new key, so it runs.
    let o = ok(
        s.kiln(&ctx, &["build", "--progress=plain", "."], None),
        "build",
    );
    assert!(stderr(&o).contains("shm=65536 "), "{}", stderr(&o));
    // The limits are in the key: the same flags again are a cache hit.
    let o = ok(s.kiln(&ctx, &args, None), "rebuild");
    assert_eq!(cached_steps(&o), 1, "{}", stderr(&o));

    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    if hard.rlim_max != libc::RLIM_INFINITY {
        let above = format!("nofile=64:{}", hard.rlim_max + 1);
        let o = s.kiln(&ctx, &["build", "--ulimit", &above, "."], None);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("can only be lowered"), "{}", stderr(&o));
        assert!(
            !stderr(&o).contains("#1"),
            "refused before any step: {}",
            stderr(&o)
        );
    }
    for bad in ["nofile", "nofiles=1", "nofile=9:1"] {
        let o = s.kiln(&ctx, &["build", "--ulimit", bad, "."], None);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(stderr(&o).contains("ulimit"), "{bad}: {}", stderr(&o));
    }

    let Some(docker) = docker_daemon() else {
        return;
    };
    let kiln = |args: &[&str]| s.kiln(&dir, args, None);
    let _loaded = into_docker(&docker, &kiln, &dir.join("limits.tar"), &name);
    let mut dargs = vec!["build", "--no-cache"];
    dargs.extend_from_slice(&flags);
    dargs.push(".");
    let d = ok(docker_at(&docker, &ctx, &dargs, None), "docker build");
    assert!(stdout(&d).contains(want), "{}", stdout(&d));
}

// Docker's `--rm` and `--force-rm` (intermediate containers) and buildx's `--load` (into
// Docker's image store) have nothing to do in kiln: accepted, with or without a value, and
// their help says so.
#[test]
fn rm_force_rm_and_load_are_accepted_without_effect() {
    let k = Kiln::new();
    let name = format!("{}:1", unique_name("noop"));
    k.import_busybox(&name, &[]);
    let ctx = k.path("ctx");
    write(&ctx, "Dockerfile", &format!("FROM {name}\nLABEL l=1\n"));
    let c = ctx.to_str().unwrap();
    let plain = k.ok(&["build", "-q", c]);
    for flags in [
        &["--rm"][..],
        &["--rm=false"],
        &["--force-rm"],
        &["--force-rm=true"],
        &["--load"],
        &["--rm", "--force-rm", "--load"],
    ] {
        let mut args = vec!["build", "-q"];
        args.extend_from_slice(flags);
        args.push(c);
        assert_eq!(k.ok(&args), plain, "{flags:?}");
    }
    let help = k.ok(&["build", "--help"]);
    for flag in ["--rm", "--force-rm", "--load"] {
        let line = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(flag))
            .take(2)
            .collect::<String>();
        assert!(line.contains("No effect"), "{flag}: {line}");
    }
}

// `-f` is resolved against the current directory, not the context: verified with Docker
// 28's CLI and its daemon's legacy builder here (`docker build -f sub/Dockerfile ctx` from a
// directory uses ./sub/Dockerfile, and fails when only ctx/sub/Dockerfile exists), which is
// also what BuildKit's buildx does.
#[test]
fn file_flag_is_relative_to_the_current_directory() {
    let k = Kiln::new();
    let name = format!("{}:1", unique_name("file"));
    k.import_busybox(&name, &[]);
    let cwd = k.path("cwd");
    write(
        &cwd,
        "sub/Dockerfile",
        &format!("FROM {name}\nLABEL from=cwd\n"),
    );
    write(
        &cwd,
        "ctx/sub/Dockerfile",
        &format!("FROM {name}\nLABEL from=context\n"),
    );
    let built = format!("{}:out", unique_name("file-out"));
    let kiln = |args: &[&str]| kiln_at(&k, &cwd, args);
    ok(
        kiln(&["build", "-q", "-t", &built, "-f", "sub/Dockerfile", "ctx"]),
        "-f",
    );
    assert_eq!(kiln_label(&k, &built, "from"), "cwd");
    std::fs::remove_file(cwd.join("sub/Dockerfile")).unwrap();
    let o = kiln(&["build", "-q", "-f", "sub/Dockerfile", "ctx"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    let Some(docker) = docker_daemon() else {
        return;
    };
    let _loaded = into_docker(&docker, &kiln, &k.path("file.tar"), &name);
    let _built = InDocker {
        docker: docker.clone(),
        names: vec![built.clone()],
    };
    write(
        &cwd,
        "sub/Dockerfile",
        &format!("FROM {name}\nLABEL from=cwd\n"),
    );
    let args = ["build", "-q", "-t", &built, "-f", "sub/Dockerfile", "ctx"];
    ok(docker_at(&docker, &cwd, &args, None), "docker build -f");
    let label = docker_at(
        &docker,
        &cwd,
        &["image", "inspect", "-f", "{{.Config.Labels.from}}", &built],
        None,
    );
    assert_eq!(stdout(&label).trim(), "cwd");
    std::fs::remove_file(cwd.join("sub/Dockerfile")).unwrap();
    let d = docker_at(&docker, &cwd, &args, None);
    assert!(!d.status.success(), "{}", stdout(&d));
}
