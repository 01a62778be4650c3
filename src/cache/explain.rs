//! Why a step missed the cache: the inputs of each step's key are recorded per build, and a
//! miss is explained by the first input that differs from the previous build of the same
//! Dockerfile and target.
//!
//! Input names: `base` (image name and digest), `instruction`, `arg:NAME`, `env:NAME`,
//! `file:PATH` (mode, owner and content hash of a context file, or a symlink's target),
//! `parent` (the parent step's key) with `parent-step` (its number in the build).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Format version of build records.
pub const RECORD_VERSION: u32 = 1;

/// The inputs of one step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInputs {
    /// Where the step is: `<stage>/<n>`, stable across builds of the same Dockerfile.
    pub position: String,
    /// Its key.
    pub key: String,
    /// Named inputs.
    pub inputs: BTreeMap<String, String>,
}

/// One step of a saved record. Its inputs stay JSON text until a miss needs them explained,
/// so a rebuild whose keys all match does not parse an entry per context file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredStep {
    /// Where the step is (see [`StepInputs::position`]).
    pub position: String,
    /// Its key.
    pub key: String,
    inputs: Box<serde_json::value::RawValue>,
    /// The build that recorded it left no cache entry for it: the step failed, or the build
    /// stopped before it ended. A retry then misses for that reason, not because an entry
    /// went (records written before this field read as finished).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unfinished: bool,
}

impl StoredStep {
    /// `step` as it is saved.
    pub fn new(step: &StepInputs) -> serde_json::Result<StoredStep> {
        Ok(StoredStep {
            position: step.position.clone(),
            key: step.key.clone(),
            inputs: serde_json::value::to_raw_value(&step.inputs)?,
            unfinished: false,
        })
    }

    /// The step with its inputs parsed (`None` if they are unreadable).
    pub fn parse(&self) -> Option<StepInputs> {
        Some(StepInputs {
            position: self.position.clone(),
            key: self.key.clone(),
            inputs: serde_json::from_str(self.inputs.get()).ok()?,
        })
    }
}

impl PartialEq for StoredStep {
    fn eq(&self, other: &StoredStep) -> bool {
        self.position == other.position
            && self.key == other.key
            && self.inputs.get() == other.inputs.get()
            && self.unfinished == other.unfinished
    }
}

/// All steps of one build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Format version.
    pub version: u32,
    /// The steps that have keys, sorted by position.
    pub steps: Vec<StoredStep>,
}

impl BuildRecord {
    /// The step at `position`.
    pub fn step(&self, position: &str) -> Option<&StoredStep> {
        self.step_index(position).map(|i| &self.steps[i])
    }

    /// The index in `steps` of the step at `position`.
    pub fn step_index(&self, position: &str) -> Option<usize> {
        // Steps are saved sorted by position: a search, not a scan per step (which made a
        // Dockerfile of n steps cost n² comparisons). A record sorted otherwise (edited by
        // hand) only loses miss reasons.
        self.steps
            .binary_search_by(|s| s.position.as_str().cmp(position))
            .ok()
    }
}

/// Where the records of one Dockerfile and target live.
pub fn record_path(cache_dir: &Path, build_id: &str) -> PathBuf {
    cache_dir.join("builds").join(format!("{build_id}.json"))
}

/// The previous build's record, if readable.
pub fn load(path: &Path) -> Option<BuildRecord> {
    let rec: BuildRecord = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    (rec.version == RECORD_VERSION).then_some(rec)
}

fn file_detail(old: &str, new: &str) -> &'static str {
    // Values are `mode:uid:gid:hash`; say which part moved.
    let o: Vec<&str> = old.splitn(4, ':').collect();
    let n: Vec<&str> = new.splitn(4, ':').collect();
    match (o.as_slice(), n.as_slice()) {
        ([om, ou, og, oh], [nm, nu, ng, nh]) => {
            if oh != nh {
                "content"
            } else if om != nm {
                "mode"
            } else if ou != nu || og != ng {
                "owner"
            } else {
                "metadata"
            }
        }
        _ => "content",
    }
}

