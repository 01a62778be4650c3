//! The mount plan: which filesystems the container gets, where, with which flags, in which
//! order — as plain data, decided in the parent before the container process exists.
//!
//! Every target inside the image is a path relative to the new root, opened by the child with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and mounted through its fd, so a symlink
//! planted in the image at `/proc`, `/dev`, `/sys` or `/etc/hosts` can never redirect a mount
//! (CVE-2019-19921, CVE-2025-31133 shape); the child reports ELOOP and the step fails.

use std::ffi::CString;

use libc::c_ulong;

/// Docker's masked paths: `/dev/null` is bound over files, a read-only tmpfs over directories.
pub const MASKED_PATHS: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/sched_debug",
    "proc/scsi",
    "proc/timer_list",
    "proc/timer_stats",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Docker's read-only paths: bound onto themselves, then remounted read-only.
pub const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Device nodes bound from the host's `/dev` into the container's `/dev` tmpfs.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks created in the container's `/dev` (name, target).
pub const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

const NOSUID: c_ulong = libc::MS_NOSUID;
const NODEV: c_ulong = libc::MS_NODEV;
const NOEXEC: c_ulong = libc::MS_NOEXEC;

/// One step of container setup. `rel` paths are relative to the new root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Make every mount of the new namespace private.
    PrivateMounts,
    /// `chdir` to a host path (the short-name link dir, so overlay options stay short).
    Chdir(CString),
    /// Mount the overlay root at a host path in the scratch dir.
    MountOverlay {
        /// Mount point (absolute host path).
        target: CString,
        /// `lowerdir=…,upperdir=…,workdir=…` with short relative names.
        options: CString,
    },
    /// Bind a copied root onto itself so it is a mount point `pivot_root` accepts.
    BindRoot {
        /// The copied root (absolute host path).
        path: CString,
    },
    /// Open the new root; later `rel` paths are resolved beneath it.
    OpenRoot(CString),
    /// Mount a filesystem on a directory inside the root.
    Mount {
        /// Source name (`proc`, `tmpfs`, …).
        src: CString,
        /// Target inside the root.
        rel: CString,
        /// Filesystem type.
        fstype: CString,
        /// Mount flags.
        flags: c_ulong,
        /// Filesystem options.
        data: Option<CString>,
        /// Whether a failure is ignored (filesystems the kernel may lack).
        optional: bool,
    },
    /// Bind a host path onto a path inside the root, then remount it `nodev` (and read-only)
    /// keeping the flags the source's mount has.
    BindHost {
        /// Host path.
        src: CString,
        /// Target inside the root.
        rel: CString,
        /// Remount read-only (with nosuid, nodev).
        readonly: bool,
        /// Remount nodev: every bind but the host's device nodes bound into `/dev`, so a
        /// node the command mknods on a mount can never open a host device.
        nodev: bool,
    },
    /// Create a directory inside the root (an existing one is fine).
    Mkdir {
        /// Parent directory inside the root (`.` for the root).
        parent: CString,
        /// Name of the new directory.
        name: CString,
        /// Permission bits.
        mode: u32,
    },
    /// Create an empty file inside the root (a mount target for a bind).
    CreateFile {
        /// Parent directory inside the root.
        parent: CString,
        /// File name.
        name: CString,
        /// Permission bits.
        mode: u32,
    },
    /// Create a symlink inside the root.
    Symlink {
        /// Parent directory inside the root.
        parent: CString,
        /// Link name.
        name: CString,
        /// Link target.
        target: CString,
    },
    /// Mask a path: `/dev/null` over a file, an empty read-only tmpfs over a directory.
    /// Missing paths are skipped.
    Mask(CString),
    /// Make a path read-only by binding it onto itself and remounting. Missing paths are
    /// skipped.
    ReadOnly(CString),
    /// Remount the mount a path is on read-only (its mount flags only, not recursively).
    RemountReadOnly(CString),
    /// `pivot_root` into the new root and detach the old one.
    PivotRoot(CString),
    /// Set the UTS hostname.
    Hostname(CString),
    /// Bring up `lo` in the new network namespace.
    LoopbackUp,
    /// Join a running container's namespaces (`setns` through its PID 1's pidfd); for the
    /// mount namespace this also makes the container's root the root and working directory.
    JoinNamespaces {
        /// A pidfd of the container's PID 1.
        pidfd: std::os::fd::RawFd,
        /// `CLONE_NEW*` flags of the namespaces to join.
        flags: libc::c_int,
    },
}

