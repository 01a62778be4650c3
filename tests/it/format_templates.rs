//! `--format` is Go's text/template on every command: the idioms Docker users script with,
//! Docker's wording and exit codes for bad templates, and (where Docker is installed) the same
//! template printing the same text for the same image and container in both.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::util::{find_tool, stderr, stdout, unique_name, Kiln};

/// `docker` with a reachable daemon, or why not.
fn docker() -> Result<PathBuf, String> {
    let docker = find_tool("docker").ok_or("docker (not installed)")?;
    let ok = Command::new(&docker)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(docker)
    } else {
        Err("a reachable docker daemon (scripts/start-dockerd.sh starts one)".into())
    }
}

/// Removes what a test put into docker, even when the test failed.
struct DockerCleanup {
    docker: PathBuf,
    containers: Vec<String>,
    images: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new(&self.docker).args(["rm", "-f", c]).output();
        }
        for i in &self.images {
            let _ = Command::new(&self.docker).args(["rmi", "-f", i]).output();
        }
        for v in &self.volumes {
            let _ = Command::new(&self.docker)
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

/// A store with busybox imported as `name`, labelled, with `CMD ["sh"]`.
fn kiln_with_image(name: &str) -> Kiln {
    let k = Kiln::new();
    k.import_busybox(
        name,
        &[
            "-c",
            "CMD [\"sh\"]",
            "-c",
            "LABEL com.x=yes",
            "-c",
            "LABEL org.y-z=2",
        ],
    );
    k
}

fn code_and_streams(o: &Output) -> (Option<i32>, String, String) {
    (o.status.code(), stdout(o), stderr(o))
}

#[test]
fn image_inspect_runs_the_idioms() {
    let k = kiln_with_image("it/fmt:1");
    for (template, want) in [
        ("{{.Os}}/{{.Architecture}}", "linux/amd64\n"),
        ("{{json .Config.Cmd}}", "[\"sh\"]\n"),
        (
            "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
            "com.x=yes;org.y-z=2;\n",
        ),
        ("{{.Config.Labels}}", "map[com.x:yes org.y-z:2]\n"),
        ("{{len .RepoTags}} {{index .RepoTags 0}}", "1 it/fmt:1\n"),
        ("{{if eq .Os \"linux\"}}up{{else}}down{{end}}", "up\n"),
        ("{{printf \"%-10s|\" .Os}}", "linux     |\n"),
        ("{{.Os | upper}} {{title .Os}}", "LINUX Linux\n"),
        ("{{join (split \"a,b,c\" \",\") \"+\"}}", "a+b+c\n"),
        ("{{index .Config.Labels \"com.x\"}}", "yes\n"),
        // A field kiln does not have prints Go's `<no value>` instead of failing the script.
        (
            "{{.NoSuchField}}|{{.Config.NoSuch.Deeper}}",
            "<no value>|<no value>\n",
        ),
    ] {
        if template.contains("amd64") && std::env::consts::ARCH != "x86_64" {
            continue;
        }
        assert_eq!(
            k.ok(&["image", "inspect", "--format", template, "it/fmt:1"]),
            want,
            "{template}"
        );
    }
    // `inspect` finds the image too, and `json .` is the whole document.
    let doc: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "--format", "{{json .}}", "it/fmt:1"])).unwrap();
    assert_eq!(doc["RepoTags"][0], "it/fmt:1");
}