/// Why a step with the same inputs as last time missed, when last time left no entry.
pub const UNFINISHED: &str =
    "the last build stored no result for it (the step failed, or the build stopped first)";

/// Why a step with the same inputs as last time missed, when last time stored an entry.
pub const ENTRY_GONE: &str = "its cache entry is gone (pruned since the last build)";

/// Why `cur` missed, compared with the same step of the previous build as that build saved
/// it (which says whether the step finished then).
pub fn explain_stored(prev: Option<&StoredStep>, cur: &StepInputs) -> String {
    let Some(stored) = prev else {
        return explain(None, cur);
    };
    let Some(parsed) = stored.parse() else {
        // Unreadable inputs: nothing to compare with.
        return explain(None, cur);
    };
    match difference(&parsed, cur) {
        Some(why) => why,
        None if stored.unfinished => UNFINISHED.to_string(),
        None => ENTRY_GONE.to_string(),
    }
}

/// Why `cur` missed, compared with the same step of the previous build.
pub fn explain(prev: Option<&StepInputs>, cur: &StepInputs) -> String {
    match prev {
        None => "no earlier build".to_string(),
        Some(prev) => difference(prev, cur).unwrap_or_else(|| ENTRY_GONE.to_string()),
    }
}

/// The first input that differs between `prev` and `cur`, in words; `None` when they agree.
fn difference(prev: &StepInputs, cur: &StepInputs) -> Option<String> {
    let get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned();
    // Records of builds before platforms were recorded have none: not a change.
    if let (Some(a), Some(b)) = (get(&prev.inputs, "platform"), get(&cur.inputs, "platform")) {
        if a != b {
            return Some(format!("the platform changed ({a} → {b})"));
        }
    }
    if get(&prev.inputs, "base") != get(&cur.inputs, "base") {
        let name = cur
            .inputs
            .get("base")
            .map_or("", |b| b.split('@').next().unwrap_or(b));
        return Some(format!("base image {name} changed"));
    }
    if get(&prev.inputs, "instruction") != get(&cur.inputs, "instruction") {
        return Some("the instruction changed".to_string());
    }
    for prefix in ["arg:", "env:"] {
        let keys: std::collections::BTreeSet<&String> = prev
            .inputs
            .keys()
            .chain(cur.inputs.keys())
            .filter(|k| k.starts_with(prefix))
            .collect();
        for k in keys {
            let (a, b) = (prev.inputs.get(k), cur.inputs.get(k));
            if a != b {
                let name = &k[prefix.len()..];
                let show = |v: Option<&String>| v.map_or("unset".to_string(), |v| v.clone());
                let what = if prefix == "arg:" { "build arg" } else { "ENV" };
                return Some(format!("{what} {name} changed ({} → {})", show(a), show(b)));
            }
        }
    }
    let files: std::collections::BTreeSet<&String> = prev
        .inputs
        .keys()
        .chain(cur.inputs.keys())
        .filter(|k| k.starts_with("file:"))
        .collect();
    for k in files {
        let path = &k["file:".len()..];
        match (prev.inputs.get(k), cur.inputs.get(k)) {
            (Some(a), Some(b)) if a != b => {
                return Some(format!("{path} changed ({})", file_detail(a, b)))
            }
            (None, Some(_)) => return Some(format!("{path} added")),
            (Some(_), None) => return Some(format!("{path} removed")),
            _ => {}
        }
    }
    for k in cur.inputs.keys().chain(prev.inputs.keys()) {
        if k.starts_with("file:") || k.starts_with("arg:") || k.starts_with("env:") {
            continue;
        }
        if k == "parent" || k == "parent-step" || k == "parent-change" {
            continue;
        }
        if prev.inputs.get(k) != cur.inputs.get(k) {
            return Some(format!("{k} changed"));
        }
    }
    if get(&prev.inputs, "parent") != get(&cur.inputs, "parent") {
        if let Some(why) = cur.inputs.get("parent-change") {
            return Some(why.clone());
        }
        return Some(match cur.inputs.get("parent-step") {
            Some(n) => format!("parent step #{n} rebuilt"),
            None => "the step before it changed".to_string(),
        });
    }
    None
}

