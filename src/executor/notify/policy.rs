//! What the supervisor may do for a path: lexical normalization and the `/proc` and `/dev`
//! policy, pure functions with no I/O (the membership of a pid in the step is checked by the
//! caller of [`classify`]).

use nix::errno::Errno;

/// The longest path read from a caller (`PATH_MAX` without the NUL).
pub(super) const PATH_MAX: usize = 4095;

/// The operation a syscall asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `open`/`openat`/`openat2` with these flags.
    Open(i32),
    /// `stat`-like; `true` when the final symlink is not followed.
    Stat(bool),
    /// `access`-like with this mode (`R_OK`, `W_OK`, `X_OK`).
    Access(i32),
    /// `readlink`.
    Readlink,
}

impl Op {
    /// Whether the operation would write: opens for writing, creating or truncating, and
    /// `access(W_OK)`.
    pub fn writes(self) -> bool {
        match self {
            Op::Open(f) => {
                f & libc::O_ACCMODE != libc::O_RDONLY || f & (libc::O_CREAT | libc::O_TRUNC) != 0
            }
            Op::Access(m) => m & libc::W_OK != 0,
            _ => false,
        }
    }
}

/// Which process a `/proc/<who>` path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Who {
    /// `self`: the caller's thread group.
    Caller,
    /// `thread-self`: the calling thread.
    CallerThread,
    /// A numeric pid.
    Pid(i32),
}

/// A `/dev` path the supervisor may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dev {
    /// One of the basic nodes, by name, answered when missing from the root.
    Node(&'static str),
    /// `/dev/stdin|stdout|stderr`, `/dev/fd/N`: the caller's descriptor N, when the path is
    /// missing from the root (or a symlink, which would lead to the root's empty `/proc`).
    Fd(i32),
}

/// What a normalized path names, for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// Not emulated: the kernel runs the syscall inside the chroot.
    Continue,
    /// Refused with this errno.
    Refuse(Errno),
    /// `/proc` itself (its listing is filtered to the step's pids).
    ProcRoot,
    /// A file of the host's `/proc` that is the same for everyone, relative to `/proc`.
    Global(Vec<String>),
    /// A path under `/proc/<who>`, `tail` after the pid.
    Pid {
        /// The process.
        who: Who,
        /// The components after it.
        tail: Vec<String>,
    },
    /// A `/dev` fallback.
    Dev(Dev),
}

/// The basic device nodes given when missing from the root.
pub(super) const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Global `/proc` files allowed (read-only), besides `sys/**`.
const GLOBAL_FILES: [&str; 12] = [
    "cpuinfo",
    "meminfo",
    "stat",
    "uptime",
    "version",
    "loadavg",
    "filesystems",
    "swaps",
    "vmstat",
    "cmdline",
    "cgroups",
    "devices",
];

/// Whether a top-level `/proc` entry that is not a pid is shown in the step's listing: the
/// ones it may use.
pub(super) fn listed_at_top(name: &str) -> bool {
    GLOBAL_FILES.contains(&name) || ["self", "thread-self", "mounts", "net", "sys"].contains(&name)
}

/// Files of the step's *other* processes that are readable (what `ps` and `top` read).
const OTHER_PID_FILES: [&str; 5] = ["cmdline", "comm", "stat", "statm", "status"];

/// The magic links of a process directory (they lead to files of that process's choosing).
const MAGIC_LINKS: [&str; 3] = ["root", "cwd", "exe"];

/// Folds `path` (absolute, or relative to `base`, itself absolute) into its components,
/// lexically: `//` and `.` dropped, `..` removes the previous component (and stays at `/`).
/// `None` when the path is empty or not UTF-8 (never emulated).
pub(super) fn normalize(base: &str, path: &[u8]) -> Option<Vec<String>> {
    let path = std::str::from_utf8(path).ok()?;
    if path.is_empty() {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    let joined = if path.starts_with('/') {
        None
    } else {
        Some(base)
    };
    for part in joined.into_iter().chain(std::iter::once(path)) {
        for c in part.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                c => out.push(c.to_string()),
            }
        }
    }
    Some(out)
}

