//! Resource limits and the cgroup-backed commands, as root through the real binary:
//! `--memory` (an OOM kill), `--pids-limit`, `--cpus` and friends read back from the
//! container's cgroup, `pause`/`unpause`, `stats`, `top`, and no cgroup left after `rm`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::containers::{exited, running, Env};
use super::util::{stderr, stdout};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// An [`Env`] on a host with cgroups; `None` (after saying why) elsewhere, never under CI.
fn env() -> Option<Env> {
    let e = Env::new()?;
    if !super::util::require::require(
        kiln::container::cgroups::Hierarchy::host().is_some(),
        &format!("cgroups mounted at {CGROUP_ROOT}"),
    ) {
        return None;
    }
    Some(e)
}

fn v2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// A file of container `id`'s cgroup: v1 `<controller>/kiln/<id>/<v1>`, v2 `kiln/<id>/<v2>`.
fn cg_file(id: &str, controller: &str, v1: &str, v2_name: &str) -> PathBuf {
    let root = Path::new(CGROUP_ROOT);
    if v2() {
        root.join("kiln").join(id).join(v2_name)
    } else {
        root.join(controller).join("kiln").join(id).join(v1)
    }
}

fn read_cg(id: &str, controller: &str, v1: &str, v2_name: &str) -> String {
    let p = cg_file(id, controller, v1, v2_name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Every directory of container `id`'s cgroup that exists, in any hierarchy.
fn cg_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    let mut found = Vec::new();
    let mut candidates = vec![root.join("kiln").join(id)];
    for entry in std::fs::read_dir(root).expect("cgroup root").flatten() {
        candidates.push(entry.path().join("kiln").join(id));
    }
    for c in candidates {
        if c.is_dir() && !found.contains(&c) {
            found.push(c);
        }
    }
    found
}

fn id_of(e: &Env, name: &str) -> String {
    e.inspect(name)["Id"].as_str().expect("Id").to_string()
}

#[test]
fn memory_limit_gets_the_container_oom_killed() {
    let Some(e) = env() else { return };
    // The shell keeps 100 MB of 'a's in a variable: far over the 32 MiB limit (no swap).
    e.ok(&[
        "run",
        "-d",
        "--name",
        "hog",
        "-m",
        "32m",
        "--memory-swap",
        "32m",
        "busybox:local",
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    let v = e.wait_for("hog", 120, exited);
    assert_eq!(v["State"]["OOMKilled"], true, "{v:#}");
    assert_eq!(v["State"]["ExitCode"], 137, "{v:#}");
    assert_eq!(v["HostConfig"]["Memory"], 32 << 20);
    assert_eq!(v["HostConfig"]["MemorySwap"], 32 << 20);
    assert!(!e.ok(&["logs", "hog"]).contains("survived"));

    // Under the limit, the same kind of work completes and OOMKilled stays false.
    let o = e.run(&[
        "run",
        "--name",
        "fits",
        "-m",
        "64m",
        "busybox:local",
        "sh",
        "-c",
        "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo ${#x}",
    ]);
    assert_eq!(stdout(&o).trim(), "1000000", "{}", stderr(&o));
    assert_eq!(e.inspect("fits")["State"]["OOMKilled"], false);
}

#[test]
fn limits_are_written_to_the_cgroup_and_shown_by_inspect() {
    let Some(e) = env() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "lim",
        "-m",
        "64m",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--pids-limit",
        "10",
        "--cpuset-cpus",
        "0",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    let id = id_of(&e, "lim");
    if v2() {
        assert_eq!(read_cg(&id, "", "", "memory.max"), (64 << 20).to_string());
        assert_eq!(read_cg(&id, "", "", "cpu.max"), "50000 100000");
        assert_eq!(read_cg(&id, "", "", "pids.max"), "10");
        assert_eq!(read_cg(&id, "", "", "cpuset.cpus"), "0");
    } else {
        assert_eq!(
            read_cg(&id, "memory", "memory.limit_in_bytes", ""),
            (64 << 20).to_string()
        );
        assert_eq!(read_cg(&id, "cpu", "cpu.cfs_quota_us", ""), "50000");
        assert_eq!(read_cg(&id, "cpu", "cpu.cfs_period_us", ""), "100000");
        assert_eq!(read_cg(&id, "cpu", "cpu.shares", ""), "512");
        assert_eq!(read_cg(&id, "pids", "pids.max", ""), "10");
        assert_eq!(read_cg(&id, "cpuset", "cpuset.cpus", ""), "0");
    }
    // The container's PID 1 is in it.
    let pid = e.inspect("lim")["State"]["Pid"].as_i64().expect("Pid");
    let procs = read_cg(&id, "pids", "cgroup.procs", "cgroup.procs");
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "{pid} not in {procs:?}"
    );
    let hc = e.inspect("lim")["HostConfig"].clone();
    assert_eq!(hc["Memory"], 64 << 20, "{hc:#}");
    assert_eq!(hc["NanoCpus"], 500_000_000_i64, "{hc:#}");
    assert_eq!(hc["CpuShares"], 512, "{hc:#}");
    assert_eq!(hc["PidsLimit"], 10, "{hc:#}");
    assert_eq!(hc["CpusetCpus"], "0", "{hc:#}");

    // rm -f of the running container leaves no cgroup directory.
    assert!(!cg_dirs(&id).is_empty());
    e.ok(&["rm", "-f", "lim"]);
    assert_eq!(cg_dirs(&id), Vec::<PathBuf>::new());

    // A container without limits has a cgroup too (for stats, top, pause), with none set.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "plain",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    let id = id_of(&e, "plain");
    assert!(!cg_dirs(&id).is_empty());
    let hc = e.inspect("plain")["HostConfig"].clone();
    assert_eq!(hc["Memory"], 0);
    assert_eq!(hc["PidsLimit"], serde_json::Value::Null);
    e.ok(&["rm", "-f", "plain"]);
    assert_eq!(cg_dirs(&id), Vec::<PathBuf>::new());

    // --rm removes it when the container ends.
    let o = e.run(&[
        "run",
        "--rm",
        "-m",
        "16m",
        "busybox:local",
        "cat",
        "/proc/self/cgroup",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    let rm_id = line
        .split("/kiln/")
        .nth(1)
        .and_then(|s| s.lines().next())
        .unwrap_or_else(|| panic!("the process is not in a kiln cgroup: {line}"))
        .to_string();
    assert_eq!(rm_id.len(), 64, "{line}");
    assert_eq!(cg_dirs(&rm_id), Vec::<PathBuf>::new());
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let Some(e) = env() else { return };
    // Each round notes its number, then forks; the shell gives up at the first failed fork.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "bomb",
        "--pids-limit",
        "10",
        "busybox:local",
        "sh",
        "-c",
        "for i in $(seq 1 50); do echo $i > /tmp/forks; sleep 1000 & done; echo all-forked",
    ]);
    let v = e.wait_for("bomb", 60, exited);
    let id = v["Id"].as_str().expect("Id").to_string();
    let logs = e.ok(&["logs", "bomb"]);
    let all = format!("{logs}{}", stderr(&e.run(&["logs", "bomb"])));
    assert!(!all.contains("all-forked"), "{all}");
    assert!(all.contains("can't fork"), "{all}");
    let forks: u32 = std::fs::read_to_string(
        e.root()
            .join("containers")
            .join(&id)
            .join("upper/tmp/forks"),
    )
    .expect("forks file")
    .trim()
    .parse()
    .expect("a number");
    assert!(forks <= 10, "{forks} forks under --pids-limit 10");
    let events = read_cg(&id, "pids", "pids.events", "pids.events");
    assert!(!events.contains("max 0"), "{events}");
}

/// The counter the container in `pause_freezes_and_unpause_resumes` keeps, read from its
/// upper directory (the file is replaced by rename, so it always holds a whole number).
fn counter(e: &Env, id: &str) -> Option<u64> {
    let p = e.root().join("containers").join(id).join("upper/tmp/c");
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn counter_moves_past(e: &Env, id: &str, from: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter(e, id).is_none_or(|n| n <= from) {
        assert!(
            Instant::now() < deadline,
            "the counter never moved past {from}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pause_freezes_and_unpause_resumes() {
    let Some(e) = env() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "count",
        "busybox:local",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; done",
    ]);
    let id = id_of(&e, "count");
    counter_moves_past(&e, &id, 0);
    assert_eq!(e.ok(&["pause", "count"]).trim(), "count");
    let v = e.inspect("count");
    assert_eq!(v["State"]["Status"], "paused", "{v:#}");
    assert_eq!(v["State"]["Paused"], true);
    assert_eq!(v["State"]["Running"], true);
    let ps = e.ok(&["ps"]);
    assert!(ps.contains("(Paused)"), "{ps}");
    assert_eq!(
        e.ok(&["ps", "--filter", "status=paused", "--format", "{{.Names}}"])
            .trim(),
        "count"
    );
    if !v2() {
        assert_eq!(read_cg(&id, "freezer", "freezer.state", ""), "FROZEN");
    }
    // Frozen: the counter stands still.
    let frozen = counter(&e, &id).expect("counter");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(&e, &id), Some(frozen));
    // Pausing twice, exec into a paused container: Docker's errors.
    let o = e.run(&["pause", "count"]);
    assert!(stderr(&o).contains("is already paused"), "{}", stderr(&o));
    let o = e.run(&["exec", "count", "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is paused"), "{}", stderr(&o));

    e.ok(&["unpause", "count"]);
    assert_eq!(e.inspect("count")["State"]["Status"], "running");
    counter_moves_past(&e, &id, frozen);
    let o = e.run(&["unpause", "count"]);
    assert!(stderr(&o).contains("is not paused"), "{}", stderr(&o));

    // A paused container stops (thawed after the signal, as Docker does).
    e.ok(&["pause", "count"]);
    e.ok(&["stop", "-t", "1", "count"]);
    let v = e.inspect("count");
    assert_eq!(v["State"]["Status"], "exited", "{v:#}");
    assert_eq!(v["State"]["Paused"], false);
    let o = e.run(&["pause", "count"]);
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
}

#[test]
fn stats_and_top_show_the_containers_processes() {
    let Some(e) = env() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "-m",
        "64m",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.wait_for("busy", 30, running);
    e.ok(&["exec", "-d", "busy", "sleep", "2000"]);
    let pid = e.inspect("busy")["State"]["Pid"].as_i64().expect("Pid");
    // The detached exec is in the container's cgroup too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let top = loop {
        let top = e.ok(&["top", "busy"]);
        if top.contains("sleep 2000") {
            break top;
        }
        assert!(
            Instant::now() < deadline,
            "exec'd process never in top:\n{top}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut lines = top.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{top}");
    let first = rows
        .iter()
        .find(|r| r[1] == pid.to_string())
        .unwrap_or_else(|| panic!("PID 1 ({pid}) not listed:\n{top}"));
    assert_eq!(first[0], "root");
    assert_eq!(first[7..], ["sleep", "1000"]);
    // With ps options, the host's ps filtered to the container (Docker's way).
    if super::util::require::tool("ps", "procps, scripts/install-deps.sh").is_some() {
        let top = e.ok(&["top", "busy", "-o", "pid,args"]);
        assert!(top.contains(&pid.to_string()), "{top}");
        assert!(top.contains("sleep 2000"), "{top}");
        assert_eq!(top.lines().count(), 3, "{top}");
    }

    let stats = e.ok(&["stats", "--no-stream"]);
    let mut lines = stats.lines();
    let header = lines.next().expect("header");
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().expect("a row");
    assert!(row.starts_with(&id_of(&e, "busy")[..12]), "{row}");
    assert!(row.contains(" busy "), "{row}");
    assert!(row.contains(" / 64MiB"), "{row}");
    let o = e.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}} {{.CPUPerc}}",
        "busy",
    ]);
    let f: Vec<&str> = o.split_whitespace().collect();
    assert_eq!(f[..2], ["busy", "2"], "{o}");
    assert!(f[2].ends_with('%'), "{o}");
    let o = e.run(&["stats", "--no-stream", "nosuch"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("No such container: nosuch"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn invalid_limits_are_refused_with_125() {
    let Some(e) = env() else { return };
    for (args, msg) in [
        (&["-m", "64x"][..], "invalid size: '64x'"),
        (&["-m", "1k"][..], "Minimum memory limit allowed is 6MB"),
        (&["--memory-swap", "1g"][..], "always set the Memory limit"),
        (
            &["-m", "64m", "--memory-swap", "32m"][..],
            "larger than memory limit",
        ),
        (&["--cpus", "1000"][..], "Range of CPUs is from 0.01"),
        (&["--cpus", "lots"][..], "--cpus"),
        (
            &["--cpuset-cpus", "999"][..],
            "Requested CPUs are not available",
        ),
        (&["--pids-limit", "ten"][..], "--pids-limit"),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend(["busybox:local", "true"]);
        let o = e.run(&a);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(e.ok(&["ps", "-aq"]).trim(), "");
}

#[test]
fn the_cgroup_outlives_restarts_until_the_container_is_removed() {
    let Some(e) = env() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "-m",
        "48m",
        "busybox:local",
        "sh",
        "-c",
        "grep -c kiln /proc/self/cgroup; exit 1",
    ]);
    let v = e.wait_for("flaky", 60, |v| exited(v) && v["RestartCount"] == 2);
    let id = v["Id"].as_str().expect("Id").to_string();
    // Each of the three runs was in the container's cgroup, under its limit.
    let logs = e.ok(&["logs", "flaky"]);
    assert_eq!(
        logs.lines().filter(|l| l.trim() != "0").count(),
        3,
        "{logs}"
    );
    let limit = if v2() {
        read_cg(&id, "", "", "memory.max")
    } else {
        read_cg(&id, "memory", "memory.limit_in_bytes", "")
    };
    assert_eq!(limit, (48 << 20).to_string());
    e.ok(&["rm", "flaky"]);
    assert_eq!(cg_dirs(&id), Vec::<PathBuf>::new());
}

/// Kills and reaps a child, and removes a cgroup, when a test ends.
struct Cleanup(std::process::Child, kiln::container::cgroups::Cgroup);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = self.1.remove();
    }
}

