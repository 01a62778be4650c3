//! `kiln build` end to end: real multi-stage Dockerfiles over a busybox base, the cache as a
//! user sees it, and Docker's rules for contexts, args, stages and instructions.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::util::TestStore;

pub(crate) fn write(dir: &Path, rel: &str, data: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn cached_steps(o: &std::process::Output) -> usize {
    stderr(o).lines().filter(|l| l.ends_with(" CACHED")).count()
}

#[test]
fn multi_stage_build_with_copy_run_args_and_history() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "src/hello.txt", "hello");
    write(&ctx, "src/sub/deep.txt", "deep");
    write(
        &ctx,
        "Dockerfile",
        "ARG BASE=busybox:local\n\
         FROM ${BASE} AS build\n\
         ARG VERSION=1.0\n\
         WORKDIR /src\n\
         COPY src/ ./\n\
         RUN echo \"v$VERSION\" > version && cat hello.txt sub/deep.txt > joined\n\
         FROM scratch AS unused\n\
         COPY does-not-exist /\n\
         FROM ${BASE}\n\
         LABEL org.example.kind=test\n\
         COPY --from=build /src/version /src/joined /out/\n\
         ENV GREETING=hi\n\
         USER app\n\
         WORKDIR /home/app\n\
         RUN echo \"$GREETING from $(id -un)\" > whoami\n\
         EXPOSE 8080\n\
         CMD [\"cat\", \"/out/joined\"]\n",
    );
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "--progress=plain",
            "-t",
            "kiln-test/app:1",
            "--build-arg",
            "VERSION=2.5",
            ".",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let files = s.unpack("kiln-test/app:1");
    assert_eq!(
        fs::read_to_string(files.join("out/version")).unwrap(),
        "v2.5\n"
    );
    assert_eq!(
        fs::read_to_string(files.join("out/joined")).unwrap(),
        "hellodeep"
    );
    assert_eq!(
        fs::read_to_string(files.join("home/app/whoami")).unwrap(),
        "hi from app\n"
    );
    assert!(
        !files.join("src").exists(),
        "the build stage's files stay in the build stage"
    );
    let cfg = s.config("kiln-test/app:1");
    assert_eq!(cfg.config.user, "app");
    assert_eq!(cfg.config.working_dir, "/home/app");
    assert_eq!(
        cfg.config.cmd,
        Some(vec!["cat".to_string(), "/out/joined".to_string()])
    );
    assert!(cfg.config.env.contains(&"GREETING=hi".to_string()));
    assert!(cfg.config.exposed_ports.unwrap().contains_key("8080/tcp"));
    assert_eq!(cfg.config.labels.unwrap()["org.example.kind"], "test");
    // History: one entry per step of the base and of the final stage, empty layers marked.
    let created_by: Vec<String> = cfg
        .history
        .iter()
        .filter_map(|h| h.created_by.clone())
        .collect();
    assert!(
        created_by
            .iter()
            .any(|c| c.starts_with("LABEL org.example.kind=test")),
        "{created_by:?}"
    );
    let layers = cfg.history.iter().filter(|h| !h.empty_layer).count();
    assert_eq!(
        layers,
        cfg.rootfs.diff_ids.len() - 1,
        "the imported base has no history entry"
    );

    // Nothing changed: every filesystem step is answered from the cache.
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "--progress=plain",
            "-t",
            "kiln-test/app:1",
            "--build-arg",
            "VERSION=2.5",
            ".",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cached_steps(&o), 4, "{}", stderr(&o));

    // A different build arg reruns what depends on it only.
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "kiln-test/app:2", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        cached_steps(&o),
        1,
        "COPY src/ stays cached: {}",
        stderr(&o)
    );
    assert_eq!(
        fs::read_to_string(s.unpack("kiln-test/app:2").join("out/version")).unwrap(),
        "v1.0\n"
    );
}

