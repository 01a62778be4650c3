//! kiln inside `docker run` with Docker's default settings (no `--privileged`, no
//! `--security-opt`), in kiln's own image: a busybox multi-stage project and a Debian one
//! that runs `apt-get install` over HTTP, each pushed to a loopback `docker-registry`, then
//! pulled and run by Docker. And the README's "kiln in CI" section: its `docker run` commands
//! are taken from the README and run, and its Kubernetes and GitLab CI examples are parsed and
//! held to the same command line.
//!
//! Needs root, debootstrap, Docker and `docker-registry` (`util::require`: a failure under CI).
//! Every `docker run` here adds `--network host` and nothing else: the registry listens on
//! the host's loopback only, which a container reaches only on the host's network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::build_cache_export::count;
use crate::own_image::{docker, docker_run, kiln_image, Removes};
use crate::registry::Registry;
use crate::util::{require, run_tool, stderr, stdout, TestStore};

/// Runs the kiln binary on the host with the store of `s` and `DOCKER_CONFIG` = `cfg`,
/// asserting success.
fn host_kiln(s: &TestStore, cfg: &Path, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_ROOT", s.root())
        .env("DOCKER_CONFIG", cfg)
        .output()
        .expect("running kiln");
    assert!(o.status.success(), "kiln {args:?}: {}", stderr(&o));
}

/// `docker run --rm --network host -v CTX:/workspace IMAGE build ARGS /workspace`: kiln's
/// image, entrypoint `kiln`, with Docker's default seccomp profile and capabilities.
fn build_in_docker(docker: &Path, image: &str, ctx: &Path, build: &[&str]) -> Output {
    let ws = format!("{}:/workspace", ctx.display());
    let mut args = vec![
        "run",
        "--rm",
        "-v",
        &ws,
        // Only to reach the registry on the host's loopback.
        "--network",
        "host",
        image,
        "build",
        "--progress=plain",
    ];
    args.extend_from_slice(build);
    args.push("/workspace");
    docker_run(docker, &args)
}

/// `docker pull` of `image` (removed from Docker again when the guard drops), then `docker
/// run --rm` of it: its standard output.
fn pull_and_run(docker: &Path, image: &str) -> String {
    run_tool(Command::new(docker).args(["pull", image]));
    run_tool(Command::new(docker).args(["run", "--rm", image]))
}

/// A project directory under `s` with a Dockerfile and other files.
fn project(s: &TestStore, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = s.dir.path().join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    for (file, text) in files {
        std::fs::write(ctx.join(file), text).unwrap();
    }
    ctx
}

/// Pushes the store's `NAME:local` to the registry at `host` as `base/NAME:1`; its name.
fn push_base(s: &TestStore, host: &str, name: &str) -> String {
    let cfg = s.dir.path().join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let base = format!("{host}/base/{name}:1");
    host_kiln(s, &cfg, &["tag", &format!("{name}:local"), &base]);
    host_kiln(s, &cfg, &["push", &base]);
    base
}

/// Three stages over busybox: one builds from the context and `chown`s, one deletes, the last
/// copies from both, deletes a base file and `chown`s; its command prints what it finds.
const BUSYBOX_APP: &str = "FROM {BASE} AS build\n\
    RUN mkdir /out && echo built > /out/msg && chown 1000:1000 /out/msg\n\
    COPY src.txt /out/\n\
    FROM {BASE} AS other\n\
    RUN echo other > /other && rm /bin/vi && rm -r /tmp\n\
    FROM {BASE}\n\
    COPY --from=build /out /app\n\
    COPY --from=other /other /app/other\n\
    RUN rm /bin/vi && mkdir /data && chown 65534:65534 /data \
        && cat /app/msg /app/src.txt /app/other > /app/all\n\
    CMD [\"sh\", \"-c\", \"cat /app/all && stat -c '%n %u:%g' /app/msg /data /app/all \
        && test ! -e /bin/vi && echo no-vi\"]\n";

