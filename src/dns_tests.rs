//! Tests of `dns.rs` (kept beside it: the module holds the code, this file the tables).

#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

/// A response to `query` with the given records `(type, ttl, data)`; owner names are
/// compressed pointers to the question.
fn response(query: &[u8], rcode: u8, records: &[(u16, u32, Vec<u8>)]) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81;
    r[3] = 0x80 | rcode;
    r[6..8].copy_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
    for (t, ttl, data) in records {
        r.extend_from_slice(&[0xc0, 12]);
        r.extend_from_slice(&t.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        r.extend_from_slice(data);
    }
    r
}

#[test]
fn parses_answers() {
    let q = encode_query(7, "api.test", QTYPE_A).unwrap();
    type Case = (
        &'static str,
        Vec<u8>,
        Result<Option<(Vec<IpAddr>, u32)>, ParseError>,
    );
    let cases: Vec<Case> = vec![
        (
            "one A record",
            response(&q, 0, &[(QTYPE_A, 30, vec![127, 0, 0, 2])]),
            Ok(Some((vec!["127.0.0.2".parse().unwrap()], 30))),
        ),
        (
            "CNAME then two A: smallest TTL of the chain",
            response(
                &q,
                0,
                &[
                    (QTYPE_CNAME, 5, vec![0xc0, 12]),
                    (QTYPE_A, 60, vec![10, 0, 0, 1]),
                    (QTYPE_A, 40, vec![10, 0, 0, 2]),
                ],
            ),
            Ok(Some((
                vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
                5,
            ))),
        ),
        ("no record of the type", response(&q, 0, &[]), Ok(None)),
        (
            "NXDOMAIN",
            response(&q, 3, &[]),
            Err(ParseError::Bad("no such name".into())),
        ),
        (
            "another query's id",
            response(&encode_query(8, "api.test", QTYPE_A).unwrap(), 0, &[]),
            Err(ParseError::OtherQuery),
        ),
        (
            "record cut short",
            response(&q, 0, &[(QTYPE_A, 30, vec![127, 0, 0, 2])])[..40].to_vec(),
            Err(ParseError::Bad("short record".into())),
        ),
    ];
    for (name, msg, want) in cases {
        assert_eq!(parse_response(7, QTYPE_A, &msg), want, "{name}");
    }
}

#[test]
fn encodes_names() {
    let cases: &[(&str, Result<&[u8], ()>)] = &[
        ("api.test", Ok(b"\x03api\x04test\x00")),
        ("api.test.", Ok(b"\x03api\x04test\x00")),
        ("a..b", Err(())),
        ("x.y", Ok(b"\x01x\x01y\x00")),
    ];
    for (host, want) in cases {
        let got = encode_query(1, host, QTYPE_A).map(|p| p[12..p.len() - 4].to_vec());
        assert_eq!(got.map_err(|_| ()), want.map(|w| w.to_vec()), "{host}");
    }
}

#[test]
fn round_robin_and_next_address() {
    let list: Arc<[IpAddr]> = Arc::from(vec![
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
    ]);
    let a = Addresses { list, start: 3 };
    assert_eq!(a.get(0), Some("10.0.0.2".parse().unwrap()));
    assert_eq!(a.get(1), Some("10.0.0.1".parse().unwrap()));
    assert_eq!(a.get(2), None);
}
