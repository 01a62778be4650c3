//! `RUN --mount` from other stages and images (`type=bind,from=`, `type=cache,from=`) and
//! `type=ssh` with `kiln build --ssh`.

use std::fs;

use crate::build_cmd::{cached_steps, write};
use crate::util::{stderr, TestStore};

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
