//! Tests of `client.rs` (kept beside it: the module holds the code, this file the tables).

#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

#[test]
fn holds_stop_at_the_limit_and_give_back_on_drop() {
    let s = state("test-holds");
    let a = hold(&s, Counter::Tunnels, Some(2)).unwrap();
    let b = hold(&s, Counter::Tunnels, Some(2)).unwrap();
    assert!(hold(&s, Counter::Tunnels, Some(2)).is_none(), "third of 2");
    assert_eq!(s.held(Counter::Tunnels), 2);
    drop(a);
    let c = hold(&s, Counter::Tunnels, Some(2));
    assert!(c.is_some(), "a dropped hold frees its slot");
    assert!(hold(&s, Counter::Tunnels, None).is_some(), "unlimited");
    drop((b, c));
    assert_eq!(s.held(Counter::Tunnels), 0);
}

#[test]
fn the_bucket_allows_a_burst_then_the_rate() {
    let t0 = Instant::now();
    let mut b = Bucket::default();
    let cases: &[(&str, u64, bool)] = &[
        ("burst 1", 0, true),
        ("burst 2", 0, true),
        ("burst 3", 0, true),
        ("empty", 0, false),
        ("a quarter second later: not yet (rate 2)", 250, false),
        ("half a second later: one token back", 500, true),
        ("at once again: empty", 500, false),
    ];
    for (name, ms, ok) in cases {
        let r = b.take(2.0, 3.0, t0 + Duration::from_millis(*ms));
        assert_eq!(r.is_ok(), *ok, "{name}");
    }
    let wait = b
        .take(2.0, 3.0, t0 + Duration::from_millis(500))
        .unwrap_err();
    assert_eq!(
        Limited::new(Limit::RequestsPerSecond, wait, t0).retry_after,
        1
    );
    let slow = Bucket::default().take(0.1, 1.0, t0).and_then(|()| {
        let mut b = Bucket {
            tokens: 0.0,
            at: Some(t0),
        };
        b.take(0.1, 1.0, t0)
    });
    assert_eq!(
        Limited::new(Limit::RequestsPerSecond, slow.unwrap_err(), t0).retry_after,
        10,
        "whole seconds until a token is back"
    );
}

#[test]
fn the_tarpit_answers_a_second_late_and_one_refusal_per_step() {
    let t0 = Instant::now();
    let step = Duration::from_secs(1) / TARPIT_RELEASES_PER_SECOND;
    let mut t = Timed::default();
    assert_eq!(t.tarpit(t0), t0 + OVER_LIMIT_DELAY, "alone: a second later");
    // A burst of refusals at the same instant: answered one step apart, not together.
    for i in 1..4 {
        assert_eq!(t.tarpit(t0), t0 + OVER_LIMIT_DELAY + step * i, "queued {i}");
    }
    // A flood: never held longer than the cap.
    for _ in 0..1000 {
        assert!(t.tarpit(t0) <= t0 + TARPIT_MAX);
    }
    // Once the queue has drained, a refusal waits a second again.
    let later = t0 + TARPIT_MAX + Duration::from_secs(5);
    assert_eq!(t.tarpit(later), later + OVER_LIMIT_DELAY);
}

#[test]
fn pacing_shares_one_rate_between_spenders() {
    let t0 = Instant::now();
    let mut b = Bucket::default();
    // 1000 bytes/s: the first second's worth goes at once, then each spender waits its
    // turn behind the others.
    assert_eq!(b.spend(1000.0, 1000.0, t0), Duration::ZERO);
    assert_eq!(b.spend(1000.0, 500.0, t0), Duration::from_millis(500));
    assert_eq!(b.spend(1000.0, 500.0, t0), Duration::from_millis(1000));
    assert_eq!(
        b.spend(1000.0, 0.0, t0 + Duration::from_secs(3)),
        Duration::ZERO,
        "debt paid back"
    );
}

#[test]
fn static_answers_have_their_lengths() {
    for limit in [Limit::Connections, Limit::Tunnels] {
        let limited = Limited::new(limit, Duration::ZERO, Instant::now());
        let text = std::str::from_utf8(refusal_bytes(&limited)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, limited.body(), "{limit}");
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
    }
}
