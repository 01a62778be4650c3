//! The platform (os/arch/variant) an image is recorded for, in Go's naming, and the host's.

use std::fmt;

/// `--platform` is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {value:?}: expected os/arch[/variant]")]
pub struct PlatformError {
    /// The value given (truncated).
    pub value: String,
}

/// An image platform as OCI configs name it (`linux`, `amd64`, `v7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system (`GOOS`).
    pub os: String,
    /// Architecture (`GOARCH`).
    pub architecture: String,
    /// CPU variant (`v7` for 32-bit ARM), if any.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running kiln, as Docker names it.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Parses `os/arch[/variant]` (`linux/arm64`, `linux/arm/v7`), as
    /// `--platform` takes it. Names are lowercased, as containerd does.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let bad = || PlatformError {
            value: s.chars().take(64).collect(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }

    /// BuildKit's (containerd's) normal form of a platform: Go's architecture names for the
    /// kernel's (`x86_64` → `amd64`, `aarch64` → `arm64`, `armhf` → `arm/v7`), 32-bit ARM
    /// with its default variant (`linux/arm` → `linux/arm/v7`), and the variants that say
    /// nothing dropped (`arm64/v8`, `amd64/v1`).
    pub fn normalized(&self) -> Platform {
        let os = match self.os.as_str() {
            "macos" => "darwin".to_owned(),
            other => other.to_owned(),
        };
        let variant = self.variant.as_deref();
        let (architecture, variant) = match (self.architecture.as_str(), variant) {
            ("x86_64" | "x86-64" | "amd64", None | Some("v1")) => ("amd64", None),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v),
            ("i386" | "i486" | "i586" | "i686", _) => ("386", None),
            ("aarch64" | "arm64", None | Some("v8" | "8")) => ("arm64", None),
            ("aarch64" | "arm64", v) => ("arm64", v),
            ("armhf", _) => ("arm", Some("v7")),
            ("armel", _) => ("arm", Some("v6")),
            ("arm", None | Some("7")) => ("arm", Some("v7")),
            ("arm", Some("5")) => ("arm", Some("v5")),
            ("arm", Some("6")) => ("arm", Some("v6")),
            ("arm", Some("8")) => ("arm", Some("v8")),
            (other, v) => (other, v),
        };
        Platform {
            os,
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// The variant as BuildKit's `TARGETVARIANT` gives it (empty when there is none).
    pub fn variant_str(&self) -> &str {
        self.variant.as_deref().unwrap_or("")
    }

    /// True when an image for `os`/`arch`/`variant` suits this platform
    /// (a missing variant matches any).
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == arch
            && match (&self.variant, variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_platforms() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert_eq!(
            Platform::parse("Linux/AMD64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in ["", "linux", "linux/", "a/b/c/d", "linux/amd 64", "../x"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn normalizes_as_buildkit() {
        for (given, want) in [
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/i686", "linux/386"),
            ("linux/s390x", "linux/s390x"),
        ] {
            let p = Platform::parse(given).unwrap().normalized();
            assert_eq!(p.to_string(), want, "{given}");
        }
        assert_eq!(Platform::host().normalized(), Platform::host());
    }

    #[test]
    fn host_is_in_go_naming() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(!h.architecture.contains('_'), "{h}");
        assert!(h.matches(&h.os, &h.architecture, None));
    }
}
