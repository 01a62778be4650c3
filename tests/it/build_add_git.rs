//! `ADD <git repository>`: a repository served by `git daemon` on 127.0.0.1, added whole, at
//! a tag with a subdirectory, and with `--keep-git-dir`; the cache follows the commit.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::build_cmd::{cached_steps, write};
use crate::util::{stderr, TestStore};

/// `git` for the test's own repositories, free of the host's configuration.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "user.name=kiln",
            "-c",
            "user.email=kiln@test",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `git daemon` serving `base` on 127.0.0.1; killed on drop.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) port: u16,
}

impl Daemon {
    pub(crate) fn start(base: &Path) -> Option<Daemon> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--listen=127.0.0.1",
                "--reuseaddr",
                "--export-all",
                "--informative-errors",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            crate::util::require::missing("git (scripts/install-deps.sh installs it)");
            return None;
        };
        let d = Daemon { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(d);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("git daemon did not start on port {port}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn add_git_repositories_at_refs_with_subdirs() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let base = s.dir.path().join("git");
    let work = s.dir.path().join("work");
    fs::create_dir_all(&base).unwrap();
    fs::create_dir_all(&work).unwrap();
    git(&base, &["init", "-q", "--bare", "repo.git"]);
    git(&work, &["init", "-q"]);
    write(&work, "README", "version one\n");
    write(&work, "sub/file", "in sub at v1\n");
    std::os::unix::fs::symlink("README", work.join("link")).unwrap();
    // A hostile repository: a link to the host's /etc, used as the subdirectory to add.
    std::os::unix::fs::symlink("/etc", work.join("escape")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["tag", "-a", "v1", "-m", "v1"]);
    write(&work, "README", "version two\n");
    write(&work, "sub/file", "in sub at v2\n");
    git(&work, &["commit", "-q", "-am", "two"]);
    let remote = base.join("repo.git");
    let remote = remote.to_str().unwrap();
    git(
        &work,
        &["push", "-q", remote, "HEAD:refs/heads/main", "--tags"],
    );
    let Some(daemon) = Daemon::start(&base) else {
        return;
    };
    let url = format!("git://127.0.0.1:{}/repo.git", daemon.port);

    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM busybox:local\n\
             ADD {url} /src\n\
             ADD {url}#v1:sub /v1sub\n\
             ADD --keep-git-dir=true {url}#main /withgit\n"
        ),
    );
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "git:1", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let root = s.unpack("git:1");
    assert_eq!(
        fs::read_to_string(root.join("src/README")).unwrap(),
        "version two\n"
    );
    assert_eq!(
        fs::read_link(root.join("src/link")).unwrap(),
        Path::new("README")
    );
    assert!(
        !root.join("src/.git").exists(),
        "no .git without --keep-git-dir"
    );
    let commit_time: i64 = git(&work, &["log", "-1", "--format=%ct"]).parse().unwrap();
    assert_eq!(
        fs::metadata(root.join("src/README")).unwrap().mtime(),
        commit_time
    );
    assert_eq!(
        fs::read_to_string(root.join("v1sub/file")).unwrap(),
        "in sub at v1\n"
    );
    assert!(!root.join("v1sub/README").exists());
    assert!(root.join("withgit/.git").is_dir());
    assert_eq!(
        fs::read_to_string(root.join("withgit/README")).unwrap(),
        "version two\n"
    );

    // Unchanged refs: every step cached.
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "git:1", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cached_steps(&o), 3, "{}", stderr(&o));

    // A new commit on the branch: the step misses, naming the repository.
    write(&work, "README", "version three\n");
    git(&work, &["commit", "-q", "-am", "three"]);
    git(&work, &["push", "-q", remote, "HEAD:refs/heads/main"]);
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "git:2", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cache miss: git:") && err.contains("changed"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(s.unpack("git:2").join("src/README")).unwrap(),
        "version three\n"
    );

    // Clear errors: a missing ref, COPY of a repository.
    for (dockerfile, want) in [
        (
            format!("FROM busybox:local\nADD {url}#nosuch /x\n"),
            "no branch or tag \"nosuch\"",
        ),
        (
            format!("FROM busybox:local\nCOPY {url} /x\n"),
            "COPY does not take URLs",
        ),
        (
            format!("FROM busybox:local\nADD {url}#main:../.. /x\n"),
            "leaves the repository",
        ),
        // Resolved inside the checkout, where there is no /etc: nothing of the host's.
        (
            format!("FROM busybox:local\nADD {url}#main:escape /x\n"),
            "escape",
        ),
    ] {
        write(&ctx, "Dockerfile", &dockerfile);
        let o = s.kiln(&ctx, &["build", "--progress=plain", "."], None);
        assert_eq!(o.status.code(), Some(1), "{dockerfile}");
        let err = stderr(&o);
        assert!(
            err.contains(want) && err.contains("Dockerfile:2"),
            "{dockerfile}: {err}"
        );
    }
    let tmp: Vec<_> = fs::read_dir(s.root().join("tmp"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "{tmp:?}");
}
