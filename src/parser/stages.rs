//! Build stages: a Dockerfile's checked instructions grouped under the FROM that starts each
//! stage, with the global ARGs that come before the first FROM.

use super::ast::{Dockerfile, Location};
use super::instructions::{
    parse_instruction, Arg, Instruction, InstructionError, InstructionErrorKind,
};

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The stage name from `AS name`, lowercased.
    pub name: Option<String>,
    /// The base image or earlier stage, as written (variables not expanded).
    pub base: String,
    /// `--platform`, as written.
    pub platform: Option<String>,
    /// The stage's doc comment (`# name text` directly above FROM), without the name.
    pub comment: String,
    /// The instructions of the stage, FROM excluded.
    pub commands: Vec<Instruction>,
    /// Where the FROM starts.
    pub location: Location,
    /// The FROM instruction's text.
    pub code: String,
}

/// Check every instruction and group them into stages, stopping at the first error as
/// BuildKit does. Returns the stages and the global ARGs (those before the first FROM).
pub fn parse_stages(df: &Dockerfile) -> Result<(Vec<Stage>, Vec<Arg>), InstructionError> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut meta_args = Vec::new();
    for node in &df.children {
        match parse_instruction(node)? {
            Instruction::From(f) => stages.push(Stage {
                name: f.stage_name,
                base: f.base,
                platform: f.platform,
                comment: f.comment,
                commands: Vec::new(),
                location: f.location,
                code: f.code,
            }),
            Instruction::Arg(a) if stages.is_empty() => meta_args.push(a),
            other => match stages.last_mut() {
                Some(stage) => stage.commands.push(other),
                None => {
                    return Err(InstructionError {
                        kind: InstructionErrorKind::NoBuildStage,
                        location: node.location(),
                        width: node.keyword.chars().count(),
                        line: node.start_line,
                        end_line: node.end_line,
                    })
                }
            },
        }
    }
    Ok((stages, meta_args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    #[test]
    fn groups_by_from() {
        let src = "ARG V=1\nFROM a AS One\nRUN x\nFROM b\nCOPY --from=one / /\n";
        let (stages, meta) = parse_stages(&parse(src).unwrap()).unwrap();
        assert_eq!(meta.len(), 1);
        assert_eq!(meta[0].args[0].default.as_deref(), Some("1"));
        let names: Vec<_> = stages.iter().map(|s| s.name.as_deref()).collect();
        assert_eq!(names, vec![Some("one"), None]);
        assert_eq!(stages[0].commands.len(), 1);
        assert_eq!(stages[1].commands[0].name(), "COPY");
        assert_eq!(stages[1].code, "FROM b");
    }

    #[test]
    fn instruction_before_from() {
        let e = parse_stages(&parse("ENV a=b\nFROM x").unwrap()).unwrap_err();
        assert_eq!(e.buildkit_message(), "no build stage in current context");
        assert_eq!(e.location.line, 1);
        let e = parse_stages(&parse("FROM x\nFROM y AS 9").unwrap()).unwrap_err();
        assert!(e
            .buildkit_message()
            .starts_with("dockerfile parse error on line 2: "));
    }
}
