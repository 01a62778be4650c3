//! Which isolation the host allows kiln's steps and containers (root, rootless, unprivileged),
//! detected from the process's ids and probes, and entering the rootless user namespace.
//!
//! * [`Isolation::Root`]: kiln is root in the host's user namespace and may create mount
//!   namespaces and mount: today's sandbox.
//! * [`Isolation::Rootless`]: kiln is an ordinary user on a host that allows user namespaces,
//!   with subordinate ids in `/etc/subuid` and `/etc/subgid` and the setuid helpers
//!   `newuidmap`/`newgidmap`. kiln moves *itself* into a new user namespace
//!   ([`enter_user_namespace`]) before it touches its store, mapping namespace uid 0 to the
//!   user and 1..=N to the subordinate range. From then on it is root in that namespace and
//!   the root sandbox works unchanged: overlay mounts are made inside the namespace, files a
//!   step `chown`s land on disk as subordinate host ids, and every `stat` kiln makes (the
//!   layer writer's included) sees them as namespace ids again.
//! * [`Isolation::Unprivileged`]: neither user namespaces nor mounts (Docker's default seccomp
//!   profile and capabilities, Kubernetes' default pod): detected, not built in yet.
//!
//! The probes run in a forked child that only makes system calls, so detecting never changes
//! kiln's own namespaces and is safe in a multithreaded process.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The isolation kiln uses for RUN steps and containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Root with namespaces and overlay mounts.
    Root,
    /// A user namespace mapped to the user's subordinate ids.
    Rootless,
    /// No user namespaces and no mounts (an unprivileged container).
    Unprivileged,
}

