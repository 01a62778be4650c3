//! `kiln build --ssh ID[=SOCKET|KEY[,KEY...]]`: the ssh-agent sockets that
//! `RUN --mount=type=ssh` forwards into a step. Key files get a private `ssh-agent` that
//! lives as long as the build.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The agents of one build, by id. Agents kiln started stop when this is dropped.
#[derive(Default)]
pub struct SshAgents {
    pub sockets: BTreeMap<String, PathBuf>,
    agents: Vec<Agent>,
}

/// An `ssh-agent` kiln started for key files, and its private directory.
struct Agent {
    child: Child,
    dir: PrivateDir,
}

/// A directory only root can enter, removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let p = std::env::temp_dir().join(kiln::common::ids::unique_name("kiln-ssh"));
        std::fs::DirBuilder::new().mode(0o700).create(&p)?;
        Ok(PrivateDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Parse every `--ssh` value (Docker's syntax): `default` alone means `$SSH_AUTH_SOCK`.
pub fn agents(specs: &[String]) -> Result<SshAgents, String> {
    let mut out = SshAgents::default();
    for spec in specs {
        let (id, paths) = match spec.split_once('=') {
            Some((id, rest)) => (id, rest.split(',').filter(|p| !p.is_empty()).collect()),
            None => (spec.as_str(), Vec::new()),
        };
        if id.is_empty() || id.contains(',') {
            return Err(format!(
                "error: invalid --ssh {spec:?}: expected ID[=SOCKET|KEY[,KEY...]]"
            ));
        }
        let socket = match paths.as_slice() {
            [] => {
                let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                    format!("error: --ssh {id}: SSH_AUTH_SOCK is not set; give --ssh {id}=SOCKET")
                })?;
                let sock = PathBuf::from(sock);
                if !is_socket(&sock) {
                    return Err(format!(
                        "error: --ssh {id}: SSH_AUTH_SOCK {} is not a socket",
                        sock.display()
                    ));
                }
                sock
            }
            [one] if is_socket(Path::new(one)) => PathBuf::from(one),
            keys => {
                let agent = start_agent(id, keys)?;
                let sock = agent.dir.path().join("agent.sock");
                out.agents.push(agent);
                sock
            }
        };
        out.sockets.insert(id.to_string(), socket);
    }
    Ok(out)
}

/// A private `ssh-agent` holding `keys`.
fn start_agent(id: &str, keys: &[&str]) -> Result<Agent, String> {
    for k in keys {
        if !std::fs::metadata(k).is_ok_and(|m| m.is_file()) {
            return Err(format!(
                "error: --ssh {id}: {k} is neither an agent socket nor a key file"
            ));
        }
    }
    let dir = PrivateDir::new().map_err(|e| format!("error: --ssh {id}: {e}"))?;
    let sock = dir.path().join("agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("error: --ssh {id}: starting ssh-agent for key files: {e} (install openssh-client, or give an agent socket)")
        })?;
    let agent = Agent { child, dir };
    let start = Instant::now();
    // The socket file appears at bind(), before the agent listens: wait until it accepts
    // (ssh-add got "Connection refused" in between on a loaded machine).
    while !is_socket(&sock) || std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("error: --ssh {id}: ssh-agent did not start"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = Command::new("ssh-add")
        .args(keys)
        .env("SSH_AUTH_SOCK", &sock)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("error: --ssh {id}: running ssh-add: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "error: --ssh {id}: ssh-add {}: {}",
            keys.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(agent)
}
