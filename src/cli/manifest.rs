//! `kiln manifest create|inspect|annotate|push|rm`: Docker's manifest tooling, its flags and
//! output, over `kiln::registry::manifest_list`.

use std::collections::HashMap;
use std::path::Path;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::value::RawValue;

use kiln::image::{Digest, Reference};
use kiln::registry::manifest_list::{
    self as ml, Annotation, ChildDescriptor, ListPlatform, ListStore, ManifestList,
};
use kiln::registry::{media, Client};
use kiln::store::Store;

use super::registry::client_options;
use super::{fail, open_store, out};

/// `kiln manifest`.
#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Create a local manifest list for annotating and pushing to a registry
    Create(CreateArgs),
    /// Display an image manifest, or manifest list
    Inspect(InspectArgs),
    /// Add additional information to a local image manifest
    Annotate(AnnotateArgs),
    /// Push a manifest list to a repository
    Push(PushArgs),
    /// Delete one or more manifest lists from local storage
    Rm(RmArgs),
}

/// `kiln manifest create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Amend an existing manifest list
    #[arg(short, long)]
    pub amend: bool,
    /// Allow communication with an insecure registry
    #[arg(long)]
    pub insecure: bool,
    /// MANIFEST_LIST
    pub list: String,
    /// MANIFEST: images already in the registry
    #[arg(required = true)]
    pub manifests: Vec<String>,
}

/// `kiln manifest inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Allow communication with an insecure registry
    #[arg(long)]
    pub insecure: bool,
    /// Output additional info including layers and platform
    #[arg(short, long)]
    pub verbose: bool,
    /// Ask the registry only, even when a list being assembled or kiln's store has the name
    #[arg(long)]
    pub remote: bool,
    /// [MANIFEST_LIST] MANIFEST
    #[arg(required = true, num_args = 1..=2)]
    pub refs: Vec<String>,
}

/// `kiln manifest annotate`.
#[derive(Args, Debug)]
pub struct AnnotateArgs {
    /// Set architecture
    #[arg(long)]
    pub arch: Option<String>,
    /// Set operating system
    #[arg(long)]
    pub os: Option<String>,
    /// Set operating system feature
    #[arg(long = "os-features", value_delimiter = ',')]
    pub os_features: Vec<String>,
    /// Set operating system version
    #[arg(long = "os-version")]
    pub os_version: Option<String>,
    /// Set architecture variant
    #[arg(long)]
    pub variant: Option<String>,
    /// MANIFEST_LIST
    pub list: String,
    /// MANIFEST
    pub manifest: String,
}

/// `kiln manifest push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Allow push to an insecure registry
    #[arg(long)]
    pub insecure: bool,
    /// Remove the local manifest list after push
    #[arg(short, long)]
    pub purge: bool,
    /// MANIFEST_LIST
    pub list: String,
}

/// `kiln manifest rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// MANIFEST_LIST
    #[arg(required = true)]
    pub lists: Vec<String>,
}

/// `kiln buildx`: the part of buildx's commands kiln has.
#[derive(Subcommand, Debug)]
pub enum BuildxCommand {
    /// Commands to work on images in registry
    #[command(subcommand)]
    Imagetools(ImagetoolsCommand),
}

/// `kiln buildx imagetools`.
#[derive(Subcommand, Debug)]
pub enum ImagetoolsCommand {
    /// Copy an image or a multi-platform index to other tags, in any registry
    Create(ImagetoolsCreateArgs),
}

/// `kiln buildx imagetools create`.
#[derive(Args, Debug)]
pub struct ImagetoolsCreateArgs {
    /// Set reference for new image
    #[arg(short = 't', long = "tag", required = true)]
    pub tags: Vec<String>,
    /// Show final image instead of pushing
    #[arg(long)]
    pub dry_run: bool,
    /// SOURCE: an index or an image, copied unchanged (its digest stays)
    pub source: String,
}

