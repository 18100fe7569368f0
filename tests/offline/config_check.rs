//! `slapenir check` through the real binary: every shipped config in `conf/` passes, and broken
//! configs are reported with every error at its file:line:column.
use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn check(path: &Path) -> (bool, String, String) {
    check_in(Path::new("."), path)
}

/// Runs `slapenir check --config path` with `cwd` as the working directory (relative paths in
/// configs resolve against it).
fn check_in(cwd: &Path, path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slapenir"))
        .args(["check", "--config"])
        .arg(path)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A working directory holding the development PKI the shipped configs refer to (`certs/`).
fn dir_with_dev_pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slapenir"))
        .args(["pki", "init", "--dir", "certs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Every config in `conf/` passes; the failure names the file.
#[test]
fn every_shipped_config_passes_check() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let cwd = dir_with_dev_pki();
    let mut n = 0;
    for entry in std::fs::read_dir(&conf).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (ok, out, err) = check_in(cwd.path(), &path);
            assert!(ok, "{} failed check:\n{out}\n{err}", path.display());
            assert!(out.starts_with("ok:"), "{out}");
            n += 1;
        }
    }
    assert!(n >= 1, "no config files found in conf/");
}

#[test]
fn embedded_default_passes_check() {
    let cwd = dir_with_dev_pki();
    let out = Command::new(env!("CARGO_BIN_EXE_slapenir"))
        .arg("check")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without its PKI the embedded default fails check, naming the missing files.
#[test]
fn embedded_default_without_pki_names_the_missing_files() {
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slapenir"))
        .arg("check")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listeners[0].tls.cert: cannot read certs/gateway.crt"),
        "{err}"
    );
}

#[test]
fn broken_config_reports_every_error_with_its_position() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken/many-errors.yaml");
    let (ok, _out, err) = check(&path);
    assert!(!ok);
    // (line:column, YAML path, a fragment of the message)
    let expected: &[(&str, &str, &str)] = &[
        ("3:14", "listeners[0].address", "is not a socket address"),
        ("4:11", "listeners[1].name", "already used by listeners[0]"),
        ("7:11", "listeners[1].tls", "`client_ca` is missing"),
        ("7:13", "listeners[1].tls.cert", "cannot read"),
        ("8:12", "listeners[1].tls.key", "cannot read"),
        (
            "11:10",
            "upstreams.openai.url",
            "scheme `ftp` is not supported",
        ),
        ("13:10", "upstreams.github.url", "has a path or query"),
        (
            "14:19",
            "upstreams.github.http_version",
            "`3` is not allowed",
        ),
        (
            "15:22",
            "upstreams.github.connect_timeout",
            "`soon` is not a duration",
        ),
        ("18:12", "credentials.openai.dummy", "at least 8 characters"),
        ("19:11", "credentials.openai.real", "cannot read file"),
        (
            "20:25",
            "credentials.openai.upstreams[1]",
            "upstream `gitlab` is not defined",
        ),
        ("23:11", "credentials.github.real", "exactly one of"),
        (
            "27:15",
            "routes[0].upstream",
            "upstream `opnai` is not defined",
        ),
        ("28:9", "routes[1]", "duplicate route"),
        ("33:5", "routes[2].hots", "unknown field `hots`"),
    ];
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    for (pos, yaml_path, fragment) in expected {
        let want = format!("many-errors.yaml:{pos}: {yaml_path}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&want) && l.contains(fragment)),
            "missing `{want}...{fragment}` in:\n{err}"
        );
    }
    assert_eq!(
        lines.len(),
        expected.len(),
        "unexpected extra errors:\n{err}"
    );
    assert!(err.contains(&format!("{} error(s)", expected.len())));
}

