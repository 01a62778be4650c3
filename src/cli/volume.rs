//! `kiln volume …`: named volumes.

use std::path::Path;

use clap::{Args, Subcommand};
use serde_json::json;

use kiln::common::time::Timestamp;
use kiln::container::volumes;

use super::format::{print_rows, Report, Row};
use super::units::human_size;
use super::{fail, out};

/// Manage volumes.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(NamesArgs),
    /// Remove unused volumes (anonymous ones unless -a)
    Prune(PruneArgs),
}

/// `volume create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The volume's name (a random one when not given)
    pub name: Option<String>,
}

/// `volume ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only display volume names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter: dangling=true|false, name=TEXT
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template ("table", "table TEMPLATE", "json" or a Go
    /// template)
    #[arg(long)]
    pub format: Option<String>,
}

/// Commands taking volume names.
#[derive(Args, Debug)]
pub struct NamesArgs {
    /// Force the removal of one or more volumes (ignored: a volume in use is never removed)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Volumes
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `volume inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Volumes
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `volume prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// Runs one `kiln volume` subcommand.
pub fn run(root: &Path, cmd: VolumeCommand) -> i32 {
    match cmd {
        VolumeCommand::Create(a) => match volumes::create(root, a.name.as_deref()) {
            Ok(n) => {
                out(&format!("{n}\n"));
                0
            }
            Err(e) => fail(e),
        },
        VolumeCommand::Ls(a) => ls(root, &a),
        VolumeCommand::Inspect(a) => {
            let mut docs = Vec::new();
            let mut errors = Vec::new();
            for n in &a.names {
                match volumes::find(root, n) {
                    Ok(v) => docs.push(volume_doc(&v)),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            super::inspect::print_docs(&docs, a.format.as_deref(), &errors)
        }
        VolumeCommand::Rm(a) => {
            let mut code = 0;
            for n in &a.names {
                match volumes::remove(root, n) {
                    Ok(()) => out(&format!("{n}\n")),
                    Err(e) => code = fail(e),
                }
            }
            code
        }
        VolumeCommand::Prune(a) => {
            let warning = format!(
                "WARNING! This will remove {} local volumes not used by at least one container.",
                if a.all { "all" } else { "anonymous" }
            );
            if !super::confirm_unless(a.force, &warning) {
                return 0;
            }
            prune(root, a.all)
        }
    }
}

/// Docker's `volume inspect` document for `v`.
pub(crate) fn volume_doc(v: &volumes::Volume) -> serde_json::Value {
    json!({
        "CreatedAt": Timestamp::from_secs(v.created).to_string(),
        "Driver": "local",
        "Labels": null,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": null,
        "Scope": "local",
    })
}

/// `volume prune` (and the volume part of `system prune --volumes`).
pub fn prune(root: &Path, all: bool) -> i32 {
    match volumes::prune(root, all) {
        Ok((names, bytes)) => {
            let mut text = String::new();
            if !names.is_empty() {
                text.push_str("Deleted Volumes:\n");
                for n in names {
                    text.push_str(&format!("{n}\n"));
                }
                text.push('\n');
            }
            text.push_str(&format!("Total reclaimed space: {}\n", human_size(bytes)));
            out(&text);
            0
        }
        Err(e) => fail(e),
    }
}

fn ls(root: &Path, a: &LsArgs) -> i32 {
    let list = match volumes::list(root) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut keep = Vec::new();
    'v: for v in list {
        for f in &a.filter {
            let ok = match f.split_once('=') {
                Some(("dangling", "true")) => v.used_by.is_empty(),
                Some(("dangling", "false")) => !v.used_by.is_empty(),
                Some(("name", n)) => v.name.contains(n),
                _ => return fail(format!("invalid filter '{f}'")),
            };
            if !ok {
                continue 'v;
            }
        }
        keep.push(v);
    }
    // Docker's volume rows; kiln's volumes are local and carry no labels.
    let rows: Vec<Row> = keep
        .iter()
        .map(|v| {
            let row = json!({
                "Availability": "N/A", "Driver": "local", "Group": "N/A", "Labels": "",
                "Links": "N/A", "Mountpoint": v.mountpoint, "Name": v.name, "Scope": "local",
                "Size": "N/A", "Status": "N/A",
            });
            Row {
                data: row,
                labels: Some(Default::default()),
            }
        })
        .collect();
    let template = match a.format.as_deref() {
        None | Some("") | Some("table") if a.quiet => "{{.Name}}",
        None | Some("") | Some("table") => "table {{.Driver}}\t{{.Name}}",
        Some("json") => "{{json .}}",
        Some(f) => f,
    };
    let title = |f: &str| match f {
        "Name" => "VOLUME NAME".to_owned(),
        other => other.to_uppercase(),
    };
    print_rows(template, &rows, &title, Report::List)
}
