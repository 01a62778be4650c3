//! `kiln system …`: commands about the store as a whole.

use std::path::Path;

use std::collections::BTreeSet;

use clap::{Args, Subcommand};

use kiln::container::Containers;
use kiln::image::Digest;

use super::format::{print_rows, Report, Row};
use super::units::human_size;
use super::{fail, open_store, out};

/// Manage kiln.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Verify every blob, image reference and snapshot of the store
    Check,
    /// Start the containers a boot should bring back (restart policy always, and
    /// unless-stopped ones nobody stopped); for a boot script or systemd unit
    Restore,
    /// Show kiln disk usage
    Df(DfArgs),
    /// Remove unused data: stopped containers, dangling images (all unused with -a), the
    /// build cache, and with --volumes unused volumes
    Prune(SystemPruneArgs),
}

/// `kiln system df`.
#[derive(Args, Debug)]
pub struct DfArgs {
    /// Format output using a custom template ("table", "table TEMPLATE", "json" or a Go
    /// template)
    #[arg(long)]
    pub format: Option<String>,
}

/// `kiln system prune`.
#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones, and all build cache
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Prune volumes no container uses
    #[arg(long)]
    pub volumes: bool,
}

/// Runs one `kiln system` subcommand.
pub fn run(root: &Path, cmd: SystemCommand) -> i32 {
    match cmd {
        SystemCommand::Check => check(root),
        SystemCommand::Restore => super::container::restore(root),
        SystemCommand::Df(a) => df(root, &a),
        SystemCommand::Prune(a) => system_prune(root, &a),
    }
}

use kiln::container::volumes::du;

fn percent(part: u64, whole: u64) -> String {
    match (part * 100).checked_div(whole) {
        Some(p) => format!("{p}%"),
        None => "0%".into(),
    }
}

/// `kiln system df`: Docker's four lines.
fn df(root: &Path, a: &DfArgs) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let images = match store.list_images() {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let containers = Containers::new(root).list().unwrap_or_default();
    let used_images: BTreeSet<String> = containers
        .iter()
        .map(|c| c.config.image_id.clone())
        .collect();
    // Each layer once, by its unpacked files, as Docker counts (see `imageops::size`).
    let sizes = std::cell::RefCell::new(kiln::imageops::size::Sizes::new(&store));
    let size_of = |ids: &BTreeSet<&Digest>| -> u64 {
        ids.iter()
            .filter_map(|d| sizes.borrow_mut().layer(d).ok())
            .sum()
    };
    let all_layers: BTreeSet<&Digest> = images.iter().flat_map(|i| &i.diff_ids).collect();
    let active_layers: BTreeSet<&Digest> = images
        .iter()
        .filter(|i| used_images.contains(&i.id.to_string()))
        .flat_map(|i| &i.diff_ids)
        .collect();
    let img_size = size_of(&all_layers);
    let img_reclaim = img_size - size_of(&active_layers).min(img_size);
    let active_imgs = images
        .iter()
        .filter(|i| used_images.contains(&i.id.to_string()))
        .count();

    let ctr_sizes: Vec<(bool, u64)> = containers
        .iter()
        .map(|c| (c.is_running(), du(&c.dir.join("upper"))))
        .collect();
    let ctr_size: u64 = ctr_sizes.iter().map(|c| c.1).sum();
    let ctr_reclaim: u64 = ctr_sizes.iter().filter(|c| !c.0).map(|c| c.1).sum();
    let running = ctr_sizes.iter().filter(|c| c.0).count();

    // (in use, bytes) per volume, from the same listing `kiln volume` uses.
    let vols: Vec<(bool, u64)> = kiln::container::volumes::list(root)
        .unwrap_or_default()
        .into_iter()
        .map(|v| (!v.used_by.is_empty(), du(&v.mountpoint)))
        .collect();
    let vol_size: u64 = vols.iter().map(|v| v.1).sum();
    let vol_reclaim: u64 = vols.iter().filter(|v| !v.0).map(|v| v.1).sum();
    let vol_active = vols.iter().filter(|v| v.0).count();

    let (records, records_used, cache_size) = kiln::cache::prune::usage(&store);

    let mut rows: Vec<Row> = Vec::new();
    let mut line = |t: &str, total: usize, active: usize, size: u64, rec: String| {
        let row = serde_json::json!({
            "Type": t, "TotalCount": total.to_string(), "Active": active.to_string(),
            "Size": human_size(size), "Reclaimable": rec,
        });
        rows.push(Row::from(row));
    };
    line(
        "Images",
        images.len(),
        active_imgs,
        img_size,
        format!(
            "{} ({})",
            human_size(img_reclaim),
            percent(img_reclaim, img_size)
        ),
    );
    line(
        "Containers",
        containers.len(),
        running,
        ctr_size,
        format!(
            "{} ({})",
            human_size(ctr_reclaim),
            percent(ctr_reclaim, ctr_size)
        ),
    );
    line(
        "Local Volumes",
        vols.len(),
        vol_active,
        vol_size,
        format!(
            "{} ({})",
            human_size(vol_reclaim),
            percent(vol_reclaim, vol_size)
        ),
    );
    line(
        "Build Cache",
        records,
        records_used,
        cache_size,
        human_size(cache_size),
    );
    let template = match a.format.as_deref() {
        None | Some("") | Some("table") => {
            "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
        }
        Some("json") => "{{json .}}",
        Some(f) => f,
    };
    let title = |f: &str| match f {
        "TotalCount" => "TOTAL".to_owned(),
        other => other.to_uppercase(),
    };
    print_rows(template, &rows, &title, Report::List)
}

/// `kiln system prune`: containers, images, build cache (and volumes), as Docker's.
fn system_prune(root: &Path, a: &SystemPruneArgs) -> i32 {
    let mut w = String::from("WARNING! This will remove:\n  - all stopped containers\n");
    if a.volumes {
        w.push_str(if a.all {
            "  - all volumes not used by at least one container\n"
        } else {
            "  - all anonymous volumes not used by at least one container\n"
        });
    }
    w.push_str(if a.all {
        "  - all images without at least one container associated to them\n  - all build cache\n"
    } else {
        "  - all dangling images\n  - unused build cache\n"
    });
    if !super::confirm_unless(a.force, &w) {
        return 0;
    }
    let mut code = super::container::run(
        root,
        super::container::ContainerCommand::Prune(super::container::PruneArgs { force: true }),
    );
    if a.volumes {
        code |= super::volume::prune(root, a.all);
    }
    code |= super::image::run(
        root,
        super::image::ImageCommand::Prune(super::image::PruneArgs {
            all: a.all,
            filter: Vec::new(),
            force: true,
        }),
    );
    let b = super::builder::BuilderPruneArgs {
        all: a.all,
        filter: Vec::new(),
        force: true,
    };
    code | super::builder::builder_prune(root, &b)
}

fn check(root: &Path) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let problems = match store.check() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if problems.is_empty() {
        out(&format!("store {} is consistent\n", store.root().display()));
        return 0;
    }
    let text: String = problems.iter().map(|p| format!("{p}\n")).collect();
    out(&text);
    eprintln!(
        "Error: {} problem{} found in store {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        store.root().display()
    );
    1
}
