//! The fixed sets of values that CLI options take, as clap `ValueEnum`s: clap refuses
//! anything else (listing what it accepts), and the commands get a typed value instead of a
//! string to re-parse.

use clap::ValueEnum;

use kiln::build::PullPolicy;
use kiln::executor::isolation::Isolation;
use kiln::executor::NetworkMode;
use kiln::image::compression::Compression;

/// `--network` of `build` and `debug`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of their own with outbound access, no way to the host's loopback.
    Default,
    /// The host's network, its loopback services included.
    Host,
    /// Loopback only.
    None,
}

impl From<Network> for NetworkMode {
    fn from(n: Network) -> NetworkMode {
        match n {
            Network::Default => NetworkMode::Sandbox,
            Network::Host => NetworkMode::Host,
            Network::None => NetworkMode::None,
        }
    }
}

/// `--isolation` (also `KILN_ISOLATION`): how RUN steps and containers are isolated.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IsolationArg {
    /// The strongest mode the host allows (`kiln info` says which, and why).
    #[default]
    Auto,
    /// Root with namespaces and overlay mounts.
    Root,
    /// A user namespace over the user's subordinate ids (`/etc/subuid`, `newuidmap`).
    Rootless,
    /// No user namespaces and no mounts (an unprivileged container); detection only for now.
    Unprivileged,
}

impl IsolationArg {
    /// The mode asked for; `None` for automatic detection.
    pub fn forced(self) -> Option<Isolation> {
        match self {
            IsolationArg::Auto => None,
            IsolationArg::Root => Some(Isolation::Root),
            IsolationArg::Rootless => Some(Isolation::Rootless),
            IsolationArg::Unprivileged => Some(Isolation::Unprivileged),
        }
    }
}

/// `build --pull`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pull {
    /// When the image is not in the store.
    Missing,
    /// Always (follow moved tags).
    Always,
    /// Never.
    Never,
}

impl From<Pull> for PullPolicy {
    fn from(p: Pull) -> PullPolicy {
        match p {
            Pull::Missing => PullPolicy::Missing,
            Pull::Always => PullPolicy::Always,
            Pull::Never => PullPolicy::Never,
        }
    }
}

/// `build --pull`: Docker's bool flag (`--pull` alone is `true`: pull every base image), and
/// kiln's policies by name.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildPull {
    /// Pull every base image, so a moved tag is followed (what `--pull` alone means).
    True,
    /// Pull only images the store lacks (Docker's default).
    False,
    /// Pull only images the store lacks.
    Missing,
    /// Pull every base image.
    Always,
    /// Never pull: the store must have the images.
    Never,
}

impl From<BuildPull> for PullPolicy {
    fn from(p: BuildPull) -> PullPolicy {
        match p {
            BuildPull::True | BuildPull::Always => PullPolicy::Always,
            BuildPull::False | BuildPull::Missing => PullPolicy::Missing,
            BuildPull::Never => PullPolicy::Never,
        }
    }
}

/// `build --progress`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// `tty` on a terminal, `plain` elsewhere.
    Auto,
    /// A live view.
    Tty,
    /// One line per event.
    Plain,
    /// One JSON object per event.
    Json,
    /// Nothing but errors.
    Quiet,
}

/// `build --allow`: entitlements.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entitlement {
    /// `RUN --network=host` may use the host's network.
    #[value(name = "network.host")]
    NetworkHost,
}

/// `--compression` of `push` and `build --push`: the compressions a registry takes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushCompression {
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl From<PushCompression> for Compression {
    fn from(c: PushCompression) -> Compression {
        match c {
            PushCompression::Gzip => Compression::Gzip,
            PushCompression::Zstd => Compression::Zstd,
        }
    }
}

/// `save --compression`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveCompression {
    /// Plain tars.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl From<SaveCompression> for Compression {
    fn from(c: SaveCompression) -> Compression {
        match c {
            SaveCompression::None => Compression::None,
            SaveCompression::Gzip => Compression::Gzip,
            SaveCompression::Zstd => Compression::Zstd,
        }
    }
}

/// The `type=` of `build --output`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputType {
    /// The image's files, in a directory.
    Local,
    /// The image's files, as a tar.
    Tar,
    /// An OCI image archive.
    Oci,
    /// A `docker load` archive.
    Docker,
    /// The image in the store (pushed with `push=true`).
    Image,
    /// Pushed to its registry.
    Registry,
}

/// `build --on-error`: what a failed RUN step leads to.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// The build fails.
    #[default]
    Fail,
    /// A shell in the failed step's sandbox, on a terminal; then the build fails.
    Shell,
}

/// `kiln completion`: the shells a completion script is written for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionShell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(s: CompletionShell) -> clap_complete::Shell {
        match s {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dockers() {
        let names = |v: &[Entitlement]| -> Vec<String> {
            v.iter()
                .filter_map(|e| e.to_possible_value())
                .map(|p| p.get_name().to_string())
                .collect()
        };
        assert_eq!(names(Entitlement::value_variants()), ["network.host"]);
        assert_eq!(
            OutputType::from_str("registry", false),
            Ok(OutputType::Registry)
        );
        assert!(OutputType::from_str("Registry", false).is_err());
    }

    fn parse(args: &[&str]) -> Result<super::super::Cli, clap::Error> {
        use clap::Parser;
        super::super::Cli::try_parse_from(std::iter::once("kiln").chain(args.iter().copied()))
    }

    // The options were strings checked by a list and matched again as strings later; a bad
    // value must still be clap's usage error (exit 2), naming what is accepted.
    #[test]
    fn fixed_value_options_refuse_other_values_as_usage_errors() {
        for args in [
            &["build", "--progress", "fancy", "."][..],
            &["build", "--pull=sometimes", "."],
            &["build", "--network", "bridge", "."],
            &["build", "--allow", "security.insecure", "."],
            &["build", "--compression", "none", "."],
            &["push", "--compression", "xz", "x"],
            &["save", "--compression", "bzip2", "x"],
            &["build", "--on-error", "retry", "."],
            &["completion", "powershell"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{args:?}");
            assert!(e.use_stderr());
            assert!(e.to_string().contains("possible values"), "{args:?}: {e}");
        }
    }

    #[test]
    fn fixed_value_options_take_dockers_values() {
        use super::super::Command;
        let cli = parse(&[
            "build",
            "--progress=plain",
            "--pull=never",
            "--network=host",
            "--allow=network.host",
            "--compression=zstd",
            ".",
        ])
        .unwrap();
        let Command::Build(b) = cli.command else {
            panic!("not a build")
        };
        assert_eq!(b.progress, ProgressMode::Plain);
        assert_eq!(PullPolicy::from(b.pull), PullPolicy::Never);
        assert_eq!(NetworkMode::from(b.network), NetworkMode::Host);
        assert_eq!(b.allow, [Entitlement::NetworkHost]);
        assert_eq!(Compression::from(b.compression), Compression::Zstd);
        let Command::Build(b) = parse(&["build", "."]).unwrap().command else {
            panic!("not a build")
        };
        assert_eq!(
            (b.progress, b.pull, b.network, b.compression),
            (
                ProgressMode::Auto,
                BuildPull::Missing,
                Network::Default,
                PushCompression::Gzip
            )
        );
    }
}
