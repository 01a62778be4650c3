//! The engine as a whole: templates run over JSON, with Go's (Docker 28's) exact output.

use serde_json::{json, Value};

use super::{Data, Methods, NoMethods, Template};

fn data() -> Value {
    json!({
        "ID": "e79b23861723",
        "Names": "web,db",
        "State": "running",
        "Tag": "latest",
        "RepoTags": ["busybox:latest", "busybox:1"],
        "Empty": [],
        "Zero": 0,
        "Null": null,
        "Size": 1986916,
        "Config": {
            "Labels": {"com.x": "yes", "a.b": "2"},
            "Cmd": ["sh", "-c", "echo hi"],
            "User": "",
        },
        "NetworkSettings": {
            "Networks": {"bridge": {"IPAddress": "172.17.0.2"}, "alt": {"IPAddress": "10.0.0.5"}},
            "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}]},
        },
    })
}

fn run_with(src: &str, v: &Value, methods: &dyn Methods) -> Result<String, String> {
    let t = Template::parse("", src).map_err(|e| e.to_string())?;
    let d = Data {
        value: v,
        methods,
        header: false,
        marshal_escapes_html: false,
    };
    t.execute(&d).map_err(|e| e.to_string())
}

fn run(src: &str) -> String {
    run_with(src, &data(), &NoMethods).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn fails(src: &str) -> String {
    match run_with(src, &data(), &NoMethods) {
        Ok(out) => panic!("{src} should fail, printed {out:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_idioms_scripts_use() {
    for (src, want) in [
        (
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            "10.0.0.5 172.17.0.2 ",
        ),
        (
            r#"{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}"#,
            "8080",
        ),
        (
            "{{json .Config}}",
            r#"{"Cmd":["sh","-c","echo hi"],"Labels":{"a.b":"2","com.x":"yes"},"User":""}"#,
        ),
        ("{{.Names | upper}}", "WEB,DB"),
        (r#"{{if eq .State "running"}}up{{else}}down{{end}}"#, "up"),
        (
            "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
            "a.b=2;com.x=yes;",
        ),
        (r#"{{printf "%-10s|" .Tag}}"#, "latest    |"),
        ("{{len .RepoTags}}", "2"),
        ("{{index .RepoTags 0}}", "busybox:latest"),
        (r#"{{join (split .Names ",") "+"}}"#, "web+db"),
    ] {
        assert_eq!(run(src), want, "{src}");
    }
}

#[test]
fn values_print_as_go() {
    for (src, want) in [
        ("{{.}}", "map[Config:map[Cmd:[sh -c echo hi] Labels:map[a.b:2 com.x:yes] User:] Empty:[] ID:e79b23861723 Names:web,db NetworkSettings:map[Networks:map[alt:map[IPAddress:10.0.0.5] bridge:map[IPAddress:172.17.0.2]] Ports:map[80/tcp:[map[HostIp:0.0.0.0 HostPort:8080] map[HostIp::: HostPort:8080]]]] Null:<nil> RepoTags:[busybox:latest busybox:1] Size:1986916 State:running Tag:latest Zero:0]"),
        ("{{.Config.Cmd}}", "[sh -c echo hi]"),
        ("{{.Config.Labels}}", "map[a.b:2 com.x:yes]"),
        ("{{.Empty}}", "[]"),
        ("{{.Size}}", "1986916"),
        // A missing field or a null prints Go's `<no value>`; fields of nothing are nothing.
        ("{{.Missing}}", "<no value>"),
        ("{{.Null}}", "<no value>"),
        ("{{.Missing.Deeper.Still}}", "<no value>"),
        ("{{.Config.Labels.nope}}", "<no value>"),
        ("{{print .Missing}}", "<nil>"),
        ("{{true}} {{false}} {{1.5}} {{2.0}} {{1e6}} {{0x1F}} {{-3}} {{'a'}} {{010}}", "true false 1.5 2 1e+06 31 -3 97 8"),
        ("{{`raw\\n`}}|{{\"es\\tc\\u00e9\\x41\"}}", "raw\\n|es\tcéA"),
    ] {
        assert_eq!(run(src), want, "{src}");
    }
}

#[test]
fn control_structures() {
    for (src, want) in [
        (
            "{{if .Empty}}a{{else if .Zero}}b{{else if .Null}}c{{else}}d{{end}}",
            "d",
        ),
        (
            "{{if and .ID .Tag}}both{{end}}|{{if or .Zero .Tag}}{{or .Zero .Tag}}{{end}}",
            "both|latest",
        ),
        ("{{if not .Config.User}}root{{end}}", "root"),
        (
            r#"{{with .Config}}{{.User}}<{{index .Cmd 0}}>{{end}}"#,
            "<sh>",
        ),
        ("{{with .Missing}}yes{{else}}no{{end}}", "no"),
        ("{{with .Missing}}a{{else with .Tag}}{{.}}{{end}}", "latest"),
        ("{{range .Empty}}x{{else}}empty{{end}}", "empty"),
        ("{{range .Missing}}x{{else}}none{{end}}", "none"),
        (
            "{{range $i, $e := .RepoTags}}{{$i}}:{{$e}} {{end}}",
            "0:busybox:latest 1:busybox:1 ",
        ),
        (
            "{{range $e := .RepoTags}}{{$e}};{{end}}",
            "busybox:latest;busybox:1;",
        ),
        ("{{range .RepoTags}}{{$.Tag}}{{end}}", "latestlatest"),
        ("{{range 3}}{{.}}{{end}}", "012"),
        (
            "{{range .RepoTags}}{{if eq . \"busybox:1\"}}{{break}}{{end}}{{.}}{{end}}",
            "busybox:latest",
        ),
        (
            "{{range .RepoTags}}{{if eq . \"busybox:latest\"}}{{continue}}{{end}}{{.}}{{end}}",
            "busybox:1",
        ),
        ("{{$x := .Tag}}{{$x}}{{$x = \"b\"}}{{$x}}", "latestb"),
        ("{{$n := len .RepoTags}}{{if gt $n 1}}many{{end}}", "many"),
        (
            "{{define \"t\"}}[{{.}}]{{end}}{{template \"t\" .Tag}}{{template \"t\"}}",
            "[latest][<no value>]",
        ),
        ("{{block \"b\" .State}}<{{.}}>{{end}}", "<running>"),
        ("a {{- /* a comment */ -}} b", "ab"),
        ("a  {{- \" b \" -}}  c", "a b c"),
        ("x\n  {{- .Tag}}\n  {{- .State -}}\n  y", "xlatestrunningy"),
        ("{{.Tag | printf \"%s-%s\" \"v\"}}", "v-latest"),
        ("{{.RepoTags | len | printf \"%03d\"}}", "002"),
        ("{{(.Config).User | len}}", "0"),
    ] {
        assert_eq!(run(src), want, "{src}");
    }
}

#[test]
fn functions() {
    for (src, want) in [
        ("{{eq .Zero 0 1}} {{eq .State \"a\" \"running\"}} {{ne .Tag \"x\"}} {{lt 1 2}} {{ge \"b\" \"a\"}}", "true true true true true"),
        ("{{index .Config.Labels \"com.x\"}}|{{index .Config.Labels \"none\"}}", "yes|<no value>"),
        ("{{index .NetworkSettings.Ports \"80/tcp\" 1 \"HostIp\"}}", "::"),
        ("{{slice .ID 0 4}} {{slice .RepoTags 1}}", "e79b [busybox:1]"),
        ("{{len .Config.Labels}} {{len .ID}} {{len .Missing}}", "2 12 0"),
        ("{{printf \"%q %v %d\" .Tag .RepoTags .Size}}", "\"latest\" [busybox:latest busybox:1] 1986916"),
        ("{{print .Zero .Tag 1 2}}", "0latest1 2"),
        ("{{println .Tag}}", "latest\n"),
        ("{{html \"<a href='x'>\"}} {{js \"it's\"}} {{urlquery \"a b\"}}", "&lt;a href=&#39;x&#39;&gt; it\\'s a+b"),
        ("{{title .State}} {{upper .Tag}} {{lower \"ABC\"}} {{truncate .ID 4}} [{{pad .Tag 1 2}}]", "Running LATEST abc e79b [ latest  ]"),
        ("{{json .RepoTags}} {{json .Null}} {{json .Zero}}", "[\"busybox:latest\",\"busybox:1\"] null 0"),
        ("{{split .Names \",\"}}", "[web db]"),
        ("{{join .RepoTags \", \"}}", "busybox:latest, busybox:1"),
    ] {
        assert_eq!(run(src), want, "{src}");
    }
}

/// What Go (in Docker 28) says about bad templates, word for word.
#[test]
fn parse_errors_are_gos() {
    for (src, want) in [
        ("{{.Foo", "template: :1: unclosed action"),
        ("{{foo}}", "template: :1: function \"foo\" not defined"),
        ("{{end}}", "template: :1: unexpected {{end}}"),
        ("{{else}}", "template: :1: unexpected {{else}}"),
        ("{{if .ID}}", "template: :1: unexpected EOF"),
        ("{{range .ID}}x{{else}}", "template: :1: unexpected EOF"),
        ("{{(.ID}}", "template: :1: unclosed left paren"),
        ("{{.ID)}}", "template: :1: unexpected right paren"),
        ("{{\"abc}}", "template: :1: unterminated quoted string"),
        ("{{$x}}", "template: :1: undefined variable \"$x\""),
        ("{{with}}", "template: :1: missing value for with"),
        ("{{if}}{{end}}", "template: :1: missing value for if"),
        ("{{/* c }}", "template: :1: unclosed comment"),
        ("{{break}}", "template: :1: {{break}} outside {{range}}"),
        ("a\nb\n{{.A", "template: :3: unclosed action"),
    ] {
        assert_eq!(fails(src), want, "{src}");
    }
}

/// Execution errors carry Go's `name:line:col` and the node, as Docker prints them.
#[test]
fn exec_errors_are_gos() {
    for (src, want) in [
        ("{{.ID .Size}}", "template: :1:2: executing \"\" at <.ID>: ID is not a method but has arguments"),
        ("{{1 2}}", "template: :1:2: executing \"\" at <1>: can't give argument to non-function 1"),
        ("{{printf}}", "template: :1:2: executing \"\" at <printf>: wrong number of args for printf: want at least 1 got 0"),
        ("{{index .ID 99}}", "template: :1:2: executing \"\" at <index .ID 99>: error calling index: index out of range: 99"),
        ("{{len 3}}", "template: :1:2: executing \"\" at <len 3>: error calling len: len of type int"),
        ("{{.ID.Foo}}", "template: :1:5: executing \"\" at <.ID.Foo>: can't evaluate field Foo in type string"),
        ("{{template \"x\"}}", "template: :1:11: executing \"\" at <{{template \"x\"}}>: template \"x\" not defined"),
        ("{{eq 1 \"a\"}}", "template: :1:2: executing \"\" at <eq 1 \"a\">: error calling eq: incompatible types for comparison"),
        ("{{nil}}", "template: :1:2: executing \"\" at <nil>: nil is not a command"),
        ("{{and}}", "template: :1:2: executing \"\" at <and>: wrong number of args for and: want at least 1 got 0"),
        ("x\n  {{index .RepoTags 7}}", "template: :2:4: executing \"\" at <index .RepoTags 7>: error calling index: index out of range: 7"),
    ] {
        assert_eq!(fails(src), want, "{src}");
    }
}

struct Labels;

impl Methods for Labels {
    fn arity(&self, name: &str) -> Option<usize> {
        (name == "Label").then_some(1)
    }
    fn call(&self, _: &str, args: &[Value]) -> Value {
        match args[0].as_str() {
            Some("com.x") => json!("yes"),
            _ => json!(""),
        }
    }
}

#[test]
fn methods_of_the_data() {
    let v = data();
    let r = |src: &str| run_with(src, &v, &Labels);
    assert_eq!(
        r("{{.Label \"com.x\"}}|{{.Label \"nope\"}}").unwrap(),
        "yes|"
    );
    assert_eq!(r("{{\"com.x\" | .Label}}").unwrap(), "yes");
    assert_eq!(
        r("{{range .RepoTags}}{{$.Label \"com.x\"}}{{end}}").unwrap(),
        "yesyes"
    );
    assert_eq!(
        r("{{.Label}}").unwrap_err(),
        "template: :1:2: executing \"\" at <.Label>: wrong number of args for Label: want 1 got 0"
    );
}

#[test]
fn named_templates_report_their_name() {
    let t = Template::parse("version", "{{index .A 3}}").unwrap();
    let v = json!({"A": []});
    let e = t.execute(&Data {
        value: &v,
        methods: &NoMethods,
        header: false,
        marshal_escapes_html: false,
    });
    assert_eq!(
        e.unwrap_err().to_string(),
        "template: version:1:2: executing \"version\" at <index .A 3>: error calling index: index out of range: 3"
    );
}

#[test]
fn fields_for_headers() {
    let t = Template::parse("", "{{.A}}{{if .B.C}}{{$.D}}{{end}}{{len (index .E 0)}}").unwrap();
    assert_eq!(
        t.fields(),
        vec![
            vec!["A".to_owned()],
            vec!["B".into(), "C".into()],
            vec!["D".into()],
            vec!["E".into()]
        ]
    );
}

#[test]
fn self_calling_definitions_stop() {
    let e = fails("{{define \"r\"}}{{template \"r\"}}{{end}}{{template \"r\"}}");
    assert!(e.contains("exceeded maximum template depth"), "{e}");
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let parens = format!("{{{{{}1{}}}}}", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(
        fails(&parens),
        "template: :1: max expression depth exceeded"
    );
    let ifs = format!(
        "{}x{}",
        "{{if 1}}".repeat(100_000),
        "{{end}}".repeat(100_000)
    );
    assert_eq!(fails(&ifs), "template: :1: max expression depth exceeded");
    let ok = format!("{{{{{}1{}}}}}", "(".repeat(50), ")".repeat(50));
    assert_eq!(run(&ok), "1");
}
