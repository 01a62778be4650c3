//! `RUN --mount` from other stages and images (`type=bind,from=`, `type=cache,from=`) and
//! `type=ssh` with `kiln build --ssh`.

use std::fs;

use crate::build_cmd::{cached_steps, write};
use crate::util::{find_tool, run_tool, stderr, TestStore};

const TOOLS: &str = "FROM busybox:local AS tools\n\
     ARG V=1\n\
     RUN mkdir -p /opt/t /seed && echo tool > /opt/t/file && echo $V > /opt/t/v \
         && ln -s /opt/t /opt/link && ln -s / /rootlink && ln -s ../../../.. /opt/up \
         && touch /stage-marker && echo seeded > /seed/s\n\
     FROM busybox:local AS final\n";

#[test]
fn bind_and_cache_mounts_from_a_stage_and_an_image() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    let dockerfile = format!(
        "{TOOLS}\
         RUN --mount=type=bind,from=tools,source=/opt/link,target=/m cat /m/file /m/v > /via-link && ! touch /m/x\n\
         RUN --mount=type=bind,from=tools,source=/rootlink,target=/r ls /r/stage-marker > /root-seen\n\
         RUN --mount=type=bind,from=tools,source=/opt/up/opt/t,target=/u cat /u/file > /up-seen\n\
         RUN --mount=type=bind,from=tools,source=/opt/t,target=/w,rw echo changed > /w/file && cat /w/file > /rw-seen\n\
         RUN --mount=type=bind,from=tools,target=/again cat /again/opt/t/file > /after-rw\n\
         RUN --mount=type=cache,from=tools,source=/seed,target=/c cat /c/s > /cache-seen && echo more >> /c/s\n\
         RUN --mount=type=bind,from=busybox:local,source=/bin,target=/img ls /img/busybox > /image-seen\n"
    );
    write(&ctx, "Dockerfile", &dockerfile);
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-t", "mnt:1", "."]);
        let o = s.kiln(&ctx, &args, None);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    // The tools stage is needed only by the mounts: the planner builds it first anyway.
    build(&[]);
    let files = s.unpack("mnt:1");
    let read = |name: &str| fs::read_to_string(files.join(name)).unwrap();
    assert_eq!(
        read("via-link"),
        "tool\n1\n",
        "a source symlink resolves in the stage"
    );
    assert_eq!(
        read("root-seen"),
        "/r/stage-marker\n",
        "a link to / is the stage's root, not the host's"
    );
    assert_eq!(read("up-seen"), "tool\n", "`..` stops at the stage's root");
    assert_eq!(read("rw-seen"), "changed\n");
    assert_eq!(read("after-rw"), "tool\n", "rw writes are discarded");
    assert_eq!(
        read("cache-seen"),
        "seeded\n",
        "the cache starts from the stage"
    );
    assert_eq!(read("image-seen"), "/img/busybox\n");
    for gone in ["m", "r", "w", "c", "img"] {
        let p = files.join(gone);
        assert!(
            !p.exists() || fs::read_dir(&p).unwrap().next().is_none(),
            "/{gone}: mount contents stay out of the image"
        );
    }

    // Nothing changed: every step is a hit, even those that mount the stage.
    let o = build(&[]);
    assert_eq!(cached_steps(&o), 8, "{}", stderr(&o));
    // The seeded cache persists across builds (the stage itself unchanged).
    build(&["--no-cache-filter", "final"]);
    let files = s.unpack("mnt:1");
    assert_eq!(
        fs::read_to_string(files.join("cache-seen")).unwrap(),
        "seeded\nmore\n"
    );
    // The mounted stage's key is part of each mounting step's key: a change in the stage
    // reruns them (the image mount stays cached).
    let o = build(&["--build-arg", "V=2"]);
    let files = s.unpack("mnt:1");
    assert_eq!(
        fs::read_to_string(files.join("via-link")).unwrap(),
        "tool\n2\n"
    );
    assert_eq!(
        fs::read_to_string(files.join("cache-seen")).unwrap(),
        "seeded\n",
        "a cache seeded from another stage key is a new cache"
    );
    assert!(!stderr(&o).contains("#9 CACHED"), "{}", stderr(&o));

    // A missing source is an error naming it.
    write(
        &ctx,
        "Dockerfile",
        &format!("{TOOLS}RUN --mount=type=bind,from=tools,source=/nope,target=/n true\n"),
    );
    let o = s.kiln(&ctx, &["build", "."], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nope"), "{}", stderr(&o));
}

/// An `ssh-agent` a test started, killed on drop.
struct AgentGuard(std::process::Child);

