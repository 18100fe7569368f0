//! Tests of `dev.rs` (kept beside it: the module holds the code, this file the tables).

#![allow(clippy::panic, clippy::unwrap_used)]

use super::*;

#[test]
fn agent_names() {
    let cases: &[(&str, &str, bool)] = &[
        ("default", "agent-1", true),
        ("single letter", "a", true),
        ("digits", "42", true),
        ("63 characters", &"a".repeat(63), true),
        ("empty", "", false),
        ("64 characters", &"a".repeat(64), false),
        ("uppercase", "Agent-1", false),
        ("path separator", "../agent", false),
        ("dot", "agent.1", false),
        ("underscore", "agent_1", false),
        ("leading dash", "-agent", false),
        ("trailing dash", "agent-", false),
        ("space", "agent 1", false),
        ("non-ascii", "agént", false),
        ("gateway's files", "gateway", false),
    ];
    for (case, name, ok) in cases {
        assert_eq!(check_agent_name(name).is_ok(), *ok, "case {case}: {name:?}");
    }
}

#[test]
fn options() {
    let cases: Vec<(&str, InitOptions, Option<&str>)> = vec![
        ("default", InitOptions::default(), None),
        (
            "force and keep",
            InitOptions {
                force: true,
                keep_existing: true,
                ..InitOptions::default()
            },
            Some("force"),
        ),
        (
            "zero validity",
            InitOptions {
                leaf_validity: Duration::ZERO,
                ..InitOptions::default()
            },
            Some("leaf_validity"),
        ),
        (
            "leaf outlives intermediate",
            InitOptions {
                leaf_validity: INTERMEDIATE_CA_VALIDITY + Duration::from_secs(1),
                ..InitOptions::default()
            },
            Some("leaf_validity"),
        ),
        (
            "bad agent name",
            InitOptions {
                agent_name: "a/b".to_owned(),
                ..InitOptions::default()
            },
            Some("agent_name"),
        ),
    ];
    for (case, opts, want) in cases {
        match (check_options(&opts), want) {
            (Ok(()), None) => {}
            (Err(PkiError::InvalidOption { option, .. }), Some(want)) => {
                assert_eq!(option, want, "case {case}");
            }
            (got, want) => panic!("case {case}: got {got:?}, want error on {want:?}"),
        }
    }
}

#[test]
fn keep_existing_refuses_expired_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout(DEFAULT_AGENT_NAME);
    init(dir.path(), InitOptions::default()).unwrap();
    assert!(check_existing(dir.path(), &layout, SystemTime::now()).is_ok());

    let later = SystemTime::now() + DEFAULT_LEAF_VALIDITY + Duration::from_secs(DAY);
    let Err(PkiError::Unusable { problems, .. }) = check_existing(dir.path(), &layout, later)
    else {
        panic!("expired leaves were accepted");
    };
    let expired: Vec<&Path> = problems.iter().map(|(p, _)| p.as_path()).collect();
    assert_eq!(
        expired,
        [
            dir.path().join(GATEWAY_CERT),
            dir.path().join("agent-1.crt")
        ],
        "{problems:?}"
    );
    assert!(problems.iter().all(|(_, r)| r.contains("not valid now")));
}

#[test]
fn report_names_files_but_holds_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path(), InitOptions::default()).unwrap();
    let text = report.to_string();
    let debug = format!("{report:?}");
    for rel in layout_files(&layout(DEFAULT_AGENT_NAME)) {
        assert!(text.contains(&rel), "{rel} missing from report:\n{text}");
        let pem = fs::read_to_string(dir.path().join(&rel)).unwrap();
        if rel.ends_with("key") {
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            for shown in [&text, &debug] {
                assert!(!shown.contains("PRIVATE KEY"));
                assert!(!shown.contains(&body[..40]), "key of {rel} in report");
            }
        }
    }
}
