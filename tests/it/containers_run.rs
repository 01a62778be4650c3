//! Containers end to end: `kiln run` itself — exit codes and the image config, the init
//! process, health checks, a read-only root with tmpfs and extra hosts.
//! Every test removes its containers (`rm -f`) when it ends, even when it fails.

use super::containers::*;
use super::util::{stderr, stdout};

#[test]
fn run_passes_exit_codes_and_applies_the_image_config() {
    let Some(e) = Env::new() else { return };
    let o = e.run(&["run", "--rm", "busybox:local", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = e.run(&["run", "--rm", "busybox:local", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let o = e.run(&["run", "--rm", "no-such-image:1", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-image:1"), "{}", stderr(&o));
    // --rm leaves nothing behind.
    assert_eq!(e.ok(&["ps", "-aq"]).trim(), "");

    // The image's ENTRYPOINT, CMD, ENV, WORKDIR and USER apply; flags override them.
    e.build(
        "cfg:1",
        "FROM busybox:local\nENV GREETING=hi\nWORKDIR /srv\nUSER nobody\n\
         ENTRYPOINT [\"sh\", \"-c\", \"echo $GREETING $(pwd) $(id -u) \\\"$@\\\"\", \"x\"]\n\
         CMD [\"from-cmd\"]\n",
        &[],
    );
    assert_eq!(
        e.ok(&["run", "--rm", "cfg:1"]).trim(),
        "hi /srv 65534 from-cmd"
    );
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "-e",
            "GREETING=yo",
            "-w",
            "/tmp",
            "-u",
            "0",
            "cfg:1",
            "arg"
        ])
        .trim(),
        "yo /tmp 0 arg"
    );
    // --entrypoint drops the image's CMD.
    assert_eq!(
        e.ok(&["run", "--rm", "--entrypoint", "pwd", "cfg:1"])
            .trim(),
        "/srv"
    );
    // --env-file, and -e NAME taking the caller's value.
    std::fs::write(e.dir().join("env.list"), "# comment\nA=1\nB=two words\n").unwrap();
    let out = e
        .command(&[
            "run",
            "--rm",
            "--env-file",
            "env.list",
            "-e",
            "FROM_HOST",
            "busybox:local",
            "sh",
            "-c",
            "echo \"$A|$B|$FROM_HOST\"",
        ])
        .env("FROM_HOST", "hostval")
        .output()
        .expect("kiln");
    assert_eq!(
        stdout(&out).trim(),
        "1|two words|hostval",
        "{}",
        stderr(&out)
    );
    // Hostname: the short id, or --hostname.
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "--hostname",
            "box1",
            "busybox:local",
            "hostname"
        ])
        .trim(),
        "box1"
    );
}

