//! The parser of Go's text/template: tokens → a tree of nodes, with Go's parse-time checks
//! (unknown functions, undefined variables, unbalanced `{{end}}`) and messages.

use std::collections::BTreeMap;
use std::fmt;

use super::lex::{Kind, Token};
use super::TemplateError;

/// Where a node starts in the source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Pos {
    pub offset: usize,
    pub line: usize,
}

/// A node of a template's list.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    Range(Branch),
    With(Branch),
    Template {
        pos: Pos,
        name: String,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

/// The shared shape of `if`, `range` and `with`.
#[derive(Debug, Clone)]
pub(super) struct Branch {
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

/// A pipeline, with its variable declarations (`$x :=`, `$i, $e :=`, `$x =`).
#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub pos: Pos,
    pub decl: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Cmd>,
}

/// One command of a pipeline: a function or a value and its arguments.
#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub pos: Pos,
    pub args: Vec<Arg>,
}

/// An operand.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// `.A.B`
    Field {
        pos: Pos,
        names: Vec<String>,
    },
    /// `$x.A.B`
    Variable {
        pos: Pos,
        name: String,
        fields: Vec<String>,
    },
    /// `(pipeline).A.B`
    Chain {
        pos: Pos,
        node: Box<Arg>,
        fields: Vec<String>,
    },
    Dot(Pos),
    Nil(Pos),
    Bool(Pos, bool),
    Number {
        pos: Pos,
        text: String,
    },
    Str {
        pos: Pos,
        value: String,
        quoted: String,
    },
    Ident {
        pos: Pos,
        name: String,
    },
    Pipe(Box<Pipe>),
}

