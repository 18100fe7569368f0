//! Cross-check against botocore, an independent SigV4 implementation: requests that botocore
//! signed must verify here, and requests re-signed here must verify in botocore. Needs
//! `python3` with `botocore` (`pip install botocore`); the script is `tests/traffic/aws/crosscheck.py`.
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use slapenir::aws::sigv4::{Keys, Payload, PayloadHash, RequestView, SignedRequest};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/traffic/aws/crosscheck.py"
);

fn python(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "crosscheck.py {args:?} failed (is botocore installed?)"
    );
    String::from_utf8(out.stdout).unwrap()
}

fn text<'a>(case: &'a Value, field: &str) -> &'a str {
    case[field].as_str().unwrap_or_default()
}

fn headers(case: &Value) -> Vec<(String, String)> {
    case["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn body(case: &Value) -> Vec<u8> {
    let hex = text(case, "body_hex").as_bytes();
    hex.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Verifies a case with its own keys, then re-signs it with `real`. Returns the re-signed case.
fn check(case: &Value, real: &Keys<'_>) -> Result<Value, String> {
    let name = text(case, "name");
    let header_list = headers(case);
    let pairs: Vec<(&[u8], &[u8])> = header_list
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let view = RequestView {
        method: text(case, "method"),
        path: text(case, "path").as_bytes(),
        query: text(case, "query").as_bytes(),
        headers: &pairs,
    };
    let body = body(case);
    let signed = SignedRequest::parse(&view)
        .map_err(|e| format!("{name}: {e}"))?
        .ok_or(format!("{name}: no signature found"))?;
    let payload = match signed.payload(&view).map_err(|e| format!("{name}: {e}"))? {
        Payload::Declared(hash) => hash,
        Payload::HashBody => PayloadHash::of_body(&body),
    };
    let token = case["session_token"].as_str().map(str::as_bytes);
    let dummy = Keys {
        access_key_id: text(case, "access_key_id"),
        secret_access_key: text(case, "secret_key").as_bytes(),
        session_token: token,
    };
    if let Err(e) = signed.verify(&view, &payload, &dummy) {
        let canonical = slapenir::aws::sigv4::canonical_request(
            &view,
            &signed.scope.service,
            &signed.signed_headers,
            &payload,
        );
        return Err(format!(
            "{name}: {e}\ncase: {case}\nour canonical request:\n{}",
            String::from_utf8_lossy(&canonical.unwrap_or_default())
        ));
    }
    let real = Keys {
        session_token: token.and(real.session_token),
        ..*real
    };
    let resigned = signed
        .resign(&view, &payload, &real)
        .map_err(|e| format!("{name}: re-signing: {e}"))?;
    let mut new_headers = header_list;
    for edit in &resigned.headers {
        new_headers.retain(|(n, _)| !n.eq_ignore_ascii_case(edit.name));
        new_headers.push((
            edit.name.to_owned(),
            String::from_utf8(edit.value.to_vec()).unwrap(),
        ));
    }
    let query = match &resigned.query {
        Some(q) => String::from_utf8(q.to_vec()).unwrap(),
        None => text(case, "query").to_owned(),
    };
    Ok(json!({
        "name": name,
        "service": case["service"],
        "access_key_id": real.access_key_id,
        "secret_key": std::str::from_utf8(real.secret_access_key).unwrap(),
        "session_token": real.session_token.map(|t| std::str::from_utf8(t).unwrap()),
        "method": case["method"],
        "path": case["path"],
        "query": query,
        "headers": new_headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
        "body_hex": case["body_hex"],
    }))
}

#[test]
fn botocore_and_this_module_agree() {
    let real = Keys {
        access_key_id: "AKIAREALCROSSCHECK01",
        secret_access_key: b"real/Secret+Cross/Check0000000000000000",
        session_token: Some(b"REAL/token+=="),
    };
    let mut failures = Vec::new();
    let mut resigned = String::new();
    let mut count = 0;
    for seed in ["1", "2", "3"] {
        for line in python(&["generate", "--count", "400", "--seed", seed], None).lines() {
            let case: Value = serde_json::from_str(line).unwrap();
            count += 1;
            match check(&case, &real) {
                Ok(new) => {
                    resigned.push_str(&new.to_string());
                    resigned.push('\n');
                }
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} botocore-signed requests do not verify here:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    let verdicts = python(&["verify"], Some(&resigned));
    let refused: Vec<&str> = verdicts
        .lines()
        .filter(|l| !l.contains("\"ok\": true"))
        .collect();
    assert_eq!(verdicts.lines().count(), count, "one verdict per request");
    assert!(
        refused.is_empty(),
        "botocore refuses {} re-signed requests: {refused:?}",
        refused.len()
    );
}