/// A readable side-by-side of every input of a step, for `kiln build --explain`.
pub fn compare(prev: Option<&StepInputs>, cur: &StepInputs) -> Vec<String> {
    let empty = BTreeMap::new();
    let old = prev.map_or(&empty, |p| &p.inputs);
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(cur.inputs.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let (a, b) = (old.get(k), cur.inputs.get(k));
            let mark = if a == b { "  " } else { "≠ " };
            let show = |v: Option<&String>| v.map_or("-".to_string(), |v| v.clone());
            if a == b {
                format!("{mark}{k} = {}", show(b))
            } else {
                format!("{mark}{k}: {} → {}", show(a), show(b))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(pairs: &[(&str, &str)]) -> StepInputs {
        StepInputs {
            position: "0/1".into(),
            key: "k".into(),
            inputs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn reasons_in_order() {
        let base = step(&[
            ("base", "busybox:local@sha256:aa"),
            ("instruction", "COPY . /app"),
            ("arg:VERSION", "1.2"),
            ("file:src/main.rs", "644:0:0:h1"),
            ("parent", "p1"),
            ("parent-step", "4"),
        ]);
        let with = |k: &str, v: Option<&str>| {
            let mut s = base.clone();
            match v {
                Some(v) => s.inputs.insert(k.into(), v.into()),
                None => s.inputs.remove(k),
            };
            s
        };
        assert_eq!(explain(None, &base), "no earlier build");
        assert_eq!(
            explain(Some(&base), &with("base", Some("busybox:local@sha256:bb"))),
            "base image busybox:local changed"
        );
        assert_eq!(
            explain(Some(&base), &with("arg:VERSION", Some("1.3"))),
            "build arg VERSION changed (1.2 → 1.3)"
        );
        assert_eq!(
            explain(Some(&base), &with("file:src/main.rs", Some("644:0:0:h2"))),
            "src/main.rs changed (content)"
        );
        assert_eq!(
            explain(Some(&base), &with("file:src/main.rs", Some("600:0:0:h1"))),
            "src/main.rs changed (mode)"
        );
        assert_eq!(
            explain(Some(&base), &with("file:new.rs", Some("644:0:0:x"))),
            "new.rs added"
        );
        assert_eq!(
            explain(Some(&base), &with("parent", Some("p2"))),
            "parent step #4 rebuilt"
        );
        assert_eq!(explain(Some(&base), &base), ENTRY_GONE);
        // A step the last build did not finish (its RUN failed) had no entry to lose.
        let mut stored = StoredStep::new(&base).unwrap();
        assert_eq!(explain_stored(Some(&stored), &base), ENTRY_GONE);
        stored.unfinished = true;
        assert_eq!(explain_stored(Some(&stored), &base), UNFINISHED);
        assert_eq!(
            explain_stored(Some(&stored), &with("arg:VERSION", Some("1.3"))),
            "build arg VERSION changed (1.2 → 1.3)"
        );
        assert_eq!(explain_stored(None, &base), "no earlier build");
        let json = serde_json::to_string(&stored).unwrap();
        assert!(json.contains("\"unfinished\":true"), "{json}");
        let back: StoredStep = serde_json::from_str(&json).unwrap();
        assert_eq!(back, stored);
        stored.unfinished = false;
        let json = serde_json::to_string(&stored).unwrap();
        assert!(
            !json.contains("unfinished"),
            "records stay as they were: {json}"
        );
        let lines = compare(Some(&base), &with("arg:VERSION", Some("1.3")));
        assert!(
            lines.contains(&"≠ arg:VERSION: 1.2 → 1.3".to_string()),
            "{lines:?}"
        );
    }
}
