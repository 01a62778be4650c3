//! Resource limits of a step's process (`--ulimit name=soft[:hard]`, Docker's syntax), never
//! above kiln's own hard limit: raising one needs `CAP_SYS_RESOURCE`, which kiln does not
//! count on, so such a request is refused before anything runs instead of failing mid-build.

use std::fmt;

/// Docker's `--ulimit` names and the resources they set.
const NAMES: &[(&str, libc::__rlimit_resource_t)] = &[
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

/// One resource limit for a step's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    name: &'static str,
    resource: libc::__rlimit_resource_t,
    /// The soft limit ([`libc::RLIM_INFINITY`] for unlimited).
    pub soft: u64,
    /// The hard limit ([`libc::RLIM_INFINITY`] for unlimited).
    pub hard: u64,
}

/// Why a `--ulimit` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    /// Not `name=soft[:hard]` with numbers (or -1).
    #[error("invalid ulimit argument: {0}")]
    Syntax(String),
    /// A name Docker does not know.
    #[error("invalid ulimit type: {0}")]
    UnknownName(String),
    /// The soft limit is above the hard one.
    #[error("ulimit soft limit must be less than or equal to hard limit: {} > {}", Shown(*.soft), Shown(*.hard))]
    SoftAboveHard {
        /// The soft limit.
        soft: u64,
        /// The hard limit.
        hard: u64,
    },
    /// The hard limit is above kiln's own, which only `CAP_SYS_RESOURCE` may raise.
    #[error(
        "--ulimit {name}={}: kiln's own hard limit for {name} is {}, and a step's limit can only be lowered (raising it needs CAP_SYS_RESOURCE)",
        Shown(*.hard), Shown(*.max)
    )]
    AboveHardLimit {
        /// The resource's name.
        name: &'static str,
        /// The hard limit asked for.
        hard: u64,
        /// kiln's own hard limit.
        max: u64,
    },
}

/// A limit as Docker writes it: a number, or -1 for unlimited.
struct Shown(u64);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == libc::RLIM_INFINITY {
            f.write_str("-1")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl fmt::Display for Ulimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.name, Shown(self.soft), Shown(self.hard))
    }
}

fn limit(s: &str, spec: &str) -> Result<u64, UlimitError> {
    if s == "-1" {
        return Ok(libc::RLIM_INFINITY);
    }
    s.parse::<u64>()
        .map_err(|_| UlimitError::Syntax(spec.to_string()))
}

impl Ulimit {
    /// Parses `name=soft[:hard]` (`nofile=1024:2048`; a lone value is both limits; -1 is
    /// unlimited), as Docker's `--ulimit` does, and checks it against kiln's own hard limit
    /// ([`Ulimit::check`]).
    pub fn parse(spec: &str) -> Result<Ulimit, UlimitError> {
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| UlimitError::Syntax(spec.to_string()))?;
        let (name, resource) = NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .copied()
            .ok_or_else(|| UlimitError::UnknownName(name.to_string()))?;
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (limit(s, spec)?, limit(h, spec)?),
            None => {
                let v = limit(values, spec)?;
                (v, v)
            }
        };
        if soft > hard {
            return Err(UlimitError::SoftAboveHard { soft, hard });
        }
        let u = Ulimit {
            name,
            resource,
            soft,
            hard,
        };
        u.check()?;
        Ok(u)
    }

    /// The resource's name (`nofile`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Refuses a hard limit above kiln's own: only lowering is possible without
    /// `CAP_SYS_RESOURCE`.
    pub fn check(&self) -> Result<(), UlimitError> {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(self.resource, &mut cur) } != 0 {
            return Ok(()); // an unknown resource on this kernel: setting it will say so
        }
        if self.hard > cur.rlim_max {
            return Err(UlimitError::AboveHardLimit {
                name: self.name,
                hard: self.hard,
                max: cur.rlim_max,
            });
        }
        Ok(())
    }

    /// Sets the limit on process `pid` (the step's, before its command starts).
    pub(crate) fn apply(&self, pid: libc::pid_t) -> std::io::Result<()> {
        let new = libc::rlimit {
            rlim_cur: self.soft,
            rlim_max: self.hard,
        };
        // SAFETY: prlimit reads the struct it is given and writes nothing (old is null).
        if unsafe { libc::prlimit(pid, self.resource, &new, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hard(resource: libc::__rlimit_resource_t) -> u64 {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(resource, &mut cur) }, 0);
        cur.rlim_max
    }

    #[test]
    fn dockers_syntax_and_messages() {
        let u = Ulimit::parse("nofile=64:128").unwrap();
        assert_eq!((u.name(), u.soft, u.hard), ("nofile", 64, 128));
        assert_eq!(u.to_string(), "nofile=64:128");
        let u = Ulimit::parse("core=0").unwrap();
        assert_eq!((u.soft, u.hard), (0, 0));
        for (spec, msg) in [
            ("nofile", "invalid ulimit argument: nofile"),
            ("nofile=a:b", "invalid ulimit argument: nofile=a:b"),
            ("nofiles=1", "invalid ulimit type: nofiles"),
            (
                "nofile=20:10",
                "ulimit soft limit must be less than or equal to hard limit: 20 > 10",
            ),
        ] {
            assert_eq!(Ulimit::parse(spec).unwrap_err().to_string(), msg, "{spec}");
        }
    }

    // Without CAP_SYS_RESOURCE a raise fails in the middle of a build; kiln refuses it
    // before anything runs.
    #[test]
    fn a_hard_limit_above_kilns_own_is_refused() {
        let max = hard(libc::RLIMIT_NOFILE);
        if max != libc::RLIM_INFINITY {
            let e = Ulimit::parse(&format!("nofile={}", max + 1)).unwrap_err();
            assert!(
                matches!(e, UlimitError::AboveHardLimit { name: "nofile", .. }),
                "{e}"
            );
            assert!(e.to_string().contains("can only be lowered"), "{e}");
        }
        assert!(Ulimit::parse(&format!("nofile={max}")).is_ok());
        if hard(libc::RLIMIT_CORE) != libc::RLIM_INFINITY {
            assert!(Ulimit::parse("core=-1").is_err());
        }
    }
}
