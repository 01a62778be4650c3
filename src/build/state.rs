//! The state of a stage while it is built: the image so far (config and layers), the ARGs in
//! scope, and how Dockerfile words are expanded against them.

use std::collections::BTreeMap;

use crate::cache::LayerRef;
use crate::image::spec::ImageSpec;
use crate::planner::expand::{Env, Lexer, ShellError};

/// Docker's default `PATH` for Linux images without one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The shell of `RUN`/`CMD`/`ENTRYPOINT` in shell form when `SHELL` was never used.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// Most bytes the metadata instructions (ENV, LABEL, …) of one image may add to its
/// configuration, counting each value once for the config and once for the history entry
/// that repeats it. Real images add kilobytes; the limit keeps the config well under the
/// 16 MiB a build reads of a base image's config and the 32 MiB the store accepts, and
/// turns runaway growth (values doubled line after line) into an error at its line.
pub const MAX_METADATA_BYTES: usize = 8 << 20;

/// A stage being built.
#[derive(Debug, Clone)]
pub struct StageState {
    /// The image configuration so far.
    pub spec: ImageSpec,
    /// Its layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// ARGs declared in this stage so far, with their values (`None`: declared, no value).
    pub args: Vec<(String, Option<String>)>,
    /// True once this stage set CMD (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// The escape character of the Dockerfile.
    pub escape: char,
    /// Bytes metadata instructions added to the config so far (see [`MAX_METADATA_BYTES`]).
    pub metadata_bytes: usize,
}

/// The variables of a stage, looked up in place: ENV first, then ARGs with a value.
struct Vars<'a>(&'a StageState);

impl Env for Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.0.spec.config.env.as_slice(), name).or_else(|| {
            self.0
                .args
                .iter()
                .rev()
                .find(|(k, v)| k == name && v.is_some())
                .and_then(|(_, v)| v.as_deref())
        })
    }
}

impl StageState {
    /// A stage starting from `spec` with `layers`.
    pub fn new(spec: ImageSpec, layers: Vec<LayerRef>, escape: char) -> StageState {
        StageState {
            spec,
            layers,
            args: Vec::new(),
            cmd_set: false,
            escape,
            metadata_bytes: 0,
        }
    }

    /// The variables words are expanded with: ARGs with a value, then ENV (ENV wins).
    pub fn expansion_env(&self) -> Vec<String> {
        let mut env: Vec<String> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        env.extend(self.spec.config.env.iter().cloned());
        env
    }

    /// Expand one word as Docker does for instruction arguments, with the variables of
    /// [`StageState::expansion_env`] (looked up in place, not copied: a Dockerfile of
    /// thousands of ENV lines expands each word in time proportional to the lookups).
    pub fn expand(&self, word: &str) -> Result<String, ShellError> {
        Lexer::new(self.escape).process_word(word, &Vars(self))
    }

    /// The environment of a RUN step: the image's ENV plus ARG values ENV does not override,
    /// and a default PATH when the image has none.
    pub fn run_env(&self) -> Vec<String> {
        let mut env = self.spec.config.env.clone();
        for (k, v) in &self.args {
            if let Some(v) = v {
                if self.spec.config.env_get(k).is_none() {
                    env.push(format!("{k}={v}"));
                }
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        env
    }

    /// The ARGs that have values, for cache keys (sorted by name).
    pub fn arg_values(&self) -> BTreeMap<String, String> {
        self.args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect()
    }

    /// The shell for shell-form commands.
    pub fn shell(&self) -> Vec<String> {
        self.spec.config.shell.clone().unwrap_or_else(default_shell)
    }
}