/// Table of small broken files, each with the one error it must produce.
#[test]
fn named_broken_configs() {
    let dir = tempfile::tempdir().unwrap();
    let ok_upstream = "upstreams:\n  a:\n    url: http://127.0.0.1:1\n";
    let listener = "listeners:\n  - name: l\n    address: 127.0.0.1:1\n";
    let cases: &[(&str, String, &str)] = &[
        ("empty file", String::new(), "the file is empty"),
        ("not yaml", "listeners: [\n".into(), "not valid YAML"),
        ("unknown section", format!("{listener}{ok_upstream}extra: 1\n"), "unknown section `extra`"),
        ("no listeners", ok_upstream.into(), "at least one listener"),
        ("no upstreams", listener.into(), "at least one upstream"),
        (
            "tls without client ca and with client_auth none and ca",
            format!("listeners:\n  - name: l\n    address: 127.0.0.1:1\n    tls: {{ cert: a, key: b, client_ca: c, client_auth: none }}\n{ok_upstream}"),
            "contradicts",
        ),
        (
            "credential bound to nothing",
            format!("{listener}{ok_upstream}credentials:\n  c:\n    dummy: dummy-value-1\n    real: {{ env: HOME }}\n    upstreams: []\n"),
            "at least one upstream",
        ),
        (
            "same dummy twice",
            format!("{listener}{ok_upstream}credentials:\n  c:\n    dummy: dummy-value-1\n    real: {{ env: HOME }}\n    upstreams: [a]\n  d:\n    dummy: dummy-value-1\n    real: {{ env: PATH }}\n    upstreams: [a]\n"),
            "same dummy as credential `c`",
        ),
        (
            "bad route host",
            format!("{listener}{ok_upstream}routes:\n  - host: http://x\n    upstream: a\n"),
            "is not a host name",
        ),
        (
            "bad path prefix",
            format!("{listener}{ok_upstream}routes:\n  - host: x\n    path_prefix: v1\n    upstream: a\n"),
            "is not a path prefix",
        ),
        (
            "bad name",
            format!("{listener}upstreams:\n  \"a b\":\n    url: http://h\n"),
            "is not allowed",
        ),
        (
            "upstream url with credentials",
            format!("{listener}upstreams:\n  a:\n    url: http://user:pw@h\n"),
            "user info",
        ),
        (
            "aws credential without its secret key",
            format!("{listener}{ok_upstream}credentials:\n  k:\n    kind: aws\n    access_key_id: {{ dummy: AKIADUMMY0000001, real: {{ env: HOME }} }}\n    upstreams: [a]\n"),
            "credential `k` of `kind: aws` needs `secret_access_key`",
        ),
        (
            "aws credential with a top-level dummy",
            format!("{listener}{ok_upstream}credentials:\n  k:\n    kind: aws\n    dummy: AKIADUMMY0000001\n    access_key_id: {{ dummy: AKIADUMMY0000001, real: {{ env: HOME }} }}\n    secret_access_key: {{ dummy: dummy-secret-0001, real: {{ env: PATH }} }}\n    upstreams: [a]\n"),
            "instead of `dummy` and `real`",
        ),
        (
            "token credential with an aws part",
            format!("{listener}{ok_upstream}credentials:\n  k:\n    dummy: dummy-value-1\n    real: {{ env: HOME }}\n    session_token: {{ dummy: dummy-token-1, real: {{ env: PATH }} }}\n    upstreams: [a]\n"),
            "`session_token` belongs to credentials of `kind: aws`",
        ),
        (
            "unknown credential kind",
            format!("{listener}{ok_upstream}credentials:\n  k:\n    kind: oauth\n    dummy: dummy-value-1\n    real: {{ env: HOME }}\n    upstreams: [a]\n"),
            "unknown credential kind `oauth`",
        ),
        (
            "token credential without a real value",
            format!("{listener}{ok_upstream}credentials:\n  k:\n    dummy: dummy-value-1\n    upstreams: [a]\n"),
            "credential `k` needs `real`",
        ),
    ];
    for (name, content, fragment) in cases {
        let path = dir.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(&path, content).unwrap();
        let (ok, _, err) = check(&path);
        assert!(!ok, "{name}: check passed");
        assert!(
            err.contains(fragment),
            "{name}: `{fragment}` not in:\n{err}"
        );
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{name}: {first}");
    }
}

