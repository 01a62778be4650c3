//! A distribution base: a Debian minbase image (debootstrap), `apt-get install` over HTTP in
//! a RUN step, the installed program run in a container, and an unchanged rebuild all cached.

use crate::util::{stderr, stdout, TestStore};

#[test]
fn apt_get_install_on_debian_minbase_builds_runs_and_rebuilds_cached() {
    let s = TestStore::new();
    if s.debian("debian:local").is_none() {
        return;
    }
    let ctx = s.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:local\n\
         RUN apt-get update && apt-get install -y --no-install-recommends hello \
             && rm -rf /var/lib/apt/lists/*\n\
         RUN hello > /greeting && test -s /usr/share/doc/hello/copyright\n\
         CMD [\"hello\"]\n",
    )
    .unwrap();
    let b = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "hi:1", "."],
        None,
    );
    assert!(b.status.success(), "{}", stderr(&b));
    let r = s.kiln(&ctx, &["run", "--rm", "hi:1"], None);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(stdout(&r).trim(), "Hello, world!");
    let again = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "hi:1", "."],
        None,
    );
    assert!(again.status.success(), "{}", stderr(&again));
    let log = stderr(&again);
    let runs: Vec<&str> = log.lines().filter(|l| l.contains("] RUN ")).collect();
    assert_eq!(runs.len(), 2, "{log}");
    assert!(
        log.matches("CACHED").count() >= 2,
        "an unchanged rebuild runs nothing:\n{log}"
    );
}