/// Whether `s` is a decimal pid (no sign, no leading `+`, fits in i32, not 0).
fn pid_number(s: &str) -> Option<i32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&p: &i32| p > 0)
}

/// Classifies a normalized absolute path (components from [`normalize`]) for `op`.
pub(super) fn classify(comps: &[String], op: Op) -> Target {
    match comps.first().map(String::as_str) {
        Some("proc") => classify_proc(&comps[1..], op),
        Some("dev") => classify_dev(&comps[1..]),
        _ => Target::Continue,
    }
}

fn classify_dev(rest: &[String]) -> Target {
    let names: Vec<&str> = rest.iter().map(String::as_str).collect();
    match names.as_slice() {
        [n] => {
            if let Some(node) = DEV_NODES.iter().find(|d| *d == n) {
                return Target::Dev(Dev::Node(node));
            }
            match *n {
                "stdin" => Target::Dev(Dev::Fd(0)),
                "stdout" => Target::Dev(Dev::Fd(1)),
                "stderr" => Target::Dev(Dev::Fd(2)),
                _ => Target::Continue,
            }
        }
        ["fd", n] => match n.parse::<u32>() {
            Ok(fd) if fd <= i32::MAX as u32 && !n.starts_with('+') => {
                Target::Dev(Dev::Fd(fd as i32))
            }
            _ => Target::Continue,
        },
        _ => Target::Continue,
    }
}

fn classify_proc(rest: &[String], op: Op) -> Target {
    let Some(first) = rest.first() else {
        return if op.writes() {
            Target::Refuse(Errno::EACCES)
        } else {
            Target::ProcRoot
        };
    };
    let tail = || rest[1..].to_vec();
    let (who, tail) = match first.as_str() {
        "self" => (Who::Caller, tail()),
        "thread-self" => (Who::CallerThread, tail()),
        // Symlinks to `self/…` on the host: resolved for the caller, not the supervisor.
        "mounts" | "net" => (Who::Caller, rest.to_vec()),
        "sys" => return global(rest, op),
        f if GLOBAL_FILES.contains(&f) && rest.len() == 1 => return global(rest, op),
        f => match pid_number(f) {
            Some(p) => (Who::Pid(p), tail()),
            None => return Target::Refuse(Errno::EACCES),
        },
    };
    Target::Pid { who, tail }
}

fn global(rest: &[String], op: Op) -> Target {
    if op.writes() || op == Op::Readlink {
        // Nothing under /proc/sys or the global files is a symlink; and nothing is writable.
        return Target::Refuse(if op.writes() {
            Errno::EACCES
        } else {
            Errno::EINVAL
        });
    }
    Target::Global(rest.to_vec())
}

/// What the supervisor does for a path under a process directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PidRule {
    /// Performed on the host's `/proc/<pid>/<tail>`.
    Allow,
    /// A magic link read with `readlink`: the answer is stripped of the step root.
    Link,
    /// An open of `fd/N` of the caller itself: a duplicate of its descriptor N.
    DupFd(i32),
    /// Refused with this errno.
    Refuse(Errno),
}

