//! The image configuration document as Docker and BuildKit write it: the OCI image config
//! plus Docker's extension fields (`Healthcheck`, `OnBuild`, `Shell`) that oci-spec's types
//! leave out, with every map ordered so the same image always serialises to the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Docker's empty-object marker used in `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// HEALTHCHECK settings (durations in nanoseconds, as Docker stores them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`.
    #[serde(
        rename = "Test",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(
        rename = "Interval",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub interval: i64,
    /// Time one check may take.
    #[serde(
        rename = "Timeout",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub timeout: i64,
    /// Start-up grace period.
    #[serde(
        rename = "StartPeriod",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub start_period: i64,
    /// Time between checks during the start period.
    #[serde(
        rename = "StartInterval",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub start_interval: i64,
    /// Failures before unhealthy.
    #[serde(
        rename = "Retries",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero_u"
    )]
    pub retries: u32,
}

/// Docker writes `null` for an empty field (`"Env": null` in `docker commit`'s configs): read
/// it as the empty value, as Docker does, so every image `load` stores can also be run.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u(v: &u32) -> bool {
    *v == 0
}

/// The runtime part of an image configuration (`config` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `USER`.
    #[serde(
        rename = "User",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    /// `EXPOSE`: keys like `8080/tcp`.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// `ENV`, as `K=V`.
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`.
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    /// `WORKDIR`.
    #[serde(
        rename = "WorkingDir",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    /// `HEALTHCHECK` (Docker extension).
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers (Docker extension).
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// `SHELL` (Docker extension).
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

impl RunConfig {
    /// The value of an environment variable.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if kv == key => Some(""),
            _ => None,
        })
    }

    /// Set an environment variable, replacing an earlier value in place.
    pub fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => self.env.push(entry),
        }
    }
}

/// `rootfs` of an image configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layers, bottom first.
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One `history` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, e.g. `RUN /bin/sh -c make # buildkit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment, e.g. `buildkit.dockerfile.v0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step added no layer.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub empty_layer: bool,
}

/// A whole image configuration document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `MAINTAINER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`, ...).
    pub architecture: String,
    /// CPU variant (`v8`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Operating system.
    pub os: String,
    /// Runtime configuration.
    #[serde(default, deserialize_with = "nullable")]
    pub config: RunConfig,
    /// Layer diffIDs.
    #[serde(default, deserialize_with = "nullable")]
    pub rootfs: RootFs,
    /// One entry per step.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

impl ImageSpec {
    /// An empty image for this machine's platform (`FROM scratch`).
    pub fn scratch() -> ImageSpec {
        ImageSpec {
            architecture: host_architecture().to_string(),
            os: "linux".to_string(),
            ..Default::default()
        }
    }

    /// Parse a configuration blob (unknown fields are ignored).
    pub fn from_slice(bytes: &[u8]) -> Result<ImageSpec, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The canonical bytes of this document: the same image always gives the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Struct fields serialise in declaration order and every map is a BTreeMap, so plain
        // serialisation is already deterministic.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The OCI architecture name of this machine.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_docker_fields_and_env_updates() {
        let mut spec = ImageSpec::scratch();
        spec.config.env_set("PATH", "/bin");
        spec.config.env_set("A", "1");
        spec.config.env_set("PATH", "/usr/bin:/bin");
        assert_eq!(spec.config.env, vec!["PATH=/usr/bin:/bin", "A=1"]);
        assert_eq!(spec.config.env_get("A"), Some("1"));
        spec.config.shell = Some(vec!["/bin/bash".into(), "-c".into()]);
        spec.config.healthcheck = Some(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        });
        let bytes = spec.to_bytes();
        let back = ImageSpec::from_slice(&bytes).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.to_bytes(), bytes);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"Shell\":[\"/bin/bash\",\"-c\"]"), "{text}");
        assert!(
            text.contains("\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}"),
            "{text}"
        );
    }
}