impl Op {
    /// A human description of the step, for error messages.
    pub fn describe(&self) -> String {
        let l = |c: &CString| format!("/{}", c.to_string_lossy()).replace("/./", "/");
        match self {
            Op::PrivateMounts => "making mounts private".into(),
            Op::Chdir(p) => format!("chdir {}", p.to_string_lossy()),
            Op::MountOverlay { target, .. } => {
                format!("mount overlay on {}", target.to_string_lossy())
            }
            Op::BindRoot { path } => format!("bind root {}", path.to_string_lossy()),
            Op::OpenRoot(p) => format!("open root {}", p.to_string_lossy()),
            Op::Mount { fstype, rel, .. } => {
                format!("mount {} on {}", fstype.to_string_lossy(), l(rel))
            }
            Op::BindHost { src, rel, .. } => {
                format!("bind {} on {}", src.to_string_lossy(), l(rel))
            }
            Op::Mkdir { parent, name, .. } => {
                format!("mkdir {}", l(&join_rel(parent, name).unwrap_or_default()))
            }
            Op::CreateFile { parent, name, .. } => {
                format!("create {}", l(&join_rel(parent, name).unwrap_or_default()))
            }
            Op::Symlink { parent, name, .. } => {
                format!("symlink {}", l(&join_rel(parent, name).unwrap_or_default()))
            }
            Op::Mask(p) => format!("mask {}", l(p)),
            Op::ReadOnly(p) => format!("read-only {}", l(p)),
            Op::RemountReadOnly(p) => format!("remount read-only {}", l(p)),
            Op::PivotRoot(p) => format!("pivot_root into {}", p.to_string_lossy()),
            Op::Hostname(h) => format!("sethostname {}", h.to_string_lossy()),
            Op::LoopbackUp => "bringing up lo".into(),
            Op::JoinNamespaces { .. } => "joining the container's namespaces".into(),
        }
    }

    /// The in-root path this step mounts over, if it is a mount target (for ELOOP → "symlink").
    pub fn mount_target(&self) -> Option<String> {
        match self {
            Op::Mount { rel, .. } | Op::BindHost { rel, .. } => {
                Some(format!("/{}", rel.to_string_lossy()))
            }
            Op::Mkdir { parent, .. }
            | Op::CreateFile { parent, .. }
            | Op::Symlink { parent, .. } => Some(format!("/{}", parent.to_string_lossy())),
            _ => None,
        }
    }
}

fn join_rel(parent: &CString, name: &CString) -> Option<CString> {
    let p = parent.to_bytes();
    let mut v = Vec::with_capacity(p.len() + name.as_bytes().len() + 1);
    if p != b"." {
        v.extend_from_slice(p);
        v.push(b'/');
    }
    v.extend_from_slice(name.as_bytes());
    CString::new(v).ok()
}

/// How the root filesystem is provided.
#[derive(Debug, Clone)]
pub enum RootPlan {
    /// An overlay mount.
    Overlay {
        /// Dir holding the short-name symlinks the options refer to.
        links_dir: CString,
        /// Mount point.
        merged: CString,
        /// Mount options with short relative names.
        options: CString,
    },
    /// A copied root directory (fallback when overlay cannot be mounted).
    Copy {
        /// The copied root.
        rootfs: CString,
    },
}

/// Everything the mount plan depends on.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The root filesystem.
    pub root: RootPlan,
    /// Whether the step has its own network namespace (`--network none`).
    pub own_network: bool,
    /// The container's hostname.
    pub hostname: CString,
    /// `(in-root path, host file)` for `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.
    pub etc_files: Vec<(CString, CString)>,
    /// Extra binds: `(host path, in-root path, read-only)`.
    pub binds: Vec<(CString, CString, bool)>,
    /// tmpfs mounts: `(in-root path, tmpfs options, extra mount flags)`.
    pub tmpfs: Vec<(CString, CString, c_ulong)>,
    /// Remount the root read-only once everything is mounted on it.
    pub readonly_root: bool,
    /// Bytes of the `/dev/shm` tmpfs (`--shm-size`); `None`: Docker's 64 MiB.
    pub shm_size: Option<u64>,
}

