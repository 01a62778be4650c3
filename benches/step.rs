//! Benchmark (not a test): the overhead of a trivial RUN step — sandbox set-up, `true`,
//! commit of its (empty or one-file) diff, teardown — as the median of 50 runs, over a busybox
//! root made from the host's static busybox, in the default network (its own namespace with
//! pasta) and, for comparison, with `--network none` and `--network host`. Run as root:
//! `cargo bench --bench step`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

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

fn one(store: &Store, lower: &Path, network: NetworkMode, argv: &[&str]) -> Duration {
    let start = Instant::now();
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
    let out = run_step(&spec, StepIo::default()).expect("run");
    assert!(out.status.success());
    let _ = kiln::executor::remove_step_dir(&out.step_dir);
    if fs::read_dir(res.path()).expect("upper").next().is_some() {
        let layer = kiln::build::fs::commit_dir(store, &res.path(), None).expect("commit");
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
    // Warm-up, then the measured runs.
    one(&store, &lower, NetworkMode::default(), &["/bin/true"]);
    for (network, name) in [
        (
            NetworkMode::Sandbox,
            "default network (own namespace, pasta)",
        ),
        (NetworkMode::None, "--network none"),
        (NetworkMode::Host, "--network host"),
    ] {
        let t: Vec<Duration> = (0..runs)
            .map(|_| one(&store, &lower, network, &["/bin/true"]))
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
                NetworkMode::default(),
                &["/bin/sh", "-c", &format!("touch /tmp/f{i}")],
            )
        })
        .collect();
    println!(
        "RUN touch one file (plus a one-file layer commit), default network: median of {runs}: \
         {:.2} ms",
        median(t).as_secs_f64() * 1e3
    );
}
