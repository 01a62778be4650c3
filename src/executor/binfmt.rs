//! Which platforms this host can run programs of: its own, and the foreign ones binfmt_misc
//! hands to a registered emulator (QEMU's user mode) with the F (fix binary) flag.
//!
//! A RUN step of a foreign platform needs no help from the sandbox: the kernel sees an ELF
//! file of another machine, finds the binfmt_misc entry whose magic and mask match its header,
//! and starts the entry's interpreter (`qemu-aarch64-static`) with it. The interpreter is
//! looked up by path when the program starts, in the mount namespace and root of the step,
//! where it does not exist, unless the entry was registered with the F flag: then the kernel
//! opened the interpreter when it was registered, and uses that open file everywhere. So an
//! entry without F is as good as none for kiln, and [`support`] says so before any step runs,
//! instead of an "exec format error" deep in a step's log.
//!
//! The entries are read from `/proc/sys/fs/binfmt_misc` ([`DEFAULT_DIR`]), or from the
//! directory `KILN_BINFMT_DIR` names ([`DIR_ENV`]; tests point it at a directory without the
//! entry to see the error). It is only read, never written: registering emulators is the
//! host's one-time set-up (`scripts/binfmt-setup.sh`, see the README's "Platforms").

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::common::platform::Platform;

/// Where the kernel shows binfmt_misc registrations (once `binfmt_misc` is mounted there).
pub const DEFAULT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The variable that replaces [`DEFAULT_DIR`] for the emulation check (tests use it).
pub const DIR_ENV: &str = "KILN_BINFMT_DIR";

/// How to get emulation, as every error below says it.
const HOW: &str = "install QEMU's user-mode emulators (apt-get install qemu-user-static) and \
register them with the F flag (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc, \
then write each /usr/lib/binfmt.d/qemu-*.conf line to /proc/sys/fs/binfmt_misc/register; \
kiln's scripts/binfmt-setup.sh does both)";

/// Largest registration file read (the kernel's are a few hundred bytes).
const MAX_ENTRY: u64 = 4096;

/// Why the host cannot run programs of a platform.
#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    /// kiln knows no ELF machine for the platform, so no emulator can be matched to it.
    #[error(
        "cannot run {platform} programs on this {host} host: kiln knows no ELF machine for it"
    )]
    Unknown {
        /// The platform.
        platform: String,
        /// This host's platform.
        host: String,
    },
    /// binfmt_misc is not mounted (or not readable) where kiln looks.
    #[error("cannot run {platform} programs on this {host} host: binfmt_misc is not mounted at {} ({how})", dir.display(), how = HOW)]
    NotMounted {
        /// The platform.
        platform: String,
        /// This host's platform.
        host: String,
        /// Where kiln looked.
        dir: PathBuf,
    },
    /// binfmt_misc is switched off as a whole (`status` says `disabled`).
    #[error("cannot run {platform} programs on this {host} host: binfmt_misc is disabled ({}/status); echo 1 > it to enable it", dir.display())]
    Disabled {
        /// The platform.
        platform: String,
        /// This host's platform.
        host: String,
        /// Where kiln looked.
        dir: PathBuf,
    },
    /// No registration matches the platform's programs.
    #[error("cannot run {platform} programs on this {host} host: no emulator is registered for them in {} ({how})", dir.display(), how = HOW)]
    NoEmulator {
        /// The platform.
        platform: String,
        /// This host's platform.
        host: String,
        /// Where kiln looked.
        dir: PathBuf,
    },
    /// The matching registration is switched off.
    #[error("cannot run {platform} programs on this {host} host: the emulator {entry} is registered but disabled; echo 1 > {}/{entry} to enable it", dir.display())]
    EntryDisabled {
        /// The platform.
        platform: String,
        /// This host's platform.
        host: String,
        /// Where kiln looked.
        dir: PathBuf,
        /// The registration's name.
        entry: String,
    },
    /// The matching registration lacks the F flag, so its interpreter would be looked up
    /// inside the step's root, where it is not.
    #[error("cannot run {platform} programs on this {host} host: the emulator {entry} is registered without the F (fix binary) flag, so it cannot start inside a sandbox; register it again with F (echo -1 > {}/{entry}, then {how})", dir.display(), how = HOW)]
    NoFixBinary {
        /// The platform.
        platform: String,
        /// This host's platform.
        host: String,
        /// Where kiln looked.
        dir: PathBuf,
        /// The registration's name.
        entry: String,
    },
}