/// Runs `kiln buildx imagetools create`; the exit code.
pub fn run_buildx(cmd: BuildxCommand) -> i32 {
    let BuildxCommand::Imagetools(ImagetoolsCommand::Create(a)) = cmd;
    match imagetools_create(&a) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

fn imagetools_create(a: &ImagetoolsCreateArgs) -> Result<(), String> {
    let source = parse(
        a.source
            .strip_prefix("docker-image://")
            .unwrap_or(&a.source),
    )?;
    let targets = a
        .tags
        .iter()
        .map(|t| parse(t).map(Reference::with_default_tag))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(t) = targets.iter().find(|t| t.digest().is_some()) {
        return Err(ml::ManifestListError::DigestTarget(t.familiar_string()).to_string());
    }
    let from_client = client(source.domain(), false)?;
    let from = ml::Repo {
        client: &from_client,
        path: source.path(),
    };
    let wanted = source.tag_or_digest();
    if a.dry_run {
        let m = from_client
            .fetch_manifest(source.path(), &wanted)
            .map_err(|e| e.to_string())?;
        out(&format!("{}\n", indent_json(&m.bytes, "  ")));
        return Ok(());
    }
    for t in &targets {
        let to_client = client(t.domain(), false)?;
        let to = ml::Repo {
            client: &to_client,
            path: t.path(),
        };
        let tag = t.tag_or_digest();
        let digest = ml::copy_tagged(from, &wanted, to, &tag).map_err(|e| e.to_string())?;
        eprintln!("pushed {t}@{digest}");
    }
    Ok(())
}

/// Runs a `kiln manifest` command; the exit code.
pub fn run(root: &Path, cmd: ManifestCommand) -> i32 {
    let store = match open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let lists = ListStore::new(&store);
    // Commands that change lists hold the list store's lock from reading to writing.
    let _lock = match &cmd {
        ManifestCommand::Inspect(_) => None,
        _ => match lists.lock() {
            Ok(l) => Some(l),
            Err(e) => return fail(e),
        },
    };
    let result = match cmd {
        ManifestCommand::Create(a) => create(&lists, &a),
        ManifestCommand::Inspect(a) => inspect(&store, &lists, &a),
        ManifestCommand::Annotate(a) => annotate(&lists, &a),
        ManifestCommand::Push(a) => push(&lists, &a),
        ManifestCommand::Rm(a) => rm(&lists, &a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

fn parse(name: &str) -> Result<Reference, String> {
    Reference::parse_normalized_named(name).map_err(|e| format!("invalid reference {name:?}: {e}"))
}

/// A client for `domain`, over plain HTTP with `--insecure`.
fn client(domain: &str, insecure: bool) -> Result<Client, String> {
    let mut opts = client_options();
    if insecure {
        opts.insecure_registries.push(domain.to_string());
    }
    Client::new(domain, &opts).map_err(|e| e.to_string())
}

fn create(lists: &ListStore, a: &CreateArgs) -> Result<(), String> {
    let target = parse(&a.list)?.with_default_tag();
    let existing = lists.get(&target).map_err(|e| e.to_string())?;
    if existing.is_some() && !a.amend {
        return Err(ml::ManifestListError::Exists(target.to_string()).to_string());
    }
    let mut list = existing.unwrap_or_else(|| ManifestList {
        name: target.to_string(),
        entries: Vec::new(),
    });
    let images = a
        .manifests
        .iter()
        .map(|m| parse(m))
        .collect::<Result<Vec<_>, _>>()?;
    // Before any request: a list holds images of its own registry only.
    if let Some(r) = images.iter().find(|r| r.domain() != target.domain()) {
        let e = ml::ManifestListError::OtherRegistry(r.domain().into(), target.domain().into());
        return Err(e.to_string());
    }
    let mut clients: HashMap<String, Client> = HashMap::new();
    for r in images {
        if !clients.contains_key(r.domain()) {
            clients.insert(r.domain().to_string(), client(r.domain(), a.insecure)?);
        }
        let c = &clients[r.domain()];
        let entry = ml::fetch_entry(c, &r).map_err(|e| e.to_string())?;
        ml::add_entry(&mut list, entry);
    }
    lists.save(&list).map_err(|e| e.to_string())?;
    out(&format!("Created manifest list {target}\n"));
    Ok(())
}

fn annotate(lists: &ListStore, a: &AnnotateArgs) -> Result<(), String> {
    let target = parse(&a.list)?;
    let image = parse(&a.manifest)?;
    let mut list = lists.require(&target).map_err(|e| e.to_string())?;
    let ann = Annotation {
        os: a.os.clone(),
        arch: a.arch.clone(),
        variant: a.variant.clone(),
        os_version: a.os_version.clone(),
        os_features: a.os_features.clone(),
    };
    ml::annotate(&mut list, &image, &ann).map_err(|e| e.to_string())?;
    lists.save(&list).map_err(|e| e.to_string())
}

fn push(lists: &ListStore, a: &PushArgs) -> Result<(), String> {
    let target = parse(&a.list)?.with_default_tag();
    let list = lists.require(&target).map_err(|e| e.to_string())?;
    if list.entries.is_empty() {
        return Err(format!("{target} not found"));
    }
    let c = client(target.domain(), a.insecure)?;
    let pushed = ml::push_list(&c, &target, &list).map_err(|e| e.to_string())?;
    for (image, digest) in &pushed.copied {
        out(&format!("Pushed ref {image} with digest: {digest}\n"));
    }
    out(&format!("{}\n", pushed.digest));
    if a.purge {
        lists.remove(&target).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn rm(lists: &ListStore, a: &RmArgs) -> Result<(), String> {
    let mut errors = Vec::new();
    for name in &a.lists {
        let r = match parse(name) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if let Err(e) = lists.remove(&r) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// Docker's `--verbose` record of one manifest.
#[derive(Serialize)]
struct Verbose<'a> {
    #[serde(rename = "Ref")]
    reference: String,
    #[serde(rename = "Descriptor")]
    descriptor: VerboseDescriptor<'a>,
    #[serde(rename = "Raw")]
    raw: String,
    #[serde(rename = "SchemaV2Manifest", skip_serializing_if = "Option::is_none")]
    docker: Option<&'a RawValue>,
    #[serde(rename = "OCIManifest", skip_serializing_if = "Option::is_none")]
    oci: Option<&'a RawValue>,
}

/// A descriptor in Go's field order.
#[derive(Serialize)]
struct VerboseDescriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a ListPlatform>,
}

/// One manifest, as a `--verbose` record (JSON text, compact; through text, so the
/// manifest's own key order survives).
fn verbose_json(reference: String, d: &ChildDescriptor, raw: &[u8]) -> Result<String, String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(raw).map_err(|e| format!("manifest {}: {e}", d.digest))?;
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| format!("manifest {}: {e}", d.digest))?;
    let docker = d.media_type == media::DOCKER_MANIFEST;
    let v = Verbose {
        reference,
        descriptor: VerboseDescriptor {
            media_type: &d.media_type,
            digest: &d.digest,
            size: d.size,
            annotations: d.annotations.as_ref(),
            platform: d.platform.as_ref(),
        },
        raw: base64::engine::general_purpose::STANDARD.encode(raw),
        docker: docker.then_some(value),
        oci: (!docker).then_some(value),
    };
    serde_json::to_string(&v).map_err(|e| e.to_string())
}

/// Joins `--verbose` records made by [`verbose_json`] into one document: an array for a
/// list, the record itself for one manifest.
fn verbose_doc(records: Vec<String>, list: bool) -> String {
    if list {
        format!("[{}]", records.join(","))
    } else {
        records.into_iter().next().unwrap_or_default()
    }
}

/// Prints JSON text indented with tabs, as `docker manifest inspect` prints a manifest and
/// its `--verbose` records.
fn print_json(text: &[u8]) {
    out(&format!("{}\n", indent_json(text, "\t")));
}

/// Prints an index indented with three spaces, as `docker manifest inspect` prints a list.
fn print_list(text: &[u8]) {
    out(&format!("{}\n", indent_json(text, "   ")));
}

/// Go's `json.Indent(dst, src, "", indent)`: the same keys in the same order, whitespace
/// between tokens replaced, empty `{}` and `[]` kept on one line.
pub(crate) fn indent_json(src: &[u8], indent: &str) -> String {
    let text = String::from_utf8_lossy(src);
    let chars: Vec<char> = text.chars().collect();
    let mut outs = String::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let (mut in_str, mut escaped) = (false, false);
    let newline = |o: &mut String, d: usize| {
        o.push('\n');
        for _ in 0..d {
            o.push_str(indent);
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if in_str {
            outs.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            ' ' | '\t' | '\n' | '\r' => {}
            '"' => {
                in_str = true;
                outs.push(c);
            }
            '{' | '[' => {
                outs.push(c);
                let close = if c == '{' { '}' } else { ']' };
                let mut j = i;
                while j < chars.len() && chars[j].is_ascii_whitespace() {
                    j += 1;
                }
                if chars.get(j) == Some(&close) {
                    outs.push(close);
                    i = j + 1;
                } else {
                    depth += 1;
                    newline(&mut outs, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut outs, depth);
                outs.push(c);
            }
            ',' => {
                outs.push(c);
                newline(&mut outs, depth);
            }
            ':' => outs.push_str(": "),
            _ => outs.push(c),
        }
    }
    outs
}

/// What `inspect` found and where.
enum Found {
    /// A list being assembled.
    List(ManifestList),
    /// A document (manifest or index) and its media type.
    Doc(Vec<u8>, String),
}

fn inspect(store: &Store, lists: &ListStore, a: &InspectArgs) -> Result<(), String> {
    if let [list, image] = a.refs.as_slice() {
        return inspect_in_list(lists, &parse(list)?, &parse(image)?, a.verbose);
    }
    let r = parse(&a.refs[0])?;
    if !a.remote {
        if let Some(list) = lists.get(&r).map_err(|e| e.to_string())? {
            return print_found(Found::List(list), a.verbose, &r, &|_| unreachable_child());
        }
        if let Some((bytes, mt)) = ml::stored_document(store, &r).map_err(|e| e.to_string())? {
            let child = |d: &Digest| {
                store
                    .read_blob(d, "manifest", 4 << 20)
                    .map_err(|e| e.to_string())
            };
            return print_found(Found::Doc(bytes, mt), a.verbose, &r, &child);
        }
    }
    let c = client(r.domain(), a.insecure)?;
    let m = c
        .fetch_manifest(r.path(), &r.tag_or_digest())
        .map_err(|e| e.to_string())?;
    let child = |d: &Digest| {
        c.fetch_manifest(r.path(), d.as_str())
            .map(|m| m.bytes)
            .map_err(|e| e.to_string())
    };
    if a.verbose && !ml::is_index_type(&m.media_type) {
        // Docker's verbose record of one manifest has the platform its config gives.
        let entry = ml::fetch_entry(&c, &r).map_err(|e| e.to_string())?;
        let raw = entry.raw_bytes().map_err(|e| e.to_string())?;
        let rec = verbose_json(r.to_string(), &entry.descriptor, &raw)?;
        print_json(verbose_doc(vec![rec], false).as_bytes());
        return Ok(());
    }
    print_found(Found::Doc(m.bytes, m.media_type), a.verbose, &r, &child)
}

fn unreachable_child() -> Result<Vec<u8>, String> {
    Err("a list being assembled keeps its manifests".into())
}

/// Prints what was found, plainly or as Docker's `--verbose` records.
fn print_found(
    found: Found,
    verbose: bool,
    r: &Reference,
    child: &dyn Fn(&Digest) -> Result<Vec<u8>, String>,
) -> Result<(), String> {
    match found {
        Found::List(list) if !verbose => {
            let (bytes, _) = ml::index_document(&list).map_err(|e| e.to_string())?;
            print_list(&bytes);
        }
        Found::List(list) => {
            let mut records = Vec::new();
            for e in &list.entries {
                let raw = e.raw_bytes().map_err(|e| e.to_string())?;
                records.push(verbose_json(e.reference.clone(), &e.descriptor, &raw)?);
            }
            print_json(verbose_doc(records, true).as_bytes());
        }
        Found::Doc(bytes, mt) if !verbose && ml::is_index_type(&mt) => print_list(&bytes),
        Found::Doc(bytes, _) if !verbose => print_json(&bytes),
        Found::Doc(bytes, mt) if ml::is_index_type(&mt) => {
            let mut records = Vec::new();
            for d in ml::index_children(&bytes).map_err(|e| e.to_string())? {
                let raw = child(&d.digest)?;
                // Docker names a child `name:tag@digest`.
                let name = match r.digest() {
                    Some(_) => r.repository().with_digest(d.digest.clone()).to_string(),
                    None => format!("{}@{}", r.clone().with_default_tag(), d.digest),
                };
                records.push(verbose_json(name, &d, &raw)?);
            }
            print_json(verbose_doc(records, true).as_bytes());
        }
        Found::Doc(bytes, mt) => {
            let d = ChildDescriptor {
                media_type: mt,
                size: bytes.len() as u64,
                digest: Digest::of_bytes(&bytes),
                annotations: None,
                platform: None,
            };
            let rec = verbose_json(r.to_string(), &d, &bytes)?;
            print_json(verbose_doc(vec![rec], false).as_bytes());
        }
    }
    Ok(())
}

/// `kiln manifest inspect LIST IMAGE`: the image's manifest as the list keeps it.
fn inspect_in_list(
    lists: &ListStore,
    list: &Reference,
    image: &Reference,
    verbose: bool,
) -> Result<(), String> {
    let l = lists.require(list).map_err(|e| e.to_string())?;
    let wanted = image.clone().with_default_tag().to_string();
    let e = l
        .entries
        .iter()
        .find(|e| e.reference == wanted || e.reference == image.to_string())
        .ok_or_else(|| {
            ml::ManifestListError::NotInList {
                image: image.familiar_string(),
                list: l.name.clone(),
            }
            .to_string()
        })?;
    let raw = e.raw_bytes().map_err(|e| e.to_string())?;
    if verbose {
        let rec = verbose_json(e.reference.clone(), &e.descriptor, &raw)?;
        print_json(verbose_doc(vec![rec], false).as_bytes());
    } else {
        print_json(&raw);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::indent_json;

    #[test]
    fn json_is_indented_as_go_indents_it() {
        let src = br#"{"a":[],"b":{"c":"x, \"y\": {z}","d":[1,2]},"e":{} }"#;
        assert_eq!(
            indent_json(src, "\t"),
            "{\n\t\"a\": [],\n\t\"b\": {\n\t\t\"c\": \"x, \\\"y\\\": {z}\",\n\t\t\"d\": [\n\t\t\t1,\n\t\t\t2\n\t\t]\n\t},\n\t\"e\": {}\n}"
        );
    }
}
