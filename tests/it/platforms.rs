//! `--platform`: builds for a foreign platform (arm64, arm/v7) whose RUN steps run under
//! QEMU's user-mode emulation, BuildKit's automatic platform ARGs, `FROM
//! --platform=$BUILDPLATFORM` stages that run natively, the platform in the cache key, the
//! clear error when emulation is missing, and `kiln run --platform`.
//!
//! The foreign bases are Debian's busybox-static of those architectures
//! (`scripts/busybox-foreign-rootfs.sh`), imported with `kiln image import --platform`.
//! Emulation is qemu-user-static registered with the F flag (`scripts/binfmt-setup.sh`, which
//! `scripts/install-deps.sh` runs): a test that needs it requires it (a failure under CI).

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kiln::common::platform::Platform;
use kiln::executor::binfmt;

use crate::build_cmd::{cached_steps, write};
use crate::util::{require, stderr, stdout, TestStore};

/// Whether arm64 and arm/v7 programs run here (natively or under an emulator registered
/// with F); reported missing otherwise.
pub(crate) fn emulation() -> bool {
    let dir = Path::new(binfmt::DEFAULT_DIR);
    let ok = ["linux/arm64", "linux/arm/v7"]
        .iter()
        .all(|p| binfmt::support(&Platform::parse(p).unwrap(), dir).is_ok());
    require::require(
        ok,
        "qemu-user-static registered in binfmt_misc with the F flag \
         (apt-get install qemu-user-static; bash scripts/binfmt-setup.sh)",
    )
}

