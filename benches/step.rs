//! Benchmark (not a test): the overhead of a trivial RUN step — sandbox set-up, `true`,
//! commit of its (empty or one-file) diff, teardown — as the median of 50 runs, over a busybox
//! root made from the host's static busybox, in the default network as a build runs it (a
//! namespace of the build's pool, joined) and as a lone step does (a namespace of its own with
//! a pasta started for it), and, for comparison, with `--network none` and `--network host`.
//! Run as root: `cargo bench --bench step`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln::executor::pasta::{NetPool, PastaOptions};
use kiln::executor::{run_step, NetworkMode, RwLayer, StepIo, StepSpec};
use kiln::store::Store;

fn busybox_root(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir.join("bin"))?;
    fs::create_dir_all(dir.join("etc"))?;
    fs::create_dir_all(dir.join("tmp"))?;
    fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
    for a in ["sh", "true", "touch"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a))?;
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The network a measured step gets.
#[derive(Clone, Copy)]
enum Net<'a> {
    Mode(NetworkMode),
    /// The default network, from a build's pool: taken for the step, given back after it.
    Pooled(&'a NetPool),
}

fn one(store: &Store, lower: &Path, net: Net<'_>, argv: &[&str]) -> Duration {
    let start = Instant::now();
    let (network, lease) = match net {
        Net::Mode(m) => (m, None),
        Net::Pooled(pool) => (
            NetworkMode::Sandbox,
            Some(pool.take().expect("a pooled network namespace")),
        ),
    };
    let res = store.reserve_snapshot().expect("reserve");
    let scratch = tempfile::tempdir_in(store.tmp_dir()).expect("scratch");
    let work = scratch.path().join("work");
    fs::create_dir(&work).expect("work dir");
    let mut spec = StepSpec::new(
        vec![lower.to_path_buf()],
        scratch.path(),
        argv.iter().map(|s| s.to_string()).collect(),
    );
    spec.rw = RwLayer::Dirs {
        upper: res.path(),
        work,
    };
    spec.network = network;
    spec.netns = lease.as_ref().and_then(|l| l.netns());
    let out = run_step(&spec, StepIo::default()).expect("run");
    drop(lease);
    assert!(out.status.success());
    let _ = kiln::executor::remove_step_dir(&out.step_dir);
    if fs::read_dir(res.path()).expect("upper").next().is_some() {
        let layer = kiln::rootfs::layers::commit_dir(store, &res.path(), None).expect("commit");
        res.commit(None, &layer.diff_id).expect("snapshot");
    }
    start.elapsed()
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the step benchmark needs root (namespaces, overlayfs)");
        return;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipped: /bin/busybox (Debian busybox-static) is not installed");
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    let lower = d.path().join("lower");
    busybox_root(&lower).expect("busybox root");
    let store = Store::open(d.path().join("root")).expect("store");
    let runs = 50;
    let pool = NetPool::new(PastaOptions::sandbox());
    // Warm-up (the pool's namespace made), then the measured runs.
    one(&store, &lower, Net::Pooled(&pool), &["/bin/true"]);
    for (net, name) in [
        (
            Net::Pooled(&pool),
            "default network (a build's pooled namespace, setns)",
        ),
        (
            Net::Mode(NetworkMode::Sandbox),
            "default network, a lone step (own namespace, pasta started)",
        ),
        (Net::Mode(NetworkMode::None), "--network none"),
        (Net::Mode(NetworkMode::Host), "--network host"),
    ] {
        let t: Vec<Duration> = (0..runs)
            .map(|_| one(&store, &lower, net, &["/bin/true"]))
            .collect();
        println!(
            "RUN true (set-up, run, commit, teardown), {name}: median of {runs}: {:.2} ms",
            median(t).as_secs_f64() * 1e3
        );
    }
    let t: Vec<Duration> = (0..runs)
        .map(|i| {
            one(
                &store,
                &lower,
                Net::Pooled(&pool),
                &["/bin/sh", "-c", &format!("touch /tmp/f{i}")],
            )
        })
        .collect();
    println!(
        "RUN touch one file (plus a one-file layer commit), default network (pooled): median \
         of {runs}: {:.2} ms",
        median(t).as_secs_f64() * 1e3
    );
    let start = Instant::now();
    pool.close();
    println!(
        "closing the pool (its pasta killed and reaped): {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
}