/// What one `--tmpfs` option (Docker's syntax) becomes in the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmpfsOption {
    /// A mount flag: `noexec`, `ro`.
    Flag(c_ulong),
    /// Nothing: `nosuid` and `nodev` are always on; `rw`, `exec`, `suid`, `dev` are the
    /// defaults.
    Default,
    /// tmpfs's own (`size=…`, `mode=…`, …): part of the mount data.
    Data,
}

/// Classifies one `--tmpfs` option.
pub fn tmpfs_option(o: &str) -> TmpfsOption {
    match o {
        "noexec" => TmpfsOption::Flag(libc::MS_NOEXEC),
        "ro" => TmpfsOption::Flag(libc::MS_RDONLY),
        "nosuid" | "nodev" | "rw" | "exec" | "suid" | "dev" => TmpfsOption::Default,
        _ => TmpfsOption::Data,
    }
}

/// Splits comma-separated `--tmpfs` options into the extra mount flags and tmpfs's mount data.
pub fn split_tmpfs_options(opts: &str) -> (c_ulong, String) {
    let mut flags = 0;
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match tmpfs_option(o) {
            TmpfsOption::Flag(f) => flags |= f,
            TmpfsOption::Default => {}
            TmpfsOption::Data => data.push(o),
        }
    }
    (flags, data.join(","))
}

fn c(s: &str) -> CString {
    // The literals passed here never contain NUL.
    CString::new(s).unwrap_or_default()
}

/// Decides the container's mounts, in order: the root, the kernel filesystems, the
/// caller's files and mounts, then the switch into the root.
pub fn build(input: &PlanInput) -> Vec<Op> {
    let mut ops = vec![Op::PrivateMounts];
    let root = mount_root(&mut ops, &input.root);
    ops.push(Op::OpenRoot(root.clone()));
    ops.push(Op::Mount {
        src: c("proc"),
        rel: c("proc"),
        fstype: c("proc"),
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
        optional: false,
    });
    dev(&mut ops, input.shm_size);
    sys(&mut ops);
    user_mounts(&mut ops, input);
    if input.readonly_root {
        // Only the root's own mount: /proc, /dev, volumes and tmpfs mounts keep their flags.
        ops.push(Op::RemountReadOnly(c(".")));
    }
    ops.push(Op::PivotRoot(root));
    ops.push(Op::Hostname(input.hostname.clone()));
    if input.own_network {
        ops.push(Op::LoopbackUp);
    }
    ops
}

/// The root: an overlay of the layers, or a bind of a copied tree. Returns its path.
fn mount_root(ops: &mut Vec<Op>, plan: &RootPlan) -> CString {
    match plan {
        RootPlan::Overlay {
            links_dir,
            merged,
            options,
        } => {
            ops.push(Op::Chdir(links_dir.clone()));
            ops.push(Op::MountOverlay {
                target: merged.clone(),
                options: options.clone(),
            });
            merged.clone()
        }
        RootPlan::Copy { rootfs } => {
            ops.push(Op::BindRoot {
                path: rootfs.clone(),
            });
            rootfs.clone()
        }
    }
}