#[test]
fn bad_templates_fail_as_docker_fails() {
    let k = kiln_with_image("it/fmt:1");
    // Docker 28: inspect, version and info exit 64 (usage) on a template that does not parse.
    for args in [
        vec!["image", "inspect", "--format", "{{.Os", "it/fmt:1"],
        vec!["inspect", "--format", "{{.Os", "it/fmt:1"],
    ] {
        let o = k.run(&args);
        assert_eq!(
            code_and_streams(&o),
            (
                Some(64),
                String::new(),
                "template parsing error: template: :1: unclosed action\n".into()
            ),
            "{args:?}"
        );
    }
    let o = k.run(&["version", "--format", "{{.Client.Version"]);
    assert_eq!(o.status.code(), Some(64));
    assert_eq!(
        stderr(&o),
        "template parsing error: template: version:1: unclosed action\n"
    );
    // List commands exit 1.
    let o = k.run(&["images", "--format", "{{.Tag"]);
    assert_eq!(
        code_and_streams(&o),
        (
            Some(1),
            String::new(),
            "template parsing error: template: :1: unclosed action\n".into()
        )
    );
    let o = k.run(&["ps", "--format", "{{.Names"]);
    assert_eq!(
        stderr(&o),
        "failed to parse template: template: :1: unclosed action\n"
    );
    assert_eq!(o.status.code(), Some(1));
    let o = k.run(&[
        "image",
        "inspect",
        "--format",
        "{{index .RepoTags 5}}",
        "it/fmt:1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "template parsing error: template: :1:2: executing \"\" at <index .RepoTags 5>: error calling index: index out of range: 5\n"
    );
    let o = k.run(&["images", "--format", "{{nosuch .Tag}}"]);
    assert_eq!(
        stderr(&o),
        "template parsing error: template: :1: function \"nosuch\" not defined\n"
    );
}

#[test]
fn version_has_dockers_client_and_server() {
    let k = Kiln::new();
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(
        k.ok(&["version", "--format", "{{.Client.Version}}"]),
        format!("{v}\n")
    );
    assert_eq!(
        k.ok(&["version", "--format", "{{.Server.Version}}"]),
        format!("{v}\n")
    );
    let doc: serde_json::Value =
        serde_json::from_str(&k.ok(&["version", "--format", "{{json .}}"])).unwrap();
    assert_eq!(doc["Client"]["Os"], "linux");
    assert_eq!(doc["Server"]["Components"][0]["Name"], "Engine");
    let text = k.ok(&["version"]);
    assert!(
        text.starts_with(&format!("Client:\n Version:           {v}\n")),
        "{text}"
    );
}

#[test]
fn ps_rows_have_label_and_the_table_header_runs_the_template() {
    let k = kiln_with_image("it/fmt:1");
    k.ok(&[
        "create",
        "--name",
        "fmt-c1",
        "-l",
        "com.x=yes",
        "-l",
        "a.b=2",
        "-p",
        "18093:80",
        "it/fmt:1",
        "sh",
    ]);
    let ps = |t: &str| k.ok(&["ps", "-a", "--format", t]);
    assert_eq!(
        ps("{{.Names}} {{.Label \"com.x\"}}|{{.Label \"nope\"}}|{{.Labels}}"),
        "fmt-c1 yes||a.b=2,com.x=yes,org.y-z=2\n"
    );
    assert_eq!(
        ps("{{.Names | upper}} {{if eq .State \"created\"}}new{{else}}old{{end}}"),
        "FMT-C1 new\n"
    );
    assert_eq!(
        ps("{{join (split .Labels \",\") \"+\"}}"),
        "a.b=2+com.x=yes+org.y-z=2\n"
    );
    assert_eq!(
        ps("table {{.Names}}\\t{{.Label \"com.x\"}}\\t{{len .Names}}|{{printf \"%-8s|\" .State}}"),
        "NAMES     x         5|STATE   |\nfmt-c1    yes       6|created |\n"
    );
    let doc = |t: &str| k.ok(&["inspect", "--format", t, "fmt-c1"]);
    // The shape of `(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort`.
    assert_eq!(
        doc("{{(index (index .HostConfig.PortBindings \"80/tcp\") 0).HostPort}}"),
        "18093\n"
    );
    assert_eq!(
        doc("{{range $p, $b := .HostConfig.PortBindings}}{{$p}}->{{(index $b 0).HostPort}}{{end}}"),
        "80/tcp->18093\n"
    );
    let o = k.run(&["ps", "-a", "--format", "{{index .Names 99}}"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "failed to execute template: template: :1:2: executing \"\" at <index .Names 99>: error calling index: index out of range: 99\n"
    );
}

/// Runs `args` in both tools and asserts the same exit code, output and message.
fn same(docker: &PathBuf, k: &Kiln, args: &[&str]) {
    let d = Command::new(docker)
        .args(args)
        .output()
        .expect("running docker");
    let o = k.run(args);
    assert_eq!(
        code_and_streams(&o),
        code_and_streams(&d),
        "kiln vs docker: {args:?}"
    );
}

#[test]
fn the_same_template_prints_the_same_as_docker() {
    let docker = match docker() {
        Ok(d) => d,
        Err(why) => {
            crate::util::require::missing(&why);
            return;
        }
    };
    let name = format!("{}:1", unique_name("fmt"));
    let repo = name.trim_end_matches(":1").to_owned();
    let k = kiln_with_image(&name);
    let archive = k.path("fmt.tar");
    k.ok(&["save", "-o", archive.to_str().unwrap(), &name]);
    let container = unique_name("fmt-ctr").replace('/', "-");
    let volume = unique_name("fmt-vol").replace('/', "-");
    let _cleanup = DockerCleanup {
        docker: docker.clone(),
        containers: vec![container.clone()],
        images: vec![name.clone()],
        volumes: vec![volume.clone()],
    };
    crate::util::run_tool(Command::new(&docker).args(["load", "-i", archive.to_str().unwrap()]));
    for template in [
        "{{.Id}}",
        "{{.Os}}/{{.Architecture}}",
        "{{json .Config.Cmd}}",
        "{{.Config.Cmd}}",
        "{{.Config.Labels}}",
        "{{json .Config.Labels}}",
        "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
        "{{index .Config.Labels \"com.x\"}}",
        "{{len .RepoTags}} {{index .RepoTags 0}} {{.RepoTags}}",
        "{{len .RootFS.Layers}} {{index .RootFS.Layers 0}}",
        "{{if eq .Os \"linux\"}}up{{else}}down{{end}}",
        "{{printf \"%-10s|%5.1f|%q|%x|%v\" .Os 2.25 .Os 255 .RootFS.Type}}",
        "{{.Os | upper | printf \"%s!\"}} {{title .Os}} {{lower \"AB\"}} {{truncate .Os 3}} [{{pad .Os 1 2}}]",
        "{{join (split \"a,b,c\" \",\") \"+\"}} {{split \"a,b\" \",\"}}",
        "{{with .Config}}{{.Cmd}}{{end}} {{range .RepoTags}}<{{.}}>{{else}}none{{end}}",
        "{{- \"  trimmed \" -}}  !",
        "{{/* a comment */}}{{$x := .Os}}{{$x}}{{$x = \"y\"}}{{$x}}",
        "{{and .Os 0}} {{or 0 .Os}} {{not .Os}} {{eq 1 2 1}} {{ne 1 2}} {{lt 1 2}} {{ge \"b\" \"a\"}}",
        "{{html \"<a&'b'>\"}} {{js \"it's <b>\"}} {{urlquery \"a b&c/é\"}}",
        "{{print 1 2 \"a\" \"b\" 3}}|{{println .Os 1}}",
        "{{index .RepoTags 7}}",
        "{{.Os",
        "{{nosuch}}",
        "{{if .Os}}",
    ] {
        same(&docker, &k, &["image", "inspect", "--format", template, &name]);
    }
    for template in [
        "{{.Repository}}:{{.Tag}} {{.ID}} {{.Tag | upper}}",
        "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}",
        "table {{.Tag | printf \"%6s|\"}}\\t{{len .ID}}",
        "  {{json .Tag}}  ",
        "{{.Tag",
        "{{index .ID 99}}",
    ] {
        same(&docker, &k, &["images", "--format", template, &repo]);
    }
    crate::util::run_tool(Command::new(&docker).args([
        "create",
        "--name",
        &container,
        "-l",
        "com.x=yes",
        "-p",
        "18094:80",
        &name,
        "sh",
    ]));
    k.ok(&[
        "create",
        "--name",
        &container,
        "-l",
        "com.x=yes",
        "-p",
        "18094:80",
        &name,
        "sh",
    ]);
    let filter = format!("name={container}");
    for template in [
        "{{.Names}} {{.Image}} {{.State}} {{.Status}} {{.Command}}",
        // Not `.Labels`: Docker joins the labels in Go's random map order.
        "{{.Label \"com.x\"}}|{{.Label \"org.y-z\"}}|{{.Label \"nope\"}}|{{.Mounts}}|{{.LocalVolumes}}",
        "{{.Names | upper}} {{if eq .State \"created\"}}new{{else}}old{{end}} {{len .Names}}",
        "table {{.Names}}\\t{{.Label \"com.x\"}}\\t{{.State | upper}}",
        "{{.Names",
        "{{index .Names 99}}",
    ] {
        same(
            &docker,
            &k,
            &["ps", "-a", "--filter", &filter, "--format", template],
        );
    }
    for template in [
        "{{(index (index .HostConfig.PortBindings \"80/tcp\") 0).HostPort}}",
        "{{range $p, $b := .HostConfig.PortBindings}}{{$p}}={{(index $b 0).HostPort}}{{end}}",
        "{{.Config.Labels}} {{json .Config.Cmd}} {{.Config.Image}}",
        "{{.Name}} {{.State.Status}} {{.State.Running}} {{.State.ExitCode}}",
    ] {
        same(&docker, &k, &["inspect", "--format", template, &container]);
    }
    crate::util::run_tool(Command::new(&docker).args(["volume", "create", &volume]));
    k.ok(&["volume", "create", &volume]);
    let filter = format!("name={volume}");
    for template in [
        "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels}}|{{.Label \"x\"}}|{{.Size}}",
        "table {{.Name}}\\t{{.Driver | upper}}",
        "table",
        "{{.Name",
    ] {
        same(
            &docker,
            &k,
            &["volume", "ls", "--filter", &filter, "--format", template],
        );
    }
    same(&docker, &k, &["volume", "ls", "--filter", &filter]);
}

#[test]
fn system_df_takes_templates_with_dockers_fields() {
    let k = Kiln::new();
    assert_eq!(
        k.ok(&["system", "df", "--format", "{{.Type}}"]),
        "Images\nContainers\nLocal Volumes\nBuild Cache\n"
    );
    assert_eq!(
        k.ok(&["system", "df", "--format", "table {{.Type}}\\t{{.TotalCount}}"]),
        "TYPE            TOTAL\nImages          0\nContainers      0\nLocal Volumes   0\nBuild Cache     0\n"
    );
    // Docker 28's `system df --format json` rows have these keys, all strings.
    let first = k.ok(&["system", "df", "--format", "json"]);
    let row: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["Active", "Reclaimable", "Size", "TotalCount", "Type"]
    );
    assert_eq!(row["TotalCount"], "0");
}
