//! `--help` of the commands Docker users type most, in Docker's shape: flags sorted by long
//! name as Docker's CLI (cobra) sorts them, kiln's own flags in their alphabetical place, and
//! Docker's description for each flag that means what Docker's does (kiln's text is kept
//! when it is Docker's plus a detail, such as the syntax of `-p`).
//!
//! The descriptions are those of `docker <cmd> --help` (Docker 28; `docker build`'s legacy
//! builder, as no buildx was installed to compare with). A flag whose meaning differs in kiln
//! (`build --pull` takes a policy, `build --cache-from` cache sources, `run --rm` keeps
//! anonymous volumes) keeps kiln's own description.

use clap::Command;

/// `docker build`'s descriptions of the flags kiln shares.
const BUILD: &[(&str, &str)] = &[
    ("add-host", "Add a custom host-to-IP mapping (\"host:ip\")"),
    ("build-arg", "Set build-time variables"),
    (
        "file",
        "Name of the Dockerfile (Default is \"PATH/Dockerfile\")",
    ),
    ("iidfile", "Write the image ID to the file"),
    ("label", "Set metadata for an image"),
    (
        "network",
        "Set the networking mode for the RUN instructions during build",
    ),
    ("no-cache", "Do not use cache when building the image"),
    (
        "quiet",
        "Suppress the build output and print image ID on success",
    ),
    (
        "tag",
        "Name and optionally a tag in the \"name:tag\" format",
    ),
    ("target", "Set the target build stage to build."),
];

/// `docker run`'s.
const RUN: &[(&str, &str)] = &[
    ("add-host", "Add a custom host-to-IP mapping (host:ip)"),
    ("cpu-shares", "CPU shares (relative weight)"),
    ("cpus", "Number of CPUs"),
    ("cpuset-cpus", "CPUs in which to allow execution (0-3, 0,1)"),
    (
        "detach",
        "Run container in background and print container ID",
    ),
    (
        "entrypoint",
        "Overwrite the default ENTRYPOINT of the image",
    ),
    ("env", "Set environment variables"),
    ("env-file", "Read in a file of environment variables"),
    ("health-cmd", "Command to run to check health"),
    (
        "health-interval",
        "Time between running the check (ms|s|m|h)",
    ),
    (
        "health-retries",
        "Consecutive failures needed to report unhealthy",
    ),
    (
        "health-timeout",
        "Maximum time to allow one check to run (ms|s|m|h)",
    ),
    ("help", "Print usage"),
    ("hostname", "Container host name"),
    (
        "init",
        "Run an init inside the container that forwards signals and reaps processes",
    ),
    ("interactive", "Keep STDIN open even if not attached"),
    ("label", "Set meta data on a container"),
    ("memory", "Memory limit"),
    (
        "memory-swap",
        "Swap limit equal to memory plus swap: '-1' to enable unlimited swap",
    ),
    ("mount", "Attach a filesystem mount to the container"),
    ("name", "Assign a name to the container"),
    ("network", "Connect a container to a network"),
    (
        "no-healthcheck",
        "Disable any container-specified HEALTHCHECK",
    ),
    (
        "pids-limit",
        "Tune container pids limit (set -1 for unlimited)",
    ),
    ("publish", "Publish a container's port(s) to the host"),
    ("publish-all", "Publish all exposed ports to random ports"),
    (
        "read-only",
        "Mount the container's root filesystem as read only",
    ),
    ("restart", "Restart policy to apply when a container exits"),
    ("sig-proxy", "Proxy received signals to the process"),
    ("stop-signal", "Signal to stop the container"),
    ("stop-timeout", "Timeout (in seconds) to stop a container"),
    ("tmpfs", "Mount a tmpfs directory"),
    ("tty", "Allocate a pseudo-TTY"),
    ("user", "Username or UID (format: <name|uid>[:<group|gid>])"),
    ("volume", "Bind mount a volume"),
    ("workdir", "Working directory inside the container"),
];

/// `docker ps`'s.
const PS: &[(&str, &str)] = &[
    ("all", "Show all containers (default shows just running)"),
    ("filter", "Filter output based on conditions provided"),
    ("format", "Format output using a custom template"),
    (
        "last",
        "Show n last created containers (includes all states)",
    ),
    (
        "latest",
        "Show the latest created container (includes all states)",
    ),
    ("no-trunc", "Don't truncate output"),
    ("quiet", "Only display container IDs"),
    ("size", "Display total file sizes"),
];

/// `docker images`'.
const IMAGES: &[(&str, &str)] = &[
    ("all", "Show all images (default hides intermediate images)"),
    ("digests", "Show digests"),
    ("filter", "Filter output based on conditions provided"),
    ("format", "Format output using a custom template"),
    ("no-trunc", "Don't truncate output"),
    ("quiet", "Only show image IDs"),
];

/// `docker exec`'s.
const EXEC: &[(&str, &str)] = &[
    ("detach", "Detached mode: run command in the background"),
    ("env", "Set environment variables"),
    ("env-file", "Read in a file of environment variables"),
    ("interactive", "Keep STDIN open even if not attached"),
    ("privileged", "Give extended privileges to the command"),
    ("tty", "Allocate a pseudo-TTY"),
    (
        "user",
        "Username or UID (format: \"<name|uid>[:<group|gid>]\")",
    ),
    ("workdir", "Working directory inside the container"),
];

/// The commands whose help is in Docker's shape, with Docker's descriptions.
pub(crate) const COMMANDS: &[(&str, &[(&str, &str)])] = &[
    ("build", BUILD),
    ("run", RUN),
    ("create", RUN),
    ("ps", PS),
    ("images", IMAGES),
    ("exec", EXEC),
];

/// The whole command line with those commands' help in Docker's shape.
pub(crate) fn apply(mut cli: Command) -> Command {
    for (name, docker) in COMMANDS {
        if cli.find_subcommand(name).is_some() {
            cli = cli.mut_subcommand(name, |c| dockers_shape(c, docker));
        }
    }
    cli
}

/// One command's flags sorted by long name (a flag without one by its short letter), and
/// Docker's descriptions where kiln's are not Docker's already.
fn dockers_shape(cmd: Command, docker: &[(&str, &'static str)]) -> Command {
    let mut flags: Vec<(String, clap::Id)> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_global_set())
        .map(|a| {
            let key = match (a.get_long(), a.get_short()) {
                (Some(l), _) => l.to_string(),
                (None, Some(s)) => s.to_string(),
                (None, None) => a.get_id().to_string(),
            };
            (key, a.get_id().clone())
        })
        .collect();
    flags.sort();
    let mut cmd = cmd;
    for (i, (long, id)) in flags.into_iter().enumerate() {
        let text = docker.iter().find(|(l, _)| *l == long).map(|(_, t)| *t);
        cmd = cmd.mut_arg(id, |a| {
            let a = a.display_order(i);
            match text {
                Some(t) if !a.get_help().is_some_and(|h| h.to_string().starts_with(t)) => {
                    a.help(t).long_help(None)
                }
                _ => a,
            }
        });
    }
    cmd
}
