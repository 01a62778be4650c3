//! Interrupting builds: kiln is stopped with SIGINT or SIGKILL at many points of a build; the
//! store stays valid (`kiln system check`), nothing is left mounted or running, and the next
//! build succeeds, reusing what was committed before.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::TestStore;

/// Mounts that involve this test's directory (other tests, and Docker, mount elsewhere
/// concurrently).
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn killed_builds_leave_a_valid_store_and_nothing_behind() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    fs::create_dir_all(ctx.join("src")).unwrap();
    for i in 0..50 {
        fs::write(
            ctx.join(format!("src/f{i}.txt")),
            format!("file {i}\n").repeat(200),
        )
        .unwrap();
    }
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local\nCOPY src /src\nRUN sleep 0.2 && cat /src/* > /all\n\
         RUN sleep 0.2 && echo two > /two\nRUN sleep 0.2 && sleep 7031 & sleep 0.2; echo three > /three\n\
         COPY src /again\nRUN sleep 0.2 && wc -l /all > /count\n",
    )
    .unwrap();
    let before = mounts_under(s.dir.path());
    // A fixed sequence of delays, so a failure can be replayed.
    let delays_ms = [60u64, 150, 260, 380, 520, 700, 900, 1100, 90, 330];
    for (round, delay) in delays_ms.iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "--progress=plain", "-t", "intr:1", "."])
            .current_dir(&ctx)
            .env("KILN_ROOT", s.root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        let sig = if round % 2 == 0 {
            nix::sys::signal::Signal::SIGINT
        } else {
            nix::sys::signal::Signal::SIGKILL
        };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        let _ = child.wait();
        let check = s.kiln(&ctx, &["system", "check"], None);
        assert!(
            check.status.success(),
            "round {round} ({sig:?} after {delay} ms): system check failed: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    // The steps' processes died with kiln, and nothing stayed mounted.
    std::thread::sleep(Duration::from_millis(300));
    let leftovers = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            fs::read(e.path().join("cmdline")).is_ok_and(|c| c.windows(5).any(|w| w == b"\x007031"))
        })
        .count();
    assert_eq!(leftovers, 0, "a step process outlived kiln");
    assert_eq!(mounts_under(s.dir.path()), before, "a mount outlived kiln");
    // The next build works, and one more is answered entirely from the cache.
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "intr:1", "."],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "intr:1", "."],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.lines().filter(|l| l.ends_with(" CACHED")).count(),
        6,
        "{err}"
    );
    assert!(s.unpack("intr:1").join("count").exists());
}