/// How this host runs programs of a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The CPU runs them.
    Native,
    /// binfmt_misc hands them to an emulator.
    Emulated {
        /// The registration's name (`qemu-aarch64`).
        entry: String,
        /// The emulator.
        interpreter: PathBuf,
    },
}

/// One binfmt_misc registration of the magic kind (extension-matched ones are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name (the file's).
    pub name: String,
    /// Whether it is switched on.
    pub enabled: bool,
    /// The program it runs.
    pub interpreter: PathBuf,
    /// Its flags (`POF`).
    pub flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

impl Entry {
    /// A registration from the text the kernel shows for it; `None` for one that is not of
    /// the magic kind, or not readable as one.
    pub fn parse(name: &str, text: &str) -> Option<Entry> {
        let mut entry = Entry {
            name: name.to_string(),
            enabled: false,
            interpreter: PathBuf::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "enabled" => entry.enabled = true,
                "disabled" => entry.enabled = false,
                "interpreter" => entry.interpreter = PathBuf::from(value),
                "flags:" => entry.flags = value.trim().to_string(),
                "offset" => entry.offset = value.trim().parse().ok()?,
                "magic" => entry.magic = decode_hex(value.trim())?,
                "mask" => entry.mask = decode_hex(value.trim())?,
                _ => {}
            }
        }
        if entry.magic.is_empty()
            || (!entry.mask.is_empty() && entry.mask.len() != entry.magic.len())
        {
            return None;
        }
        Some(entry)
    }

    /// Whether the kernel would hand a file starting with `header` to this entry.
    pub fn matches(&self, header: &[u8]) -> bool {
        let Some(window) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        window.iter().enumerate().all(|(i, b)| {
            let mask = self.mask.get(i).copied().unwrap_or(0xff);
            b & mask == self.magic[i] & mask
        })
    }

    /// Whether it was registered with F: its interpreter works inside any root.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }
}

/// Where the emulation check reads registrations: `$KILN_BINFMT_DIR`, else [`DEFAULT_DIR`].
pub fn dir() -> PathBuf {
    match std::env::var_os(DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_DIR),
    }
}

/// The platforms kiln can tell apart by their programs' ELF headers, in Go's names.
pub const KNOWN: &[&str] = &[
    "linux/amd64",
    "linux/386",
    "linux/arm64",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
    "linux/mips64le",
    "linux/loong64",
];

