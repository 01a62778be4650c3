//! Builds of several platforms in one command (`--platform linux/amd64,linux/arm64,…`): one
//! OCI index under the tag, pushed to the loopback `docker-registry` (read back with skopeo,
//! pulled and run by Docker), run per platform by kiln under QEMU; the cross-compilation
//! pattern whose `$BUILDPLATFORM` stage runs once for two targets; the index in `kiln
//! images`, `image inspect`, `tag`, `save`, `rmi`; and SOURCE_DATE_EPOCH giving the same
//! index digest in two empty stores.
//!
//! Needs root, busybox, qemu-user-static registered with F, Debian's foreign busybox-static
//! packages, `docker-registry`, skopeo and Docker (`util::require`: a failure under CI).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::build_cmd::write;
use crate::platforms::{emulation, foreign_busybox};
use crate::registry::{need, Registry};
use crate::util::{platform_string, require, run_tool, stderr, stdout, unique_name, TestStore};

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    o
}

/// What `uname -m` says on this host.
fn host_machine() -> &'static str {
    std::env::consts::ARCH
}

/// The host's platform as `--platform` takes it.
fn host_platform() -> String {
    kiln::common::platform::Platform::host().to_string()
}

/// A `$BUILDPLATFORM` stage that "compiles" once (it uses no target ARG until after its
/// compile step), then a stage per target that copies the result into the target's base.
const CROSS: &str = "FROM --platform=$BUILDPLATFORM busybox:local AS build\n\
    RUN echo compile-step-ran && uname -m > /built-on\n\
    ARG TARGETARCH\n\
    RUN echo \"binary for $TARGETARCH\" > /app\n\
    FROM scratch\n\
    COPY --from=build /built-on /app /\n";

fn docker() -> Option<std::path::PathBuf> {
    let docker = require::tool("docker", "apt-get install docker.io")?;
    let up = Command::new(&docker)
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    require::require(
        up,
        "a reachable docker daemon (scripts/start-dockerd.sh starts one)",
    )
    .then_some(docker)
}

#[test]
fn three_platforms_are_one_index_pushed_run_by_kiln_and_pulled_by_docker() {
    let s = TestStore::new();
    if !emulation()
        || s.busybox("busybox-host:local").is_none()
        || !foreign_busybox(&s, "arm64", "linux/arm64", "busybox-arm64:local")
        || !foreign_busybox(&s, "armhf", "linux/arm/v7", "busybox-arm:local")
    {
        return;
    }
    let (Some(reg), Some(skopeo)) = (Registry::start(false), need("skopeo", None)) else {
        return;
    };
    let host_arch = kiln::common::platform::Platform::host().architecture;
    if host_arch != "amd64" {
        require::missing("an amd64 host (the test's bases are amd64, arm64 and armhf)");
        return;
    }
    // The host's base under the name the target ARG gives (busybox-amd64:local on amd64).
    ok(s.kiln(
        s.dir.path(),
        &[
            "tag",
            "busybox-host:local",
            &format!("busybox-{host_arch}:local"),
        ],
        None,
    ));
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM --platform=$BUILDPLATFORM busybox-{host_arch}:local AS tools\n\
             RUN uname -m > /built-on\n\
             FROM busybox-${{TARGETARCH}}:local\n\
             ARG TARGETPLATFORM\n\
             COPY --from=tools /built-on /built-on\n\
             RUN uname -m > /machine && echo \"$TARGETPLATFORM\" > /platform\n"
        ),
    );
    let platforms = ["linux/amd64", "linux/arm64", "linux/arm/v7"];
    let name = format!("{}/mp/app:1", reg.host());
    let o = ok(s.kiln(
        &ctx,
        &[
            "build",
            "--progress=plain",
            "--platform",
            &platforms.join(","),
            "-t",
            &name,
            "--push",
            ".",
        ],
        None,
    ));
    let err = stderr(&o);
    // One progress view, each step prefixed with its platform as BuildKit shows it.
    for p in platforms {
        assert!(
            err.contains(&format!("[{p} stage-1 4/4] RUN uname -m > /machine")),
            "{err}"
        );
    }
    // The registry holds one index with a manifest per platform, whose configs say so.
    let raw = run_tool(Command::new(&skopeo).args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]));
    let index: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{raw}"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 3, "{raw}");
    let repo = format!("{}/mp/app", reg.host());
    for (m, (arch, variant)) in
        manifests
            .iter()
            .zip([("amd64", None), ("arm64", None), ("arm", Some("v7"))])
    {
        assert_eq!(m["platform"]["architecture"], arch, "{raw}");
        let digest = m["digest"].as_str().unwrap();
        let config: Value = serde_json::from_str(&run_tool(Command::new(&skopeo).args([
            "inspect",
            "--tls-verify=false",
            "--config",
            "--raw",
            &format!("docker://{repo}@{digest}"),
        ])))
        .unwrap();
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["variant"].as_str(), variant);
        assert_eq!(config["os"], "linux");
    }
    // kiln runs each platform's entry of the one tag.
    for (p, machine) in platforms.iter().zip(["x86_64", "aarch64", "armv7l"]) {
        let o = ok(s.kiln(
            s.dir.path(),
            &[
                "run",
                "--rm",
                "--platform",
                p,
                &name,
                "cat",
                "/machine",
                "/platform",
                "/built-on",
            ],
            None,
        ));
        assert_eq!(
            stdout(&o),
            format!("{machine}\n{p}\n{}\n", host_machine()),
            "{p}"
        );
    }
    // Without --platform: the host's entry.
    let o = ok(s.kiln(s.dir.path(), &["run", "--rm", &name, "uname", "-m"], None));
    assert_eq!(stdout(&o).trim(), host_machine());
    // `kiln images` shows the tag once; inspect shows the index and every platform.
    let o = ok(s.kiln(
        s.dir.path(),
        &[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
            &repo,
        ],
        None,
    ));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    let o = ok(s.kiln(s.dir.path(), &["image", "inspect", &name], None));
    let doc: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let doc = &doc[0];
    assert_eq!(
        doc["Descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(doc["Id"], doc["Descriptor"]["digest"]);
    let shown: Vec<String> = doc["Manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| platform_string(&m["Platform"]))
        .collect();
    assert_eq!(shown, platforms);
    // The index the build pushed, and `kiln push` of the tag pushes the same one again.
    let digest = kiln::image::Digest::of_bytes(raw.as_bytes()).to_string();
    assert!(err.contains(&format!("done: digest: {digest}")), "{err}");
    let o = ok(s.kiln(s.dir.path(), &["push", &name], None));
    assert!(stdout(&o).contains(&digest), "{}", stdout(&o));
    docker_pulls_the_arm64_entry(&name);
}

/// Docker pulls the index's arm64 entry from the loopback registry (which Docker treats as
/// insecure by default) and runs it under the same emulation.
fn docker_pulls_the_arm64_entry(name: &str) {
    let Some(docker) = docker() else { return };
    struct Rmi<'a>(&'a Path, String);
    impl Drop for Rmi<'_> {
        fn drop(&mut self) {
            let _ = Command::new(self.0).args(["rmi", "-f", &self.1]).output();
        }
    }
    let _rmi = Rmi(&docker, name.to_string());
    run_tool(Command::new(&docker).args(["pull", "-q", "--platform", "linux/arm64", name]));
    let out = run_tool(Command::new(&docker).args([
        "run",
        "--rm",
        "--platform",
        "linux/arm64",
        name,
        "uname",
        "-m",
    ]));
    assert_eq!(out.trim(), "aarch64");
}