/// Imports Debian's busybox-static of `arch` (a Debian architecture) as `name`, recorded for
/// `platform`, dated by SOURCE_DATE_EPOCH: every store gets the same base image (as when
/// they all pull it from one registry). `false` when it cannot be had (reported missing).
pub(crate) fn foreign_busybox(s: &TestStore, arch: &str, platform: &str, name: &str) -> bool {
    if !require::root() {
        return false;
    }
    let tar = s.dir.path().join(format!("busybox-{arch}.tar"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-foreign-rootfs.sh");
    let st = Command::new("bash")
        .arg(script)
        .arg(arch)
        .arg(&tar)
        .status()
        .expect("bash");
    if !st.success() {
        require::missing(&format!(
            "Debian's busybox-static:{arch} (scripts/busybox-foreign-rootfs.sh; mirror over HTTP)"
        ));
        return false;
    }
    let tar = tar.to_str().unwrap();
    let o = kiln_env(
        s,
        s.dir.path(),
        &["image", "import", "--platform", platform, tar, name],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    true
}

/// kiln with this store and extra environment.
fn kiln_env(s: &TestStore, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env("KILN_ROOT", s.root())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running kiln")
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    o
}

/// What `uname -m` says on this host.
fn host_machine() -> &'static str {
    std::env::consts::ARCH
}

#[test]
fn foreign_platforms_build_and_run_under_emulation() {
    let s = TestStore::new();
    if !emulation()
        || !foreign_busybox(&s, "arm64", "linux/arm64", "busybox-arm64:local")
        || !foreign_busybox(&s, "armhf", "linux/arm/v7", "busybox-arm:local")
    {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    // The automatic ARGs reach FROM (the base is the target's) and, declared, the steps.
    write(
        &ctx,
        "Dockerfile",
        "ARG TARGETARCH\nFROM busybox-${TARGETARCH}:local\n\
         ARG TARGETARCH\nARG TARGETVARIANT\nARG TARGETPLATFORM\nARG BUILDARCH\nARG BUILDPLATFORM\n\
         RUN uname -m > /m && echo \"$TARGETPLATFORM $TARGETARCH [$TARGETVARIANT] $BUILDARCH $BUILDPLATFORM\" > /args\n",
    );
    let host = Platform::host();
    for (platform, tag, arch, variant, machine) in [
        ("linux/arm64", "t:arm64", "arm64", None, "aarch64"),
        ("linux/arm/v7", "t:arm", "arm", Some("v7"), "armv7l"),
    ] {
        ok(s.kiln(
            &ctx,
            &[
                "build",
                "--progress=plain",
                "--platform",
                platform,
                "-t",
                tag,
                ".",
            ],
            None,
        ));
        let cfg = s.config(tag);
        assert_eq!(
            (
                cfg.os.as_str(),
                cfg.architecture.as_str(),
                cfg.variant.as_deref()
            ),
            ("linux", arch, variant)
        );
        let files = s.unpack(tag);
        assert_eq!(
            fs::read_to_string(files.join("m")).unwrap(),
            format!("{machine}\n")
        );
        assert_eq!(
            fs::read_to_string(files.join("args")).unwrap(),
            format!(
                "{platform} {arch} [{}] {} {host}\n",
                variant.unwrap_or(""),
                host.architecture
            )
        );
        // The run path runs the image of the platform asked for, under the same emulation.
        let o = ok(s.kiln(
            &ctx,
            &["run", "--rm", "--platform", platform, tag, "uname", "-m"],
            None,
        ));
        assert_eq!(stdout(&o), format!("{machine}\n"));
    }
    // Without --platform, a foreign image runs too, with Docker's warning.
    let o = ok(s.kiln(&ctx, &["run", "--rm", "t:arm", "uname", "-m"], None));
    assert_eq!(stdout(&o), "armv7l\n");
    assert!(stderr(&o).contains("does not match the detected host platform"));
    // A stored image of another platform than the one asked for is refused, naming both.
    let o = s.kiln(
        &ctx,
        &["run", "--rm", "--platform", "linux/arm64", "t:arm", "true"],
        None,
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("wanted linux/arm64, actual: linux/arm/v7"),
        "{}",
        stderr(&o)
    );
    // `kiln info` lists what this host runs.
    let o = ok(s.kiln(&ctx, &["info", "--format", "json"], None));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let platforms = info["Platforms"].as_array().unwrap();
    for p in [&host.to_string()[..], "linux/arm64", "linux/arm/v7"] {
        assert!(platforms.iter().any(|v| v == p), "{p} not in {platforms:?}");
    }
    assert!(info["Emulators"]["linux/arm64"].is_string(), "{info}");
}

// The usual cross-compilation shape: a `FROM --platform=$BUILDPLATFORM` stage runs natively
// for every target; its steps are shared by the targets unless they use a target ARG; the
// platform is in every other key, so a build for arm64 never reuses the amd64 build's steps.
#[test]
fn build_platform_stages_run_natively_and_the_platform_is_in_the_key() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "f", "same file\n");
    write(
        &ctx,
        "Dockerfile",
        "FROM --platform=$BUILDPLATFORM busybox:local AS tools\nRUN uname -m > /native\n\
         FROM --platform=$BUILDPLATFORM busybox:local AS cross\nARG TARGETARCH\n\
         RUN echo \"on $(uname -m) for $TARGETARCH\" > /out\n\
         FROM scratch\nCOPY --from=tools /native /native\nCOPY --from=cross /out /out\nCOPY f /f\n",
    );
    let host = Platform::host();
    let build = |platform: &str| {
        ok(s.kiln(
            &ctx,
            &[
                "build",
                "--progress=plain",
                "--platform",
                platform,
                "-t",
                "x:1",
                ".",
            ],
            None,
        ))
    };
    let other = if host.architecture == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    build(&host.to_string());
    let o = build(other);
    let err = stderr(&o);
    // Only the native stage's step that uses no target ARG is shared.
    assert_eq!(cached_steps(&o), 1, "{err}");
    let cached_id = err
        .lines()
        .find_map(|l| l.strip_suffix(" CACHED"))
        .unwrap_or("none");
    let cached_step = err
        .lines()
        .find(|l| l.starts_with(&format!("{cached_id} [")))
        .unwrap_or_default();
    assert!(
        cached_step.contains("RUN uname -m > /native"),
        "{cached_step}\n{err}"
    );
    assert!(
        err.contains(&format!("the platform changed ({host} → {other})")),
        "{err}"
    );
    let files = s.unpack("x:1");
    let machine = host_machine();
    assert_eq!(
        fs::read_to_string(files.join("native")).unwrap(),
        format!("{machine}\n")
    );
    let target_arch = other.rsplit('/').next().unwrap();
    assert_eq!(
        fs::read_to_string(files.join("out")).unwrap(),
        format!("on {machine} for {target_arch}\n")
    );
    assert_eq!(s.config("x:1").architecture, target_arch);
    // The same target again: everything from the cache.
    let o = build(other);
    assert_eq!(cached_steps(&o), 5, "{}", stderr(&o));
}

#[test]
fn missing_emulation_is_a_clear_error_before_the_step_runs() {
    let s = TestStore::new();
    if !foreign_busybox(&s, "arm64", "linux/arm64", "busybox-arm64:local") {
        return;
    }
    if Platform::host().architecture == "arm64" {
        return; // arm64 is native there: nothing to emulate.
    }
    // A binfmt_misc without the entry, as on a host without qemu-user-static.
    let fake = s.dir.path().join("binfmt");
    fs::create_dir_all(&fake).unwrap();
    fs::write(fake.join("status"), "enabled\n").unwrap();
    let fake = fake.to_str().unwrap();
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox-arm64:local\nRUN echo ran > /ran\n",
    );
    let o = kiln_env(
        &s,
        &ctx,
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/arm64",
            ".",
        ],
        &[("KILN_BINFMT_DIR", fake)],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot run linux/arm64 programs on this")
            && err.contains("apt-get install qemu-user-static")
            && err.contains("Dockerfile:2"),
        "{err}"
    );
    assert!(!err.contains("exec format error"), "{err}");
    assert!(!err.lines().any(|l| l.ends_with(" ran")), "{err}");

    let o = kiln_env(
        &s,
        &ctx,
        &["run", "--rm", "busybox-arm64:local", "true"],
        &[("KILN_BINFMT_DIR", fake)],
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("cannot run linux/arm64 programs"),
        "{}",
        stderr(&o)
    );

    // A base of another platform than the one asked for is refused before any step.
    let o = s.kiln(&ctx, &["build", "--platform", "linux/arm/v7", "."], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is for linux/arm64, not linux/arm/v7"),
        "{}",
        stderr(&o)
    );
    // Several platforms in one build: a base that is not the target's is the same clear
    // error, and nothing is named.
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "two:1",
            ".",
        ],
        None,
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("the local store's image is for linux/arm64, not linux/amd64"),
        "{}",
        stderr(&o)
    );
    assert!(!s
        .kiln(&ctx, &["image", "inspect", "two:1"], None)
        .status
        .success());
}