#[test]
fn init_reaps_and_forwards_signals() {
    let Some(e) = Env::new() else { return };
    let out = e.ok(&[
        "run",
        "--rm",
        "--init",
        "busybox:local",
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(out.starts_with("init "), "{out}");
    // Under --init a plain `sleep` gets SIGTERM from stop and dies at once with 143.
    e.ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        "inited",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    e.wait_for("inited", 10, running);
    e.ok(&["stop", "-t", "60", "inited"]);
    let v = e.inspect("inited");
    assert_eq!(v["State"]["ExitCode"], 143, "{v:#}");
    assert_eq!(v["HostConfig"]["Init"], true);
}

#[test]
fn health_checks_from_the_image_and_flags() {
    let Some(e) = Env::new() else { return };
    e.build(
        "healthy:1",
        "FROM busybox:local\n\
         HEALTHCHECK --interval=1s --timeout=5s --retries=2 CMD test -e /tmp/ready && echo ready\n\
         CMD [\"sleep\", \"1000\"]\n",
        &[],
    );
    let status = |name: &str| -> String {
        e.inspect(name)["State"]["Health"]["Status"]
            .as_str()
            .unwrap_or("none")
            .to_string()
    };
    // The image's check: starting, unhealthy after two failures, healthy once it passes.
    e.ok(&["run", "-d", "--name", "hc", "healthy:1"]);
    assert_eq!(status("hc"), "starting");
    let v = e.wait_for("hc", 20, |v| v["State"]["Health"]["Status"] == "unhealthy");
    assert!(
        v["State"]["Health"]["FailingStreak"].as_u64().unwrap() >= 2,
        "{v:#}"
    );
    assert_eq!(v["State"]["Health"]["Log"][0]["ExitCode"], 1, "{v:#}");
    assert_eq!(v["Config"]["Healthcheck"]["Retries"], 2);
    assert!(e.ok(&["ps"]).contains("(unhealthy)"));
    e.ok(&["exec", "hc", "touch", "/tmp/ready"]);
    let v = e.wait_for("hc", 20, |v| v["State"]["Health"]["Status"] == "healthy");
    let log = v["State"]["Health"]["Log"].as_array().unwrap();
    assert_eq!(log.last().unwrap()["Output"], "ready\n", "{v:#}");
    assert_eq!(v["State"]["Health"]["FailingStreak"], 0);
    assert_eq!(
        e.ok(&["ps", "-q", "--filter", "health=healthy"])
            .trim()
            .len(),
        12
    );
    assert!(e.ok(&["ps"]).contains("(healthy)"));

    // A check that outlives its timeout is killed and counts as a failure.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 30",
        "--health-interval",
        "1s",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "1",
        "busybox:local",
        "sleep",
        "1000",
    ]);
    let v = e.wait_for("slow", 20, |v| {
        v["State"]["Health"]["Status"] == "unhealthy"
    });
    let entry = &v["State"]["Health"]["Log"][0];
    assert_eq!(entry["ExitCode"], -1, "{v:#}");
    assert!(
        entry["Output"]
            .as_str()
            .unwrap()
            .contains("exceeded timeout"),
        "{v:#}"
    );
    // No `sleep 30` of a killed check is left in the container.
    let procs = e.ok(&["exec", "slow", "ps", "-o", "args"]);
    assert!(!procs.contains("sleep 30"), "{procs}");

    // --no-healthcheck turns the image's off.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "off",
        "--no-healthcheck",
        "healthy:1",
    ]);
    let v = e.wait_for("off", 10, running);
    assert!(v["State"]["Health"].is_null(), "{v:#}");
    assert!(v["Config"]["Healthcheck"].is_null(), "{v:#}");
    let o = e.run(&[
        "run",
        "-d",
        "--health-interval",
        "soon",
        "busybox:local",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("--health-interval"), "{}", stderr(&o));

    // A restart starts over as `starting`.
    e.ok(&["restart", "-t", "1", "hc"]);
    assert_eq!(status("hc"), "starting");
}

#[test]
fn read_only_root_tmpfs_and_extra_hosts() {
    let Some(e) = Env::new() else { return };
    let out = e.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/run/app:size=1m,noexec",
        "--add-host",
        "db.internal:10.1.2.3",
        "-v",
        "data:/data",
        "busybox:local",
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo root-writable; \
         touch /run/app/f && echo tmpfs-writable; \
         grep size=1024k /proc/mounts | grep -q /run/app && echo sized; \
         grep /run/app /proc/mounts | grep -q noexec && echo noexec; \
         echo v > /data/v && echo volume-writable; \
         echo s > /dev/shm/s && echo shm-writable; \
         grep db.internal /etc/hosts",
    ]);
    assert_eq!(
        out,
        "tmpfs-writable\nsized\nnoexec\nvolume-writable\nshm-writable\n10.1.2.3\tdb.internal\n"
    );
    // Without --read-only the root is writable; inspect shows the settings.
    e.ok(&[
        "create",
        "--name",
        "ro",
        "--read-only",
        "--tmpfs",
        "/t",
        "--add-host",
        "a:::1",
        "busybox:local",
        "true",
    ]);
    let v = e.inspect("ro");
    assert_eq!(v["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(v["HostConfig"]["Tmpfs"]["/t"], "size=65536k");
    assert_eq!(v["HostConfig"]["ExtraHosts"][0], "a:::1");
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "busybox:local",
            "sh",
            "-c",
            "touch /x && echo ok"
        ]),
        "ok\n"
    );
    for bad in [
        vec![
            "run",
            "--rm",
            "--tmpfs",
            "relative",
            "busybox:local",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--tmpfs",
            "/t:exec,bogus=1",
            "busybox:local",
            "true",
        ],
        vec![
            "run",
            "--rm",
            "--add-host",
            "db:not-an-ip",
            "busybox:local",
            "true",
        ],
    ] {
        let o = e.run(&bad);
        assert_eq!(o.status.code(), Some(125), "{bad:?}: {}", stderr(&o));
    }
}
