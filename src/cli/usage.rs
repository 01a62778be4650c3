//! A command line clap refused, told as Docker's CLI tells it: the message, the usage of the
//! command being parsed, where to read more, and Docker's exit code.
//!
//! Docker (cobra) gives 125 for a flag it cannot parse (unknown, missing its value, a bad
//! value) and 1 for a wrong number of arguments or an unknown command; `--help` and a bare
//! group command (`docker container`) print help on standard output and exit 0. clap's own
//! rendering is not kept: its tips mislead here (`to pass '--x' as a value, use '-- --x'`
//! would hand `--x` to `run` as the image; a usage line built from the flags already given
//! shows them as if they were required), and its exit code 2 is no Docker code.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::CommandFactory;

/// Docker's exit code for a flag it cannot parse.
pub const EXIT_BAD_FLAG: i32 = 125;

/// Docker's exit code for wrong arguments or an unknown command.
pub const EXIT_BAD_ARGS: i32 = 1;

/// Prints `e` as Docker would and returns the exit code. `argv` is the command line
/// (program name first), to find the command that was being parsed.
pub fn report(e: &clap::Error, argv: &[String]) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            // `kiln container` alone: its help, on standard output, as `docker container`.
            let mut cmd = super::Cli::command();
            cmd.build();
            let path = command_path(e, &cmd, argv);
            match find(&cmd, &path) {
                Some(sub) => super::out(&sub.clone().render_help().to_string()),
                None => super::out(&e.render().to_string()),
            }
            0
        }
        _ => {
            let (text, code) = explain(e, argv);
            eprint!("{text}");
            code
        }
    }
}

/// The text to print and the exit code for a refused command line.
pub(crate) fn explain(e: &clap::Error, argv: &[String]) -> (String, i32) {
    let mut cmd = super::Cli::command();
    cmd.build();
    let path = command_path(e, &cmd, argv);
    let sub = find(&cmd, &path);
    let name = path.join(" ");
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(" "),
        _ => String::new(),
    };
    let (message, code) = match e.kind() {
        ErrorKind::UnknownArgument if arg.starts_with("--") => {
            (format!("unknown flag: {arg}"), EXIT_BAD_FLAG)
        }
        ErrorKind::UnknownArgument if arg.starts_with('-') && arg.len() > 1 => (
            format!("unknown shorthand flag: '{}' in {arg}", &arg[1..2]),
            EXIT_BAD_FLAG,
        ),
        ErrorKind::UnknownArgument => (format!("kiln: {}", too_many(sub, &name)), EXIT_BAD_ARGS),
        ErrorKind::InvalidSubcommand => {
            let word = match e.get(ContextKind::InvalidSubcommand) {
                Some(ContextValue::String(s)) => s.clone(),
                _ => String::new(),
            };
            (
                format!("kiln: unknown command: {name} {word}"),
                EXIT_BAD_ARGS,
            )
        }
        ErrorKind::MissingRequiredArgument if !arg.starts_with('-') => (
            format!("kiln: {}", too_few(sub, &name, &arg)),
            EXIT_BAD_ARGS,
        ),
        ErrorKind::MissingRequiredArgument => (
            format!("kiln: required flag(s) {arg} not set"),
            EXIT_BAD_ARGS,
        ),
        // A flag's value: missing, not one of a fixed set, refused by its parser, or two
        // flags that exclude each other. clap's sentence says which; its tips go.
        _ => (first_paragraph(e), EXIT_BAD_FLAG),
    };
    let mut text = message;
    if let Some(s) = suggestion(e, &arg) {
        text.push_str(&format!("\n  did you mean {s}?"));
    }
    text.push_str("\n\n");
    if let Some(sub) = sub {
        let usage = sub.clone().render_usage().to_string();
        text.push_str(usage.trim_end());
        text.push_str("\n\n");
    }
    text.push_str(&format!("Run '{name} --help' for more information\n"));
    (text, code)
}

/// clap's own sentence, without its `error: ` prefix, tips and usage.
fn first_paragraph(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let body = rendered.strip_prefix("error: ").unwrap_or(&rendered);
    body.split("\n\n")
        .next()
        .unwrap_or(body)
        .trim_end()
        .to_string()
}

/// A flag or command close to what was typed (a letter or two off, two letters swapped, or a
/// prefix), from clap's suggestions; a distant one (`--no-trunc` for `--nosuch`, `pause` for
/// `imagse`) only confuses.
fn suggestion(e: &clap::Error, typed: &str) -> Option<String> {
    let (candidates, typed) = match (e.kind(), e.get(ContextKind::SuggestedArg)) {
        (_, Some(ContextValue::String(s))) => (vec![s.clone()], typed.to_string()),
        (ErrorKind::InvalidSubcommand, _) => {
            let typed = match e.get(ContextKind::InvalidSubcommand) {
                Some(ContextValue::String(s)) => s.clone(),
                _ => return None,
            };
            match e.get(ContextKind::SuggestedSubcommand) {
                Some(ContextValue::String(s)) => (vec![s.clone()], typed),
                Some(ContextValue::Strings(v)) => (v.clone(), typed),
                _ => return None,
            }
        }
        _ => return None,
    };
    let limit = (typed.trim_start_matches('-').chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&typed, &c), c))
        .filter(|(d, c)| *d <= limit || (typed.len() > 2 && c.starts_with(&typed)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("'{c}'"))
}

