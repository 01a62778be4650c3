//! kiln's integration tests: one test binary, one module per area.

mod cli_parser;
mod instructions_conformance;
mod parser_conformance;
mod parser_robustness;
mod util;