#[test]
fn busybox_multi_stage_builds_in_a_default_docker_run_pushes_and_runs_in_docker() {
    let Some(image) = kiln_image() else { return };
    let docker = docker().unwrap();
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let host = reg.host();
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let base = push_base(&s, &host, "busybox");
    let ctx = project(
        &s,
        "busybox-app",
        &[
            ("Dockerfile", &BUSYBOX_APP.replace("{BASE}", &base)),
            ("src.txt", "source\n"),
        ],
    );
    let app = format!("{host}/busybox-app:1");
    let o = build_in_docker(&docker, &image, &ctx, &["--push", "-t", &app]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("pushing"), "{err}");
    let _pulled = Removes(&docker, app.clone());
    assert_eq!(
        pull_and_run(&docker, &app),
        "built\nsource\nother\n/app/msg 1000:1000\n/data 65534:65534\n/app/all 0:0\nno-vi\n"
    );
}

/// `apt-get install` over HTTP from Debian's mirror (the sources list of
/// `scripts/debian-rootfs.sh`), the program then run by Docker.
const DEBIAN_APP: &str = "FROM {BASE}\n\
    RUN apt-get update && apt-get install -y --no-install-recommends hello \
        && rm -rf /var/lib/apt/lists/*\n\
    RUN hello > /greeting && test -s /usr/share/doc/hello/copyright\n\
    CMD [\"hello\"]\n";