impl Isolation {
    /// The mode's name, as `--isolation` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Root => "root",
            Isolation::Rootless => "rootless",
            Isolation::Unprivileged => "unprivileged",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A range of subordinate ids from `/etc/subuid` or `/etc/subgid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first host id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

impl IdRange {
    /// The last host id of the range.
    pub fn last(self) -> u32 {
        self.start.saturating_add(self.count.saturating_sub(1))
    }
}

/// What the host offers, as found by [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The effective uid (in kiln's current user namespace).
    pub euid: u32,
    /// The effective gid.
    pub egid: u32,
    /// The user's name, when `/etc/passwd` has one.
    pub user: Option<String>,
    /// kiln already runs in a user namespace that is not the host's.
    pub in_user_namespace: bool,
    /// A child could create a mount namespace and mount a tmpfs (without a new user
    /// namespace).
    pub mounts: bool,
    /// A child could create a user namespace and mount a tmpfs inside it.
    pub user_namespaces: bool,
    /// The user's first `/etc/subuid` range.
    pub subuid: Option<IdRange>,
    /// The user's first `/etc/subgid` range.
    pub subgid: Option<IdRange>,
    /// `newuidmap`, found on `PATH`.
    pub newuidmap: Option<PathBuf>,
    /// `newgidmap`, found on `PATH`.
    pub newgidmap: Option<PathBuf>,
}

/// The mode chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The mode.
    pub mode: Isolation,
    /// Why, for `kiln info` (`not root; user namespaces allowed; …`).
    pub reason: String,
    /// The facts it was decided from.
    pub facts: HostFacts,
}

/// Why a mode cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// A forced mode the host does not allow.
    #[error("isolation {mode} is not possible here: {reason}")]
    Unavailable {
        /// The mode asked for.
        mode: Isolation,
        /// What is missing.
        reason: String,
    },
    /// Setting up the rootless user namespace failed.
    #[error("cannot enter the rootless user namespace: {what}")]
    Enter {
        /// The step that failed.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Whether this process runs in a user namespace other than the host's (its uid map is not
/// the identity over all ids).
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// The first range of `/etc/subuid`-format `text` for a user named `name` or numbered `uid`.
pub fn parse_subids(text: &str, name: Option<&str>, uid: u32) -> Option<IdRange> {
    let uid = uid.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != uid && Some(who) != name {
            return None;
        }
        let range = IdRange {
            start: start.trim().parse().ok()?,
            count: count.trim().parse().ok()?,
        };
        (range.count > 0).then_some(range)
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `probe` in a forked child (which may only make async-signal-safe calls); true when
/// it exits 0.
fn in_child(probe: fn() -> bool) -> bool {
    // SAFETY: the child only makes raw system calls (unshare, mount) and `_exit`s: nothing
    // that takes a lock another thread of the parent may hold.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = probe();
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    if pid < 0 {
        return false;
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// In the probe child: a private mount namespace (in a new user namespace with `userns`)
/// where a tmpfs mounts.
fn try_mount(userns: bool) -> bool {
    let flags = libc::CLONE_NEWNS | if userns { libc::CLONE_NEWUSER } else { 0 };
    // SAFETY: plain system calls on static C strings; the namespaces die with the child.
    unsafe {
        if libc::unshare(flags) != 0 {
            return false;
        }
        let root = c"/".as_ptr();
        if libc::mount(
            std::ptr::null(),
            root,
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return false;
        }
        libc::mount(
            c"none".as_ptr(),
            root,
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        ) == 0
    }
}

/// What this host and user allow.
pub fn probe() -> HostFacts {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let user = nix::unistd::User::from_uid(euid.into())
        .ok()
        .flatten()
        .map(|u| u.name);
    let subuid = std::fs::read_to_string("/etc/subuid")
        .ok()
        .and_then(|t| parse_subids(&t, user.as_deref(), euid));
    let subgid = std::fs::read_to_string("/etc/subgid")
        .ok()
        .and_then(|t| parse_subids(&t, user.as_deref(), euid));
    HostFacts {
        euid,
        egid,
        user,
        in_user_namespace: in_user_namespace(),
        mounts: in_child(|| try_mount(false)),
        user_namespaces: in_child(|| try_mount(true)),
        subuid,
        subgid,
        newuidmap: find_in_path("newuidmap"),
        newgidmap: find_in_path("newgidmap"),
    }
}

/// Why rootless mode cannot be used with `facts`, if it cannot.
fn rootless_missing(facts: &HostFacts) -> Option<String> {
    if !facts.user_namespaces {
        return Some("user namespaces (or mounts inside one) are not allowed".into());
    }
    let who = facts.user.clone().unwrap_or_else(|| facts.euid.to_string());
    if facts.subuid.is_none() {
        return Some(format!("no subordinate uids for {who} in /etc/subuid"));
    }
    if facts.subgid.is_none() {
        return Some(format!("no subordinate gids for {who} in /etc/subgid"));
    }
    if facts.newuidmap.is_none() || facts.newgidmap.is_none() {
        return Some("newuidmap/newgidmap not found (apt-get install uidmap)".into());
    }
    None
}

fn rootless_reason(facts: &HostFacts) -> String {
    let range = facts.subuid.map_or_else(String::new, |r| {
        format!(
            "; subordinate ids {}-{} from /etc/subuid",
            r.start,
            r.last()
        )
    });
    let who = if facts.euid == 0 { "root" } else { "not root" };
    format!("{who}; user namespaces allowed{range}")
}

/// Chooses the mode for `facts`: `forced`, if the host allows it, or the strongest one it
/// allows.
pub fn decide(facts: HostFacts, forced: Option<Isolation>) -> Result<Decision, IsolationError> {
    let root_ok = facts.euid == 0 && facts.mounts;
    let rootless_gap = rootless_missing(&facts);
    let unavailable = |mode, reason: String| IsolationError::Unavailable { mode, reason };
    let (mode, reason) = match forced {
        Some(Isolation::Root) if !root_ok => {
            let why = if facts.euid != 0 {
                "kiln does not run as root (use --isolation rootless)".to_string()
            } else {
                "root, but mount namespaces or mounts are not allowed".to_string()
            };
            return Err(unavailable(Isolation::Root, why));
        }
        Some(Isolation::Root) => (Isolation::Root, "root; forced".to_string()),
        Some(Isolation::Rootless) => match rootless_gap {
            Some(gap) => return Err(unavailable(Isolation::Rootless, gap)),
            None => (Isolation::Rootless, rootless_reason(&facts) + "; forced"),
        },
        Some(Isolation::Unprivileged) => (Isolation::Unprivileged, "forced".to_string()),
        None if root_ok => (
            Isolation::Root,
            "root; mount namespaces and mounts allowed".to_string(),
        ),
        None => match rootless_gap {
            None => (Isolation::Rootless, rootless_reason(&facts)),
            Some(gap) => {
                let who = if facts.euid == 0 {
                    "root, but mounts are not allowed"
                } else {
                    "not root"
                };
                (Isolation::Unprivileged, format!("{who}; {gap}"))
            }
        },
    };
    Ok(Decision {
        mode,
        reason,
        facts,
    })
}

/// Set (to any value) in a process that [`enter_user_namespace`] moved into its namespace,
/// so that `kiln info` in it still says rootless.
pub const ENTERED_ENV: &str = "KILN_ROOTLESS_ENTERED";

/// Whether this process was moved into the rootless namespace by [`enter_user_namespace`].
pub fn entered() -> bool {
    std::env::var_os(ENTERED_ENV).is_some()
}

fn enter_err(what: &str) -> impl FnOnce(io::Error) -> IsolationError + '_ {
    move |source| IsolationError::Enter {
        what: what.to_string(),
        source,
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `newuidmap PID 0 UID 1 START COUNT` (or `newgidmap`).
fn map_command(tool: &Path, pid: libc::pid_t, own: u32, range: IdRange) -> Command {
    let mut c = Command::new(tool);
    c.arg(pid.to_string())
        .args(["0", &own.to_string(), "1"])
        .args(["1", &range.start.to_string(), &range.count.to_string()]);
    c
}

fn run_map(mut c: Command) -> io::Result<()> {
    let out = c.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{:?} failed ({}): {}",
        c.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Moves this process into a new user namespace mapping uid/gid 0 to the user and 1.. to the
/// subordinate ranges of `decision` (through a helper child that runs `newuidmap` and
/// `newgidmap` on this process), then becomes uid 0 in it. Must be called while the process
/// has a single thread (the kernel refuses `unshare(CLONE_NEWUSER)` otherwise).
pub fn enter_user_namespace(decision: &Decision) -> Result<(), IsolationError> {
    let f = &decision.facts;
    let missing = || IsolationError::Unavailable {
        mode: Isolation::Rootless,
        reason: rootless_missing(f).unwrap_or_else(|| "incomplete host facts".into()),
    };
    let (subuid, subgid) = (f.subuid.ok_or_else(missing)?, f.subgid.ok_or_else(missing)?);
    let (uidmap, gidmap) = (
        f.newuidmap.clone().ok_or_else(missing)?,
        f.newgidmap.clone().ok_or_else(missing)?,
    );
    let pid = std::process::id() as libc::pid_t;
    let (go_r, go_w) = pipe().map_err(enter_err("pipe"))?;
    let uid_cmd = map_command(&uidmap, pid, f.euid, subuid);
    let gid_cmd = map_command(&gidmap, pid, f.egid, subgid);
    // The helper waits until this process has unshared, then maps it. A thread cannot do it:
    // unshare(CLONE_NEWUSER) needs this process single-threaded.
    // SAFETY: the process is single-threaded here (documented precondition), so the child
    // may allocate and spawn processes.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return Err(enter_err("fork")(io::Error::last_os_error()));
    }
    if helper == 0 {
        drop(go_w);
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a local buffer.
        let n = unsafe { libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        let ok = n == 1 && run_map(uid_cmd).and_then(|()| run_map(gid_cmd)).is_ok();
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    drop(go_r);
    // SAFETY: unshare of the user namespace; no memory involved.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    let err = io::Error::last_os_error();
    let byte = if unshared == 0 { 1u8 } else { 0 };
    // SAFETY: writing one byte from a local.
    unsafe { libc::write(go_w.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    drop(go_w);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(helper, &mut status, 0) };
    if unshared != 0 {
        return Err(enter_err("unshare(CLONE_NEWUSER)")(err));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        // Run the tools again here for their message: the helper's output was its own.
        let why = run_map(map_command(&uidmap, pid, f.euid, subuid))
            .and_then(|()| run_map(map_command(&gidmap, pid, f.egid, subgid)))
            .err()
            .unwrap_or_else(|| io::Error::other("newuidmap/newgidmap failed"));
        return Err(enter_err("writing the id maps")(why));
    }
    become_root()?;
    // Single-threaded still: nothing else reads the environment.
    std::env::set_var(ENTERED_ENV, "1");
    Ok(())
}

/// Becomes uid and gid 0 of the user namespace this process was moved into, with no
/// supplementary groups.
pub fn become_root() -> Result<(), IsolationError> {
    // SAFETY: plain id changes to ids the new maps contain.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 {
            return Err(enter_err("setresgid(0)")(io::Error::last_os_error()));
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(enter_err("setgroups")(io::Error::last_os_error()));
        }
        if libc::setresuid(0, 0, 0) != 0 {
            return Err(enter_err("setresuid(0)")(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Overlay mount options for the namespace kiln runs in. Inside a user namespace overlayfs
/// cannot write `trusted.*` xattrs, so it is mounted with `userxattr` (opaque markers become
/// `user.overlay.opaque`), which refuses `redirect_dir=off`; `nofollow` is the same for kiln
/// (no redirects written, none followed), so the upper dir stays a plain diff.
pub fn overlay_options_here(options: String) -> String {
    if !in_user_namespace() {
        return options;
    }
    userxattr_options(&options)
}

/// See [`overlay_options_here`].
pub fn userxattr_options(options: &str) -> String {
    let mut out: Vec<&str> = options
        .split(',')
        .map(|o| {
            if o == "redirect_dir=off" {
                "redirect_dir=nofollow"
            } else {
                o
            }
        })
        .collect();
    if !out.contains(&"userxattr") {
        out.push("userxattr");
    }
    out.join(",")
}

/// Adapts a step's mount plan to the user namespace kiln runs in, if it runs in one: a step
/// that shares kiln's network namespace (`--network host`) cannot mount a sysfs there (the
/// network namespace belongs to the host's user namespace), so it gets the host's `/sys`
/// bound recursively (a plain bind would uncover what the locked submounts hide, and is
/// refused) and remounted read-only instead.
pub fn adapt_plan(ops: &mut Vec<super::plan::Op>, own_network: bool) {
    if own_network || !in_user_namespace() {
        return;
    }
    host_sys_for_sysfs(ops);
}

/// See [`adapt_plan`].
pub fn host_sys_for_sysfs(ops: &mut Vec<super::plan::Op>) {
    use super::plan::Op;
    let Some(i) = ops
        .iter()
        .position(|op| matches!(op, Op::Mount { fstype, .. } if fstype.as_c_str() == c"sysfs"))
    else {
        return;
    };
    let Op::Mount { rel, .. } = &ops[i] else {
        return;
    };
    let rel = rel.clone();
    ops[i] = Op::Mount {
        src: c"/sys".into(),
        rel: rel.clone(),
        fstype: c"none".into(),
        flags: libc::MS_BIND | libc::MS_REC,
        data: None,
        optional: false,
    };
    ops.insert(i + 1, Op::RemountReadOnly(rel));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            euid: 1000,
            egid: 1000,
            user: Some("ci".into()),
            in_user_namespace: false,
            mounts: false,
            user_namespaces: true,
            subuid: Some(IdRange {
                start: 100000,
                count: 65536,
            }),
            subgid: Some(IdRange {
                start: 100000,
                count: 65536,
            }),
            newuidmap: Some("/usr/bin/newuidmap".into()),
            newgidmap: Some("/usr/bin/newgidmap".into()),
        }
    }

    #[test]
    fn subordinate_ids_match_the_name_or_the_uid() {
        let text = "other:1:2\nci:100000:65536\n1000:5:6\n";
        assert_eq!(
            parse_subids(text, Some("ci"), 1000),
            Some(IdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subids(text, None, 1000),
            Some(IdRange { start: 5, count: 6 })
        );
        assert_eq!(parse_subids("ci:x:1\nci:1:0\n", Some("ci"), 7), None);
    }

    #[test]
    fn a_user_with_subordinate_ids_is_rootless() {
        let d = decide(facts(), None).unwrap();
        assert_eq!(d.mode, Isolation::Rootless);
        assert_eq!(
            d.reason,
            "not root; user namespaces allowed; subordinate ids 100000-165535 from /etc/subuid"
        );
    }

    #[test]
    fn root_with_mounts_is_root_and_without_is_unprivileged() {
        let mut f = facts();
        f.euid = 0;
        f.mounts = true;
        assert_eq!(decide(f.clone(), None).unwrap().mode, Isolation::Root);
        f.mounts = false;
        f.user_namespaces = false;
        let d = decide(f, None).unwrap();
        assert_eq!(d.mode, Isolation::Unprivileged);
        assert!(d.reason.contains("not allowed"), "{}", d.reason);
    }

    #[test]
    fn forcing_what_the_host_cannot_do_says_why() {
        let e = decide(facts(), Some(Isolation::Root)).unwrap_err();
        assert!(e.to_string().contains("does not run as root"), "{e}");
        let mut f = facts();
        f.subgid = None;
        let e = decide(f, Some(Isolation::Rootless)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "isolation rootless is not possible here: no subordinate gids for ci in /etc/subgid"
        );
        let mut f = facts();
        f.newuidmap = None;
        assert_eq!(decide(f, None).unwrap().mode, Isolation::Unprivileged);
    }

    #[test]
    fn overlay_in_a_user_namespace_uses_user_xattrs() {
        assert_eq!(
            userxattr_options("lowerdir=i:0,upperdir=u,workdir=w,redirect_dir=off,metacopy=off"),
            "lowerdir=i:0,upperdir=u,workdir=w,redirect_dir=nofollow,metacopy=off,userxattr"
        );
    }

    #[test]
    fn a_host_network_step_gets_the_hosts_sys_bound_read_only() {
        use super::super::plan::Op;
        let mut ops = vec![
            Op::PrivateMounts,
            Op::Mount {
                src: c"sysfs".into(),
                rel: c"sys".into(),
                fstype: c"sysfs".into(),
                flags: libc::MS_RDONLY,
                data: None,
                optional: false,
            },
            Op::Mask(c"sys/firmware".into()),
        ];
        host_sys_for_sysfs(&mut ops);
        let described: Vec<String> = ops.iter().map(Op::describe).collect();
        assert_eq!(ops.len(), 4, "{described:?}");
        assert!(
            matches!(&ops[1], Op::Mount { src, flags, .. }
                if src.as_c_str() == c"/sys" && *flags == libc::MS_BIND | libc::MS_REC),
            "{described:?}"
        );
        assert!(matches!(&ops[2], Op::RemountReadOnly(r) if r.as_c_str() == c"sys"));
    }

    #[test]
    fn probing_does_not_change_this_process() {
        let before = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let _ = probe();
        assert_eq!(std::fs::read_link("/proc/self/ns/mnt").unwrap(), before);
    }
}
