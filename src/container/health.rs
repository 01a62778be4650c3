//! Health checks of running containers (`HEALTHCHECK`, `--health-*`), run by the monitor as
//! Docker's daemon runs them: every interval (the start interval during the start period) the
//! check command runs inside the container, as `exec` would, for at most the timeout; exit 0
//! is healthy, anything else a failure, and `retries` failures in a row (not counting those
//! in the start period) make the container unhealthy. The result is `<dir>/health.json`,
//! written atomically by the checker alone, which `inspect` and `ps` read.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{ContainerConfig, Result};
use crate::executor::{self, ExitStatus, Input, Output, StepIo};
use crate::image::spec::HealthConfig;

/// Docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Output kept per check, and checks kept in the log (Docker's limits).
const MAX_OUTPUT: usize = 4096;
const MAX_LOG: usize = 5;

/// One check's result (Docker's `State.Health.Log` entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthLog {
    /// When it started (RFC 3339).
    #[serde(rename = "Start")]
    pub start: String,
    /// When it ended.
    #[serde(rename = "End")]
    pub end: String,
    /// The check's exit code (-1: it could not run or timed out).
    #[serde(rename = "ExitCode")]
    pub exit_code: i32,
    /// Its output, at most 4 KiB.
    #[serde(rename = "Output")]
    pub output: String,
}

/// A container's health (Docker's `State.Health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    #[serde(rename = "Status")]
    pub status: String,
    /// Failures in a row.
    #[serde(rename = "FailingStreak")]
    pub failing_streak: u32,
    /// The last checks, oldest first.
    #[serde(rename = "Log")]
    pub log: Vec<HealthLog>,
}

impl Health {
    fn starting() -> Health {
        Health {
            status: "starting".into(),
            failing_streak: 0,
            log: Vec::new(),
        }
    }
}

/// The health check a container runs: the image's, overridden field by field by the
/// `--health-*` flags; `None` when there is none or it is `NONE` / `--no-healthcheck`.
pub fn effective(image: Option<&HealthConfig>, flags: &HealthFlags) -> Option<HealthConfig> {
    if flags.disable {
        return None;
    }
    let mut hc = image.cloned().unwrap_or_default();
    if let Some(cmd) = &flags.cmd {
        hc.test = vec!["CMD-SHELL".into(), cmd.clone()];
    }
    let set = |v: &mut i64, f: Option<i64>| {
        if let Some(f) = f {
            *v = f;
        }
    };
    set(&mut hc.interval, flags.interval);
    set(&mut hc.timeout, flags.timeout);
    set(&mut hc.start_period, flags.start_period);
    set(&mut hc.start_interval, flags.start_interval);
    if let Some(r) = flags.retries {
        hc.retries = r;
    }
    match hc.test.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") if hc.test.len() > 1 => Some(hc),
        _ => None,
    }
}

/// `--health-*` flags of `run`/`create` (durations in nanoseconds).
#[derive(Debug, Clone, Default)]
pub struct HealthFlags {
    /// `--health-cmd`.
    pub cmd: Option<String>,
    /// `--health-interval`.
    pub interval: Option<i64>,
    /// `--health-timeout`.
    pub timeout: Option<i64>,
    /// `--health-start-period`.
    pub start_period: Option<i64>,
    /// `--health-start-interval`.
    pub start_interval: Option<i64>,
    /// `--health-retries`.
    pub retries: Option<u32>,
    /// `--no-healthcheck`.
    pub disable: bool,
}

/// Parses a `--health-*` duration (`30s`, `1m30s`), as Docker: Go syntax, not negative.
pub fn parse_duration(flag: &str, s: &str) -> Result<i64> {
    let n = crate::common::duration::parse_duration(s).map_err(|source| {
        super::ContainerError::HealthDuration {
            flag: flag.to_string(),
            value: s.to_string(),
            source,
        }
    })?;
    if n < 0 {
        return Err(super::ContainerError::Invalid(format!(
            "invalid argument {s:?} for {flag}: must not be negative"
        )));
    }
    Ok(n)
}

