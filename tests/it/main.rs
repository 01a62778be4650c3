//! kiln's integration tests: one test binary, one module per area.

mod cli_parser;
mod image_cmds;
mod image_interop;
mod parser_conformance;
mod parser_robustness;
mod util;