/// `/dev`: a tmpfs with the host's harmless devices bound in, the usual links, and
/// devpts, shm (of `shm_size` bytes, Docker's 64 MiB by default) and mqueue.
fn dev(ops: &mut Vec<Op>, shm_size: Option<u64>) {
    // nodev on /dev itself: without a device cgroup, a node the step mknods there (say 8:0,
    // the host's disk) must not open. The bound host nodes keep the host devtmpfs's flags.
    ops.push(Op::Mount {
        src: c("tmpfs"),
        rel: c("dev"),
        fstype: c("tmpfs"),
        flags: NOSUID | NODEV | libc::MS_STRICTATIME,
        data: Some(c("mode=755,size=65536k")),
        optional: false,
    });
    for dev in DEVICES {
        ops.push(Op::CreateFile {
            parent: c("dev"),
            name: c(dev),
            mode: 0o666,
        });
        ops.push(Op::BindHost {
            src: c(&format!("/dev/{dev}")),
            rel: c(&format!("dev/{dev}")),
            readonly: false,
            nodev: false,
        });
    }
    for (name, target) in DEV_SYMLINKS {
        ops.push(Op::Symlink {
            parent: c("dev"),
            name: c(name),
            target: c(target),
        });
    }
    for (name, mode) in [("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o755)] {
        ops.push(Op::Mkdir {
            parent: c("dev"),
            name: c(name),
            mode,
        });
    }
    ops.push(Op::Mount {
        src: c("devpts"),
        rel: c("dev/pts"),
        fstype: c("devpts"),
        flags: NOSUID | NOEXEC,
        data: Some(c("newinstance,ptmxmode=0666,mode=0620,gid=5")),
        optional: false,
    });
    ops.push(Op::Mount {
        src: c("shm"),
        rel: c("dev/shm"),
        fstype: c("tmpfs"),
        flags: NOSUID | NODEV | NOEXEC,
        data: Some(c(&match shm_size {
            Some(bytes) => format!("mode=1777,size={bytes}"),
            None => "mode=1777,size=65536k".to_string(),
        })),
        optional: false,
    });
    ops.push(Op::Mount {
        src: c("mqueue"),
        rel: c("dev/mqueue"),
        fstype: c("mqueue"),
        flags: NOSUID | NODEV | NOEXEC,
        data: None,
        optional: true,
    });
}

/// `/sys`, read-only, and the masked and read-only paths of `/proc` and `/sys`.
fn sys(ops: &mut Vec<Op>) {
    // A fresh sysfs shows the mounting process's network namespace, so with --network none
    // /sys/class/net lists only lo.
    ops.push(Op::Mount {
        src: c("sysfs"),
        rel: c("sys"),
        fstype: c("sysfs"),
        flags: NOSUID | NODEV | NOEXEC | libc::MS_RDONLY,
        data: None,
        optional: false,
    });
    for p in MASKED_PATHS {
        ops.push(Op::Mask(c(p)));
    }
    for p in READONLY_PATHS {
        ops.push(Op::ReadOnly(c(p)));
    }
}

/// The caller's `/etc` files, bind mounts and tmpfs mounts.
fn user_mounts(ops: &mut Vec<Op>, input: &PlanInput) {
    for (rel, src) in &input.etc_files {
        ops.push(Op::BindHost {
            src: src.clone(),
            rel: rel.clone(),
            readonly: false,
            nodev: true,
        });
    }
    for (src, rel, readonly) in &input.binds {
        ops.push(Op::BindHost {
            src: src.clone(),
            rel: rel.clone(),
            readonly: *readonly,
            nodev: true,
        });
    }
    for (rel, data, flags) in &input.tmpfs {
        // The mount point, parents first (an existing directory is fine).
        let path = rel.to_string_lossy().into_owned();
        let comps: Vec<&str> = path.split('/').filter(|x| !x.is_empty()).collect();
        for i in 0..comps.len() {
            let parent = if i == 0 {
                ".".to_string()
            } else {
                comps[..i].join("/")
            };
            ops.push(Op::Mkdir {
                parent: c(&parent),
                name: c(comps[i]),
                mode: 0o755,
            });
        }
        ops.push(Op::Mount {
            src: c("tmpfs"),
            rel: rel.clone(),
            fstype: c("tmpfs"),
            flags: NOSUID | NODEV | flags,
            data: Some(data.clone()),
            optional: false,
        });
    }
}

/// Builds overlay mount options naming layers by short relative names (`i`, `0`, `1`, …,
/// `u`, `w`) that the child resolves after `chdir` into the link dir: legacy `mount(2)` data
/// is limited to one page (4096 bytes), which ~40 lowers with absolute store paths would
/// exceed. Docker's overlay2 driver solves it the same way (its `l/` dir).
///
/// `redirect_dir=off,metacopy=off` keep the upper dir a plain diff that a tar writer can
/// read: no redirect xattrs for renamed dirs, no data-less metacopy files after `chown`.
pub fn overlay_options(n_lowers: usize, with_init: bool) -> String {
    let names: Vec<String> = (0..n_lowers).map(|i| i.to_string()).collect();
    overlay_options_named(&names, with_init)
}

/// Overlay mount options for lowers named `names` (relative to the links dir, top-most
/// first), below the init layer `i` when `with_init`.
pub fn overlay_options_named(names: &[String], with_init: bool) -> String {
    let mut lower: Vec<&str> = Vec::with_capacity(names.len() + 1);
    if with_init {
        lower.push("i");
    }
    lower.extend(names.iter().map(String::as_str));
    format!(
        "lowerdir={},upperdir=u,workdir=w,redirect_dir=off,metacopy=off,index=off",
        lower.join(":")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(root: RootPlan, own_network: bool) -> PlanInput {
        PlanInput {
            root,
            own_network,
            hostname: c("abc123"),
            etc_files: vec![(c("etc/hosts"), c("/scratch/hosts"))],
            binds: vec![(c("/host/src"), c("run/src"), true)],
            tmpfs: Vec::new(),
            readonly_root: false,
            shm_size: None,
        }
    }

    #[test]
    fn tmpfs_options_split_into_mount_flags_and_data() {
        let cases: &[(&str, c_ulong, &str)] = &[
            ("size=65536k", 0, "size=65536k"),
            ("", 0, ""),
            ("noexec,size=1m", libc::MS_NOEXEC, "size=1m"),
            (
                "ro,mode=1777,noexec",
                libc::MS_RDONLY | libc::MS_NOEXEC,
                "mode=1777",
            ),
            ("rw,exec,nosuid,nodev,suid,dev,uid=1", 0, "uid=1"),
            // Anything else is tmpfs's to judge.
            ("noexec=1,,nr_inodes=9", 0, "noexec=1,nr_inodes=9"),
        ];
        for (opts, flags, data) in cases {
            assert_eq!(
                split_tmpfs_options(opts),
                (*flags, data.to_string()),
                "{opts}"
            );
        }
    }

    #[test]
    fn tmpfs_mounts_and_a_read_only_root_come_before_pivot_root() {
        let mut inp = input(overlay(), false);
        inp.tmpfs = vec![(c("run/app"), c("size=1m"), libc::MS_NOEXEC)];
        inp.readonly_root = true;
        let ops = build(&inp);
        let at = |want: &Op| {
            ops.iter()
                .position(|o| o == want)
                .unwrap_or_else(|| panic!("{want:?}"))
        };
        let mk_run = at(&Op::Mkdir {
            parent: c("."),
            name: c("run"),
            mode: 0o755,
        });
        let mk_app = at(&Op::Mkdir {
            parent: c("run"),
            name: c("app"),
            mode: 0o755,
        });
        let mount = at(&Op::Mount {
            src: c("tmpfs"),
            rel: c("run/app"),
            fstype: c("tmpfs"),
            flags: NOSUID | NODEV | libc::MS_NOEXEC,
            data: Some(c("size=1m")),
            optional: false,
        });
        let ro = at(&Op::RemountReadOnly(c(".")));
        let pivot = ops
            .iter()
            .position(|o| matches!(o, Op::PivotRoot(_)))
            .unwrap();
        assert!(mk_run < mk_app && mk_app < mount && mount < ro && ro < pivot);
        // Without the flag, no remount.
        assert!(!build(&input(overlay(), false))
            .iter()
            .any(|o| matches!(o, Op::RemountReadOnly(_))));
    }

    fn overlay() -> RootPlan {
        RootPlan::Overlay {
            links_dir: c("/scratch/l"),
            merged: c("/scratch/merged"),
            options: c(&overlay_options(2, true)),
        }
    }

    fn position(ops: &[Op], pred: impl Fn(&Op) -> bool) -> usize {
        ops.iter().position(pred).expect("op present")
    }

    #[test]
    fn mounts_come_in_dependency_order() {
        let ops = build(&input(overlay(), true));
        assert_eq!(ops[0], Op::PrivateMounts);
        let ovl = position(&ops, |o| matches!(o, Op::MountOverlay { .. }));
        let open = position(&ops, |o| matches!(o, Op::OpenRoot(_)));
        let proc_ = position(
            &ops,
            |o| matches!(o, Op::Mount { rel, .. } if rel.as_bytes() == b"proc"),
        );
        let sys = position(
            &ops,
            |o| matches!(o, Op::Mount { rel, .. } if rel.as_bytes() == b"sys"),
        );
        let first_mask = position(&ops, |o| matches!(o, Op::Mask(_)));
        let pivot = position(&ops, |o| matches!(o, Op::PivotRoot(_)));
        assert!(ovl < open && open < proc_ && proc_ < sys && sys < first_mask);
        assert!(first_mask < pivot);
        assert_eq!(ops.last(), Some(&Op::LoopbackUp));
        // Host networking: no loopback setup, the host's lo is shared.
        let host = build(&input(overlay(), false));
        assert!(!host.contains(&Op::LoopbackUp));
    }

    #[test]
    fn shm_is_dockers_64_mib_unless_sized() {
        let shm_data = |input: &PlanInput| {
            build(input)
                .into_iter()
                .find_map(|o| match o {
                    Op::Mount { rel, data, .. } if rel.as_bytes() == b"dev/shm" => data,
                    _ => None,
                })
                .expect("/dev/shm is mounted")
        };
        let mut inp = input(overlay(), true);
        assert_eq!(shm_data(&inp).as_bytes(), b"mode=1777,size=65536k");
        inp.shm_size = Some(128 << 20);
        assert_eq!(shm_data(&inp).as_bytes(), b"mode=1777,size=134217728");
    }

    #[test]
    fn proc_sys_and_dev_have_docker_flags() {
        let ops = build(&input(overlay(), true));
        let flags_of = |name: &[u8]| {
            ops.iter()
                .find_map(|o| match o {
                    Op::Mount { rel, flags, .. } if rel.as_bytes() == name => Some(*flags),
                    _ => None,
                })
                .expect("mounted")
        };
        assert_eq!(flags_of(b"proc"), NOSUID | NODEV | NOEXEC);
        assert_ne!(flags_of(b"sys") & libc::MS_RDONLY, 0);
        assert_ne!(flags_of(b"dev") & NODEV, 0);
        assert!(ops
            .iter()
            .any(|o| matches!(o, Op::Mount { data: Some(d), .. }
            if d.as_bytes() == b"newinstance,ptmxmode=0666,mode=0620,gid=5")));
    }

    /// Broke: volumes and `RUN --mount` dirs were plain binds, so a block device mknod'ed
    /// on one opened the host's disk.
    #[test]
    fn every_bind_but_the_host_device_nodes_is_nodev() {
        let mut inp = input(overlay(), true);
        inp.binds.push((c("/host/rw"), c("data"), false));
        let mut binds = 0;
        for op in build(&inp) {
            if let Op::BindHost { src, nodev, .. } = &op {
                let device = DEVICES
                    .iter()
                    .any(|d| src.as_bytes() == format!("/dev/{d}").as_bytes());
                assert_eq!(*nodev, !device, "{op:?}");
                binds += 1;
            }
        }
        // The device nodes, /etc/hosts, a read-only and a read-write bind.
        assert_eq!(binds, DEVICES.len() + 3);
    }

    #[test]
    fn every_docker_masked_and_readonly_path_is_planned() {
        let ops = build(&input(overlay(), true));
        for p in MASKED_PATHS {
            assert!(ops.contains(&Op::Mask(c(p))), "{p}");
        }
        for p in READONLY_PATHS {
            assert!(ops.contains(&Op::ReadOnly(c(p))), "{p}");
        }
        assert_eq!(MASKED_PATHS.len(), 12);
    }

    #[test]
    fn copy_root_is_bound_onto_itself() {
        let ops = build(&input(
            RootPlan::Copy {
                rootfs: c("/scratch/rootfs"),
            },
            false,
        ));
        assert_eq!(
            ops[1],
            Op::BindRoot {
                path: c("/scratch/rootfs")
            }
        );
        assert!(!ops.iter().any(|o| matches!(o, Op::MountOverlay { .. })));
        assert!(ops.contains(&Op::PivotRoot(c("/scratch/rootfs"))));
    }

    #[test]
    fn overlay_options_fit_one_page_even_with_500_lowers() {
        let opts = overlay_options(499, true);
        assert!(opts.len() < 4096, "{} bytes", opts.len());
        assert!(opts.starts_with("lowerdir=i:0:1:2:"));
        assert!(opts.contains(",upperdir=u,workdir=w,"));
        // ~50 lowers by absolute store path would not fit.
        let long = "/var/lib/kiln/snapshots/".len() + 64 + 1;
        assert!(long * 50 > 4096);
    }

    #[test]
    fn describe_names_the_target() {
        let ops = build(&input(overlay(), true));
        let d: Vec<String> = ops.iter().map(Op::describe).collect();
        assert!(d.contains(&"mount proc on /proc".to_string()), "{d:?}");
        assert!(
            d.contains(&"bind /dev/null on /dev/null".to_string()),
            "{d:?}"
        );
        assert!(d.contains(&"mkdir /dev/pts".to_string()), "{d:?}");
    }
}
