//! `kiln inspect`: Docker's documents for containers, images and volumes by name, and the
//! printing every `inspect` command shares (a JSON array, or a `--format` per object).

use std::path::Path;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use kiln::container::{volumes, Containers};
use kiln::imageops::{self, inspect::ImageInspect};

use super::container::{inspect_doc, store_of, ContainerDoc};
use super::format::{DocFormat, Report};
use super::{fail, out};

/// `kiln inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short = 's', long)]
    pub size: bool,
    /// Return JSON for specified type
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub kind: Option<ObjectType>,
    /// Names or IDs of containers, images or volumes
    #[arg(required = true, value_name = "NAME|ID")]
    pub names: Vec<String>,
}

/// `inspect --type`: the kinds of object kiln has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectType {
    /// A container
    Container,
    /// An image
    Image,
    /// A volume
    Volume,
}

/// One inspected object of any kind, printed as its own document.
#[derive(Serialize)]
#[serde(untagged)]
enum Doc {
    Container(Box<ContainerDoc>),
    Image(Box<ImageInspect>),
    Volume(Value),
}

/// Runs `kiln inspect`. Each name is looked up as a container, then an image, then a volume
/// (only as the kind `--type` names, when given); the documents found are printed, and each
/// name found as nothing is an error, exit code 1, as Docker's `No such object: NAME`.
pub fn run(root: &Path, a: &InspectArgs) -> i32 {
    let containers = Containers::new(root);
    let wants = |t: ObjectType| a.kind.is_none_or(|k| k == t);
    if a.size && a.kind.is_some_and(|k| k != ObjectType::Container) {
        let kind = if a.kind == Some(ObjectType::Image) {
            "image"
        } else {
            "volume"
        };
        eprintln!("WARNING: --size ignored for {kind}");
    }
    let cstore = wants(ObjectType::Container)
        .then(|| store_of(&containers))
        .flatten();
    let store = if wants(ObjectType::Image) {
        match super::open_store(root) {
            Ok(s) => Some(s),
            Err(code) => return code,
        }
    } else {
        None
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in &a.names {
        let mut why = None;
        if wants(ObjectType::Container) {
            match containers.find(name) {
                Ok(c) => {
                    docs.push(Doc::Container(Box::new(inspect_doc(
                        &c,
                        cstore.as_ref(),
                        a.size,
                    ))));
                    continue;
                }
                Err(e) => why = Some(e.to_string()),
            }
        }
        if let Some(store) = &store {
            match imageops::resolve(store, name).and_then(|i| imageops::inspect::inspect(store, &i))
            {
                Ok(d) => {
                    docs.push(Doc::Image(Box::new(d)));
                    continue;
                }
                Err(e) => why = Some(e.to_string()),
            }
        }
        if wants(ObjectType::Volume) {
            match volumes::find(root, name) {
                Ok(v) => {
                    docs.push(Doc::Volume(super::volume::volume_doc(&v)));
                    continue;
                }
                Err(e) => why = Some(e.to_string()),
            }
        }
        errors.push(match (a.kind, why) {
            (Some(_), Some(why)) => why,
            _ => format!("No such object: {name}"),
        });
    }
    print_docs(&docs, a.format.as_deref(), &errors)
}

/// Prints inspect documents as Docker does: a JSON array indented by four spaces, in the
/// documents' own key order, or with `format` one rendering per document (an empty line when
/// there is none). Then each of `errors`; returns the exit code (1 when there was one, and
/// Docker's codes for a template that fails).
pub(crate) fn print_docs<T: Serialize>(docs: &[T], format: Option<&str>, errors: &[String]) -> i32 {
    let format = match DocFormat::parse_option(format) {
        Ok(f) => f,
        Err(e) => return e.report(Report::Inspect),
    };
    match &format {
        Some(_) if docs.is_empty() => out("\n"),
        Some(f) => {
            if let Err(e) = f.print_all(docs) {
                return e.report(Report::Inspect);
            }
        }
        None => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            match docs.serialize(&mut ser) {
                Ok(()) => out(&format!("{}\n", String::from_utf8_lossy(&buf))),
                Err(e) => return fail(e),
            }
        }
    }
    for e in errors {
        eprintln!("Error: {e}");
    }
    i32::from(!errors.is_empty())
}
