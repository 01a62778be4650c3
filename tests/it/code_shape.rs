//! The shape rules of DESIGN.md that a reader can check by eye but a reviewer forgets:
//! no library function longer than [`MAX_FN_LINES`], so each one reads as a sequence of
//! named phases. Tests (`#[cfg(test)]` modules, `#[test]` functions, `tests.rs` files) are
//! exempt: a test is a script and may be long.

use std::fs;
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

/// The longest a function of the library or the CLI may be, from its signature to its
/// closing brace.
const MAX_FN_LINES: usize = 120;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && !path
                .file_name()
                .is_some_and(|n| n == "tests.rs" || n.to_string_lossy().ends_with("_tests.rs"))
        {
            out.push(path);
        }
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg")
                && a.parse_args::<syn::Meta>()
                    .is_ok_and(|m| m.path().is_ident("test")))
    })
}

struct LongFns<'a> {
    file: &'a str,
    found: Vec<String>,
}

impl LongFns<'_> {
    /// Counts from the signature (after doc comments and attributes) to the closing brace.
    fn check(&mut self, sig: &syn::Signature, block: &syn::Block) {
        let first = sig.span().start().line;
        let lines = block.span().end().line + 1 - first;
        if lines <= MAX_FN_LINES {
            return;
        }
        self.found.push(format!(
            "{}:{first}: {} is {lines} lines",
            self.file, sig.ident
        ));
    }
}

impl<'ast> Visit<'ast> for LongFns<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test_only(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if is_test_only(&f.attrs) {
            return;
        }
        self.check(&f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_test_only(&f.attrs) {
            return;
        }
        self.check(&f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }
}

#[test]
fn no_library_function_is_longer_than_the_limit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let mut v = LongFns {
            file: &rel,
            found: Vec::new(),
        };
        v.visit_file(&ast);
        found.extend(v.found);
    }
    assert!(
        found.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named phases):\n{}",
        found.join("\n")
    );
}
