//! Shell completion and help (issue 18): `kiln completion bash|zsh|fish` writes a script, and
//! the `--help` of `build`, `run`, `ps`, `images` and `exec` lists its flags in Docker's order
//! (by long name, as Docker's CLI sorts them) with Docker's descriptions of the same flags.

use std::process::Command;

use crate::util::{kiln, require, stderr, stdout};

#[test]
fn completion_scripts_name_the_commands_and_bash_reads_its_own() {
    for shell in ["bash", "zsh", "fish"] {
        let o = kiln(&["completion", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        for word in ["build", "run", "debug", "completion", "--on-error"] {
            assert!(script.contains(word), "{shell} script lacks {word:?}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiln.bash");
    std::fs::write(&path, stdout(&kiln(&["completion", "bash"]))).unwrap();
    let st = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(st.success(), "bash -n refused the completion script");
    // Sourced, it registers a completion for kiln.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("source {}; complete -p kiln", path.display()))
        .output()
        .unwrap();
    assert!(stdout(&o).contains("kiln"), "{}{}", stdout(&o), stderr(&o));
    let o = kiln(&["completion", "powershell"]);
    assert!(!o.status.success());
}

/// The long names of the flags a `--help` lists under its first options heading, in order.
fn listed_flags(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_options = false;
    for line in help.lines() {
        if line.ends_with("Options:") {
            if in_options {
                break; // a second heading: Docker's `Global Options` are kiln's last
            }
            in_options = true;
            continue;
        }
        let t = line.trim_start();
        let flag = t.strip_prefix('-').filter(|_| in_options).and_then(|rest| {
            match rest.split_once(", --") {
                Some((short, long)) if short.len() == 1 => Some(long),
                _ => rest.strip_prefix('-'),
            }
        });
        if let Some(long) = flag {
            let name: String = long
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// Common flags in the order `docker <cmd> --help` (Docker 28) lists them.
const DOCKER_ORDER: &[(&str, &[&str])] = &[
    (
        "build",
        &[
            "add-host",
            "build-arg",
            "cache-from",
            "file",
            "iidfile",
            "label",
            "network",
            "no-cache",
            "pull",
            "quiet",
            "tag",
            "target",
        ],
    ),
    (
        "run",
        &[
            "add-host",
            "cpu-shares",
            "cpus",
            "detach",
            "entrypoint",
            "env",
            "env-file",
            "health-cmd",
            "help",
            "hostname",
            "init",
            "interactive",
            "label",
            "memory",
            "mount",
            "name",
            "network",
            "publish",
            "publish-all",
            "read-only",
            "restart",
            "rm",
            "stop-signal",
            "tmpfs",
            "tty",
            "user",
            "volume",
            "workdir",
        ],
    ),
    (
        "ps",
        &[
            "all", "filter", "format", "last", "latest", "no-trunc", "quiet", "size",
        ],
    ),
    (
        "images",
        &["all", "digests", "filter", "format", "no-trunc", "quiet"],
    ),
    (
        "exec",
        &["detach", "env", "interactive", "tty", "user", "workdir"],
    ),
];

/// `want` appear in `listed` in this order (each present).
fn assert_order(cmd: &str, listed: &[String], want: &[&str]) {
    let at: Vec<usize> = want
        .iter()
        .map(|f| {
            listed
                .iter()
                .position(|l| l == f)
                .unwrap_or_else(|| panic!("kiln {cmd} --help lists no --{f}: {listed:?}"))
        })
        .collect();
    for (i, pair) in at.windows(2).enumerate() {
        assert!(
            pair[0] < pair[1],
            "kiln {cmd} --help lists --{} after --{}: {listed:?}",
            want[i],
            want[i + 1]
        );
    }
}

#[test]
fn help_lists_the_common_flags_in_dockers_order() {
    for (cmd, want) in DOCKER_ORDER {
        let o = kiln(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
        let listed = listed_flags(&stdout(&o));
        assert_order(cmd, &listed, want);
        // kiln's own flags have their alphabetical place too (clap's own --help comes last
        // where the command does not declare one, and Docker lists none there).
        let mut listed = listed;
        if listed.last().is_some_and(|l| l == "help") {
            listed.pop();
        }
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "kiln {cmd} --help");
        // The global options come after the command's own, under their heading.
        assert!(!listed.contains(&"root".to_string()), "{listed:?}");
    }
}

#[test]
fn help_uses_dockers_words_for_the_same_flags() {
    for (cmd, flag, words) in [
        (
            "build",
            "--tag",
            "Name and optionally a tag in the \"name:tag\" format",
        ),
        (
            "build",
            "--no-cache",
            "Do not use cache when building the image",
        ),
        (
            "run",
            "--detach",
            "Run container in background and print container ID",
        ),
        (
            "run",
            "--publish",
            "Publish a container's port(s) to the host",
        ),
        (
            "ps",
            "--last",
            "Show n last created containers (includes all states)",
        ),
        ("images", "--quiet", "Only show image IDs"),
        (
            "exec",
            "--user",
            "Username or UID (format: \"<name|uid>[:<group|gid>]\")",
        ),
    ] {
        let help = stdout(&kiln(&[cmd, "--help"]));
        let lines: Vec<&str> = help.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains(&format!("{flag} ")) || l.trim_end().ends_with(flag))
            .unwrap_or_else(|| panic!("no {flag} in kiln {cmd} --help:\n{help}"));
        // The description is on the flag's line, or the next when clap lays it out long.
        let text = lines[at..(at + 2).min(lines.len())].join(" ");
        assert!(text.contains(words), "kiln {cmd} {flag}: {text}");
    }
}

// Where Docker is installed, its own help is the reference: the flags both list appear in
// the same order.
#[test]
fn help_orders_the_flags_docker_also_has_as_docker_does() {
    let Some(docker) = require::tool("docker", "Docker's CLI (docker.io)") else {
        return;
    };
    for (cmd, _) in DOCKER_ORDER {
        let o = Command::new(&docker)
            .args([cmd, "--help"])
            .output()
            .unwrap();
        let theirs = listed_flags(&stdout(&o));
        assert!(!theirs.is_empty(), "docker {cmd} --help: {}", stderr(&o));
        let ours = listed_flags(&stdout(&kiln(&[cmd, "--help"])));
        let shared: Vec<&str> = theirs
            .iter()
            .filter(|f| ours.contains(f))
            .map(String::as_str)
            .collect();
        assert!(shared.len() >= 5, "{cmd}: only {shared:?} in common");
        assert_order(cmd, &ours, &shared);
    }
}