/// The v2 side of the seam against the kernel: a hybrid host's unified hierarchy (no
/// controllers, but cgroup.procs, cgroup.freeze and cgroup.events), or the host's own.
#[test]
fn v2_cgroups_freeze_list_and_remove_for_real() {
    use kiln::container::cgroups::{Cgroup, Hierarchy, Resources};
    if !super::util::require::require(nix::unistd::geteuid().is_root(), "root (cgroups)") {
        return;
    }
    let hybrid = Path::new(CGROUP_ROOT).join("unified");
    let root = if hybrid.join("cgroup.controllers").exists() {
        hybrid
    } else if v2() {
        PathBuf::from(CGROUP_ROOT)
    } else {
        super::util::require::missing("a cgroup v2 hierarchy");
        return;
    };
    let is_hybrid = root != Path::new(CGROUP_ROOT);
    let h = Hierarchy::detect(&root).expect("a hierarchy");
    assert!(matches!(h, Hierarchy::V2 { .. }), "{h:?}");
    let id = kiln::container::new_id().expect("id");
    let cg = Cgroup::new(h, &id).expect("cgroup");
    cg.create(&Resources::default()).expect("create");
    let dir = root.join("kiln").join(&id);
    assert!(dir.is_dir());
    let child = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("sleep");
    let pid = child.id() as i32;
    let mut guard = Cleanup(child, cg.clone());
    cg.add(pid).expect("add");
    assert_eq!(cg.procs(), vec![pid]);
    cg.freeze().expect("freeze");
    assert!(cg.is_frozen());
    let events = std::fs::read_to_string(dir.join("cgroup.events")).expect("events");
    assert!(events.contains("frozen 1"), "{events}");
    cg.thaw().expect("thaw");
    assert!(!cg.is_frozen());
    // Removal kills what is left in it and removes the directory.
    cg.remove().expect("remove");
    assert!(!dir.exists());
    let status = guard.0.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    if is_hybrid {
        // kiln's containers never use the hybrid unified tree: leave it as it was.
        let _ = std::fs::remove_dir(root.join("kiln"));
    }
}