/// A secret file's content must never be echoed, whatever is wrong with it.
#[test]
fn check_never_prints_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "sk-live-NEVER-PRINT-ME-0123456789";
    std::fs::write(dir.path().join("key"), format!("{secret} has a space\n")).unwrap();
    std::fs::write(dir.path().join("same"), "ghp-dummy-github\n").unwrap();
    let d = dir.path().display();
    let config = format!(
        "listeners:\n  - name: l\n    address: 127.0.0.1:1\nupstreams:\n  a:\n    url: http://h\n\
         credentials:\n  c:\n    dummy: sk-dummy-openai\n    real: {{ file: {d}/key }}\n    upstreams: [a]\n\
         \x20 d:\n    dummy: ghp-dummy-github\n    real: {{ file: {d}/same }}\n    upstreams: [a]\n",
    );
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let (ok, out, err) = check(&path);
    assert!(!ok);
    assert!(!out.contains(secret) && !err.contains(secret), "{err}");
    assert!(!err.contains("NEVER"), "{err}");
    assert!(err.contains("control character or space"), "{err}");
    assert!(err.contains("equals its dummy"), "{err}");
}

/// What an operator may paste where a secret's *source* belongs, each with the value that must
/// never be quoted back and the error it gets instead: (case, credentials section, value,
/// YAML path of the error, fragment of the message).
fn secret_position_cases() -> Vec<(
    &'static str,
    String,
    &'static str,
    &'static str,
    &'static str,
)> {
    const KEY: &str = "sk-live-PASTED0123456789abcdefXYZ";
    const NUMBER: &str = "918273645546372819";
    const AWS: &str = "AKIAPASTEDREAL7EXAMPLE";
    let token = |real: &str| {
        format!(
            "credentials:\n  c:\n    dummy: dummy-value-1\n    real: {real}\n    upstreams: [a]\n"
        )
    };
    let aws = |pair: &str| {
        format!(
            "credentials:\n  k:\n    kind: aws\n    access_key_id: {pair}\n    \
             secret_access_key: {{ dummy: dummy-secret-0001, real: {{ env: HOME }} }}\n    upstreams: [a]\n"
        )
    };
    let shape = "`real` must be a map with `env: VARIABLE` or `file: PATH`";
    vec![
        (
            "literal real string",
            token(KEY),
            KEY,
            "credentials.c.real",
            shape,
        ),
        (
            "literal real quoted string",
            token(&format!("\"{KEY}\"")),
            KEY,
            "credentials.c.real",
            shape,
        ),
        (
            "literal real number",
            token(NUMBER),
            NUMBER,
            "credentials.c.real",
            shape,
        ),
        (
            "literal real list",
            token(&format!("[{KEY}]")),
            KEY,
            "credentials.c.real",
            shape,
        ),
        (
            "literal real with a tag",
            token(&format!("!secret {KEY}")),
            KEY,
            "credentials.c.real",
            shape,
        ),
        (
            "stray key holding the value",
            token(&format!("{{ env: HOME, key: {KEY} }}")),
            KEY,
            "credentials.c.real",
            shape,
        ),
        (
            "the value as a key",
            token(&format!("{{ {KEY}: 1 }}")),
            KEY,
            "credentials.c.real",
            shape,
        ),
        (
            "env name that is a key",
            token(&format!("{{ env: {KEY} }}")),
            KEY,
            "credentials.c.real.env",
            "is not an environment variable name",
        ),
        (
            "env name that is a number",
            token(&format!("{{ env: {NUMBER} }}")),
            NUMBER,
            "credentials.c.real",
            "`real.env` must be a string",
        ),
        (
            "file that is a map with the value",
            token(&format!("{{ file: {{ {KEY}: 1 }} }}")),
            KEY,
            "credentials.c.real",
            "`real.file` must be a string",
        ),
        (
            "credential that is the value",
            format!("credentials:\n  c: {KEY}\n"),
            KEY,
            "credentials.c",
            "a credential must be a map",
        ),
        (
            "aws pair with a literal real",
            aws(&format!("{{ dummy: AKIADUMMY0000001, real: {AWS} }}")),
            AWS,
            "credentials.k.access_key_id.real",
            shape,
        ),
        (
            "aws pair that is the value",
            aws(AWS),
            AWS,
            "credentials.k.access_key_id",
            "`access_key_id` must be a map",
        ),
    ]
}