#[test]
fn debian_apt_get_install_builds_in_a_default_docker_run_pushes_and_runs_in_docker() {
    let Some(image) = kiln_image() else { return };
    let docker = docker().unwrap();
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let host = reg.host();
    let s = TestStore::new();
    if s.debian("debian:local").is_none() {
        return;
    }
    let base = push_base(&s, &host, "debian");
    let ctx = project(
        &s,
        "debian-app",
        &[("Dockerfile", &DEBIAN_APP.replace("{BASE}", &base))],
    );
    let app = format!("{host}/debian-app:1");
    let o = build_in_docker(&docker, &image, &ctx, &["--push", "-t", &app]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let _pulled = Removes(&docker, app.clone());
    assert_eq!(pull_and_run(&docker, &app), "Hello, world!\n");
}

/// The README's "kiln in CI" section.
fn readme_ci_section() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("\n## kiln in CI\n")
        .expect("a \"kiln in CI\" section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 4);
    rest[..end].to_string()
}

/// The fenced code blocks of `text` whose info string is `lang`.
fn fenced(text: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) if info.trim() == lang => current = Some(String::new()),
            (None, Some(_)) => current = Some(String::from("\u{0}")),
            (Some(block), Some(_)) => {
                if !block.starts_with('\u{0}') {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            (Some(block), None) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Splits one POSIX shell command line into words as `sh` would, for the README's commands:
/// single and double quotes, backslashes, `$NAME` and `${NAME}` expanded from `vars` (an
/// unknown name is an error here, not empty), `#` starting a comment between words. No
/// globbing, no field splitting of expansions (the examples quote theirs).
fn shell_words(line: &str, vars: &[(&str, &str)]) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    let expand = |chars: &mut std::iter::Peekable<std::str::Chars>, out: &mut String| {
        let braced = chars.next_if_eq(&'{').is_some();
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
        }
        if braced {
            assert_eq!(chars.next(), Some('}'), "unclosed ${{ in {line}");
        }
        let value = vars.iter().find(|(k, _)| *k == name);
        out.push_str(
            value
                .unwrap_or_else(|| panic!("${name} is not set, in {line}"))
                .1,
        );
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, '#') if word.is_none() => break,
            (None, '\'' | '"') => {
                word.get_or_insert_with(String::new);
                quote = Some(c);
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.get_or_insert_with(String::new).push(c),
            (_, '\\') => {
                let next = chars.next().expect("a character after \\");
                if quote.is_none() || matches!(next, '"' | '\\' | '$') {
                    word.get_or_insert_with(String::new).push(next);
                } else {
                    word.get_or_insert_with(String::new).extend(['\\', next]);
                }
            }
            (_, '$') => expand(&mut chars, word.get_or_insert_with(String::new)),
            (_, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "unclosed quote in {line}");
    words.extend(word);
    words
}

/// The `docker run` commands of the section's `sh` blocks, continuation lines joined.
fn readme_docker_runs(section: &str) -> Vec<String> {
    fenced(section, "sh")
        .iter()
        .flat_map(|block| {
            let joined = block.replace("\\\n", " ");
            joined
                .lines()
                .filter(|l| l.trim_start().starts_with("docker run "))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The words of a `docker run` command after its image (the image being the word `kiln`).
fn after_image(words: &[String]) -> &[String] {
    let at = words
        .iter()
        .position(|w| w == "kiln")
        .expect("the image kiln");
    &words[at + 1..]
}

#[test]
fn shell_words_split_as_sh_does() {
    let vars = [("PWD", "/p w"), ("X", "x")];
    for (line, want) in [
        ("a b  c", &["a", "b", "c"][..]),
        (
            "-v \"$PWD\":/w 'it''s' ${X}y",
            &["-v", "/p w:/w", "its", "xy"],
        ),
        ("a \"\\\"q\\$\" 'b\\c' # comment", &["a", "\"q$", "b\\c"]),
        ("'' \"\"", &["", ""]),
    ] {
        assert_eq!(shell_words(line, &vars), want, "{line}");
    }
}

/// The README's `docker run` commands, run as written but for the registry's name, the image's
/// and the host network: the push, then the shared cache twice (the second runner, a fresh
/// container, runs no step). The credentials are the mounted `$HOME/.docker`, from `kiln login`.
#[test]
fn readme_docker_run_examples_build_push_and_share_a_cache() {
    let section = readme_ci_section();
    let runs = readme_docker_runs(&section);
    assert_eq!(runs.len(), 2, "the push and the shared cache: {runs:?}");
    let Some(image) = kiln_image() else { return };
    let docker = docker().unwrap();
    let Some(reg) = Registry::start(true) else {
        return;
    };
    let host = reg.host();
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let home = s.dir.path().join("home");
    let cfg = home.join(".docker");
    std::fs::create_dir_all(&cfg).unwrap();
    host_kiln(&s, &cfg, &["login", "-u", "kiln", "-p", "s3cret", &host]);
    let base = format!("{host}/base/busybox:1");
    host_kiln(&s, &cfg, &["tag", "busybox:local", &base]);
    host_kiln(&s, &cfg, &["push", &base]);
    let ctx = project(
        &s,
        "app",
        &[
            ("Dockerfile", &BUSYBOX_APP.replace("{BASE}", &base)),
            ("src.txt", "source\n"),
        ],
    );
    let (pwd, home_s) = (ctx.display().to_string(), home.display().to_string());
    let vars = [("PWD", pwd.as_str()), ("HOME", home_s.as_str())];
    let run = |line: &str| {
        let words = shell_words(line, &vars);
        assert_eq!(words[..2], ["docker", "run"], "{line}");
        let mut args: Vec<String> = vec!["run".into(), "--network".into(), "host".into()];
        let at = words.iter().position(|w| w == "kiln").expect("image kiln");
        args.extend(words[2..at].iter().cloned());
        args.push(image.clone());
        args.extend(
            words[at + 1..]
                .iter()
                .map(|w| w.replace("registry.example.com", &host)),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_run(&docker, &args)
    };
    let app = format!("{host}/team/app:1");
    let output =
        "built\nsource\nother\n/app/msg 1000:1000\n/data 65534:65534\n/app/all 0:0\nno-vi\n";
    let config = cfg.display().to_string();
    let pull_run = || {
        run_tool(Command::new(&docker).args(["--config", &config, "pull", &app]));
        run_tool(Command::new(&docker).args(["run", "--rm", &app]))
    };

    let o = run(&runs[0]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let _pulled = Removes(&docker, app.clone());
    assert_eq!(pull_run(), output);

    let first = run(&runs[1]);
    assert!(first.status.success(), "{}", stderr(&first));
    let cache = format!("{host}/team/app:buildcache");
    let exported = format!("exporting cache to registry {cache} done (");
    assert!(stderr(&first).contains(&exported), "{}", stderr(&first));
    let second = run(&runs[1]);
    let err = stderr(&second);
    assert!(second.status.success(), "{err}");
    assert_eq!(
        count(&second, &format!("CACHED (from registry {cache})")),
        6,
        "{err}"
    );
    assert_eq!(count(&second, "cache miss:"), 0, "{err}");
    // The first pull's image (other timestamps), so it is not left behind untagged.
    run_tool(Command::new(&docker).args(["rmi", &app]));
    assert_eq!(pull_run(), output);
}

/// A YAML document parsed by Python's `yaml.safe_load` (Debian's python3-yaml), as JSON.
fn yaml(text: &str) -> Option<serde_json::Value> {
    use std::io::Write;
    let python = require::tool("python3", "apt-get install python3-yaml")?;
    let script = "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)";
    let has_yaml = Command::new(&python)
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require::require(
        has_yaml,
        "python3's yaml module (apt-get install python3-yaml)",
    ) {
        return None;
    }
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "YAML does not parse: {}\n{text}",
        stderr(&o)
    );
    Some(serde_json::from_slice(&o.stdout).expect("JSON from python"))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("a string: {s}"))
                .to_string()
        })
        .collect()
}

/// The README's Kubernetes `Job`, GitLab CI job and GitHub Actions workflow parse as YAML, and the `kiln` command lines of the Job and the GitLab job
/// are the one the shared-cache `docker run` example gives (which the test above runs), with
/// GitLab's variables standing for the registry, the tag and the project.
#[test]
fn readme_kubernetes_and_gitlab_examples_parse_and_run_the_tested_command() {
    let section = readme_ci_section();
    let runs = readme_docker_runs(&section);
    let no_vars = [("PWD", "/p"), ("HOME", "/h")];
    let tested: Vec<String> = after_image(&shell_words(&runs[1], &no_vars)).to_vec();
    assert_eq!(tested[0], "build");
    let blocks = fenced(&section, "yaml");
    assert_eq!(blocks.len(), 3, "Job, GitLab, GitHub: {blocks:?}");
    let docs: Vec<serde_json::Value> = match blocks.iter().map(|b| yaml(b)).collect() {
        Some(docs) => docs,
        None => return,
    };

    let job = &docs[0];
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    // The default pod security: nothing asked of the pod or the container.
    assert!(pod.get("securityContext").is_none(), "{pod}");
    let kiln = &pod["containers"][0];
    assert!(kiln.get("securityContext").is_none(), "{kiln}");
    assert!(
        kiln.get("command").is_none(),
        "the image's entrypoint runs: {kiln}"
    );
    assert_eq!(strings(&kiln["args"]), tested);
    let env: Vec<(String, String)> = kiln["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let docker_config = var("DOCKER_CONFIG").expect("DOCKER_CONFIG");
    assert!(var("KILN_ROOT").is_some(), "{env:?}");
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let mounts = kiln["volumeMounts"].as_array().expect("volumeMounts");
    for m in mounts.iter().chain(
        pod["initContainers"][0]["volumeMounts"]
            .as_array()
            .expect("the checkout's volumeMounts"),
    ) {
        assert!(volumes.contains(&m["name"].as_str().unwrap()), "{m}");
    }
    let creds = mounts
        .iter()
        .find(|m| m["mountPath"] == docker_config.as_str())
        .expect("the credentials mounted at DOCKER_CONFIG");
    assert_eq!(creds["readOnly"], true);
    assert!(
        mounts.iter().any(|m| m["mountPath"] == "/workspace"),
        "{mounts:?}"
    );
    assert_eq!(pod["initContainers"][0]["image"], kiln["image"]);

    let gitlab = &docs[1]["build-image"];
    assert_eq!(strings(&gitlab["image"]["entrypoint"]), [""]);
    let script = strings(&gitlab["script"]);
    assert_eq!(script.len(), 2, "{script:?}");
    let ci = [
        ("CI_REGISTRY", "registry.example.com"),
        ("CI_REGISTRY_USER", "u"),
        ("CI_REGISTRY_PASSWORD", "p"),
        ("CI_REGISTRY_IMAGE", "registry.example.com/team/app"),
        ("CI_COMMIT_SHORT_SHA", "1"),
        ("CI_PROJECT_DIR", "/workspace"),
    ];
    let (printf, login) = script[0].split_once(" | ").expect("printf … | kiln login");
    assert_eq!(shell_words(printf, &ci), ["printf", "%s", "p"]);
    assert_eq!(
        shell_words(login, &ci),
        [
            "kiln",
            "login",
            "-u",
            "u",
            "--password-stdin",
            "registry.example.com"
        ]
    );
    let build = shell_words(&script[1], &ci);
    assert_eq!(build[0], "kiln");
    assert_eq!(build[1..], tested[..]);

    let github = &docs[2]["jobs"]["image"];
    assert!(github["container"].as_str().is_some(), "{github}");
    let steps = github["steps"].as_array().expect("steps");
    assert!(
        steps.iter().any(|s| s["run"]
            .as_str()
            .is_some_and(|r| r.contains("kiln build --push"))),
        "{steps:?}"
    );
}

/// The README's GitLab job run as GitLab's Docker executor runs it (its `script` lines by `sh`
/// in kiln's image, entrypoint emptied, the `CI_*` variables set, the project checked out at
/// `$CI_PROJECT_DIR`), and the Kubernetes Job's container as a default `docker run` (its
/// `args` and `env`, its volumes bound from host directories; the checkout done beforehand),
/// each against a loopback registry with basic auth; then the pushed images run in Docker.
#[test]
fn readme_gitlab_job_and_kubernetes_container_run_in_a_default_docker_run() {
    let section = readme_ci_section();
    let blocks = fenced(&section, "yaml");
    let (Some(job), Some(gitlab)) = (yaml(&blocks[0]), yaml(&blocks[1])) else {
        return;
    };
    let Some(image) = kiln_image() else { return };
    let docker = docker().unwrap();
    let Some(reg) = Registry::start(true) else {
        return;
    };
    let host = reg.host();
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let cfg = s.dir.path().join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    host_kiln(&s, &cfg, &["login", "-u", "kiln", "-p", "s3cret", &host]);
    let base = format!("{host}/base/busybox:1");
    host_kiln(&s, &cfg, &["tag", "busybox:local", &base]);
    host_kiln(&s, &cfg, &["push", &base]);
    let files = [
        ("Dockerfile", BUSYBOX_APP.replace("{BASE}", &base)),
        ("src.txt", "source\n".to_string()),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(f, t)| (*f, t.as_str())).collect();
    let output =
        "built\nsource\nother\n/app/msg 1000:1000\n/data 65534:65534\n/app/all 0:0\nno-vi\n";
    let config = cfg.display().to_string();
    let pull_run = |app: &str| {
        let _pulled = Removes(&docker, app.to_string());
        run_tool(Command::new(&docker).args(["--config", &config, "pull", app]));
        run_tool(Command::new(&docker).args(["run", "--rm", app]))
    };

    // GitLab: the job's image with `entrypoint: [""]`, its script in one `sh`.
    let gl = &gitlab["build-image"];
    let script = strings(&gl["script"]).join("\n");
    let ctx = project(&s, "gitlab", &files);
    let ws = format!("{}:/builds/team/app", ctx.display());
    let vars = [
        format!("CI_REGISTRY={host}"),
        "CI_REGISTRY_USER=kiln".into(),
        "CI_REGISTRY_PASSWORD=s3cret".into(),
        format!("CI_REGISTRY_IMAGE={host}/team/app"),
        "CI_COMMIT_SHORT_SHA=0abc123".into(),
        "CI_PROJECT_DIR=/builds/team/app".into(),
    ];
    let mut args = vec!["run", "--rm", "--network", "host", "--entrypoint", ""];
    for v in &vars {
        args.extend(["-e", v]);
    }
    let set_e = format!("set -e\n{script}");
    args.extend([
        "-v",
        &ws,
        "-w",
        "/builds/team/app",
        &image,
        "sh",
        "-c",
        &set_e,
    ]);
    let o = docker_run(&docker, &args);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(pull_run(&format!("{host}/team/app:0abc123")), output);

    // Kubernetes: the Job's container; each volume a host directory, the Secret's
    // `config.json` the one `kiln login` wrote.
    let pod = &job["spec"]["template"]["spec"];
    let kiln = &pod["containers"][0];
    let ctx = project(&s, "k8s", &files);
    let cache = s.dir.path().join("k8s-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mut args: Vec<String> = ["run", "--rm", "--network", "host"]
        .map(String::from)
        .into();
    for e in kiln["env"].as_array().expect("env") {
        args.push("-e".into());
        args.push(format!(
            "{}={}",
            e["name"].as_str().unwrap(),
            e["value"].as_str().unwrap()
        ));
    }
    for m in kiln["volumeMounts"].as_array().expect("volumeMounts") {
        let from = match m["name"].as_str().unwrap() {
            "workspace" => &ctx,
            "cache" => &cache,
            "registry-credentials" => &cfg,
            other => panic!("a volume this test does not know: {other}"),
        };
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        let at = m["mountPath"].as_str().unwrap();
        args.push("-v".into());
        args.push(format!("{}:{at}{ro}", from.display()));
    }
    args.push(image.clone());
    args.extend(
        strings(&kiln["args"])
            .iter()
            .map(|a| a.replace("registry.example.com", &host)),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = docker_run(&docker, &args);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(pull_run(&format!("{host}/team/app:1")), output);
}
