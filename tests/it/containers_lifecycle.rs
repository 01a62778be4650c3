//! Containers end to end: the life cycle — create, start, stop, restart policies, detached
//! monitors, rm, ps and prune, rename.
//! Every test removes its containers (`rm -f`) when it ends, even when it fails.

use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::containers::*;
use super::util::{stderr, stdout};

#[test]
fn stop_waits_for_the_timeout_only_when_the_process_ignores_the_signal() {
    let Some(e) = Env::new() else { return };
    // PID 1 without a handler ignores SIGTERM: stop waits -t seconds, then SIGKILLs.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.wait_for("stubborn", 10, running);
    let t = Instant::now();
    e.ok(&["stop", "-t", "2", "stubborn"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "stop returned after {took:?}"
    );
    let v = e.inspect("stubborn");
    assert!(exited(&v), "{v:#}");
    assert_eq!(v["State"]["ExitCode"], 137);

    // A process that handles SIGTERM exits on it, with its own code, before any SIGKILL.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        "busybox:local",
        "sh",
        "-c",
        "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    e.wait_for("polite", 10, running);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.ok(&["logs", "polite"]).contains("ready") {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    e.ok(&["stop", "-t", "60", "polite"]);
    let v = e.inspect("polite");
    assert_eq!(v["State"]["ExitCode"], 0, "{v:#}");
    assert!(e.ok(&["logs", "polite"]).contains("got TERM"));

    // --stop-signal and kill -s.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--stop-signal",
        "USR1",
        "busybox:local",
        "sh",
        "-c",
        "trap 'exit 42' USR1; while :; do sleep 0.1; done",
    ]);
    e.wait_for("usr1", 10, running);
    std::thread::sleep(Duration::from_millis(300));
    e.ok(&["stop", "usr1"]);
    assert_eq!(e.inspect("usr1")["State"]["ExitCode"], 42);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "killme",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.wait_for("killme", 10, running);
    e.ok(&["kill", "killme"]);
    let v = e.wait_for("killme", 10, exited);
    assert_eq!(v["State"]["ExitCode"], 137);
    // `wait` prints the exit code.
    assert_eq!(e.ok(&["wait", "killme"]).trim(), "137");
}

#[test]
fn a_stopped_container_keeps_its_files_across_start() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.wait_for("keep", 10, running);
    e.ok(&[
        "exec",
        "keep",
        "sh",
        "-c",
        "echo kept > /data.txt && rm /etc/group",
    ]);
    e.ok(&["stop", "-t", "0", "keep"]);
    assert!(exited(&e.inspect("keep")));
    let ps = e.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=keep",
        "--format",
        "{{.Status}}",
    ]);
    assert!(ps.starts_with("Exited (137)"), "{ps}");
    assert_eq!(e.ok(&["ps", "-q"]).trim(), "");
    e.ok(&["start", "keep"]);
    e.wait_for("keep", 10, running);
    assert_eq!(e.ok(&["exec", "keep", "cat", "/data.txt"]).trim(), "kept");
    assert_eq!(
        e.run(&["exec", "keep", "test", "-e", "/etc/group"])
            .status
            .code(),
        Some(1)
    );
    // restart too, and the image itself is untouched.
    e.ok(&["restart", "-t", "0", "keep"]);
    e.wait_for("keep", 10, running);
    assert_eq!(e.ok(&["exec", "keep", "cat", "/data.txt"]).trim(), "kept");
    let o = e.run(&["run", "--rm", "busybox:local", "cat", "/data.txt"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn create_then_start_attached() {
    let Some(e) = Env::new() else { return };
    let id = e.ok(&[
        "create",
        "--name",
        "twostep",
        "busybox:local",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(id.trim().len(), 64);
    let v = e.inspect("twostep");
    assert_eq!(v["State"]["Status"], "created");
    let ps = e.ok(&["ps", "-a", "--format", "{{.Names}}\t{{.Status}}"]);
    assert!(ps.contains("twostep\tCreated"), "{ps}");
    let o = e.run(&["start", "-a", "twostep"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    assert_eq!(e.ok(&["wait", "twostep"]).trim(), "4");
}

#[test]
fn on_failure_restarts_exactly_n_times_and_always_restarts_until_stopped() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox:local",
        "sh",
        "-c",
        "echo attempt; exit 1",
    ]);
    let v = e.wait_for("flaky", 30, |v| exited(v) && v["RestartCount"] == 2);
    assert_eq!(v["State"]["ExitCode"], 1);
    // It stays exited: no third restart.
    std::thread::sleep(Duration::from_millis(1500));
    let v = e.inspect("flaky");
    assert!(exited(&v) && v["RestartCount"] == 2, "{v:#}");
    assert_eq!(e.ok(&["logs", "flaky"]).matches("attempt").count(), 3);

    // on-failure does not restart after a clean exit.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "clean",
        "--restart",
        "on-failure",
        "busybox:local",
        "true",
    ]);
    e.wait_for("clean", 10, exited);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(e.inspect("clean")["RestartCount"], 0);

    // always restarts after any exit; stop ends that.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--restart",
        "always",
        "busybox:local",
        "sh",
        "-c",
        "echo up; exit 0",
    ]);
    e.wait_for("again", 30, |v| v["RestartCount"].as_u64() >= Some(2));
    e.ok(&["stop", "-t", "1", "again"]);
    let v = e.wait_for("again", 10, exited);
    let count = v["RestartCount"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    let v = e.inspect("again");
    assert!(exited(&v), "{v:#}");
    assert_eq!(v["RestartCount"], count, "restarted after stop");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "always");
}

