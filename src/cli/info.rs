//! `kiln version` and `kiln info`: what a bug report needs.

use std::path::Path;

use clap::Args;
use serde_json::{json, Value};

use kiln::container::cgroups::Hierarchy;
use kiln::container::{Containers, Status};

use kiln::common::platform::Platform;

use super::format::{DocFormat, Report};
use super::values::IsolationArg;
use super::{open_store, out};

/// `kiln version` / `kiln info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Format output using a custom template ("json" for JSON)
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

fn uname() -> (String, String, String) {
    let u = nix::sys::utsname::uname().ok();
    let f = |s: Option<&std::ffi::OsStr>| {
        s.map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    (
        f(u.as_ref().map(|u| u.sysname())),
        f(u.as_ref().map(|u| u.release())),
        f(u.as_ref().map(|u| u.machine())),
    )
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default()
}

/// Prints `text`, or the document through `--format` (a template, or `json` for the whole
/// document), as `docker version` and `docker info` do; `name` is the template's name.
fn show(doc: &Value, format: &Option<String>, name: &str, text: String) -> i32 {
    match format.as_deref() {
        None | Some("") => out(&text),
        Some("json") => out(&format!("{doc}\n")),
        Some(t) => match DocFormat::parse(name, t).and_then(|f| f.render(doc)) {
            Ok(s) => out(&s),
            Err(e) => return e.report(Report::Version),
        },
    }
    0
}

/// `kiln version`: Docker's document (`{{.Client.Version}}`, `{{.Server.Version}}`); kiln has
/// no daemon, so the server is the same program as the client.
pub fn version_cmd(a: &InfoArgs) -> i32 {
    let (_, kernel, _) = uname();
    let host = Platform::host();
    let (os, arch) = (host.os.as_str(), host.architecture.as_str());
    let version = env!("CARGO_PKG_VERSION");
    let doc = json!({
        "Client": {
            "Version": version, "ApiVersion": "", "DefaultAPIVersion": "", "GitCommit": "",
            "GoVersion": "", "Os": os, "Arch": arch, "BuildTime": "", "Context": "default",
        },
        "Server": {
            "Platform": {"Name": "kiln"},
            "Components": [{
                "Name": "Engine", "Version": version,
                "Details": {"Os": os, "Arch": arch, "KernelVersion": kernel},
            }],
            "Version": version, "ApiVersion": "", "MinAPIVersion": "", "GitCommit": "",
            "GoVersion": "", "Os": os, "Arch": arch, "KernelVersion": kernel, "BuildTime": "",
        },
    });
    let text = format!(
        "Client:\n Version:           {version}\n OS/Arch:           {os}/{arch}\n Context:           default\n\n\
         Server: kiln\n Engine:\n  Version:          {version}\n  OS/Arch:          {os}/{arch}\n  Kernel Version:   {kernel}\n"
    );
    show(&doc, &a.format, "version", text)
}

/// The isolation mode `--isolation` gives on this host, and why (`rootless`, `not root; user
/// namespaces allowed; …`), or why the forced mode is not possible.
fn isolation_line(arg: IsolationArg) -> (String, String) {
    use kiln::executor::isolation::{decide, probe};
    match decide(probe(), arg.forced()) {
        Ok(d) => (d.mode.to_string(), d.reason),
        Err(e) => ("unavailable".to_string(), e.to_string()),
    }
}

/// The platforms this host runs programs of (natively, or through an emulator registered in
/// binfmt_misc with the F flag), for `kiln info`: the JSON list, the emulators by platform
/// and the text line.
fn platforms() -> (Vec<String>, serde_json::Map<String, Value>, String) {
    use kiln::executor::binfmt::{self, Support};
    let mut names = Vec::new();
    let mut emulators = serde_json::Map::new();
    let mut shown = Vec::new();
    for (p, how) in binfmt::runnable(&binfmt::dir()) {
        match how {
            Support::Native => shown.push(p.to_string()),
            Support::Emulated { entry, interpreter } => {
                shown.push(format!("{p} (emulated: {entry})"));
                emulators.insert(p.to_string(), json!(interpreter));
            }
        }
        names.push(p.to_string());
    }
    let mut line = shown.join(", ");
    if emulators.is_empty() {
        line.push_str(
            " (no emulators for foreign platforms: apt-get install qemu-user-static, then \
             register them with the F flag, e.g. scripts/binfmt-setup.sh)",
        );
    }
    (names, emulators, line)
}

/// `kiln info`.
pub fn info_cmd(root: &Path, a: &InfoArgs, isolation: IsolationArg) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let images = store.list_images().map(|l| l.len()).unwrap_or(0);
    let containers = Containers::new(root).list().unwrap_or_default();
    let running = containers
        .iter()
        .filter(|c| c.state.status == Status::Running && !c.paused)
        .count();
    let paused = containers.iter().filter(|c| c.paused).count();
    let stopped = containers.len() - running - paused;
    let (os, kernel, arch) = uname();
    let cgroup = match Hierarchy::host() {
        Some(Hierarchy::V1 { .. }) => "1",
        Some(Hierarchy::V2 { .. }) => "2",
        None => "none",
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = super::stats::host_memory();
    // What the container monitor will find when it starts pasta.
    let pasta = kiln::container::monitor::find_in_path("pasta").is_some();
    let os_name = os_name();
    let (mode, why) = isolation_line(isolation);
    let (platforms, emulators, platforms_line) = platforms();
    let doc = json!({
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": "overlay",
        "RootDir": store.root(),
        "CgroupVersion": cgroup,
        "KernelVersion": kernel,
        "OperatingSystem": os_name,
        "OSType": os.to_lowercase(),
        "Architecture": arch,
        "NCPU": cpus,
        "MemTotal": mem,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Pasta": pasta,
        "Isolation": mode,
        "IsolationReason": why,
        "Platforms": platforms,
        "Emulators": emulators,
    });
    let text = format!(
        "Containers: {}\n Running: {running}\n Paused: {paused}\n Stopped: {stopped}\nImages: {images}\n\
         Server Version: {}\nStorage Driver: overlay\nRoot Dir: {}\nIsolation: {mode} ({why})\n\
         Cgroup Version: {cgroup}\n\
         Outbound network for private containers (pasta): {}\nKernel Version: {kernel}\n\
         Operating System: {}\nOSType: {}\nArchitecture: {arch}\nPlatforms: {platforms_line}\n\
         CPUs: {cpus}\nTotal Memory: {}\n",
        containers.len(),
        env!("CARGO_PKG_VERSION"),
        store.root().display(),
        if pasta { "yes" } else { "no (apt-get install passt)" },
        os_name,
        os.to_lowercase(),
        super::units::human_size(mem),
    );
    show(&doc, &a.format, "", text)
}
