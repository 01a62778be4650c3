//! The executor of Go's text/template over JSON data: walks the tree with a dot, variables and
//! the functions, and reports failures with Go's `executing … at <…>` context.

use serde_json::Value;

use super::funcs::{self, truth, FuncError, Mode};
use super::parse::{Arg, Branch, Cmd, Node, Pipe, Pos};
use super::printf::{format_v, go_type};
use super::{Data, Template, TemplateError};

/// How deep `{{template}}` calls may nest (a definition that calls itself stops here).
const MAX_DEPTH: usize = 200;

enum Flow {
    Normal,
    Break,
    Continue,
}

/// The state of one execution.
pub(super) struct Exec<'a> {
    t: &'a Template,
    data: &'a Data<'a>,
    vars: Vec<(String, Value)>,
    current: String,
    depth: usize,
}

/// The value of a number or character constant as Go reads it, or `None` when Go would not
/// accept it (complex numbers and hex floats are not supported here).
pub(crate) fn number(text: &str) -> Option<Value> {
    if let Some(body) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        let c = if body == "\"" {
            Some("\"".to_owned())
        } else {
            super::lex::unquote(&body.replace("\\'", "'"))
        }?;
        let mut chars = c.chars();
        let (Some(ch), None) = (chars.next(), chars.next()) else {
            return None;
        };
        return Some(Value::from(ch as u32));
    }
    let t = text.replace('_', "");
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d.to_owned()),
        None => (false, t.trim_start_matches('+').to_owned()),
    };
    let lower = digits.to_ascii_lowercase();
    let radix = |p: &str, r: u32| {
        lower
            .strip_prefix(p)
            .and_then(|d| i128::from_str_radix(d, r).ok())
    };
    let int = if lower.starts_with("0x") {
        if lower.contains('p') || lower.contains('.') {
            return None;
        }
        radix("0x", 16)
    } else if lower.starts_with("0o") {
        radix("0o", 8)
    } else if lower.starts_with("0b") {
        radix("0b", 2)
    } else if lower.contains(['.', 'e']) {
        let f: f64 = lower.parse().ok()?;
        return Some(Value::from(if neg { -f } else { f }));
    } else if lower.len() > 1 && lower.starts_with('0') {
        i128::from_str_radix(&lower[1..], 8).ok()
    } else {
        lower.parse::<i128>().ok()
    }?;
    let int = if neg { -int } else { int };
    i64::try_from(int)
        .map(Value::from)
        .or_else(|_| u64::try_from(int).map(Value::from))
        .ok()
}

