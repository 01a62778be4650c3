//! kiln's integration tests: one test binary, one module per area.

mod build_add_git;
mod build_add_url;
mod build_cache_export;
mod build_cache_registry;
mod build_check;
mod build_cmd;
mod build_interop;
mod build_interrupt;
mod build_invariants;
mod build_mounts;
mod build_vs_docker;
mod buildkit_goldens;
mod cli_parser;
mod container_limits;
mod containers;
mod image_cmds;
mod image_interop;
mod instructions_conformance;
mod parser_conformance;
mod parser_robustness;
mod registry;
mod security_context;
mod security_devices;
mod security_escapes;
mod util;
