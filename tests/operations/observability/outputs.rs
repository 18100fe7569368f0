//! Every output of the gateway searched for real secrets and dummies after every kind of
//! request and reload.

use super::*;

/// After every kind of request and reload: no real secret in `/metrics`, `/status`, `/`, the
/// audit log, the process log or any answer the agent got; no dummy on `/metrics`, `/status`
/// or `/` (nor in the gateway's logs, which never echo request values); no client address on
/// `/status` or `/`.
#[test]
fn no_secret_or_dummy_in_metrics_status_page_or_logs() {
    let s = Stack::start();
    let driven = drive_every_kind(&s);

    let (status_code, _, status) = http_get(&s.admin_url("/status"));
    assert_eq!(status_code, 200, "{status}");
    let parsed: Value = serde_json::from_str(&status).expect("/status is JSON");
    assert!(
        parsed["credentials"]
            .as_array()
            .is_some_and(|c| c.len() == 3),
        "{status}"
    );
    let (page_code, _, page) = http_get(&s.admin_url("/"));
    assert_eq!(page_code, 200, "{page}");
    let metrics = s.metrics();
    let audit = s.gw.stdout();
    let process_log = s.gw.stderr();
    // Every refusal that got an HTTP answer is in the audit log, by reason.
    for case in CASES.iter().filter(|c| c.status.is_some()) {
        if let Some(reason) = case.counted_as {
            assert!(
                audit.contains(&format!("\"refusal\":\"{reason}\"")),
                "{}: no audit line with refusal {reason}:\n{audit}",
                case.name
            );
        }
    }

    let outputs = [
        ("/metrics", &metrics),
        ("/status", &status),
        ("/", &page),
        ("the audit log (stdout)", &audit),
        ("the process log (stderr)", &process_log),
    ];
    let mut found = Vec::new();
    for (where_, output) in outputs {
        for (i, secret) in REAL_SECRETS.iter().enumerate() {
            if output.contains(secret) {
                found.push(format!("real secret #{i} in {where_}"));
            }
        }
        // The gateway never writes a dummy anywhere: only the agent sends them, and only
        // answers to the agent may carry them back.
        for dummy in DUMMIES {
            if output.contains(dummy) {
                found.push(format!("dummy `{dummy}` in {where_}"));
            }
        }
    }
    for (name, answer) in &driven.answers {
        for (i, secret) in REAL_SECRETS.iter().enumerate() {
            if answer.body.contains(secret) {
                found.push(format!("real secret #{i} in the answer to `{name}`"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));

    // The echo came back with the dummy where the agent sent it, never the real value.
    let echoed = &driven.answers[0].1.body;
    assert!(echoed.contains(&format!("Bearer {DUMMY}")), "{echoed}");

    // No client address: the only addresses on /status and / are the configured upstreams'.
    let allowed: BTreeSet<String> = [
        s.up.addr().to_string(),
        format!("127.0.0.1:{}", s.down_port),
    ]
    .into();
    for (where_, output) in [("/status", &status), ("/", &page)] {
        for (i, _) in output.match_indices("127.0.0.1") {
            let addr: String = output[i..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            assert!(
                allowed.contains(&addr),
                "{where_} shows the address {addr}, which is not a configured upstream's"
            );
        }
    }
}