/// Edit distance by characters, a swap of two neighbours counting as one edit (the optimal
/// string alignment distance): `biuld` is one edit from `build`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Docker's words for an argument too many: `'kiln ps' accepts no arguments`, `'kiln images'
/// requires at most 1 argument`.
fn too_many(sub: Option<&clap::Command>, name: &str) -> String {
    let positionals: Vec<&clap::Arg> = sub.map_or(Vec::new(), |c| c.get_positionals().collect());
    let bounded = positionals.iter().all(|a| {
        a.get_num_args()
            .is_some_and(|n| n.max_values() == 1 && !a.is_last_set())
    });
    match positionals.len() {
        0 => format!("'{name}' accepts no arguments"),
        n if bounded => format!("'{name}' requires at most {n} {}", plural(n)),
        _ => format!("'{name}' was given an argument it does not take"),
    }
}

/// Docker's words for missing arguments: `'kiln run' requires at least 1 argument`, naming
/// them (`<IMAGE>`), which Docker leaves to the usage line.
fn too_few(sub: Option<&clap::Command>, name: &str, missing: &str) -> String {
    let n = sub.map_or(1, |c| {
        c.get_positionals()
            .filter(|a| a.is_required_set())
            .map(|a| a.get_num_args().map_or(1, |r| r.min_values().max(1)))
            .sum::<usize>()
            .max(1)
    });
    format!("'{name}' requires at least {n} {} ({missing})", plural(n))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "argument"
    } else {
        "arguments"
    }
}

/// The command clap was parsing, as words (`["kiln", "image", "ls"]`): read from the usage
/// clap put in the error when there is one (it knows where it stopped: `kiln --bad ps`
/// fails in `kiln`, not `kiln ps`), else by following subcommand names through `argv`.
fn command_path(e: &clap::Error, root: &clap::Command, argv: &[String]) -> Vec<String> {
    if let Some(ContextValue::StyledStr(usage)) = e.get(ContextKind::Usage) {
        let text = usage.to_string();
        let line = text.lines().next().unwrap_or("");
        let line = line.trim_start_matches("Usage:").trim();
        let words: Vec<String> = line
            .split_whitespace()
            .take_while(|w| !w.starts_with(['-', '[', '<']))
            .map(str::to_string)
            .collect();
        if !words.is_empty() && find(root, &words).is_some() {
            return words;
        }
    }
    let mut path = vec![root.get_name().to_string()];
    let mut cur = root;
    for word in argv.iter().skip(1) {
        if word == "--" {
            break;
        }
        if let Some(sub) = cur.find_subcommand(word) {
            path.push(sub.get_name().to_string());
            cur = sub;
        }
    }
    path
}

/// The (sub)command named by `path`, whose first word is the program.
fn find<'a>(root: &'a clap::Command, path: &[String]) -> Option<&'a clap::Command> {
    let mut cur = root;
    for word in path.iter().skip(1) {
        cur = cur.find_subcommand(word)?;
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(line: &str) -> (String, i32) {
        let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let e = <super::super::Cli as clap::Parser>::try_parse_from(&argv).expect_err("refused");
        explain(&e, &argv)
    }

    #[test]
    fn flags_exit_125_and_arguments_1_as_docker() {
        let cases = [
            ("kiln run --nosuch busybox", 125, "unknown flag: --nosuch"),
            ("kiln images -z", 125, "unknown shorthand flag: 'z' in -z"),
            ("kiln ps --format", 125, "a value is required for '--format"),
            ("kiln nosuchcmd", 1, "kiln: unknown command: kiln nosuchcmd"),
            (
                "kiln container nosuch",
                1,
                "kiln: unknown command: kiln container nosuch",
            ),
            ("kiln ps extra", 1, "kiln: 'kiln ps' accepts no arguments"),
            (
                "kiln images a b",
                1,
                "kiln: 'kiln images' requires at most 1 argument",
            ),
            (
                "kiln run",
                1,
                "kiln: 'kiln run' requires at least 1 argument",
            ),
        ];
        for (line, code, start) in cases {
            let (text, got) = refuse(line);
            assert_eq!(got, code, "{line}: {text}");
            assert!(text.starts_with(start), "{line}: {text}");
        }
    }

    // clap's tips pointed the wrong way: `use '-- --nosuch'` (which makes it the image), a
    // usage line listing `--no-trunc` as if required, `'ps --no-trunc' exists`.
    #[test]
    fn the_hint_names_the_command_and_its_plain_usage() {
        let (text, _) = refuse("kiln run --nosuch busybox");
        assert!(!text.contains("-- --nosuch"), "{text}");
        assert!(
            text.contains("\nUsage: kiln run [OPTIONS] <IMAGE>"),
            "{text}"
        );
        assert!(
            text.ends_with("Run 'kiln run --help' for more information\n"),
            "{text}"
        );
        let (text, _) = refuse("kiln ps --nosuch");
        assert!(text.contains("\nUsage: kiln ps [OPTIONS]\n"), "{text}");
        assert!(!text.contains("no-trunc"), "{text}");
        let (text, _) = refuse("kiln --nosuch ps");
        assert!(text.contains("Run 'kiln --help'"), "{text}");
        assert!(!text.contains("no-trunc"), "{text}");
        let (text, _) = refuse("kiln --root /x image ls --nosuch");
        assert!(text.contains("Run 'kiln image ls --help'"), "{text}");
        assert!(!text.contains("--root <ROOT>"), "{text}");
    }

    #[test]
    fn a_near_miss_is_suggested() {
        let (text, code) = refuse("kiln build --pul always .");
        assert_eq!(code, 125);
        assert!(text.contains("did you mean '--pull'?"), "{text}");
        let (text, code) = refuse("kiln imagse");
        assert_eq!(code, 1);
        assert!(text.contains("did you mean 'image"), "{text}");
        let (text, _) = refuse("kiln biuld .");
        assert!(text.contains("did you mean 'build'?"), "{text}");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("--pul", "--pull"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("biuld", "build"), 1);
    }
}