/// The start of an executable of `platform` (ELF identification, type, machine), padded
/// with zeros, or `None` for a platform kiln knows no machine of.
pub fn elf_header(platform: &Platform) -> Option<[u8; 64]> {
    // (64-bit, big-endian, e_machine) by Go's architecture name.
    let (wide, big, machine): (bool, bool, u16) = match platform.architecture.as_str() {
        "amd64" => (true, false, 0x3e),
        "386" => (false, false, 0x03),
        "arm64" => (true, false, 0xb7),
        "arm" => (false, false, 0x28),
        "ppc64le" => (true, false, 0x15),
        "ppc64" => (true, true, 0x15),
        "s390x" => (true, true, 0x16),
        "riscv64" => (true, false, 0xf3),
        "mips64le" => (true, false, 0x08),
        "mips64" => (true, true, 0x08),
        "mipsle" => (false, false, 0x08),
        "mips" => (false, true, 0x08),
        "loong64" => (true, false, 0x102),
        _ => return None,
    };
    let mut h = [0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = if wide { 2 } else { 1 };
    h[5] = if big { 2 } else { 1 };
    h[6] = 1; // EI_VERSION
    let (e_type, e_machine) = if big {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    } else {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    };
    h[16..18].copy_from_slice(&e_type);
    h[18..20].copy_from_slice(&e_machine);
    Some(h)
}

/// Whether the host's CPU runs programs of `platform` itself: its own platform, and 32-bit
/// x86 on x86-64 (every distribution kernel has the compat layer).
pub fn is_native(platform: &Platform) -> bool {
    let host = Platform::host();
    if platform.os != host.os {
        return false;
    }
    platform.architecture == host.architecture
        || (host.architecture == "amd64" && platform.architecture == "386")
}

/// The magic registrations in `dir`, and whether binfmt_misc is enabled there; `None` when
/// `dir` is no binfmt_misc (not mounted).
pub fn entries(dir: &Path) -> Option<(bool, Vec<Entry>)> {
    let status = read_small(&dir.join("status"))?;
    let enabled = status.trim() == "enabled";
    let mut out = Vec::new();
    let Ok(list) = std::fs::read_dir(dir) else {
        return Some((enabled, out));
    };
    let mut names: Vec<String> = list
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "status" && n != "register")
        .collect();
    names.sort();
    for name in names {
        if let Some(e) = read_small(&dir.join(&name)).and_then(|t| Entry::parse(&name, &t)) {
            out.push(e);
        }
    }
    Some((enabled, out))
}

/// Bytes from the kernel's lowercase hex (`7f454c46`); `None` for anything else.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * MAX_ENTRY as usize {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn read_small(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_ENTRY).read_to_string(&mut s).ok()?;
    Some(s)
}

/// How this host runs programs of `platform`, reading registrations from `dir`: natively,
/// through an enabled emulator registered with F, or not at all (the error says why and how
/// to set emulation up).
pub fn support(platform: &Platform, dir: &Path) -> Result<Support, BinfmtError> {
    if is_native(platform) {
        return Ok(Support::Native);
    }
    let host = Platform::host().to_string();
    let Some(header) = elf_header(platform).filter(|_| platform.os == "linux") else {
        return Err(BinfmtError::Unknown {
            platform: platform.to_string(),
            host,
        });
    };
    let fail = |f: fn(String, String, PathBuf) -> BinfmtError| {
        Err(f(platform.to_string(), host.clone(), dir.to_path_buf()))
    };
    let Some((enabled, entries)) = entries(dir) else {
        return fail(|platform, host, dir| BinfmtError::NotMounted {
            platform,
            host,
            dir,
        });
    };
    if !enabled {
        return fail(|platform, host, dir| BinfmtError::Disabled {
            platform,
            host,
            dir,
        });
    }
    let matching: Vec<&Entry> = entries.iter().filter(|e| e.matches(&header)).collect();
    // The kernel tries the newest registration first; any usable one will do for kiln, and
    // the error names the first unusable one.
    if let Some(e) = matching.iter().find(|e| e.enabled && e.fix_binary()) {
        return Ok(Support::Emulated {
            entry: e.name.clone(),
            interpreter: e.interpreter.clone(),
        });
    }
    let Some(first) = matching.first() else {
        return fail(|platform, host, dir| BinfmtError::NoEmulator {
            platform,
            host,
            dir,
        });
    };
    let (platform, dir, entry) = (platform.to_string(), dir.to_path_buf(), first.name.clone());
    Err(if !first.enabled {
        BinfmtError::EntryDisabled {
            platform,
            host,
            dir,
            entry,
        }
    } else {
        BinfmtError::NoFixBinary {
            platform,
            host,
            dir,
            entry,
        }
    })
}