impl Arg {
    pub(super) fn pos(&self) -> Pos {
        match self {
            Arg::Field { pos, .. }
            | Arg::Variable { pos, .. }
            | Arg::Chain { pos, .. }
            | Arg::Dot(pos)
            | Arg::Nil(pos)
            | Arg::Bool(pos, _)
            | Arg::Number { pos, .. }
            | Arg::Str { pos, .. }
            | Arg::Ident { pos, .. } => *pos,
            Arg::Pipe(p) => p.pos,
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Field { names, .. } => names.iter().try_for_each(|n| write!(f, ".{n}")),
            Arg::Variable { name, fields, .. } => {
                write!(f, "{name}")?;
                fields.iter().try_for_each(|n| write!(f, ".{n}"))
            }
            Arg::Chain { node, fields, .. } => {
                match node.as_ref() {
                    Arg::Pipe(p) => write!(f, "({p})")?,
                    other => write!(f, "{other}")?,
                }
                fields.iter().try_for_each(|n| write!(f, ".{n}"))
            }
            Arg::Dot(_) => write!(f, "."),
            Arg::Nil(_) => write!(f, "nil"),
            Arg::Bool(_, b) => write!(f, "{b}"),
            Arg::Number { text, .. } => write!(f, "{text}"),
            Arg::Str { quoted, .. } => write!(f, "{quoted}"),
            Arg::Ident { name, .. } => write!(f, "{name}"),
            Arg::Pipe(p) => write!(f, "{p}"),
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                write!(f, " ")?;
            }
            match a {
                Arg::Pipe(p) => write!(f, "({p})")?,
                a => write!(f, "{a}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            write!(
                f,
                "{} {} ",
                self.decl.join(", "),
                if self.assign { "=" } else { ":=" }
            )?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                write!(f, " | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// A parsed template: the main list and the `define`d ones.
#[derive(Debug, Clone)]
pub(super) struct Tree {
    pub root: Vec<Node>,
    pub defines: BTreeMap<String, Vec<Node>>,
}

/// How deeply `if`/`range`/`with` and parentheses may nest.
const MAX_NESTING: usize = 100;

/// What ends a list: `{{end}}`, `{{else}}` (with what follows `else` on the same action).
enum Stop {
    End,
    Else,
}

struct Parser<'a> {
    name: &'a str,
    tokens: Vec<Token>,
    at: usize,
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
    defines: BTreeMap<String, Vec<Node>>,
    is_func: &'a dyn Fn(&str) -> bool,
}

/// Parses tokens into a tree; `is_func` says which function names exist.
pub(super) fn parse(
    name: &str,
    tokens: Vec<Token>,
    is_func: &dyn Fn(&str) -> bool,
) -> Result<Tree, TemplateError> {
    let mut p = Parser {
        name,
        tokens,
        at: 0,
        vars: vec!["$".to_owned()],
        range_depth: 0,
        depth: 0,
        defines: BTreeMap::new(),
        is_func,
    };
    let mut root = Vec::new();
    while p.peek().kind != Kind::Eof {
        if p.peek().kind == Kind::LeftDelim && p.peek_after_delim() == Some(Kind::Keyword("define"))
        {
            p.next();
            p.next_non_space();
            p.definition()?;
            continue;
        }
        match p.text_or_action()? {
            Item::Node(n) => root.push(n),
            Item::Stop(Stop::End) => return Err(p.err("unexpected {{end}}")),
            Item::Stop(Stop::Else) => return Err(p.err("unexpected {{else}}")),
        }
    }
    Ok(Tree {
        root,
        defines: p.defines,
    })
}

enum Item {
    Node(Node),
    Stop(Stop),
}

fn describe(k: &Kind) -> String {
    match k {
        Kind::Eof => "EOF".into(),
        Kind::Text(t) | Kind::Ident(t) | Kind::Variable(t) | Kind::Number(t) => quote10(t),
        Kind::Field(t) => quote10(&format!(".{t}")),
        Kind::Keyword(k) => format!("<{k}>"),
        Kind::Str { quoted, .. } => quote10(quoted),
        Kind::LeftDelim => quote10("{{"),
        Kind::RightDelim => quote10("}}"),
        Kind::Space => quote10(" "),
        Kind::Dot => quote10("."),
        Kind::Bool(b) => quote10(&b.to_string()),
        Kind::Nil => quote10("nil"),
        Kind::Pipe => quote10("|"),
        Kind::LeftParen => quote10("("),
        Kind::RightParen => quote10(")"),
        Kind::Declare => quote10(":="),
        Kind::Assign => quote10("="),
        Kind::Comma => quote10(","),
    }
}

/// Go's `%q` of a token, cut to ten characters as its lexer prints long ones.
fn quote10(s: &str) -> String {
    if s.chars().count() > 10 {
        let cut: String = s.chars().take(10).collect();
        format!("{}...", super::printf::go_quote(&cut))
    } else {
        super::printf::go_quote(s)
    }
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> TemplateError {
        let line = self.tokens[self.at.saturating_sub(1).min(self.tokens.len() - 1)].line;
        TemplateError::Parse {
            name: self.name.to_owned(),
            line,
            msg: msg.into(),
        }
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.at = (self.at + 1).min(self.tokens.len());
        t
    }

    fn next_non_space(&mut self) -> Token {
        loop {
            let t = self.next();
            if t.kind != Kind::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> Token {
        let save = self.at;
        let t = self.next_non_space();
        self.at = save;
        t
    }

    fn peek_after_delim(&self) -> Option<Kind> {
        self.tokens[self.at + 1..]
            .iter()
            .find(|t| t.kind != Kind::Space)
            .map(|t| t.kind.clone())
    }

    fn pos(t: &Token) -> Pos {
        Pos {
            offset: t.pos,
            line: t.line,
        }
    }

    fn text_or_action(&mut self) -> Result<Item, TemplateError> {
        let t = self.next_non_space();
        match t.kind {
            Kind::Text(s) => Ok(Item::Node(Node::Text(s))),
            Kind::LeftDelim => self.action(),
            k => Err(self.err(format!("unexpected {} in input", describe(&k)))),
        }
    }

    fn action(&mut self) -> Result<Item, TemplateError> {
        let t = self.next_non_space();
        let node = match t.kind {
            Kind::Keyword("else") => return Ok(Item::Stop(Stop::Else)),
            Kind::Keyword("end") => {
                self.expect_close("end")?;
                return Ok(Item::Stop(Stop::End));
            }
            Kind::Keyword("if") => Node::If(self.control("if")?),
            Kind::Keyword("range") => Node::Range(self.control("range")?),
            Kind::Keyword("with") => Node::With(self.control("with")?),
            Kind::Keyword("template") => self.template("template")?,
            Kind::Keyword("block") => self.template("block")?,
            Kind::Keyword(k @ ("break" | "continue")) => {
                if self.range_depth == 0 {
                    return Err(self.err(format!("{{{{{k}}}}} outside {{{{range}}}}")));
                }
                self.expect_close(k)?;
                if k == "break" {
                    Node::Break
                } else {
                    Node::Continue
                }
            }
            Kind::Keyword(k) => return Err(self.err(format!("unexpected <{k}> in command"))),
            _ => {
                self.at -= 1;
                Node::Action(self.pipeline("command", Kind::RightDelim)?)
            }
        };
        Ok(Item::Node(node))
    }

    fn expect_close(&mut self, what: &str) -> Result<(), TemplateError> {
        let t = self.next_non_space();
        if t.kind != Kind::RightDelim {
            return Err(self.err(format!("unexpected {} in {what}", describe(&t.kind))));
        }
        Ok(())
    }

    /// Nodes up to `{{end}}` or `{{else}}`.
    fn item_list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut list = Vec::new();
        while self.peek_non_space().kind != Kind::Eof {
            match self.text_or_action()? {
                Item::Node(n) => list.push(n),
                Item::Stop(s) => return Ok((list, s)),
            }
        }
        Err(self.err("unexpected EOF"))
    }

    /// Enters a nested construct; like Go's parser, refuses nesting deeper than a limit, so a
    /// hostile template cannot exhaust the stack.
    fn nest(&mut self) -> Result<(), TemplateError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.err("max expression depth exceeded"));
        }
        Ok(())
    }

    fn control(&mut self, context: &str) -> Result<Branch, TemplateError> {
        self.nest()?;
        let b = self.control_body(context);
        self.depth -= 1;
        b
    }

    fn control_body(&mut self, context: &str) -> Result<Branch, TemplateError> {
        let mark = self.vars.len();
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, stop) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let else_list = match stop {
            Stop::End => None,
            Stop::Else => Some(self.else_list(context)?),
        };
        self.vars.truncate(mark);
        Ok(Branch {
            pipe,
            list,
            else_list,
        })
    }