impl Drop for AgentGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The host's `ssh-add` with its libraries and loader, to run inside a busybox step.
fn host_ssh_add(dir: &std::path::Path) {
    let bin = find_tool("ssh-add").unwrap();
    fs::create_dir_all(dir).unwrap();
    fs::copy(&bin, dir.join("ssh-add")).unwrap();
    let ldd = run_tool(std::process::Command::new("ldd").arg(&bin));
    for line in ldd.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let p = std::path::Path::new(p);
            fs::copy(p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn ssh_mount_forwards_an_agent_and_never_persists_it() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let tools = ["ssh-agent", "ssh-add", "ssh-keygen", "ldd"];
    if let Some(t) = tools.iter().find(|t| find_tool(t).is_none()) {
        crate::util::require::missing(&format!("{t} (apt-get install openssh-client)"));
        return;
    }
    let ctx = s.dir.path().join("ctx");
    host_ssh_add(&ctx.join("hb"));
    let key = s.dir.path().join("id_test");
    run_tool(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
            .arg(&key),
    );
    let fingerprint = run_tool(
        std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&key),
    );
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\n\
         RUN --mount=type=bind,source=hb,target=/hb --mount=type=ssh \
             test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock \
             && /hb/ld-linux-x86-64.so.2 --library-path /hb /hb/ssh-add -l > /keys\n\
         RUN --mount=type=ssh,id=other,target=/agent test -S /agent && echo \"$SSH_AUTH_SOCK\" > /other\n\
         RUN --mount=type=ssh,id=absent test -z \"$SSH_AUTH_SOCK\" && touch /no-agent\n",
    );
    // A key file (kiln runs a private agent) for `default`, a socket for `other`.
    let sock = s.dir.path().join("agent.sock");
    let _agent = AgentGuard(
        std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let default = format!("default={}", key.display());
    let other = format!("other={}", sock.display());
    let build = |ssh: &[&str]| {
        let mut args = vec!["build", "--progress=plain"];
        for v in ssh {
            args.extend_from_slice(&["--ssh", v]);
        }
        args.extend_from_slice(&["-t", "ssh:1", "."]);
        let o = s.kiln(&ctx, &args, None);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    build(&[&default, &other]);
    let files = s.unpack("ssh:1");
    let keys = fs::read_to_string(files.join("keys")).unwrap();
    assert!(
        keys.contains(&fingerprint) && keys.contains("kiln-test-key"),
        "the agent answered from inside the step: {keys}"
    );
    assert_eq!(
        fs::read_to_string(files.join("sock")).unwrap(),
        "/run/buildkit/ssh_agent.0\n"
    );
    assert_eq!(
        fs::read_to_string(files.join("other")).unwrap(),
        "/agent\n",
        "SSH_AUTH_SOCK names the step's first ssh mount"
    );
    assert!(
        files.join("no-agent").exists(),
        "a missing optional agent is skipped"
    );
    assert!(
        !files.join("agent").exists() || fs::metadata(files.join("agent")).unwrap().len() == 0,
        "the socket stays out of the layer"
    );
    let config = s.config("ssh:1");
    let shown = serde_json::to_string(&config).unwrap();
    assert!(
        !shown.contains("SSH_AUTH_SOCK="),
        "not in the config's env: {shown}"
    );
    assert!(!shown.contains("kiln-ssh-"), "{shown}");
    assert!(!shown.contains(sock.to_str().unwrap()), "{shown}");
    // The agent is not part of the key: another socket for the same ids is a hit.
    let o = build(&[&format!("default={}", sock.display()), &other]);
    assert_eq!(cached_steps(&o), 3, "{}", stderr(&o));
    // A required agent that is not forwarded is an error.
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=ssh,required true\n",
    );
    let o = s.kiln(&ctx, &["build", "."], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no SSH agent forwarded for id default"),
        "{}",
        stderr(&o)
    );
    let o = s.kiln(
        &ctx,
        &["build", "--ssh", "default=/nonexistent-key", "."],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent-key"), "{}", stderr(&o));
}

#[test]
fn progress_tty_draws_a_live_view_on_a_terminal_and_plain_elsewhere() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let Some(script) = crate::util::require::tool("script", "util-linux") else {
        return;
    };
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\n\
         RUN echo first-line && sleep 0.4 && echo second-line\n\
         RUN touch /done\n",
    );
    // `auto` on a terminal (script gives kiln a pty) is the live view.
    let cmd = format!(
        "{} build --progress=auto -t tty:1 .",
        env!("CARGO_BIN_EXE_kiln")
    );
    let o = std::process::Command::new(script)
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(&ctx)
        .env("KILN_ROOT", s.root())
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("\x1b[J"), "redrawn in place: {out:?}");
    assert!(out.contains("[+] Building"), "{out:?}");
    assert!(
        out.contains("#2 [stage-0 2/3] RUN echo first-line"),
        "{out:?}"
    );
    assert!(out.contains("#2 DONE"), "{out:?}");
    assert!(out.contains("#3 DONE"), "{out:?}");
    assert!(out.contains("(3/3) FINISHED"), "{out:?}");
    // Not a terminal: `auto` is the plain form, with every output line.
    let o = s.kiln(&ctx, &["build", "--no-cache", "-t", "tty:1", "."], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(err.contains("#2 first-line\n#2 second-line\n"), "{err}");
}