#[test]
fn detached_containers_outlive_the_cli_and_a_dead_monitor_is_reported() {
    let Some(e) = Env::new() else { return };
    // Killing an attached `kiln run` does not stop its container.
    let mut cli = KillOnDrop(
        e.command(&["run", "--name", "fg", "busybox:local", "sleep", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kiln run"),
    );
    e.wait_for("fg", 10, running);
    cli.0.kill().expect("kill CLI");
    cli.0.wait().expect("reap CLI");
    std::thread::sleep(Duration::from_millis(300));
    let v = e.inspect("fg");
    assert!(running(&v), "{v:#}");
    assert!(alive(v["State"]["Pid"].as_i64().unwrap()));

    // A monitor killed with SIGKILL takes its container down and `ps` says Dead, not Up.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--restart",
        "always",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    let v = e.wait_for("svc", 10, running);
    let id = v["Id"].as_str().unwrap().to_owned();
    let pid = v["State"]["Pid"].as_i64().unwrap();
    let monitor = e.state_file(&id)["monitor_pid"].as_i64().unwrap();
    assert_ne!(monitor, pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill monitor");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "container outlived its monitor");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = e.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=svc",
        "--format",
        "{{.Status}}",
    ]);
    assert_eq!(st.trim(), "Dead");
    assert_eq!(e.inspect("svc")["State"]["Status"], "dead");

    // `system restore` brings back `always` containers (and leaves running ones alone).
    let restored = e.ok(&["system", "restore"]);
    assert_eq!(restored.trim(), "svc");
    let v = e.wait_for("svc", 10, running);
    assert_ne!(v["State"]["Pid"].as_i64().unwrap(), pid);
    assert!(running(&e.inspect("fg")));
}

#[test]
fn rm_refuses_a_running_container_and_rm_f_leaves_nothing_behind() {
    let Some(e) = Env::new() else { return };
    let id = e.ok(&[
        "run",
        "-d",
        "--name",
        "gone",
        "-v",
        "/scratch",
        "-p",
        "127.0.0.1::80",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    let id = id.trim().to_owned();
    let v = e.wait_for("gone", 10, running);
    let pid = v["State"]["Pid"].as_i64().unwrap();
    let monitor = e.state_file(&id)["monitor_pid"].as_i64().unwrap();
    let port = host_port(&v, "80/tcp");
    let dir = e.root().join("containers").join(&id);
    assert!(dir.is_dir());

    let o = e.run(&["rm", "gone"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("running"), "{}", stderr(&o));
    assert!(running(&e.inspect("gone")));

    // The image is in use: rmi refuses it without -f.
    let o = e.run(&["rmi", "busybox:local"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains(&id[..12]), "{}", stderr(&o));

    e.ok(&["rm", "-f", "gone"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) || alive(monitor) {
        assert!(Instant::now() < deadline, "process left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists(), "container directory left behind");
    assert_eq!(mounts_mentioning(&id), Vec::<String>::new());
    assert_eq!(
        mounts_mentioning(&e.root().display().to_string()),
        Vec::<String>::new()
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(e.ok(&["ps", "-aq"]).trim(), "");
    let o = e.run(&["inspect", "gone"]);
    assert_ne!(o.status.code(), Some(0));
    // Now the image can go.
    e.ok(&["rmi", "busybox:local"]);
}

#[test]
fn ps_filters_formats_names_and_prune() {
    let Some(e) = Env::new() else { return };
    let auto = e.ok(&["run", "-d", "busybox:local", "sleep", "1000"]);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "done1",
        "--label",
        "team=a",
        "busybox:local",
        "true",
    ]);
    e.wait_for("done1", 10, exited);
    let name = e.inspect(auto.trim())["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_owned();
    let (adj, who) = name.split_once('_').expect("adjective_surname");
    assert!(
        !adj.is_empty()
            && !who.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
        "{name}"
    );

    let ps = e.ok(&["ps"]);
    let header = ps.lines().next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(ps.contains(&name) && !ps.contains("done1"), "{ps}");
    let all = e.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let mut names: Vec<&str> = all.lines().collect();
    names.sort();
    let mut want = vec![name.as_str(), "done1"];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        e.ok(&[
            "ps",
            "-a",
            "--filter",
            "status=exited",
            "--format",
            "{{.Names}}"
        ])
        .trim(),
        "done1"
    );
    assert_eq!(
        e.ok(&["ps", "-a", "--filter", "label=team=a", "-q"])
            .trim()
            .len(),
        12
    );
    assert_eq!(e.ok(&["ps", "-q", "--no-trunc"]).trim(), auto.trim(),);
    let json = e.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=done1",
        "--format",
        "{{json .}}",
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("ps json");
    assert_eq!(v["Names"], "done1");
    assert_eq!(v["Image"], "busybox:local");

    // A name is unique.
    let o = e.run(&["run", "-d", "--name", "done1", "busybox:local", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));

    // prune removes stopped containers only.
    let out = e.ok(&["container", "prune", "-f"]);
    assert!(
        out.contains("Total reclaimed space") || out.contains("Deleted"),
        "{out}"
    );
    assert_eq!(e.ok(&["ps", "-aq", "--no-trunc"]).trim(), auto.trim());
}

#[test]
fn rename_running_and_stopped_containers() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "old",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.ok(&["create", "--name", "other", "busybox:local", "true"]);
    e.wait_for("old", 10, running);
    e.ok(&["rename", "old", "new"]);
    let v = e.inspect("new");
    assert_eq!(v["Name"], "/new");
    assert_eq!(v["State"]["Status"], "running");
    assert!(e.run(&["inspect", "old"]).status.code() == Some(1));
    // The new name works everywhere: exec, stop, ps.
    assert_eq!(e.ok(&["exec", "new", "echo", "hi"]), "hi\n");
    assert!(e.ok(&["ps", "--format", "{{.Names}}"]).contains("new"));
    for (args, want) in [
        (vec!["rename", "new", "other"], "already in use"),
        (vec!["rename", "new", "new"], "same name"),
        (vec!["rename", "new", "bad name!"], "Invalid container name"),
        (vec!["rename", "missing", "x"], "No such container"),
    ] {
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).to_lowercase().contains(&want.to_lowercase()),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    e.ok(&["stop", "-t", "1", "new"]);
    e.ok(&["rename", "new", "again"]);
    e.ok(&["start", "again"]);
    e.wait_for("again", 10, running);
}