/// The health recorded for the container in `dir`, if it has a check.
pub fn read(dir: &Path) -> Option<Health> {
    let bytes = std::fs::read(dir.join("health.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write(dir: &Path, h: &Health) {
    if let Err(e) = super::write_json(&dir.join("health.json"), h) {
        tracing::warn!(error = %e, "cannot record the container's health");
    }
}

/// Stops the checker of one run of the container when dropped.
pub struct Checker {
    stop: Arc<AtomicBool>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts checking the container whose PID 1 `pidfd` refers to (one run of it): its health
/// starts as `starting`.
pub fn start(dir: &Path, cfg: &ContainerConfig, hc: &HealthConfig, pidfd: OwnedFd) -> Checker {
    let stop = Arc::new(AtomicBool::new(false));
    write(dir, &Health::starting());
    let (dir, cfg, hc, stop2) = (dir.to_path_buf(), cfg.clone(), hc.clone(), stop.clone());
    std::thread::spawn(move || run(&dir, &cfg, &hc, &pidfd, &stop2));
    Checker { stop }
}

fn dur(nanos: i64, default: Duration) -> Duration {
    if nanos > 0 {
        Duration::from_nanos(nanos as u64)
    } else {
        default
    }
}

fn run(dir: &Path, cfg: &ContainerConfig, hc: &HealthConfig, pidfd: &OwnedFd, stop: &AtomicBool) {
    let interval = dur(hc.interval, DEFAULT_INTERVAL);
    let start_interval = dur(hc.start_interval, DEFAULT_START_INTERVAL);
    let timeout = dur(hc.timeout, DEFAULT_TIMEOUT);
    let start_period = dur(hc.start_period, Duration::ZERO);
    let retries = if hc.retries > 0 {
        hc.retries
    } else {
        DEFAULT_RETRIES
    };
    let began = Instant::now();
    let mut health = Health::starting();
    loop {
        let in_start = began.elapsed() < start_period;
        let wait = if in_start && health.status == "starting" {
            start_interval
        } else {
            interval
        };
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let in_start = began.elapsed() < start_period;
        let entry = check(cfg, hc, pidfd, timeout, stop);
        if stop.load(Ordering::SeqCst) {
            return; // the container stopped during the check: its result means nothing
        }
        if entry.exit_code == 0 {
            health.status = "healthy".into();
            health.failing_streak = 0;
        } else if !(in_start && health.status == "starting") {
            health.failing_streak += 1;
            if health.failing_streak >= retries {
                health.status = "unhealthy".into();
            }
        }
        health.log.push(entry);
        if health.log.len() > MAX_LOG {
            health.log.remove(0);
        }
        write(dir, &health);
    }
}

/// Runs the check once inside the container.
fn check(
    cfg: &ContainerConfig,
    hc: &HealthConfig,
    pidfd: &OwnedFd,
    timeout: Duration,
    stop: &AtomicBool,
) -> HealthLog {
    let start = super::now();
    let argv: Vec<String> = match hc.test[0].as_str() {
        "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), hc.test[1].clone()],
        _ => hc.test[1..].to_vec(),
    };
    let mut spec = cfg.step_spec("/tmp", argv);
    let cancel = Arc::new(AtomicBool::new(false));
    spec.cancel = Some(cancel.clone());
    let mut join = super::ops::cgroup_joiner(&cfg.id);
    let mut output = Vec::new();
    let mut keep = |line: &[u8]| {
        if output.len() < MAX_OUTPUT {
            output.extend_from_slice(line);
            output.push(b'\n');
            output.truncate(MAX_OUTPUT);
        }
    };
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let watchdog = s.spawn(|| {
            let deadline = Instant::now() + timeout;
            while !done.load(Ordering::SeqCst) {
                if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
                    cancel.store(true, Ordering::SeqCst);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        });
        let mut out_lines = |l: &[u8]| keep(l);
        let r = executor::exec_in(
            &spec,
            pidfd.as_fd(),
            StepIo {
                stdin: Input::Null,
                stdout: Output::Lines(&mut out_lines),
                stderr: Output::Null,
                on_start: None,
                console: None,
                on_ready: Some(&mut join),
            },
        );
        done.store(true, Ordering::SeqCst);
        let timed_out = watchdog.join().unwrap_or(false);
        (r, timed_out)
    });
    let (exit_code, text) = match result {
        (_, true) => (
            -1,
            format!("Health check exceeded timeout ({}s)", timeout.as_secs_f64()),
        ),
        (Ok(ExitStatus::Code(c)), _) => (c, String::from_utf8_lossy(&output).into_owned()),
        (Ok(ExitStatus::Signal(s)), _) => (128 + s, String::from_utf8_lossy(&output).into_owned()),
        (Err(e), _) => (-1, e.to_string()),
    };
    HealthLog {
        start,
        end: super::now(),
        exit_code,
        output: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_image_check() {
        let image = HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: 5,
            retries: 2,
            ..Default::default()
        };
        let hc = effective(Some(&image), &HealthFlags::default()).unwrap();
        assert_eq!(hc, image);
        let flags = HealthFlags {
            cmd: Some("wget -q localhost".into()),
            interval: Some(7),
            ..Default::default()
        };
        let hc = effective(Some(&image), &flags).unwrap();
        assert_eq!(hc.test, ["CMD-SHELL", "wget -q localhost"]);
        assert_eq!((hc.interval, hc.retries), (7, 2));
        assert!(effective(
            Some(&image),
            &HealthFlags {
                disable: true,
                ..Default::default()
            }
        )
        .is_none());
        let none = HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert!(effective(Some(&none), &HealthFlags::default()).is_none());
        assert!(effective(None, &HealthFlags::default()).is_none());
        assert_eq!(
            parse_duration("--health-interval", "1m30s").unwrap(),
            90_000_000_000
        );
        assert!(parse_duration("--health-interval", "-1s").is_err());
        assert!(matches!(
            parse_duration("--health-interval", "soon"),
            Err(crate::container::ContainerError::HealthDuration {
                source: crate::common::duration::DurationError::Invalid(_),
                ..
            })
        ));
    }
}