/// Whether `text` shows `value`, or a long piece of it.
fn shows(text: &str, value: &str) -> bool {
    text.contains(value)
        || value
            .as_bytes()
            .windows(12)
            .any(|w| text.as_bytes().windows(12).any(|t| t == w))
}

/// A value written in a secret position is never quoted by `check` or at startup; the error
/// still says where it is and what is allowed.
#[test]
fn values_in_secret_positions_are_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let head = "listeners:\n  - name: l\n    address: 127.0.0.1:1\nupstreams:\n  a:\n    url: http://127.0.0.1:1\n";
    for (name, credentials, value, yaml_path, fragment) in secret_position_cases() {
        let path = dir.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(&path, format!("{head}{credentials}")).unwrap();
        let (ok, out, err) = check(&path);
        assert!(!ok, "{name}: check passed");
        assert!(
            !shows(&out, value) && !shows(&err, value),
            "{name}: check quoted the value:\n{err}"
        );
        let line = err
            .lines()
            .find(|l| l.contains(&format!(": {yaml_path}: ")))
            .unwrap_or_else(|| panic!("{name}: no error at {yaml_path}:\n{err}"));
        assert!(
            line.contains(fragment),
            "{name}: `{fragment}` not in `{line}`"
        );
        // file:line:column: a position was found.
        let position = line
            .trim_start_matches("error: ")
            .split(": ")
            .next()
            .unwrap_or_default();
        assert_eq!(
            position.split(':').count(),
            3,
            "{name}: no position in `{line}`"
        );

        let run = Command::new(env!("CARGO_BIN_EXE_slapenir"))
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(!run.status.success(), "{name}: the gateway started");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(text.contains(fragment), "{name}: {text}");
        assert!(
            !shows(&text, value),
            "{name}: startup quoted the value:\n{text}"
        );
    }
}

/// The same files written over a running gateway's config: neither `/reload/plan` nor the
/// reload failure logged on SIGHUP quotes the value.
#[test]
fn values_in_secret_positions_are_never_quoted_by_reloads() {
    let base = "listeners:\n  - name: l\n    address: {listen}\nadmin:\n  address: {admin}\nupstreams:\n  a:\n    url: http://127.0.0.1:1\n";
    let gw = common::gateway::GatewayProcess::start(base, &[]);
    let head = base
        .replace("{listen}", &gw.listen.to_string())
        .replace("{admin}", &gw.admin.to_string());
    for (name, credentials, value, yaml_path, fragment) in secret_position_cases() {
        std::fs::write(&gw.config_path, format!("{head}{credentials}")).unwrap();
        let plan = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("http://{}/reload/plan", gw.admin),
            ])
            .output()
            .unwrap();
        let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
        assert!(plan.trim_end().ends_with("422"), "{name}: {plan}");
        assert!(
            plan.contains(yaml_path) && plan.contains(fragment),
            "{name}: {plan}"
        );
        assert!(
            !shows(&plan, value),
            "{name}: /reload/plan quoted the value:\n{plan}"
        );

        let before = gw.stderr().len();
        gw.signal("HUP");
        let logged = common::wait::wait_for(
            Duration::from_secs(20),
            Duration::from_millis(20),
            "the reload failure",
            || {
                let log = gw.stderr();
                let new = log.get(before..).unwrap_or_default();
                let after_hup = new.split_once("SIGHUP: reloading")?.1;
                after_hup
                    .contains("configuration NOT reloaded")
                    .then(|| after_hup.to_string())
            },
            || gw.stderr(),
        );
        assert!(logged.contains(fragment), "{name}: {logged}");
    }
    let log = format!("{}{}", gw.stdout(), gw.stderr());
    for (name, _, value, _, _) in secret_position_cases() {
        assert!(
            !shows(&log, value),
            "{name}: the gateway's log quoted the value:\n{log}"
        );
    }
}