impl<'a> Exec<'a> {
    pub(super) fn new(t: &'a Template, data: &'a Data<'a>) -> Exec<'a> {
        Exec {
            t,
            data,
            vars: vec![("$".to_owned(), data.value.clone())],
            current: t.name.clone(),
            depth: 0,
        }
    }

    /// Runs the template, appending to `out` as it goes: on an error, `out` holds what was
    /// printed before it, as Go's writer would.
    pub(super) fn run(&mut self, out: &mut String) -> Result<(), TemplateError> {
        self.walk(&self.data.value.clone(), &self.t.tree.root, out)
            .map(|_| ())
    }

    fn err(&self, pos: Pos, context: &str, msg: impl Into<String>) -> TemplateError {
        let before = &self.t.src[..pos.offset.min(self.t.src.len())];
        let col = match before.rfind('\n') {
            Some(i) => pos.offset - i - 1,
            None => pos.offset,
        };
        let context = if context.chars().count() > 20 {
            format!("{}...", context.chars().take(20).collect::<String>())
        } else {
            context.to_owned()
        };
        TemplateError::Exec {
            location: format!("{}:{}:{col}", self.t.name, pos.line),
            name: self.current.clone(),
            context,
            msg: msg.into(),
        }
    }

    fn walk(
        &mut self,
        dot: &Value,
        list: &[Node],
        out: &mut String,
    ) -> Result<Flow, TemplateError> {
        for node in list {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        match v {
                            Value::Null => out.push_str("<no value>"),
                            v => out.push_str(&format_v(&v)),
                        }
                    }
                }
                Node::If(b) | Node::With(b) => {
                    let with = matches!(node, Node::With(_));
                    let flow = self.if_with(dot, b, with, out)?;
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range(b) => self.range(dot, b, out)?,
                Node::Template { pos, name, pipe } => {
                    self.template(dot, *pos, name, pipe.as_ref(), out)?
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn if_with(
        &mut self,
        dot: &Value,
        b: &Branch,
        with: bool,
        out: &mut String,
    ) -> Result<Flow, TemplateError> {
        let mark = self.vars.len();
        let v = self.pipeline(dot, &b.pipe)?;
        let flow = if truth(&v) {
            let dot = if with { v } else { dot.clone() };
            self.walk(&dot, &b.list, out)?
        } else if let Some(e) = &b.else_list {
            self.walk(dot, e, out)?
        } else {
            Flow::Normal
        };
        self.vars.truncate(mark);
        Ok(flow)
    }

    fn range(&mut self, dot: &Value, b: &Branch, out: &mut String) -> Result<(), TemplateError> {
        let mark = self.vars.len();
        let v = self.pipeline_value(dot, &b.pipe)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, e)| (Value::from(i), e.clone()))
                .collect(),
            Value::Object(o) => o
                .iter()
                .map(|(k, e)| (Value::String(k.clone()), e.clone()))
                .collect(),
            Value::Number(n) if n.as_i64().is_some() => {
                if b.pipe.decl.len() > 1 {
                    return Err(self.err(
                        b.pipe.pos,
                        &b.pipe.to_string(),
                        "can't use int to iterate over more than one variable",
                    ));
                }
                (0..n.as_i64().unwrap_or(0))
                    .map(|i| (Value::from(i), Value::from(i)))
                    .collect()
            }
            Value::Null => Vec::new(),
            v => {
                return Err(self.err(
                    b.pipe.pos,
                    &b.pipe.to_string(),
                    format!("range can't iterate over {}", format_v(v)),
                ))
            }
        };
        if items.is_empty() {
            if let Some(e) = &b.else_list {
                self.walk(dot, e, out)?;
            }
            return Ok(());
        }
        for (key, elem) in items {
            self.vars.truncate(mark);
            self.bind_range_vars(&b.pipe, key, elem.clone());
            if let Flow::Break = self.walk(&elem, &b.list, out)? {
                break;
            }
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn bind_range_vars(&mut self, pipe: &Pipe, key: Value, elem: Value) {
        let values = match pipe.decl.len() {
            1 => vec![elem],
            2 => vec![key, elem],
            _ => Vec::new(),
        };
        for (name, v) in pipe.decl.iter().zip(values) {
            if pipe.assign {
                self.set_var(name, v);
            } else {
                self.vars.push((name.clone(), v));
            }
        }
    }

    fn template(
        &mut self,
        dot: &Value,
        pos: Pos,
        name: &str,
        pipe: Option<&Pipe>,
        out: &mut String,
    ) -> Result<(), TemplateError> {
        let context = format!("{{{{template {}}}}}", super::printf::go_quote(name));
        let Some(list) = self.t.tree.defines.get(name) else {
            return Err(self.err(pos, &context, format!("template {name:?} not defined")));
        };
        if self.depth >= MAX_DEPTH {
            return Err(self.err(
                pos,
                &context,
                format!("exceeded maximum template depth ({MAX_DEPTH})"),
            ));
        }
        let new_dot = match pipe {
            Some(p) => self.pipeline(dot, p)?,
            None => Value::Null,
        };
        let saved_vars = std::mem::replace(&mut self.vars, vec![("$".to_owned(), new_dot.clone())]);
        let saved_name = std::mem::replace(&mut self.current, name.to_owned());
        self.depth += 1;
        let r = self.walk(&new_dot, list, out);
        self.depth -= 1;
        self.vars = saved_vars;
        self.current = saved_name;
        r.map(|_| ())
    }

    fn var(&self, name: &str) -> Value {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null)
    }

    fn set_var(&mut self, name: &str, v: Value) {
        if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = v;
        }
    }

