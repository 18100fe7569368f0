//! The status page rendered by headless Chromium: routes, credential states, self-contained.

use super::*;

/// Where test artifacts are kept: `target/test-artifacts`.
fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium on `url` with `mode` (`--dump-dom`, `--screenshot=PATH`, ...), a fresh
/// profile and no network of its own; returns stdout and every console message it logged.
fn chromium(url: &str, mode: &str) -> (String, Vec<String>) {
    let bin = tool("chromium", "apt-get install -y chromium");
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,1400",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(mode)
    .arg(url);
    let out = run_with_deadline(cmd, Duration::from_secs(90));
    let log = text(&out.stderr);
    assert!(
        out.status.success(),
        "chromium {mode} {url} failed ({}):\n{log}",
        out.status
    );
    // Page console messages (console.*, uncaught exceptions, CSP violations) are logged as
    // `...:INFO:CONSOLE:LINE] "message", source: URL (LINE)`.
    let console = log
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (text(&out.stdout), console)
}

/// The first table row (`<tr>...</tr>`) whose first cell is exactly `name`.
fn row_of<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let first_cell = format!("<td>{name}</td>");
    dom.split("<tr")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap_or_default())
        .find(|r| {
            r.split_once('>')
                .is_some_and(|(_, cells)| cells.starts_with(&first_cell))
        })
}

/// The status page renders in Chromium without a console message, shows every route host and
/// every credential with its state, and loads nothing from outside; a screenshot is kept in
/// `target/test-artifacts/status.png`.
#[test]
fn status_page_renders_in_chromium_with_routes_and_credential_states() {
    // The console check can fail: a page that logs an error is caught.
    let control = tempfile::tempdir().unwrap();
    let control_page = control.path().join("control.html");
    std::fs::write(
        &control_page,
        "<!doctype html><title>control</title><script>console.error('control-error'); missingFunction();</script>",
    )
    .unwrap();
    let (_, console) = chromium(&format!("file://{}", control_page.display()), "--dump-dom");
    assert!(
        console.iter().any(|l| l.contains("control-error"))
            && console.iter().any(|l| l.contains("missingFunction")),
        "the console check missed the control page's errors: {console:?}"
    );

    let s = Stack::start();
    let ok = agent(
        &s,
        "api.test",
        "/echo",
        &["-H", &format!("Authorization: Bearer {DUMMY}")],
    );
    assert_eq!(ok.status, Some(200), "{ok:?}");
    let down = agent(&s, "down.test", "/echo", &[]);
    assert_eq!(down.status, Some(502), "{down:?}");

    let url = s.admin_url("/");
    let (status, head, html) = http_get(&url);
    assert_eq!(status, 200, "{head}{html}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(html.contains("<title>SLAPENIR status</title>"), "{html}");
    assert_self_contained(&html);

    let (dom, console) = chromium(&url, "--dump-dom");
    assert!(
        console.is_empty(),
        "console messages on the status page:\n{}",
        console.join("\n")
    );
    for host in ["api.test", "other.test", "down.test", "restricted.test"] {
        assert!(
            dom.contains(host),
            "route {host} is not on the page:\n{dom}"
        );
    }
    for (name, state) in [
        ("openai", "available"),
        ("github", "available"),
        ("missing", "unavailable"),
    ] {
        let row =
            row_of(&dom, name).unwrap_or_else(|| panic!("credential {name} has no row:\n{dom}"));
        let says_unavailable = row.contains("unavailable");
        assert!(
            row.contains(state) && (state == "unavailable") == says_unavailable,
            "credential {name} should show `{state}`: {row}"
        );
    }
    // The credential just used shows when; the others were never used.
    assert!(
        !row_of(&dom, "openai").unwrap().contains("never"),
        "{}",
        row_of(&dom, "openai").unwrap()
    );
    assert!(row_of(&dom, "github").unwrap().contains("never"));
    assert!(
        row_of(&dom, "down").is_some_and(|r| r.contains("failing")),
        "{dom}"
    );
    assert!(
        row_of(&dom, "api").is_some_and(|r| r.contains("ok")),
        "{dom}"
    );

    let shot = artifacts_dir().join("status.png");
    let _ = std::fs::remove_file(&shot);
    let (_, console) = chromium(&url, &format!("--screenshot={}", shot.display()));
    assert!(
        console.is_empty(),
        "console messages on the status page:\n{}",
        console.join("\n")
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a screenshot of a page ({} bytes)",
        shot.display(),
        png.len()
    );
}

/// No attribute or style of the page loads anything: every `src`, `href`, `action`, `url(`
/// and `@import` is absent or points inside the page (`#...`) or to inline `data:`.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("@import"), "the page imports a stylesheet");
    for marker in ["src=", "href=", "action=", "url("] {
        for (i, _) in lower.match_indices(marker) {
            let value = lower[i + marker.len()..].trim_start_matches(['"', '\'', ' ']);
            assert!(
                value.starts_with('#') || value.starts_with("data:"),
                "the page references an external resource: {}",
                &html[i..(i + 80).min(html.len())]
            );
        }
    }
}