    /// After `{{else`: `if`/`with` chains (`{{else if …}}`), or a list up to `{{end}}`.
    fn else_list(&mut self, context: &str) -> Result<Vec<Node>, TemplateError> {
        let next = self.peek_non_space().kind;
        if (context == "if" && next == Kind::Keyword("if"))
            || (context == "with" && next == Kind::Keyword("with"))
        {
            self.next_non_space();
            // The chained control consumes the one `{{end}}` of the whole chain.
            let branch = self.control(context)?;
            return Ok(vec![if context == "if" {
                Node::If(branch)
            } else {
                Node::With(branch)
            }]);
        }
        self.expect_close("else")?;
        match self.item_list()? {
            (list, Stop::End) => Ok(list),
            (_, Stop::Else) => Err(self.err("expected end; found {{else}}")),
        }
    }

    fn template(&mut self, context: &str) -> Result<Node, TemplateError> {
        let t = self.next_non_space();
        let pos = Self::pos(&t);
        let Kind::Str { value: name, .. } = t.kind else {
            return Err(self.err(format!(
                "unexpected {} in {context} clause",
                describe(&t.kind)
            )));
        };
        let pipe = if self.peek_non_space().kind == Kind::RightDelim {
            self.next_non_space();
            None
        } else {
            Some(self.pipeline(context, Kind::RightDelim)?)
        };
        if context == "block" {
            let saved = std::mem::replace(&mut self.vars, vec!["$".to_owned()]);
            let (list, stop) = self.item_list()?;
            self.vars = saved;
            if let Stop::Else = stop {
                return Err(self.err("unexpected {{else}}"));
            }
            self.defines.insert(name.clone(), list);
        }
        Ok(Node::Template { pos, name, pipe })
    }

    fn definition(&mut self) -> Result<(), TemplateError> {
        let t = self.next_non_space();
        let Kind::Str { value: name, .. } = t.kind else {
            return Err(self.err(format!("unexpected {} in define clause", describe(&t.kind))));
        };
        self.expect_close("define clause")?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".to_owned()]);
        let (list, stop) = self.item_list()?;
        self.vars = saved;
        if let Stop::Else = stop {
            return Err(self.err("unexpected {{else}}"));
        }
        self.defines.insert(name, list);
        Ok(())
    }

    fn pipeline(&mut self, context: &str, end: Kind) -> Result<Pipe, TemplateError> {
        let start = self.peek_non_space();
        let mut pipe = Pipe {
            pos: Self::pos(&start),
            decl: Vec::new(),
            assign: false,
            cmds: Vec::new(),
        };
        self.declarations(context, &mut pipe)?;
        loop {
            let t = self.next_non_space();
            if t.kind == end {
                return self.check_pipeline(pipe, context);
            }
            match t.kind {
                Kind::Bool(_)
                | Kind::Dot
                | Kind::Field(_)
                | Kind::Ident(_)
                | Kind::Number(_)
                | Kind::Nil
                | Kind::Str { .. }
                | Kind::Variable(_)
                | Kind::LeftParen => {
                    self.at -= 1;
                    let cmd = self.command()?;
                    pipe.cmds.push(cmd);
                }
                k => return Err(self.err(format!("unexpected {} in {context}", describe(&k)))),
            }
        }
    }