    fn pipeline(&mut self, dot: &Value, pipe: &Pipe) -> Result<Value, TemplateError> {
        let v = self.pipeline_value(dot, pipe)?;
        for name in &pipe.decl {
            if pipe.assign {
                self.set_var(name, v.clone());
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn pipeline_value(&mut self, dot: &Value, pipe: &Pipe) -> Result<Value, TemplateError> {
        let mut last = None;
        for cmd in &pipe.cmds {
            last = Some(self.command(dot, cmd, last.take())?);
        }
        Ok(last.unwrap_or(Value::Null))
    }

    fn command(
        &mut self,
        dot: &Value,
        cmd: &Cmd,
        fin: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let first = &cmd.args[0];
        let rest = &cmd.args[1..];
        match first {
            Arg::Field { names, .. } => self.field_chain(dot, dot.clone(), names, first, rest, fin),
            Arg::Chain { node, fields, .. } => {
                let recv = self.arg(dot, node)?;
                self.field_chain(dot, recv, fields, first, rest, fin)
            }
            Arg::Variable { name, fields, .. } if !fields.is_empty() => {
                let recv = self.var(name);
                self.field_chain(dot, recv, fields, first, rest, fin)
            }
            Arg::Ident { name, .. } => self.function(dot, name, first, cmd, fin),
            Arg::Nil(pos) => Err(self.err(*pos, "nil", "nil is not a command")),
            _ => {
                if !rest.is_empty() || fin.is_some() {
                    return Err(self.err(
                        first.pos(),
                        &first.to_string(),
                        format!("can't give argument to non-function {first}"),
                    ));
                }
                self.arg(dot, first)
            }
        }
    }

    fn field_chain(
        &mut self,
        dot: &Value,
        recv: Value,
        names: &[String],
        node: &Arg,
        args: &[Arg],
        fin: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let mut v = recv;
        let mut fin = fin;
        for (i, name) in names.iter().enumerate() {
            let last = i + 1 == names.len();
            let has_args = last && (!args.is_empty() || fin.is_some());
            if let Some(want) = self
                .data
                .methods
                .arity(name)
                .filter(|_| &v == self.data.value)
            {
                let mut vals = Vec::new();
                if last {
                    for a in args {
                        vals.push(self.arg(dot, a)?);
                    }
                    vals.extend(fin.take());
                }
                if vals.len() != want {
                    return Err(self.err(
                        node.pos(),
                        &node.to_string(),
                        format!(
                            "wrong number of args for {name}: want {want} got {}",
                            vals.len()
                        ),
                    ));
                }
                v = self.data.methods.call(name, &vals);
                continue;
            }
            if has_args {
                return Err(self.err(
                    node.pos(),
                    &node.to_string(),
                    format!("{name} is not a method but has arguments"),
                ));
            }
            v = match v {
                Value::Object(mut o) => o.remove(name).unwrap_or(Value::Null),
                // A missing value has no fields: the chain prints `<no value>`.
                Value::Null => Value::Null,
                other => {
                    return Err(self.err(
                        node.pos(),
                        &node.to_string(),
                        format!("can't evaluate field {name} in type {}", go_type(&other)),
                    ));
                }
            };
        }
        Ok(v)
    }

    fn function(
        &mut self,
        dot: &Value,
        name: &str,
        node: &Arg,
        cmd: &Cmd,
        fin: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let argc = cmd.args.len() - 1 + usize::from(fin.is_some());
        if name == "and" || name == "or" {
            if argc == 0 {
                return Err(self.err(
                    node.pos(),
                    name,
                    format!("wrong number of args for {name}: want at least 1 got 0"),
                ));
            }
            let mut v = Value::Null;
            for a in &cmd.args[1..] {
                v = self.arg(dot, a)?;
                if truth(&v) == (name == "or") {
                    return Ok(v);
                }
            }
            return Ok(fin.unwrap_or(v));
        }
        let mut vals = Vec::with_capacity(argc);
        for a in &cmd.args[1..] {
            vals.push(self.arg(dot, a)?);
        }
        vals.extend(fin);
        let mode = Mode {
            header: self.data.header,
            escape_html: self.data.marshal_escapes_html
                && vals.len() == 1
                && &vals[0] == self.data.value,
        };
        funcs::call(name, &vals, mode).map_err(|e| match e {
            FuncError::Arity {
                want,
                at_least,
                got,
            } => {
                let least = if at_least { "at least " } else { "" };
                self.err(
                    node.pos(),
                    name,
                    format!("wrong number of args for {name}: want {least}{want} got {got}"),
                )
            }
            FuncError::Call(msg) => self.err(
                cmd.pos,
                &cmd.to_string(),
                format!("error calling {name}: {msg}"),
            ),
        })
    }

    fn arg(&mut self, dot: &Value, a: &Arg) -> Result<Value, TemplateError> {
        Ok(match a {
            Arg::Field { names, .. } => self.field_chain(dot, dot.clone(), names, a, &[], None)?,
            Arg::Variable { name, fields, .. } => {
                let v = self.var(name);
                self.field_chain(dot, v, fields, a, &[], None)?
            }
            Arg::Chain { node, fields, .. } => {
                let recv = self.arg(dot, node)?;
                self.field_chain(dot, recv, fields, a, &[], None)?
            }
            Arg::Dot(_) => dot.clone(),
            Arg::Nil(_) => Value::Null,
            Arg::Bool(_, b) => Value::Bool(*b),
            Arg::Number { text, .. } => number(text).unwrap_or(Value::Null),
            Arg::Str { value, .. } => Value::String(value.clone()),
            Arg::Ident { name, pos } => {
                let cmd = Cmd {
                    pos: *pos,
                    args: vec![a.clone()],
                };
                self.function(dot, name, a, &cmd, None)?
            }
            Arg::Pipe(p) => self.pipeline(dot, p)?,
        })
    }
}
