//! A seccomp user-notification supervisor that gives a chrooted step a working `/proc`, the
//! basic `/dev` nodes, and signals confined to the step, where mounting is not allowed.
//!
//! Used by the unprivileged-container mode (inside `docker run` with Docker's default seccomp
//! profile and capabilities): a RUN step runs chrooted into a copied root, with no PID or
//! mount namespace, so it cannot mount `/proc`. Instead the step's path syscalls that name
//! `/proc` (and missing `/dev` nodes) are answered by this supervisor from the host's `/proc`.
//!
//! # Protocol
//!
//! 1. The parent builds a [`Filter`] before forking (allocation is not allowed after).
//! 2. The child sets `no_new_privs`, then [`Filter::install_in_child`]: `seccomp(
//!    SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER)` and sends the listener fd
//!    over one end of a socketpair (`SCM_RIGHTS`), async-signal-safe. Install it last,
//!    just before `execve`: from then on the intercepted syscalls block until a supervisor
//!    answers them.
//! 3. The parent takes the fd with [`recv_listener`] and starts [`Supervisor::spawn`], which
//!    serves notifications on a thread until every task of the step has exited (the
//!    listener reports `POLLHUP`) or [`Supervisor::stop`] is called.
//!
//! # What is intercepted
//!
//! `open`, `openat`, `openat2`, `access`, `faccessat`, `faccessat2`, `stat`, `lstat`,
//! `newfstatat`, `statx`, `readlink`, `readlinkat`, `getdents64`, `kill`, `tkill`, `tgkill`,
//! `pidfd_send_signal`. Every other syscall is allowed by the filter itself. An intercepted
//! call whose path is not emulated is answered `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the kernel
//! then runs it as if there were no supervisor, inside the chroot. A caller that rewrites its
//! path buffer after the supervisor looked at it gains nothing from that race: CONTINUE never
//! grants more than the plain chroot does.
//!
//! # Policy (security first)
//!
//! The supervisor runs with kiln's privileges, so every emulated operation is decided here:
//!
//! * **Paths.** Only paths that are lexically under `/proc` or `/dev` (after joining a
//!   relative path to the caller's working directory, read from `/proc/<tid>/cwd` with the
//!   step root stripped, and folding `.`, `..` and `//`) are emulated. A symlink in the image
//!   that points into `/proc` is resolved by the kernel inside the root and finds nothing.
//!   The path is read from the caller's memory (at most `PATH_MAX` bytes) through
//!   `/proc/<tid>/mem` opened *before* `SECCOMP_IOCTL_NOTIF_ID_VALID` is checked, so the
//!   memory read and written is the caller's even if its tid is reused.
//! * **Read-only.** Every emulated open is read-only: `O_WRONLY`, `O_RDWR`, `O_CREAT`,
//!   `O_TRUNC` under `/proc` answer `EACCES`, as does `access(W_OK)`. So nothing writable of
//!   the host's `/proc` (`sys/*`, `sysrq-trigger`, `self/oom_score_adj`, …) is reachable.
//! * **Global files** allowed: `cpuinfo meminfo stat uptime version loadavg filesystems
//!   swaps vmstat cmdline cgroups devices mounts` (`mounts` and `net` as `self/mounts` and
//!   `self/net`), `self`, `thread-self` and `sys/**`. Everything else at the top of `/proc`
//!   (`kcore`, `kmsg`, `keys`, `sysrq-trigger`, `timer_list`, …) answers `EACCES`.
//! * **Processes.** `self` and `thread-self` map to the caller's host tgid and tid. A numeric
//!   pid is allowed only when that process belongs to the step: its `/proc/<pid>/root` is the
//!   step's root (same device and inode), checked through a `/proc/<pid>` directory fd, which
//!   stays bound to that process even if its pid is reused. The listing of `/proc` shows only
//!   the step's pids. For the caller's own process every file is readable except the magic
//!   links: opening `root`, `cwd`, `exe`, `fd/*`, `map_files/*` or `ns/*` answers `EACCES`;
//!   reading those links with `readlink` is emulated, with the step root stripped (a target
//!   outside the root and outside `/proc` answers `EACCES`). `/proc/self/fd/N` and
//!   `/dev/std{in,out,err}`, `/dev/fd/N` (when missing in the root) are answered with a
//!   duplicate of the caller's own descriptor (`pidfd_getfd`), which cannot widen its access.
//!   For the step's other processes only `cmdline comm stat statm status` and the listings
//!   are readable, as `ps` needs.
//! * **Directories.** A host `/proc` directory fd is never given to the step: `..` from it
//!   would lead out of the chroot. The step gets a *placeholder* instead: an empty directory
//!   made in the root's own `/proc` (or the root, when it has none), opened, and removed at
//!   once, so it leaves no entry (the parent's times are put back; its ctime changes), and
//!   its inode is unique while the supervisor holds it. `getdents64` on it is answered from
//!   the supervisor's fd of the host directory, found by that inode (not with `kcmp`, which
//!   Docker's default profile refuses without `CAP_SYS_PTRACE`). `fchdir` into a placeholder
//!   and `..` stay inside the root. At most 256 placeholders are tracked (the oldest is
//!   forgotten, and then lists as empty).
//! * **Credentials.** Files are opened and stat'ed with the caller's filesystem uid and gid
//!   (`setfsuid`/`setfsgid` on the supervisor thread), so `/proc/<pid>` permission checks are
//!   made for the caller, and the supervisor can open the memory of a non-root caller without
//!   `CAP_SYS_PTRACE` (which Docker's default capabilities lack).
//! * **`/dev` fallback.** Opens, stats and access checks of `/dev/null zero full random
//!   urandom tty` when the node is missing from the root are answered with the host's node
//!   (`/dev/tty` only for a caller with a controlling terminal, `ENXIO` otherwise).
//! * **Signals.** `kill` of a pid is delivered by the supervisor through a pidfd, only when
//!   the target belongs to the step and the caller's credentials would allow it (same uid
//!   rules as the kernel's, or `CAP_KILL`); `kill(-1)` answers `EPERM`; a process group (or
//!   `kill(0)`) is allowed when every member belongs to the step. `tkill`/`tgkill` are allowed
//!   when the thread belongs to the step, then run by the kernel (`CONTINUE`): a residual race
//!   remains if the thread exits and a host process receives the same id within that window,
//!   which needs the whole pid space to wrap. `pidfd_send_signal` is run on the supervisor's
//!   duplicate of the caller's pidfd, so swapping the fd meanwhile changes nothing.
//!
//! Robustness: a notification whose task died answers `ENOENT` and is skipped; hostile input
//! is bounded (`PATH_MAX` path reads, 64 KiB `getdents64` chunks, 256 tracked placeholders)
//! and never panics the supervisor.

mod creds;
mod dirs;
mod error;
mod filter;
mod ops;
mod policy;
mod procfs;
mod signal;
mod supervisor;
mod sys;
#[cfg(test)]
mod tests;

pub use error::NotifyError;
pub use filter::{recv_listener, Filter};
pub use supervisor::Supervisor;