/// Least-privilege keys (`swap_in`, `allow`, `clients`): each mistake is an error at its own
/// `file:line:column` and YAML path.
#[test]
fn least_privilege_keys_are_checked_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let head = "listeners:\n  - name: l\n    address: 127.0.0.1:1\nupstreams:\n  a:\n    url: http://127.0.0.1:1\ncredentials:\n  c:\n    dummy: dummy-value-1\n    upstreams: [a]\n";
    let aws = "listeners:\n  - name: l\n    address: 127.0.0.1:1\nupstreams:\n  a:\n    url: http://127.0.0.1:1\ncredentials:\n  k:\n    kind: aws\n    access_key_id: { dummy: AKIADUMMY0000001, real: { env: HOME } }\n    secret_access_key: { dummy: dummy-secret-0001, real: { env: PATH } }\n    upstreams: [a]\n";
    // (name, text after `head` (or the whole file), line, column, YAML path, message fragment)
    let cases: &[(&str, String, usize, usize, &str, &str)] = &[
        (
            "proxy-authorization is never swapped into",
            format!("{head}    real: {{ env: HOME }}\n    swap_in:\n      headers: [authorization, Proxy-Authorization]\n"),
            13, 32, "credentials.c.swap_in.headers[1]", "never swapped into `proxy-authorization`",
        ),
        (
            "unknown placement",
            format!("{head}    real: {{ env: HOME }}\n    swap_in:\n      cookies: [a]\n"),
            13, 7, "credentials.c.swap_in.cookies", "unknown field `cookies`",
        ),
        (
            "bad media type",
            format!("{head}    real: {{ env: HOME }}\n    swap_in: {{ body: [json] }}\n"),
            12, 23, "credentials.c.swap_in.body[0]", "`json` is not a media type",
        ),
        (
            "relative path pattern",
            format!("{head}    real: {{ env: HOME }}\n    allow:\n      - methods: [GET]\n        paths: [\"/ok/*\", \"repos/*\"]\n"),
            14, 26, "credentials.c.allow[0].paths[1]", "starts with `/`",
        ),
        (
            "double star inside a path",
            format!("{head}    real: {{ env: HOME }}\n    allow:\n      - paths: [\"/a/**/b\"]\n"),
            13, 17, "credentials.c.allow[0].paths[0]", "`**` stands alone",
        ),
        (
            "bad method",
            format!("{head}    real: {{ env: HOME }}\n    allow:\n      - methods: [GET, \"GE T\"]\n"),
            13, 24, "credentials.c.allow[0].methods[1]", "is not an HTTP method",
        ),
        (
            "empty allow list",
            format!("{head}    real: {{ env: HOME }}\n    allow: []\n"),
            12, 12, "credentials.c.allow", "empty `allow` list",
        ),
        (
            "real and clients",
            format!("{head}    real: {{ env: HOME }}\n    clients:\n      agent-1: {{ env: PATH }}\n"),
            12, 5, "credentials.c.clients", "not both",
        ),
        (
            "empty clients",
            format!("{head}    clients: {{}}\n"),
            11, 14, "credentials.c.clients", "empty `clients` map",
        ),
        (
            "client value with a bad variable name",
            format!("{head}    clients:\n      agent-1: {{ env: sk-live-pasted }}\n"),
            12, 23, "credentials.c.clients.agent-1.env", "not an environment variable name",
        ),
        (
            "clients on an aws credential",
            format!("{aws}    clients:\n      agent-1: {{ env: PATH }}\n"),
            13, 5, "credentials.k.clients", "not supported on `aws` credentials",
        ),
        (
            "swap_in on an aws credential",
            format!("{aws}    swap_in: {{ headers: [x-amz-date] }}\n"),
            13, 14, "credentials.k.swap_in", "`swap_in` does not apply",
        ),
    ];
    for (name, text, line, col, path, fragment) in cases {
        let file = dir.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(&file, text).unwrap();
        let (ok, _, err) = check(&file);
        assert!(!ok, "{name}: check passed");
        let want = format!("{}:{line}:{col}: {path}: ", file.display());
        let located = err
            .lines()
            .find(|l| l.contains(fragment))
            .unwrap_or_else(|| panic!("{name}: `{fragment}` not in:\n{err}"));
        assert!(
            located.starts_with(&format!("error: {want}")),
            "{name}: want `{want}`, got:\n{located}"
        );
        assert!(
            !err.contains("sk-live-pasted"),
            "{name}: a value in a secret position was quoted"
        );
    }
}

