//! Malformed Dockerfiles never panic or hang the parser: hand-picked hostile inputs plus a
//! property test over random bytes and random Dockerfile-shaped text.

use kiln::parser;
use proptest::prelude::*;

/// Parse, and if it parses, dump: both must return (the result itself may be an error).
fn exercise(src: &[u8]) {
    if let Ok(df) = parser::parse_bytes(src) {
        let _ = parser::dump(&df);
    }
}

#[test]
fn hostile_inputs_return() {
    let ten_mb_line = format!("FROM a\nRUN {}\n", "x".repeat(10 << 20));
    let many_lines = "RUN a \\\n".repeat(200_000);
    let onbuild_chain = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(8000));
    let quotes = format!("FROM a\nENV a=\"{}\n", "'\"".repeat(30_000));
    let heredocs = format!("FROM a\nRUN {}\n", "<<A ".repeat(10_000));
    let json = format!("FROM a\nCMD {}{}\n", "[".repeat(30_000), "]".repeat(30_000));
    let flags = format!("FROM a\nCOPY {}a b\n", "--x='\\ ".repeat(8_000));
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\0\0\0".to_vec(),
        b"FROM a\0b\nRUN \0".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        b"\xef\xbb\xbf".to_vec(),
        b"\\".to_vec(),
        b"FROM a\nRUN 'unbalanced\n".to_vec(),
        b"FROM a\nENV x=\"unbalanced\n".to_vec(),
        b"FROM a\nCOPY <<EOF /x\n".to_vec(),
        b"FROM a\nRUN <<'EOF\nx\n".to_vec(),
        b"# escape=`\nFROM a\nRUN a `\n".to_vec(),
        b"# escape=x\n".to_vec(),
        b"FROM a\nHEALTHCHECK \t\n".to_vec(),
        b"FROM a\nONBUILD\n".to_vec(),
        b"FROM a\nENV\n".to_vec(),
        b"FROM a\nLABEL =\n".to_vec(),
        ten_mb_line.into_bytes(),
        many_lines.into_bytes(),
        onbuild_chain.into_bytes(),
        quotes.into_bytes(),
        heredocs.into_bytes(),
        json.into_bytes(),
        flags.into_bytes(),
    ];
    for c in &cases {
        exercise(c);
    }
    // A 10 MB physical line is refused with BuildKit's limit, pointing at its line.
    let err = parser::parse_bytes(&cases[16]).unwrap_err();
    assert_eq!(err.location.line, 2);
    assert!(err.message.contains("65535"), "{err}");
}

const WORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "LABEL",
    "ONBUILD",
    "HEALTHCHECK",
    "SHELL",
    "USER",
    "WORKDIR",
    "EXPOSE",
    "VOLUME",
    "--from=a",
    "--mount=type=cache",
    "<<EOF",
    "<<-'E'",
    "EOF",
    "E",
    "[",
    "]",
    "\"",
    "'",
    "\\",
    "`",
    "#",
    "# escape=`",
    "=",
    "$",
    "${",
    "}",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\\\n",
    "a",
    "é",
    "\u{feff}",
    "\0",
    "[\"a\", 1]",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(src in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&src);
    }

    #[test]
    fn random_dockerfile_text_never_panics(
        parts in proptest::collection::vec(proptest::sample::select(WORDS), 0..80)
    ) {
        exercise(parts.concat().as_bytes());
    }
}