#[test]
fn cache_follows_content_and_mode_not_mtime() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "app/main.txt", "one");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nCOPY app /app\nRUN cat /app/main.txt > /copy\n",
    );
    let build = || s.kiln(&ctx, &["build", "--progress=plain", "-t", "c:1", "."], None);
    let o = build();
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("#2 cache miss: no earlier build"),
        "{}",
        stderr(&o)
    );
    // mtime-only touch: hit.
    let f = fs::File::options()
        .write(true)
        .open(ctx.join("app/main.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    drop(f);
    let o = build();
    assert_eq!(cached_steps(&o), 2, "{}", stderr(&o));
    // Mode change: miss, and the progress says why.
    fs::set_permissions(ctx.join("app/main.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let o = build();
    assert_eq!(cached_steps(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("#2 cache miss: app/main.txt changed (mode)"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("#3 cache miss: parent step #2 rebuilt"),
        "{}",
        stderr(&o)
    );
    // Content change with the same size: miss, and the new content is in the image.
    fs::write(ctx.join("app/main.txt"), "two").unwrap();
    let o = build();
    assert_eq!(cached_steps(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cache miss: app/main.txt changed (content)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::read_to_string(s.unpack("c:1").join("copy")).unwrap(),
        "two"
    );
    // --no-cache runs everything.
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "--no-cache", "-t", "c:1", "."],
        None,
    );
    assert!(o.status.success());
    assert_eq!(cached_steps(&o), 0);
}

#[test]
fn context_rules_dockerignore_symlinks_and_confinement() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "keep/a.txt", "a");
    write(&ctx, "keep/b.log", "b");
    write(&ctx, "secret.env", "TOKEN=1");
    symlink("/etc/passwd", ctx.join("keep/passwd-link")).unwrap();
    write(&ctx, ".dockerignore", "*.env\n**/*.log\n");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nCOPY ../../keep /k\nCOPY . /all\n",
    );
    let o = s.kiln(&ctx, &["build", "-t", "ctx:1", "."], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = s.unpack("ctx:1");
    assert_eq!(fs::read_to_string(files.join("k/a.txt")).unwrap(), "a");
    assert!(
        !files.join("k/b.log").exists(),
        ".dockerignore applies to COPY"
    );
    assert!(!files.join("all/secret.env").exists());
    let link = fs::symlink_metadata(files.join("k/passwd-link")).unwrap();
    assert!(
        link.file_type().is_symlink(),
        "a context symlink is copied as a symlink"
    );
    assert_eq!(
        fs::read_link(files.join("k/passwd-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    // COPY of a file that is not in the context fails with the Dockerfile line.
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nCOPY secret.env /\n",
    );
    let o = s.kiln(&ctx, &["build", "."], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("secret.env"), "{}", stderr(&o));
    assert!(stderr(&o).contains("Dockerfile:2:"), "{}", stderr(&o));
}

#[test]
fn dockerfile_from_stdin_or_outside_the_context_and_targets() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "f.txt", "file");
    let df = "FROM busybox:local AS one\nRUN echo one > /one\nFROM busybox:local AS two\nCOPY f.txt /\nRUN false\n";
    let o = s.kiln(
        &ctx,
        &["build", "-f", "-", "--target", "one", "-t", "t:1", "."],
        Some(df.as_bytes()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s.unpack("t:1").join("one").exists());
    // The last stage fails; exit code 1 and the step's location.
    let outside = s.dir.path().join("elsewhere.Dockerfile");
    fs::write(&outside, df).unwrap();
    let o = s.kiln(&ctx, &["build", "-f", outside.to_str().unwrap(), "."], None);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("did not complete successfully: exit code: 1"),
        "{err}"
    );
    assert!(err.contains("elsewhere.Dockerfile:5:1"), "{err}");
    // An unknown target is an error; an unused build arg is a warning.
    let o = s.kiln(
        &ctx,
        &["build", "-f", "-", "--target", "three", "."],
        Some(df.as_bytes()),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("failed to reach build target three"),
        "{}",
        stderr(&o)
    );
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "-f",
            "-",
            "--target",
            "one",
            "--build-arg",
            "NOPE=1",
            ".",
        ],
        Some(df.as_bytes()),
    );
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("[NOPE] were not consumed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn onbuild_triggers_run_in_the_child_build() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "payload.txt", "payload");
    write(&ctx, "Dockerfile", "FROM busybox:local\nONBUILD COPY payload.txt /from-trigger.txt\nONBUILD RUN echo triggered > /t\n");
    let o = s.kiln(&ctx, &["build", "-t", "parent:1", "."], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        s.config("parent:1").config.on_build.map(|v| v.len()),
        Some(2)
    );
    write(
        &ctx,
        "Dockerfile",
        "FROM parent:1\nRUN cat /from-trigger.txt /t > /both\n",
    );
    let o = s.kiln(&ctx, &["build", "-t", "child:1", "."], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(s.unpack("child:1").join("both")).unwrap(),
        "payloadtriggered\n"
    );
    assert_eq!(
        s.config("child:1").config.on_build,
        None,
        "triggers are not inherited twice"
    );
}

#[test]
fn reproducible_with_source_date_epoch_in_two_stores() {
    let a = TestStore::new();
    let b = TestStore::new();
    if a.busybox("busybox:local").is_none() || b.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = a.dir.path().join("ctx");
    write(&ctx, "f.txt", "same");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nCOPY f.txt /\nRUN echo built > /b && touch /c\n",
    );
    let id = |s: &TestStore| {
        let iid = s.dir.path().join("iid");
        let meta = s.dir.path().join("meta.json");
        let o = s.kiln(
            &ctx,
            &[
                "build",
                "-q",
                "--build-arg",
                "SOURCE_DATE_EPOCH=1700000000",
                "--iidfile",
                iid.to_str().unwrap(),
                "--metadata-file",
                meta.to_str().unwrap(),
                "-t",
                "repro:1",
                ".",
            ],
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let printed = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let written = fs::read_to_string(&iid).unwrap();
        assert_eq!(printed, written);
        // --metadata-file: BuildKit's keys, the manifest digest as inspect reports it.
        let m: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
        assert_eq!(m["containerimage.config.digest"], written.as_str());
        assert_eq!(m["image.name"], "docker.io/library/repro:1");
        let digest = m["containerimage.digest"].as_str().unwrap().to_string();
        assert!(digest.starts_with("sha256:") && digest.len() == 71, "{m}");
        (written, digest)
    };
    assert_eq!(id(&a), id(&b));
}

// Regression: an image's `created` was its newest history entry, so a base imported
// after SOURCE_DATE_EPOCH set it instead.
#[test]
fn created_is_source_date_epoch_over_a_newer_base() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "Dockerfile", "FROM imported:now\nRUN echo x > /x\n");
    let tar = s.busybox_tar();
    let o = s.kiln(
        &ctx,
        &["image", "import", tar.to_str().unwrap(), "imported:now"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "-q",
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "-t",
            "sde:1",
            ".",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s.kiln(
        &ctx,
        &["image", "inspect", "--format", "{{.Created}}", "sde:1"],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "2023-11-14T22:13:20Z"
    );
}

#[test]
fn run_mounts_cache_bind_tmpfs_and_secret() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "data/f.txt", "bound");
    let secret = s.dir.path().join("token");
    fs::write(&secret, "s3cr3t-value-xyz").unwrap();
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\n\
         RUN --mount=type=cache,target=/cache echo run >> /cache/log && cat /cache/log > /runs\n\
         RUN --mount=type=bind,source=data,target=/mnt cat /mnt/f.txt > /copied && ! touch /mnt/new\n\
         RUN --mount=type=bind,source=data,target=/rw,rw touch /rw/discarded\n\
         RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /tmpfs-seen\n\
         RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-seen\n\
         RUN --mount=type=cache,id=l,target=/l,sharing=locked touch /l/a\n\
         RUN --mount=type=cache,id=l,target=/l,sharing=locked ls /l > /locked-seen\n",
    );
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain", "--secret"];
        let sec = format!("id=tok,src={}", secret.display());
        args.push(&sec);
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-t", "m:1", "."]);
        let o = s.kiln(&ctx, &args, None);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    build(&[]);
    build(&["--no-cache"]);
    let files = s.unpack("m:1");
    assert_eq!(
        fs::read_to_string(files.join("runs")).unwrap(),
        "run\nrun\n",
        "the cache mount persists"
    );
    assert!(
        !files.join("cache").join("log").exists(),
        "cache contents stay out of the image"
    );
    assert_eq!(fs::read_to_string(files.join("copied")).unwrap(), "bound");
    assert!(
        !ctx.join("data/discarded").exists(),
        "rw bind writes are discarded"
    );
    assert!(!files.join("rw/discarded").exists());
    assert_eq!(fs::read_to_string(files.join("tmpfs-seen")).unwrap(), "x\n");
    assert!(!files.join("scratch/x").exists());
    assert_eq!(
        fs::read_to_string(files.join("secret-seen"))
            .unwrap()
            .trim(),
        "16"
    );
    assert!(!files.join("run/secrets/tok").exists());
    assert_eq!(
        fs::read_to_string(files.join("locked-seen")).unwrap(),
        "a\n",
        "a locked cache is released after its step"
    );
    // The secret is in no blob of the store: not a layer, not the config or history.
    let blobs = s.root().join("oci/blobs/sha256");
    for e in fs::read_dir(&blobs).unwrap() {
        let bytes = fs::read(e.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(16).any(|w| w == b"s3cr3t-value-xyz"),
            "secret leaked into a blob"
        );
    }
    // A missing required secret is an error.
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=secret,id=nope,required true\n",
    );
    let o = s.kiln(&ctx, &["build", "."], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("secret nope not provided"),
        "{}",
        stderr(&o)
    );
    // A cache source that is a symlink planted by a step is refused.
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=cache,id=c,target=/c ln -sf /etc /c/link\n\
         RUN --mount=type=cache,id=c,source=link,target=/d ls /d\n",
    );
    let o = s.kiln(&ctx, &["build", "."], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("goes through a symlink"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn platform_and_proxy_args_and_no_cache_filter() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local AS a\nARG TARGETARCH\n\
         RUN echo \"$TARGETARCH $TARGETPLATFORM.\" > /arch && cat /proc/sys/kernel/random/uuid > /nonce\n\
         FROM a\nRUN echo \"$HTTP_PROXY\" > /proxy\n",
    );
    let run = |extra: &[&str]| {
        let mut args = vec![
            "build",
            "--progress=plain",
            "--build-arg",
            "HTTP_PROXY=http://proxy.invalid:3128",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-t", "p:1", "."]);
        let o = s.kiln(&ctx, &args, None);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let o = run(&[]);
    assert!(
        !stderr(&o).contains("not consumed"),
        "proxy args are predefined: {}",
        stderr(&o)
    );
    let files = s.unpack("p:1");
    let arch = kiln::image::spec::host_architecture();
    assert_eq!(
        fs::read_to_string(files.join("arch")).unwrap(),
        format!("{arch} .\n")
    );
    assert_eq!(
        fs::read_to_string(files.join("proxy")).unwrap(),
        "http://proxy.invalid:3128\n"
    );
    let cfg = s.config("p:1");
    assert!(
        !cfg.config.env.iter().any(|e| e.contains("PROXY")),
        "{:?}",
        cfg.config.env
    );
    // --no-cache-filter a: stage a's step reruns; it writes new bytes (a fresh uuid), so
    // what builds on it misses too (a rerun with identical bytes would keep it cached).
    let o = run(&["--no-cache-filter", "a"]);
    assert_eq!(cached_steps(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cache miss: --no-cache-filter"),
        "{}",
        stderr(&o)
    );
    let o = run(&[]);
    assert_eq!(cached_steps(&o), 2, "{}", stderr(&o));
}

#[test]
fn step_logs_are_kept_whole_and_json_progress_is_one_object_per_line() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nRUN i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done\n",
    );
    let o = s.kiln(&ctx, &["build", "--progress=json", "."], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut events = Vec::new();
    let mut logs = None;
    for line in stderr(&o).lines() {
        if let Some(p) = line.strip_prefix("full step logs: ") {
            logs = Some(std::path::PathBuf::from(p));
            continue;
        }
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON event per line");
            events.push(v["event"].as_str().unwrap_or("").to_string());
        }
    }
    assert!(events.contains(&"step".to_string()) && events.contains(&"cache-miss".to_string()));
    assert_eq!(events.iter().filter(|e| *e == "output").count(), 5000);
    let logs = logs.expect("the log directory is printed");
    let text = fs::read_to_string(logs.join("step-2.log")).unwrap();
    assert_eq!(text.lines().count(), 5000);
    assert_eq!(text.lines().last(), Some("line 4999"));
}

#[test]
fn unchanged_rebuild_gives_the_same_image_id() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "f.txt", "f");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nENV A=1\nCOPY f.txt /\nRUN echo x > /x\nLABEL l=1\nWORKDIR /w\nCMD [\"sh\"]\n",
    );
    let id = || {
        let o = s.kiln(&ctx, &["build", "-q", "-t", "same:1", "."], None);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let first = id();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(id(), first, "a rebuild from the cache is the same image");
    // A change gives a new image, with a newer creation time.
    write(&ctx, "f.txt", "g");
    let changed = id();
    assert_ne!(changed, first);
    let cfg = s.config("same:1");
    let newest = cfg.history.iter().filter_map(|h| h.created.clone()).max();
    assert_eq!(cfg.created, newest);
}