/// The platforms of [`KNOWN`] this host can run, natively or emulated, with how (`kiln
/// info`'s list).
pub fn runnable(dir: &Path) -> Vec<(Platform, Support)> {
    KNOWN
        .iter()
        .filter_map(|p| Platform::parse(p).ok())
        .filter_map(|p| support(&p, dir).ok().map(|s| (p, s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // What Debian's qemu-user-static registers (its /usr/lib/binfmt.d lines), as the kernel
    // shows them.
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const ARM: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\n\
        flags: POF\noffset 0\nmagic 7f454c4601010100000000000000000002002800\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn fake(entries: &[(&str, &str)], status: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), status).unwrap();
        std::fs::write(d.path().join("register"), "").unwrap();
        for (name, text) in entries {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap().normalized()
    }

    #[test]
    fn registrations_match_their_machines_only() {
        let a = Entry::parse("qemu-aarch64", AARCH64).unwrap();
        assert!(a.enabled && a.fix_binary());
        assert!(a.matches(&elf_header(&p("linux/arm64")).unwrap()));
        assert!(!a.matches(&elf_header(&p("linux/arm")).unwrap()));
        assert!(!a.matches(&elf_header(&p("linux/riscv64")).unwrap()));
        let arm = Entry::parse("qemu-arm", ARM).unwrap();
        assert!(arm.matches(&elf_header(&p("linux/arm/v7")).unwrap()));
        assert!(arm.matches(&elf_header(&p("linux/arm/v6")).unwrap()));
        assert!(!arm.matches(&elf_header(&p("linux/386")).unwrap()));
        assert!(
            Entry::parse("jar", "enabled\ninterpreter /x\nflags: \nextension .jar\n").is_none()
        );
        assert!(Entry::parse("bad", "enabled\nmagic zz\n").is_none());
        assert!(Entry::parse("bad", "enabled\nmagic 7f45\nmask ff\n").is_none());
    }

    #[test]
    fn support_says_why_a_foreign_platform_cannot_run() {
        let foreign = if Platform::host().architecture == "arm64" {
            p("linux/riscv64")
        } else {
            p("linux/arm64")
        };
        assert_eq!(
            support(&Platform::host(), Path::new("/nonexistent")).unwrap(),
            Support::Native
        );
        let e = support(&foreign, Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(e, BinfmtError::NotMounted { .. }), "{e}");
        let empty = fake(&[], "enabled\n");
        let e = support(&foreign, empty.path()).unwrap_err();
        assert!(matches!(e, BinfmtError::NoEmulator { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&foreign.to_string()), "{msg}");
        assert!(msg.contains("apt-get install qemu-user-static"), "{msg}");
        let off = fake(&[], "disabled\n");
        assert!(matches!(
            support(&foreign, off.path()),
            Err(BinfmtError::Disabled { .. })
        ));
        assert!(matches!(
            support(&p("linux/sparc"), empty.path()),
            Err(BinfmtError::Unknown { .. })
        ));

        if Platform::host().architecture != "amd64" {
            return;
        }
        let no_f = AARCH64.replace("POF", "PO");
        let d = fake(&[("qemu-aarch64", &no_f)], "enabled\n");
        let e = support(&foreign, d.path()).unwrap_err();
        assert!(matches!(e, BinfmtError::NoFixBinary { .. }), "{e}");
        assert!(e.to_string().contains("F (fix binary)"), "{e}");
        let disabled = AARCH64.replace("enabled", "disabled");
        let d = fake(&[("qemu-aarch64", &disabled)], "enabled\n");
        assert!(matches!(
            support(&foreign, d.path()),
            Err(BinfmtError::EntryDisabled { .. })
        ));
        let d = fake(&[("qemu-aarch64", AARCH64), ("qemu-arm", ARM)], "enabled\n");
        assert_eq!(
            support(&foreign, d.path()).unwrap(),
            Support::Emulated {
                entry: "qemu-aarch64".into(),
                interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into()
            }
        );
        let names: Vec<String> = runnable(d.path())
            .into_iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "linux/amd64",
                "linux/386",
                "linux/arm64",
                "linux/arm/v7",
                "linux/arm/v6"
            ]
        );
    }
}
