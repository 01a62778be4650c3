//! Containers end to end: `kiln logs` — tail, follow, timestamps, since and until.
//! Every test removes its containers (`rm -f`) when it ends, even when it fails.

use std::time::{Duration, Instant};

use super::containers::*;
use super::util::{stderr, stdout};

#[test]
fn logs_tail_follow_and_timestamps() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox:local",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2",
    ]);
    e.wait_for("talker", 10, exited);
    let o = e.run(&["logs", "talker"]);
    assert_eq!(stdout(&o), "line1\nline2\nline3\nline4\nline5\n");
    assert_eq!(stderr(&o), "oops\n");
    let o = e.run(&["logs", "--tail", "2", "talker"]);
    assert_eq!(format!("{}{}", stdout(&o), stderr(&o)), "line5\noops\n");
    let o = e.run(&["logs", "-t", "--tail", "1", "talker"]);
    let line = stderr(&o);
    let (ts, rest) = line.split_once(' ').expect("timestamp");
    assert_eq!(rest, "oops\n");
    assert!(
        ts.starts_with("20") && ts.ends_with('Z') && ts.contains('T'),
        "{ts}"
    );

    // The log file is Docker's json-file format.
    let id = e.inspect("talker")["Id"].as_str().unwrap().to_owned();
    let log = std::fs::read_to_string(e.root().join("containers").join(id).join("log.json"))
        .expect("log.json");
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "line1\n");
    assert_eq!(first["stream"], "stdout");
    assert!(first["time"].is_string());

    // -f follows a running container until it exits.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox:local",
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick$i; sleep 0.3; done",
    ]);
    let o = e.run(&["logs", "-f", "ticker"]);
    assert_eq!(stdout(&o), "tick1\ntick2\ntick3\n");
    assert!(exited(&e.inspect("ticker")));
}

#[test]
fn logs_since_and_until() {
    let Some(e) = Env::new() else { return };
    e.ok(&[
        "run",
        "-d",
        "--name",
        "talk",
        "busybox:local",
        "sh",
        "-c",
        "echo one; sleep 2; echo two",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.ok(&["logs", "talk"]).contains("one") {
        assert!(Instant::now() < deadline, "no output");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    e.wait_for("talk", 15, |v| v["State"]["Status"] == "exited");
    let t = format!("{between:.3}");
    assert_eq!(e.ok(&["logs", "--since", &t, "talk"]), "two\n");
    assert_eq!(e.ok(&["logs", "--until", &t, "talk"]), "one\n");
    assert_eq!(e.ok(&["logs", "--since", "1h", "talk"]), "one\ntwo\n");
    assert_eq!(
        e.ok(&["logs", "--since", "2000-01-01T00:00:00Z", "-n", "1", "talk"]),
        "two\n"
    );
    let o = e.run(&["logs", "--since", "yesterday", "talk"]);
    assert_eq!(o.status.code(), Some(1));
}