/// The build cache outlives `rmi` and `image prune` (as BuildKit's does) until
/// `kiln builder prune`: plain prune removes only records no image was built through, `-a`
/// all of them; `system df` and `system prune` account for it.
#[test]
fn build_cache_survives_rmi_until_builder_prune() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    let dockerfile = |word: &str| {
        format!("FROM busybox:local\nRUN echo {word} > /word && dd if=/dev/zero of=/blob bs=1024 count=64\n")
    };
    write(&ctx, "Dockerfile", &dockerfile("one"));
    let build = |tag: &str| {
        let o = s.kiln(&ctx, &["build", "--progress=plain", "-t", tag, "."], None);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    build("c:1");
    s.kiln(&ctx, &["rmi", "c:1"], None);
    assert_eq!(cached_steps(&build("c:1")), 1, "the RUN step survives rmi");
    let df = String::from_utf8_lossy(&s.kiln(&ctx, &["system", "df"], None).stdout).into_owned();
    assert!(
        df.lines()
            .any(|l| l.starts_with("Build Cache") && l.split_whitespace().nth(2) == Some("1")),
        "{df}"
    );

    // A new build replaces the tag; once the old image is pruned, its step is dangling.
    write(&ctx, "Dockerfile", &dockerfile("two"));
    build("c:1");
    let o = s.kiln(&ctx, &["image", "prune", "-f"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s.kiln(&ctx, &["builder", "prune", "-f"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("Deleted build cache objects:"), "{text}");
    assert_eq!(text.lines().filter(|l| l.len() == 25).count(), 1, "{text}");
    assert!(
        text.contains("Total:	") && !text.contains("Total:	0B"),
        "{text}"
    );
    assert_eq!(
        cached_steps(&build("c:1")),
        1,
        "the step of the current image is kept"
    );

    // -a: everything; the next build runs its step again.
    let o = s.kiln(&ctx, &["builder", "prune", "-a", "-f"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let df = String::from_utf8_lossy(&s.kiln(&ctx, &["system", "df"], None).stdout).into_owned();
    assert!(
        df.lines()
            .any(|l| l.starts_with("Build Cache") && l.split_whitespace().nth(2) == Some("0")),
        "{df}"
    );
    assert_eq!(cached_steps(&build("c:1")), 0);
    let o = s.kiln(
        &ctx,
        &["builder", "prune", "--filter", "until=bogus", "-f"],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("until=bogus"), "{}", stderr(&o));

    // system prune -a: the image (no container uses it) and its cache go; the store stays
    // consistent.
    let o = s.kiln(&ctx, &["system", "prune", "-a", "-f"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let images =
        String::from_utf8_lossy(&s.kiln(&ctx, &["images", "-q"], None).stdout).into_owned();
    assert_eq!(images, "");
    let o = s.kiln(&ctx, &["system", "check"], None);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

/// `--add-host` lines reach RUN steps' /etc/hosts, never the image, and do not change the
/// cache key (as BuildKit's).
#[test]
fn build_add_host_reaches_run_steps_only() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\nRUN grep mirror.internal /etc/hosts > /seen\n",
    );
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "--add-host",
            "mirror.internal:10.9.8.7",
            "-t",
            "hosts:1",
            ".",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let root = s.unpack("hosts:1");
    assert_eq!(
        fs::read_to_string(root.join("seen")).unwrap(),
        "10.9.8.7\tmirror.internal\n"
    );
    assert!(
        !root.join("etc/hosts").exists()
            || !fs::read_to_string(root.join("etc/hosts"))
                .unwrap()
                .contains("mirror")
    );
    let o = s.kiln(
        &ctx,
        &[
            "build",
            "--progress=plain",
            "--add-host",
            "mirror.internal:10.9.8.6",
            "-t",
            "hosts:1",
            ".",
        ],
        None,
    );
    assert_eq!(cached_steps(&o), 1, "{}", stderr(&o));
    let o = s.kiln(&ctx, &["build", "--add-host", "bad", "."], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--add-host"), "{}", stderr(&o));
}

/// WORKDIR made its missing directories root's, so `USER app` + `WORKDIR /x` + `RUN touch f`
/// failed; BuildKit makes them the current user's.
#[test]
fn workdir_creates_directories_owned_by_the_current_user() {
    use std::os::unix::fs::MetadataExt;
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\n\
         RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group\n\
         USER app\n\
         WORKDIR /work/deep\n\
         RUN touch made-by-app\n\
         USER 0\n\
         WORKDIR /work/rooted\n",
    );
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "wd:1", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let files = s.unpack("wd:1");
    for (p, uid) in [
        ("work", 1000),
        ("work/deep", 1000),
        ("work/deep/made-by-app", 1000),
        ("work/rooted", 0),
    ] {
        let md = fs::symlink_metadata(files.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid, uid), "{p}");
    }
}

/// ADD of local archives as BuildKit does it: .tar.bz2 and .tar.xz unpack as well as gzip and
/// plain tars (kiln refused them), a gzip file that is not a tar is copied as it is (kiln
/// failed with "tar stream truncated"), and `--chown` owns the unpacked files.
#[test]
fn add_unpacks_every_archive_kind_and_copies_a_non_tar_gzip() {
    use std::os::unix::fs::MetadataExt;
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "tree/sub/file.txt", "in the tree\n");
    let sh = |script: &str| {
        let st = std::process::Command::new("sh")
            .args(["-ec", script])
            .current_dir(&ctx)
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    };
    sh(
        "tar -cf plain.tar tree && gzip -c plain.tar > t.tar.gz && bzip2 -c plain.tar > t.tar.bz2 \
        && xz -c plain.tar > t.tar.xz && echo 'just text' | gzip -c > notes.txt.gz && rm -r tree",
    );
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\n\
         ADD plain.tar /plain/\n\
         ADD t.tar.gz /gz/\n\
         ADD t.tar.bz2 /bz2/\n\
         ADD t.tar.xz /xz/\n\
         ADD notes.txt.gz /notes/\n\
         ADD --chown=1000:1001 t.tar.gz /owned/\n",
    );
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "add:1", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let files = s.unpack("add:1");
    for d in ["plain", "gz", "bz2", "xz", "owned"] {
        assert_eq!(
            fs::read_to_string(files.join(d).join("tree/sub/file.txt")).unwrap(),
            "in the tree\n",
            "{d}"
        );
    }
    let gz = fs::read(files.join("notes/notes.txt.gz")).unwrap();
    assert_eq!(gz, fs::read(ctx.join("notes.txt.gz")).unwrap());
    for p in ["owned/tree", "owned/tree/sub", "owned/tree/sub/file.txt"] {
        let md = fs::symlink_metadata(files.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1001), "{p}");
    }
}

/// RUN's hostname was random per build (so two stores built different files from
/// `hostname > f`), /etc/hostname was bound in and HOSTNAME set; BuildKit uses
/// `buildkitsandbox` and has neither the file nor the variable.
#[test]
fn run_steps_have_buildkits_fixed_hostname_and_no_etc_hostname() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local\n\
         RUN hostname > /h && (printenv HOSTNAME || echo unset) >> /h && grep -c buildkitsandbox /etc/hosts >> /h\n\
         RUN if [ -e /etc/hostname ]; then echo present; else echo absent; fi > /etc-hostname\n",
    );
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "hn:1", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let files = s.unpack("hn:1");
    assert_eq!(
        fs::read_to_string(files.join("h")).unwrap(),
        "buildkitsandbox\nunset\n1\n"
    );
    assert_eq!(
        fs::read_to_string(files.join("etc-hostname")).unwrap(),
        "absent\n"
    );
    assert!(!files.join("etc/hostname").exists());
}