/// Body swapping towards an upstream that looks like a language-model API passes with a
/// warning at the `body` key; the same towards another API passes without one.
#[test]
fn body_swapping_towards_a_model_api_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = |url: &str, name: &str| {
        format!("listeners:\n  - name: l\n    address: 127.0.0.1:1\nupstreams:\n  {name}:\n    url: {url}\ncredentials:\n  c:\n    dummy: dummy-value-1\n    real: {{ env: HOME }}\n    upstreams: [{name}]\n    swap_in: {{ body: [application/json] }}\n")
    };
    let cases = [
        ("openai by host", "https://api.openai.com", "api", true),
        (
            "anthropic by host",
            "https://api.anthropic.com",
            "api",
            true,
        ),
        (
            "a model by name",
            "http://127.0.0.1:8000",
            "local-llm",
            true,
        ),
        ("an object store", "https://s3.example.com", "store", false),
    ];
    for (name, url, upstream, warned) in cases {
        let file = dir.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(&file, config(url, upstream)).unwrap();
        let (ok, out, err) = check(&file);
        assert!(ok, "{name}: {err}");
        let all = format!("{out}{err}");
        let warning = all
            .lines()
            .find(|l| l.contains("looks like a language-model API"));
        assert_eq!(warning.is_some(), warned, "{name}:\n{all}");
        if let Some(w) = warning {
            assert!(
                w.contains(&format!(
                    "{}:12:22: credentials.c.swap_in.body: ",
                    file.display()
                )),
                "{name}: {w}"
            );
        }
    }
}

/// `rotation:`: each error names file:line:column, the YAML path and what is allowed; a zero
/// grace and the default are accepted.
#[test]
fn rotation_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let head = "listeners:\n  - name: l\n    address: 127.0.0.1:1\nupstreams:\n  a:\n    url: http://127.0.0.1:1\n";
    // (case, `rotation:` section, the error line's located part and a fragment, or None for
    // a file that passes)
    let cases: &[(&str, &str, Option<(&str, &str)>)] = &[
        ("default", "", None),
        ("zero grace", "rotation:\n  retired_grace: 0s\n", None),
        ("hours", "rotation:\n  retired_grace: 48h\n", None),
        ("empty section", "rotation:\n", None),
        (
            "not a duration",
            "rotation:\n  retired_grace: soon\n",
            Some(("8:18: rotation.retired_grace: ", "`soon` is not a duration")),
        ),
        (
            "a number without a unit",
            "rotation:\n  retired_grace: 3600\n",
            Some(("8:18: rotation.retired_grace: ", "expected a string")),
        ),
        (
            "unknown key",
            "rotation:\n  grace: 1h\n",
            Some(("8:3: rotation.grace: ", "unknown field `grace`")),
        ),
        (
            "not a mapping",
            "rotation: 1h\n",
            Some(("7:11: rotation: ", "")),
        ),
    ];
    for (name, section, want) in cases {
        let file = format!("{}.yaml", name.replace(' ', "-"));
        let path = dir.path().join(&file);
        std::fs::write(&path, format!("{head}{section}")).unwrap();
        let (ok, out, err) = check(&path);
        match want {
            None => assert!(ok && out.starts_with("ok:"), "{name}: {out}{err}"),
            Some((at, fragment)) => {
                assert!(!ok, "{name}: check passed");
                let located = format!("error: {}:{at}", path.display());
                assert!(
                    err.lines()
                        .any(|l| l.starts_with(&located) && l.contains(fragment)),
                    "{name}: `{located}...{fragment}` not in:\n{err}"
                );
            }
        }
    }
}
