//! Go's text/template, the language of every `--format`: parse once, execute over JSON data.
//!
//! [`lex`] splits the source, [`parse`] builds the tree with Go's parse-time checks, [`exec`]
//! walks it over a `serde_json::Value` with [`funcs`] (Go's builtins and Docker's) and
//! [`printf`] (Go's printing). Messages and output follow Go's, so a Docker user's script
//! prints the same text; where kiln differs on purpose (a missing field prints `<no value>`
//! instead of failing) the function that decides says so.

mod exec;
mod funcs;
mod lex;
mod parse;
mod printf;

use serde_json::Value;

/// A parse or execution failure, worded as Go's text/template words it.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The source is not a valid template (`template: :1: unclosed action`).
    #[error("template: {name}:{line}: {msg}")]
    Parse {
        /// The template's name (empty for `--format` values, as Docker's).
        name: String,
        /// The line of the offending token.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// Executing a valid template failed (`executing "" at <index .A 9>: error calling …`).
    #[error("template: {location}: executing {name:?} at <{context}>: {msg}")]
    Exec {
        /// `name:line:column` of the node.
        location: String,
        /// The (defined) template being executed.
        name: String,
        /// The node, as written (cut to 20 characters).
        context: String,
        /// What failed.
        msg: String,
    },
}

/// Named methods the data offers besides its fields, as Docker's formatter contexts do
/// (`{{.Label "com.example"}}` on a `ps` row). They apply to the top-level data (`.` outside
/// `range`/`with`, or `$`).
pub trait Methods {
    /// How many arguments method `name` takes, or `None` when there is no such method.
    fn arity(&self, name: &str) -> Option<usize>;
    /// The result of method `name` (called with as many arguments as [`Methods::arity`] said).
    fn call(&self, name: &str, args: &[Value]) -> Value;
}

/// Data without methods.
pub struct NoMethods;

impl Methods for NoMethods {
    fn arity(&self, _: &str) -> Option<usize> {
        None
    }
    fn call(&self, _: &str, _: &[Value]) -> Value {
        Value::Null
    }
}

/// What a template executes over.
pub struct Data<'a> {
    /// The dot (and `$`).
    pub value: &'a Value,
    /// Methods of the dot.
    pub methods: &'a dyn Methods,
    /// Rendering a table header: Docker's text functions return their argument unchanged.
    pub header: bool,
    /// `{{json .}}` escapes `<`, `>` and `&`, as Docker's list rows marshal themselves with
    /// `json.Marshal`; everywhere else `json` leaves them (Docker's encoder turns it off).
    pub marshal_escapes_html: bool,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    src: String,
    tree: parse::Tree,
}

impl Template {
    /// Parses `src`; `name` appears in messages (Docker names its templates `""`, `version`).
    pub fn parse(name: &str, src: &str) -> Result<Template, TemplateError> {
        let tokens = lex::lex(name, src)?;
        let tree = parse::parse(name, tokens, &|f| funcs::NAMES.contains(&f))?;
        Ok(Template {
            name: name.to_owned(),
            src: src.to_owned(),
            tree,
        })
    }

    /// Executes the template over `data`.
    pub fn execute(&self, data: &Data<'_>) -> Result<String, TemplateError> {
        let mut out = String::new();
        exec::Exec::new(self, data).run(&mut out)?;
        Ok(out)
    }

    /// Executes the template and returns what it printed, up to an error if one happens.
    pub fn execute_partial(&self, data: &Data<'_>) -> String {
        let mut out = String::new();
        let _ = exec::Exec::new(self, data).run(&mut out);
        out
    }

    /// The field chains the template reads from the dot (`.A.B` → `["A", "B"]`), in order,
    /// including those under `$`: a table header is built from them.
    pub fn fields(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let lists = std::iter::once(&self.tree.root).chain(self.tree.defines.values());
        for list in lists {
            fields_in_list(list, &mut out);
        }
        out
    }
}

fn fields_in_list(list: &[parse::Node], out: &mut Vec<Vec<String>>) {
    use parse::Node;
    for n in list {
        match n {
            Node::Action(p) => fields_in_pipe(p, out),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                fields_in_pipe(&b.pipe, out);
                fields_in_list(&b.list, out);
                if let Some(e) = &b.else_list {
                    fields_in_list(e, out);
                }
            }
            Node::Template { pipe: Some(p), .. } => fields_in_pipe(p, out),
            _ => {}
        }
    }
}

fn fields_in_pipe(p: &parse::Pipe, out: &mut Vec<Vec<String>>) {
    use parse::Arg;
    for c in &p.cmds {
        for a in &c.args {
            match a {
                Arg::Field { names, .. } => out.push(names.clone()),
                Arg::Variable { name, fields, .. } if name == "$" && !fields.is_empty() => {
                    out.push(fields.clone())
                }
                Arg::Pipe(p) => fields_in_pipe(p, out),
                Arg::Chain { node, .. } => {
                    if let Arg::Pipe(p) = node.as_ref() {
                        fields_in_pipe(p, out);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