/// A step below a changed metadata step missed with "the step before it changed", naming
/// neither the step nor what changed in it.
#[test]
fn miss_reasons_name_the_metadata_step_that_changed() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    let df = |label: &str, run: &str| {
        write(
            &ctx,
            "Dockerfile",
            &format!("FROM busybox:local\nRUN echo {run} > /a\nLABEL l={label}\nENV X=1\nRUN echo b > /b\n"),
        );
    };
    let build = || {
        let o = s.kiln(
            &ctx,
            &["build", "--progress=plain", "-t", "why:1", "."],
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    df("1", "a");
    build();
    let again = build();
    assert_eq!(again.matches(" CACHED").count(), 2, "{again}");
    df("2", "a");
    let out = build();
    assert!(
        out.contains("#5 cache miss: step #3 LABEL l=2 changed (was: LABEL l=1)"),
        "{out}"
    );
    df("2", "A");
    let out = build();
    assert!(
        out.contains("#5 cache miss: parent step #2 rebuilt"),
        "{out}"
    );
    assert!(!out.contains("the step before it changed"), "{out}");
}

/// ONBUILD triggers of a stage of the same Dockerfile did not run (BuildKit runs them), and
/// trigger steps of an image were numbered past the stage's count (`[7/2]`).
#[test]
fn onbuild_triggers_of_a_stage_run_and_are_numbered_in_the_stage() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox:local AS p\nONBUILD RUN touch /t\nONBUILD RUN touch /u\nFROM p\nRUN ls /t /u > /seen\n",
    );
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "ob:1", "."],
        None,
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for line in [
        "[stage-1 1/4] FROM p",
        "[stage-1 2/4] RUN touch /t",
        "[stage-1 3/4] RUN touch /u",
        "[stage-1 4/4] RUN ls /t /u > /seen",
    ] {
        assert!(err.contains(line), "{line} in\n{err}");
    }
    let cfg = s.config("ob:1");
    assert!(
        cfg.config.on_build.is_none(),
        "triggers are dropped once run"
    );
    assert_eq!(
        fs::read_to_string(s.unpack("ob:1").join("seen")).unwrap(),
        "/t\n/u\n"
    );
}