    /// `$x :=`, `$x =`, `$i, $e :=` at the start of a pipeline.
    fn declarations(&mut self, context: &str, pipe: &mut Pipe) -> Result<(), TemplateError> {
        loop {
            let save = self.at;
            let v = self.next_non_space();
            let Kind::Variable(name) = v.kind else {
                self.at = save;
                return Ok(());
            };
            match self.next_non_space().kind {
                k @ (Kind::Declare | Kind::Assign) => {
                    pipe.assign = k == Kind::Assign;
                    if pipe.assign && !self.vars.contains(&name) {
                        return Err(self.err(format!("undefined variable {name:?}")));
                    }
                    pipe.decl.push(name.clone());
                    if !pipe.assign {
                        self.vars.push(name);
                    }
                    return Ok(());
                }
                Kind::Comma if context == "range" && pipe.decl.is_empty() => {
                    pipe.decl.push(name.clone());
                    self.vars.push(name);
                }
                Kind::Comma => return Err(self.err(format!("too many declarations in {context}"))),
                _ => {
                    self.at = save;
                    pipe.decl.clear();
                    return Ok(());
                }
            }
        }
    }

    fn check_pipeline(&self, pipe: Pipe, context: &str) -> Result<Pipe, TemplateError> {
        if pipe.cmds.is_empty() {
            return Err(self.err(format!("missing value for {context}")));
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args[0],
                Arg::Bool(..) | Arg::Dot(_) | Arg::Nil(_) | Arg::Number { .. } | Arg::Str { .. }
            ) {
                return Err(self.err(format!(
                    "non executable command in pipeline stage {}",
                    i + 1
                )));
            }
        }
        Ok(pipe)
    }

    fn command(&mut self) -> Result<Cmd, TemplateError> {
        let pos = Self::pos(&self.peek_non_space());
        let mut args = Vec::new();
        loop {
            self.peek_non_space();
            if let Some(a) = self.operand()? {
                args.push(a);
            }
            let t = self.next();
            match t.kind {
                Kind::Space => continue,
                Kind::RightDelim | Kind::RightParen => self.at -= 1,
                Kind::Pipe => {}
                k => return Err(self.err(format!("unexpected {} in operand", describe(&k)))),
            }
            break;
        }
        if args.is_empty() {
            return Err(self.err("empty command"));
        }
        Ok(Cmd { pos, args })
    }

    fn operand(&mut self) -> Result<Option<Arg>, TemplateError> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        let mut fields = Vec::new();
        let mut pos = node.pos();
        while let Kind::Field(f) = &self.peek().kind {
            if fields.is_empty() {
                pos = Self::pos(self.peek());
            }
            fields.push(f.clone());
            self.next();
        }
        if fields.is_empty() {
            return Ok(Some(node));
        }
        Ok(Some(match node {
            Arg::Field { names, .. } => Arg::Field {
                pos,
                names: names.into_iter().chain(fields).collect(),
            },
            Arg::Variable { name, .. } => Arg::Variable { pos, name, fields },
            n @ (Arg::Bool(..)
            | Arg::Str { .. }
            | Arg::Number { .. }
            | Arg::Nil(_)
            | Arg::Dot(_)) => {
                return Err(self.err(format!("unexpected . after term {:?}", n.to_string())));
            }
            n => Arg::Chain {
                pos,
                node: Box::new(n),
                fields,
            },
        }))
    }

    fn term(&mut self) -> Result<Option<Arg>, TemplateError> {
        let t = self.next_non_space();
        let pos = Self::pos(&t);
        Ok(Some(match t.kind {
            Kind::Ident(name) => {
                if !(self.is_func)(&name) {
                    return Err(self.err(format!("function {name:?} not defined")));
                }
                Arg::Ident { pos, name }
            }
            Kind::Dot => Arg::Dot(pos),
            Kind::Nil => Arg::Nil(pos),
            Kind::Variable(name) => {
                if !self.vars.contains(&name) {
                    return Err(self.err(format!("undefined variable {name:?}")));
                }
                Arg::Variable {
                    pos,
                    name,
                    fields: Vec::new(),
                }
            }
            Kind::Field(f) => Arg::Field {
                pos,
                names: vec![f],
            },
            Kind::Bool(b) => Arg::Bool(pos, b),
            Kind::Number(text) => {
                if super::exec::number(&text).is_none() {
                    return Err(self.err(format!("illegal number syntax: {text:?}")));
                }
                Arg::Number { pos, text }
            }
            Kind::LeftParen => {
                self.nest()?;
                let p = self.pipeline("parenthesized pipeline", Kind::RightParen)?;
                self.depth -= 1;
                Arg::Pipe(Box::new(p))
            }
            Kind::Str { value, quoted } => Arg::Str { pos, value, quoted },
            _ => {
                self.at -= 1;
                return Ok(None);
            }
        }))
    }
}
