//! Tests of `decode.rs` (kept beside it: the module holds the code, this file the tables).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
use super::*;
use std::io::Write;

const MIB: usize = 1 << 20;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli_with(data: &[u8], large_window: bool) -> Vec<u8> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        lgwin: if large_window { 26 } else { 22 },
        large_window,
        ..Default::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
    out
}

fn brotli(data: &[u8]) -> Vec<u8> {
    brotli_with(data, false)
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 19).unwrap()
}

/// A zstd skippable frame: valid, and decodes to nothing.
fn zstd_skippable(len: usize) -> Vec<u8> {
    let mut frame = 0x184D_2A50_u32.to_le_bytes().to_vec();
    frame.extend(u32::try_from(len).unwrap().to_le_bytes());
    frame.resize(8 + len, 0);
    frame
}

/// Text that compresses about 5:1, like JSON or logs.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut x: u32 = 12345;
    while out.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let line = format!(
            "{{\"id\":{},\"user\":\"u{}\",\"ok\":{}}}\n",
            x % 100_000,
            (x >> 8) % 977,
            x.is_multiple_of(3)
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

struct Case {
    name: &'static str,
    /// Applied first to last, as in `Content-Encoding`.
    codings: &'static [Encoding],
    body: Vec<u8>,
    /// Decoded size of the body.
    decoded: usize,
}

fn bombs() -> Vec<Case> {
    let zeros = vec![0u8; 16 * MIB];
    vec![
        Case {
            name: "gzip bomb",
            codings: &[Encoding::Gzip],
            body: gzip(&zeros),
            decoded: zeros.len(),
        },
        Case {
            name: "deflate (zlib) bomb",
            codings: &[Encoding::Deflate],
            body: zlib(&zeros),
            decoded: zeros.len(),
        },
        Case {
            name: "deflate (raw) bomb",
            codings: &[Encoding::Deflate],
            body: raw_deflate(&zeros),
            decoded: zeros.len(),
        },
        Case {
            name: "br bomb",
            codings: &[Encoding::Brotli],
            body: brotli(&zeros),
            decoded: zeros.len(),
        },
        Case {
            name: "zstd bomb",
            codings: &[Encoding::Zstd],
            body: zstd(&zeros),
            decoded: zeros.len(),
        },
        Case {
            name: "gzip bomb inside br",
            codings: &[Encoding::Gzip, Encoding::Brotli],
            body: brotli(&gzip(&zeros)),
            decoded: zeros.len(),
        },
        Case {
            name: "gzip bomb inside gzip",
            codings: &[Encoding::Gzip, Encoding::Gzip],
            body: gzip(&gzip(&zeros)),
            decoded: zeros.len(),
        },
        Case {
            name: "zstd bomb inside deflate",
            codings: &[Encoding::Zstd, Encoding::Deflate],
            body: zlib(&zstd(&zeros)),
            decoded: zeros.len(),
        },
        // The intermediate stage expands, the final output is empty: the intermediate
        // stage is held to the budget too.
        Case {
            name: "zstd skippable frame inside gzip",
            codings: &[Encoding::Zstd, Encoding::Gzip],
            body: gzip(&zstd_skippable(16 * MIB)),
            decoded: 0,
        },
    ]
}

/// Pushes `body` in pieces of `size` bytes (all at once for 0) into a fresh `Vec` each,
/// checking that no push appends more than its step allows and that the buffer's capacity
/// (the allocation) stays within the step limit too.
fn decode_checked(
    decoder: &mut Decoder,
    budget: Budget,
    body: &[u8],
    size: usize,
) -> Result<u64, DecodeError> {
    let size = if size == 0 { body.len().max(1) } else { size };
    let mut total = 0u64;
    let mut check = |out: &Vec<u8>, limit: u64| {
        assert!(out.len() as u64 <= limit, "{} > {limit}", out.len());
        assert!(
            out.capacity() as u64 <= limit,
            "capacity {} > {limit}",
            out.capacity()
        );
        total += out.len() as u64;
    };
    for piece in body.chunks(size) {
        let mut out = Vec::new();
        let result = decoder.push(piece, &mut out);
        check(&out, budget.step_limit(piece.len()));
        assert!(decoder.scratch_capacity() <= 2 * CHUNK * decoder.stages.len());
        result?;
    }
    let mut out = Vec::new();
    let result = decoder.finish(&mut out);
    check(&out, STEP_SLACK);
    result?;
    Ok(total)
}

#[test]
fn bombs_are_refused_while_decoding_whatever_the_split() {
    // Ratio 10: a whole-body push of a bomb exceeds its step; small pushes stay within
    // their steps and hit the 4 MiB total instead.
    let budget = Budget {
        max_ratio: 10,
        max_bytes: 4 * MIB as u64,
    };
    for case in bombs() {
        for size in [0, 64 * 1024, 1024, 7] {
            let mut decoder = Decoder::stacked(case.codings).unwrap().with_budget(budget);
            let err = decode_checked(&mut decoder, budget, &case.body, size).unwrap_err();
            assert!(
                err.is_over_budget(),
                "{}, pieces of {size}: {err}",
                case.name
            );
            if size == 0 {
                assert_eq!(err.kind(), DecodeErrorKind::RatioExceeded, "{}", case.name);
            }
            if case.decoded == 0 {
                // Only the intermediate stage can have been over budget.
                assert_eq!(err.encoding(), Encoding::Gzip, "{}", case.name);
            }
        }
    }
}

#[test]
fn bombs_pass_a_budget_that_allows_them() {
    // Deflate's ratio is at most about 1032:1, but brotli and zstd encode 16 MiB of zeros
    // in a few dozen bytes: the ratio is effectively unlimited here, and every stage's output
    // (16 MiB and a few headers) fits in the total.
    let budget = Budget {
        max_ratio: 1 << 32,
        max_bytes: 17 * MIB as u64,
    };
    for case in bombs() {
        for size in [0, 1024] {
            let mut decoder = Decoder::stacked(case.codings).unwrap().with_budget(budget);
            let total = decode_checked(&mut decoder, budget, &case.body, size)
                .unwrap_or_else(|e| panic!("{}, pieces of {size}: {e}", case.name));
            assert_eq!(total, case.decoded as u64, "{}", case.name);
        }
    }
}

#[test]
fn legitimate_data_below_the_budget_decodes_whatever_the_split() {
    let plain = text(2 * MIB);
    let cases = [
        ("gzip", vec![Encoding::Gzip], gzip(&plain)),
        ("deflate", vec![Encoding::Deflate], zlib(&plain)),
        ("deflate raw", vec![Encoding::Deflate], raw_deflate(&plain)),
        ("br", vec![Encoding::Brotli], brotli(&plain)),
        ("zstd", vec![Encoding::Zstd], zstd(&plain)),
        (
            "gzip, br",
            vec![Encoding::Gzip, Encoding::Brotli],
            brotli(&gzip(&plain)),
        ),
    ];
    let budget = Budget::DEFAULT;
    for (name, codings, body) in &cases {
        assert!(
            body.len() * 2 < plain.len(),
            "{name}: the data should compress"
        );
        for size in [0, 64 * 1024, 16 * 1024, 1000, 1] {
            let mut decoder = Decoder::stacked(codings).unwrap().with_budget(budget);
            let mut out = Vec::new();
            let pieces = if size == 0 { body.len() } else { size };
            for piece in body.chunks(pieces) {
                decoder.push(piece, &mut out).unwrap();
            }
            decoder.finish(&mut out).unwrap();
            assert!(out == plain, "{name}, pieces of {size}");
        }
    }
}

#[test]
fn the_total_is_counted_across_pushes() {
    let plain = text(3 * MIB);
    let budget = Budget {
        max_ratio: 100,
        max_bytes: 2 * MIB as u64,
    };
    let mut decoder = Decoder::new(Encoding::Gzip).with_budget(budget);
    let err = decode_checked(&mut decoder, budget, &gzip(&plain), 4096).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::SizeExceeded);
    assert_eq!(
        err.to_string(),
        format!(
            "gzip body: decoded to more than the decoding budget allows (max_bytes) \
             (after {} compressed bytes)",
            err.offset()
        )
    );
    // Exactly the limit is fine.
    let exact = Budget {
        max_ratio: 100,
        max_bytes: plain.len() as u64,
    };
    let mut decoder = Decoder::new(Encoding::Gzip).with_budget(exact);
    assert_eq!(
        decode_checked(&mut decoder, exact, &gzip(&plain), 4096).unwrap(),
        plain.len() as u64
    );
}

#[test]
fn large_window_brotli_is_refused() {
    let data = vec![7u8; 1 << 16];
    let body = brotli_with(&data, true);
    let mut decoder = Decoder::new(Encoding::Brotli);
    let mut out = Vec::new();
    let err = decoder
        .push(&body, &mut out)
        .and_then(|()| decoder.finish(&mut out))
        .unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::Corrupt);
}

#[test]
fn brotli_trailing_bytes_are_refused() {
    let mut body = brotli(b"hello");
    body.extend_from_slice(b"junk");
    for size in [0, 1] {
        let mut decoder = Decoder::new(Encoding::Brotli);
        let err = decode_checked(&mut decoder, Budget::DEFAULT, &body, size).unwrap_err();
        assert_eq!(
            err.kind(),
            DecodeErrorKind::TrailingData,
            "pieces of {size}"
        );
    }
}