/// The rule for `tail` under a process directory; `own` when the process is the caller's
/// thread group (or the caller's thread).
pub(super) fn pid_rule(tail: &[String], own: bool, op: Op) -> PidRule {
    const DENY: PidRule = PidRule::Refuse(Errno::EACCES);
    let names: Vec<&str> = tail.iter().map(String::as_str).collect();
    // `task/<tid>/…` is a process directory of its own (the thread is looked up beneath the
    // process's directory, so it belongs to it).
    if let ["task", tid, rest @ ..] = names.as_slice() {
        if pid_number(tid).is_none() {
            return PidRule::Refuse(Errno::ENOENT);
        }
        return pid_rule(&tail[2..2 + rest.len()], own, op);
    }
    let link_rule = |op: Op| match op {
        Op::Readlink => PidRule::Link,
        Op::Stat(_) => PidRule::Allow,
        Op::Open(_) | Op::Access(_) => DENY,
    };
    match names.as_slice() {
        [] | ["task"] => {
            if op.writes() {
                DENY
            } else {
                PidRule::Allow
            }
        }
        [m] if MAGIC_LINKS.contains(m) => {
            if own {
                link_rule(op)
            } else {
                DENY
            }
        }
        ["fd", n] if own => match (op, pid_number(n).or((*n == "0").then_some(0))) {
            (Op::Open(_), Some(fd)) => PidRule::DupFd(fd),
            (_, Some(_)) => link_rule(op),
            (_, None) => PidRule::Refuse(Errno::ENOENT),
        },
        ["ns", _] if own => link_rule(op),
        // Its metadata only (`ls -l /proc/self` stats every entry); its links are refused.
        ["map_files"] if own && matches!(op, Op::Stat(_)) => PidRule::Allow,
        ["map_files", ..] => DENY,
        [m, _, ..] if MAGIC_LINKS.contains(m) || *m == "fd" || *m == "ns" => DENY,
        _ if op.writes() || op == Op::Readlink => DENY,
        _ if own => PidRule::Allow,
        [f] if OTHER_PID_FILES.contains(f) => PidRule::Allow,
        _ => DENY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(p: &str) -> Vec<String> {
        normalize("/", p.as_bytes()).unwrap_or_default()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn normalizes_lexically() {
        for (base, p, want) in [
            ("/", "/proc/self/status", "proc/self/status"),
            ("/", "//proc/./self//status", "proc/self/status"),
            ("/", "/../../proc/self", "proc/self"),
            ("/", "/proc/../etc/passwd", "etc/passwd"),
            ("/proc", "self/fd", "proc/self/fd"),
            ("/proc/self", "../1/environ", "proc/1/environ"),
            ("/work", "x", "work/x"),
            ("/", "/", ""),
        ] {
            let got = normalize(base, p.as_bytes()).unwrap().join("/");
            assert_eq!(got, want, "{base} + {p}");
        }
        assert_eq!(normalize("/", b""), None);
        assert_eq!(normalize("/", b"/proc/\xff"), None);
    }

    #[test]
    fn classifies_proc_paths() {
        let rd = Op::Open(libc::O_RDONLY);
        for (p, want) in [
            ("/etc/passwd", Target::Continue),
            ("/procfoo", Target::Continue),
            ("/proc", Target::ProcRoot),
            ("/proc/cpuinfo", Target::Global(s(&["cpuinfo"]))),
            (
                "/proc/sys/kernel/ostype",
                Target::Global(s(&["sys", "kernel", "ostype"])),
            ),
            (
                "/proc/self/status",
                Target::Pid {
                    who: Who::Caller,
                    tail: s(&["status"]),
                },
            ),
            (
                "/proc/mounts",
                Target::Pid {
                    who: Who::Caller,
                    tail: s(&["mounts"]),
                },
            ),
            (
                "/proc/thread-self/comm",
                Target::Pid {
                    who: Who::CallerThread,
                    tail: s(&["comm"]),
                },
            ),
            (
                "/proc/1/environ",
                Target::Pid {
                    who: Who::Pid(1),
                    tail: s(&["environ"]),
                },
            ),
            ("/proc/kcore", Target::Refuse(Errno::EACCES)),
            ("/proc/kmsg", Target::Refuse(Errno::EACCES)),
            ("/proc/sysrq-trigger", Target::Refuse(Errno::EACCES)),
            ("/proc/keys", Target::Refuse(Errno::EACCES)),
            ("/proc/cpuinfo/x", Target::Refuse(Errno::EACCES)),
            ("/proc/0", Target::Refuse(Errno::EACCES)),
            ("/proc/-1", Target::Refuse(Errno::EACCES)),
            ("/proc/99999999999", Target::Refuse(Errno::EACCES)),
        ] {
            assert_eq!(classify(&comps(p), rd), want, "{p}");
        }
    }

    #[test]
    fn writes_under_proc_are_refused() {
        let w = Op::Open(libc::O_WRONLY);
        for p in [
            "/proc/sys/kernel/hostname",
            "/proc/sys/vm/drop_caches",
            "/proc",
        ] {
            assert_eq!(classify(&comps(p), w), Target::Refuse(Errno::EACCES), "{p}");
        }
        for flags in [libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC, libc::O_CREAT] {
            assert!(Op::Open(flags).writes(), "{flags:#x}");
        }
        assert!(Op::Access(libc::W_OK).writes());
        assert!(!Op::Access(libc::R_OK).writes());
        let own_write = pid_rule(&s(&["oom_score_adj"]), true, w);
        assert_eq!(own_write, PidRule::Refuse(Errno::EACCES));
    }

    #[test]
    fn classifies_dev_paths() {
        for (p, want) in [
            ("/dev/null", Target::Dev(Dev::Node("null"))),
            ("/dev/urandom", Target::Dev(Dev::Node("urandom"))),
            ("/dev/stdout", Target::Dev(Dev::Fd(1))),
            ("/dev/fd/7", Target::Dev(Dev::Fd(7))),
            ("/dev/fd/x", Target::Continue),
            ("/dev/sda", Target::Continue),
            ("/dev/fd", Target::Continue),
        ] {
            assert_eq!(classify(&comps(p), Op::Stat(false)), want, "{p}");
        }
    }

    #[test]
    fn process_rules() {
        let rd = Op::Open(libc::O_RDONLY);
        let deny = PidRule::Refuse(Errno::EACCES);
        for (tail, own, op, want) in [
            (&["status"][..], true, rd, PidRule::Allow),
            (&["environ"], true, rd, PidRule::Allow),
            (&["environ"], false, rd, deny),
            (&["mem"], false, rd, deny),
            (&["status"], false, rd, PidRule::Allow),
            (&["cmdline"], false, rd, PidRule::Allow),
            (&[], false, rd, PidRule::Allow),
            (&["exe"], true, Op::Readlink, PidRule::Link),
            (&["exe"], true, rd, deny),
            (&["root"], true, rd, deny),
            (&["cwd"], true, rd, deny),
            (&["cwd"], false, Op::Readlink, deny),
            (&["root", "etc"], true, Op::Stat(false), deny),
            (&["fd"], true, rd, PidRule::Allow),
            (&["fd"], false, rd, deny),
            (&["fd", "3"], true, rd, PidRule::DupFd(3)),
            (&["fd", "0"], true, rd, PidRule::DupFd(0)),
            (&["fd", "3"], true, Op::Readlink, PidRule::Link),
            (&["fd", "3"], false, Op::Readlink, deny),
            (&["fd", "3", "x"], true, rd, deny),
            (&["map_files", "1-2"], true, rd, deny),
            (&["map_files"], true, Op::Stat(false), PidRule::Allow),
            (&["map_files"], true, rd, deny),
            (&["map_files"], false, Op::Stat(false), deny),
            (&["ns", "net"], true, rd, deny),
            (&["ns", "net"], true, Op::Readlink, PidRule::Link),
            (&["task", "5", "exe"], true, rd, deny),
            (&["task", "5", "status"], true, rd, PidRule::Allow),
            (&["task", "5", "environ"], false, rd, deny),
            (&["task"], false, rd, PidRule::Allow),
            (&["status"], true, Op::Readlink, deny),
        ] {
            assert_eq!(
                pid_rule(&s(tail), own, op),
                want,
                "{tail:?} own={own} {op:?}"
            );
        }
    }
}