#[test]
fn the_cross_compile_stage_runs_once_for_two_targets() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "Dockerfile", CROSS);
    let out = s.dir.path().join("out");
    let o = ok(s.kiln(
        &ctx,
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "cross:1",
            "-o",
            &format!("type=local,dest={}", out.display()),
            ".",
        ],
        None,
    ));
    let err = stderr(&o);
    // The compile step is in both platforms' views, but ran once: its output once, and the
    // other platform's step CACHED.
    assert_eq!(
        err.lines()
            .filter(|l| l.ends_with(" compile-step-ran"))
            .count(),
        1,
        "{err}"
    );
    let steps: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("] RUN echo compile-step-ran"))
        .collect();
    assert_eq!(steps.len(), 2, "{err}");
    assert!(steps.iter().any(|l| l.contains("[linux/amd64 build 2/4]")));
    assert!(steps.iter().any(|l| l.contains("[linux/arm64 build 2/4]")));
    // TARGETARCH is each target's; the compile ran on the build platform.
    for arch in ["amd64", "arm64"] {
        let dir = out.join(format!("linux_{arch}"));
        assert_eq!(
            fs::read_to_string(dir.join("app")).unwrap(),
            format!("binary for {arch}\n")
        );
        assert_eq!(
            fs::read_to_string(dir.join("built-on")).unwrap(),
            format!("{}\n", host_machine())
        );
    }
    // One name in the store, tag/save/rmi of the index.
    let lines = |o: &Output| stdout(o).lines().map(str::to_owned).collect::<Vec<_>>();
    ok(s.kiln(s.dir.path(), &["tag", "cross:1", "cross:2"], None));
    let o = ok(s.kiln(
        s.dir.path(),
        &[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
            "cross",
        ],
        None,
    ));
    let shown = lines(&o);
    assert_eq!(shown.len(), 2, "{shown:?}");
    let ids: Vec<&str> = shown.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(ids[0], ids[1]);
    let archive = s.dir.path().join("cross.tar");
    ok(s.kiln(
        s.dir.path(),
        &["save", "-o", archive.to_str().unwrap(), "cross:1"],
        None,
    ));
    let index =
        run_tool(Command::new("tar").args(["xOf", archive.to_str().unwrap(), "index.json"]));
    let index: Value = serde_json::from_str(&index).unwrap();
    assert_eq!(
        index["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    // A run of the arm64 entry would need emulation; the host's entry is the default one.
    let o = ok(s.kiln(s.dir.path(), &["rmi", "cross:1", "cross:2"], None));
    assert!(stdout(&o).contains("Deleted: sha256:"), "{}", stdout(&o));
    let o = ok(s.kiln(s.dir.path(), &["images", "-q", "cross"], None));
    assert_eq!(stdout(&o), "");
}

#[test]
fn source_date_epoch_gives_the_same_index_digest_in_two_empty_stores() {
    let digests: Vec<String> = (0..2)
        .map_while(|_| {
            let s = TestStore::new();
            s.busybox("busybox:local")?;
            let ctx = s.dir.path().join("ctx");
            write(&ctx, "Dockerfile", CROSS);
            let iid = s.dir.path().join("iid");
            let o = ok(Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args([
                    "build",
                    "-q",
                    "--platform",
                    &format!("{},linux/arm64", host_platform()),
                    "-t",
                    &unique_name("repro"),
                    "--iidfile",
                    iid.to_str().unwrap(),
                    ".",
                ])
                .current_dir(&ctx)
                .env("KILN_ROOT", s.root())
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .output()
                .expect("kiln"));
            let printed = stdout(&o).trim().to_owned();
            assert_eq!(fs::read_to_string(&iid).unwrap(), printed);
            Some(printed)
        })
        .collect();
    if digests.len() < 2 {
        return;
    }
    assert!(digests[0].starts_with("sha256:"), "{digests:?}");
    assert_eq!(digests[0], digests[1]);
}
