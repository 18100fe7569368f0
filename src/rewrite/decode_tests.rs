//! Tests of `decode.rs` (kept beside it: the module holds the code, this file the tables).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
use super::*;
use proptest::prelude::*;
use std::io::Write;

const TEXT: &[u8] = b"data: {\"token\":\"sk-real-0123456789\"}\n\n\
    The quick brown fox jumps over the lazy dog. The quick brown fox jumps again.\n";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &data[..], &mut out, &Default::default()).unwrap();
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn compress(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    match encoding {
        Encoding::Gzip => gzip(data),
        Encoding::Deflate => zlib(data),
        Encoding::Brotli => brotli(data),
        Encoding::Zstd => zstd(data),
    }
}

/// Decodes `body` pushed in chunks of `chunk` bytes (all at once for 0).
fn decode(decoder: &mut Decoder, body: &[u8], chunk: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let size = if chunk == 0 { body.len().max(1) } else { chunk };
    for piece in body.chunks(size) {
        decoder.push(piece, &mut out)?;
    }
    decoder.finish(&mut out)?;
    Ok(out)
}

const ALL: [Encoding; 4] = [
    Encoding::Gzip,
    Encoding::Deflate,
    Encoding::Brotli,
    Encoding::Zstd,
];

#[test]
fn header_values_parse_to_codings() {
    type Case = (
        &'static str,
        &'static [u8],
        Result<Option<Encoding>, UnsupportedEncoding>,
    );
    let cases: &[Case] = &[
        ("gzip", b"gzip", Ok(Some(Encoding::Gzip))),
        ("x-gzip alias", b"x-gzip", Ok(Some(Encoding::Gzip))),
        ("upper case", b"GZIP", Ok(Some(Encoding::Gzip))),
        ("mixed case br", b"Br", Ok(Some(Encoding::Brotli))),
        ("deflate", b"deflate", Ok(Some(Encoding::Deflate))),
        ("zstd with spaces", b"  zstd\t", Ok(Some(Encoding::Zstd))),
        ("identity", b"identity", Ok(None)),
        ("empty", b"", Ok(None)),
        (
            "identity around gzip",
            b"identity, gzip",
            Ok(Some(Encoding::Gzip)),
        ),
        (
            "registered but unsupported",
            b"compress",
            Err(UnsupportedEncoding::Registered { name: "compress" }),
        ),
        (
            "unknown token",
            b"sk-real-secret",
            Err(UnsupportedEncoding::Unrecognised { len: 14 }),
        ),
        (
            "two codings",
            b"gzip, br",
            Err(UnsupportedEncoding::Stacked { count: 2 }),
        ),
    ];
    for (name, value, want) in cases {
        assert_eq!(&Encoding::from_header(value), want, "case {name}");
    }
}

#[test]
fn lists_parse_in_applied_order_and_are_bounded() {
    type Case = (
        &'static str,
        &'static [&'static [u8]],
        Result<Vec<Encoding>, UnsupportedEncoding>,
    );
    let cases: &[Case] = &[
        ("none", &[], Ok(vec![])),
        (
            "one field",
            &[b"gzip, br"],
            Ok(vec![Encoding::Gzip, Encoding::Brotli]),
        ),
        (
            "two fields",
            &[b"zstd", b"deflate"],
            Ok(vec![Encoding::Zstd, Encoding::Deflate]),
        ),
        ("empty members", &[b" , gzip,,"], Ok(vec![Encoding::Gzip])),
        (
            "four is the limit",
            &[b"gzip, gzip, gzip, gzip"],
            Ok(vec![Encoding::Gzip; 4]),
        ),
        (
            "five is refused",
            &[b"gzip, gzip, gzip, gzip, gzip"],
            Err(UnsupportedEncoding::TooMany { count: 5 }),
        ),
        (
            "one bad member",
            &[b"gzip", b"aes128gcm"],
            Err(UnsupportedEncoding::Registered { name: "aes128gcm" }),
        ),
    ];
    for (name, fields, want) in cases {
        let got = Encoding::parse_list(fields.iter().copied());
        assert_eq!(&got, want, "case {name}");
    }
}

#[test]
fn unrecognised_coding_is_never_echoed() {
    let err = Encoding::from_header(b"sk-real-do-not-print").unwrap_err();
    let message = err.to_string();
    assert!(!message.contains("sk-real"), "{message}");
    assert!(message.contains("20 bytes"), "{message}");
}

#[test]
fn named_cases_decode_or_fail_as_expected() {
    let mut two_members = gzip(b"first member, ");
    two_members.extend(gzip(b"second member"));
    let mut gzip_then_junk = gzip(TEXT);
    // Longer than a gzip header, so it is read as a bad second member.
    gzip_then_junk.extend_from_slice(b"junk after the end of the stream");
    let mut zlib_then_junk = zlib(TEXT);
    zlib_then_junk.extend_from_slice(b"junk");
    let mut zstd_two_frames = zstd(b"frame one, ");
    zstd_two_frames.extend(zstd(b"frame two"));
    let gz = gzip(TEXT);
    let gz_cut_in_data = gz[..gz.len() / 2].to_vec();
    let gz_cut_in_trailer = gz[..gz.len() - 3].to_vec();

    type Want = Result<&'static [u8], DecodeErrorKind>;
    let cases: Vec<(&str, Encoding, Vec<u8>, Want)> = vec![
        ("gzip empty body", Encoding::Gzip, vec![], Ok(b"")),
        ("gzip of nothing", Encoding::Gzip, gzip(b""), Ok(b"")),
        ("gzip text", Encoding::Gzip, gzip(TEXT), Ok(TEXT)),
        (
            "gzip two members",
            Encoding::Gzip,
            two_members,
            Ok(b"first member, second member"),
        ),
        (
            "gzip cut in data",
            Encoding::Gzip,
            gz_cut_in_data,
            Err(DecodeErrorKind::Truncated),
        ),
        (
            "gzip cut in trailer",
            Encoding::Gzip,
            gz_cut_in_trailer,
            Err(DecodeErrorKind::Corrupt),
        ),
        (
            "gzip garbage",
            Encoding::Gzip,
            b"not gzip at all".to_vec(),
            Err(DecodeErrorKind::Corrupt),
        ),
        (
            "gzip trailing junk",
            Encoding::Gzip,
            gzip_then_junk,
            Err(DecodeErrorKind::Corrupt),
        ),
        ("deflate empty body", Encoding::Deflate, vec![], Ok(b"")),
        ("deflate zlib", Encoding::Deflate, zlib(TEXT), Ok(TEXT)),
        (
            "deflate raw",
            Encoding::Deflate,
            raw_deflate(TEXT),
            Ok(TEXT),
        ),
        (
            "deflate raw of nothing",
            Encoding::Deflate,
            raw_deflate(b""),
            Ok(b""),
        ),
        (
            "deflate one byte",
            Encoding::Deflate,
            vec![0x78],
            Err(DecodeErrorKind::Truncated),
        ),
        (
            "deflate zlib truncated",
            Encoding::Deflate,
            zlib(TEXT)[..20].to_vec(),
            Err(DecodeErrorKind::Truncated),
        ),
        (
            "deflate garbage",
            Encoding::Deflate,
            vec![0xff; 32],
            Err(DecodeErrorKind::Corrupt),
        ),
        (
            "deflate zlib trailing junk",
            Encoding::Deflate,
            zlib_then_junk,
            Err(DecodeErrorKind::TrailingData),
        ),
        ("br empty body", Encoding::Brotli, vec![], Ok(b"")),
        ("br of nothing", Encoding::Brotli, brotli(b""), Ok(b"")),
        ("br text", Encoding::Brotli, brotli(TEXT), Ok(TEXT)),
        (
            "br truncated",
            Encoding::Brotli,
            brotli(TEXT)[..10].to_vec(),
            Err(DecodeErrorKind::Truncated),
        ),
        (
            "br garbage",
            Encoding::Brotli,
            vec![0xff; 32],
            Err(DecodeErrorKind::Corrupt),
        ),
        ("zstd empty body", Encoding::Zstd, vec![], Ok(b"")),
        ("zstd of nothing", Encoding::Zstd, zstd(b""), Ok(b"")),
        ("zstd text", Encoding::Zstd, zstd(TEXT), Ok(TEXT)),
        (
            "zstd two frames",
            Encoding::Zstd,
            zstd_two_frames,
            Ok(b"frame one, frame two"),
        ),
        (
            "zstd truncated",
            Encoding::Zstd,
            zstd(TEXT)[..12].to_vec(),
            Err(DecodeErrorKind::Truncated),
        ),
        (
            "zstd garbage",
            Encoding::Zstd,
            b"not zstd data".to_vec(),
            Err(DecodeErrorKind::Corrupt),
        ),
    ];
    for (name, encoding, body, want) in &cases {
        for chunk in [0, 1, 2, 7] {
            let got = decode(&mut Decoder::new(*encoding), body, chunk);
            match (got, want) {
                (Ok(bytes), Ok(expected)) => {
                    assert_eq!(bytes, *expected, "case {name}, chunk {chunk}");
                }
                (Err(e), Err(kind)) => {
                    assert_eq!(e.kind(), *kind, "case {name}, chunk {chunk}: {e}");
                    assert_eq!(e.encoding(), *encoding, "case {name}");
                }
                (got, _) => panic!("case {name}, chunk {chunk}: got {got:?}, want {want:?}"),
            }
        }
    }
}

#[test]
fn decoder_is_unusable_after_finish_or_error() {
    let mut d = Decoder::new(Encoding::Gzip);
    let mut out = Vec::new();
    d.push(&gzip(b"x"), &mut out).unwrap();
    d.finish(&mut out).unwrap();
    let err = d.push(b"more", &mut out).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::Unusable);
    assert_eq!(
        d.finish(&mut out).unwrap_err().kind(),
        DecodeErrorKind::Unusable
    );

    let mut d = Decoder::new(Encoding::Zstd);
    assert_eq!(
        d.push(b"garbage!", &mut out).unwrap_err().kind(),
        DecodeErrorKind::Corrupt
    );
    assert_eq!(
        d.push(&zstd(b"x"), &mut out).unwrap_err().kind(),
        DecodeErrorKind::Unusable
    );
}

#[test]
fn error_messages_name_the_coding_and_offset() {
    let mut d = Decoder::new(Encoding::Brotli);
    let mut out = Vec::new();
    d.push(&brotli(TEXT)[..5], &mut out).unwrap();
    let err = d.finish(&mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "br body: body ended before the compressed stream did (after 5 compressed bytes)"
    );
}

/// Output must appear as soon as the encoder flushed, before the stream ends: an SSE stream
/// compressed with a flush after each event stays live through the decoder.
#[test]
fn flushed_events_decode_before_the_stream_ends() {
    let events: [&[u8]; 3] = [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"];
    for encoding in ALL {
        let mut encoder = FlushingEncoder::new(encoding);
        let mut decoder = Decoder::new(encoding);
        let mut out = Vec::new();
        for event in events {
            let bytes = encoder.write_and_flush(event);
            out.clear();
            for byte in bytes.chunks(1) {
                decoder.push(byte, &mut out).unwrap();
            }
            assert_eq!(out, event, "{encoding}: event decoded before the end");
        }
        out.clear();
        decoder.push(&encoder.finish(), &mut out).unwrap();
        decoder.finish(&mut out).unwrap();
        assert_eq!(out, b"", "{encoding}: nothing left at the end");
    }
}

/// An encoder that can sync-flush mid-stream, as a server does after each SSE event.
enum FlushingEncoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zlib(flate2::write::ZlibEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl FlushingEncoder {
    fn new(encoding: Encoding) -> Self {
        let level = flate2::Compression::default();
        match encoding {
            Encoding::Gzip => Self::Gzip(flate2::write::GzEncoder::new(Vec::new(), level)),
            Encoding::Deflate => Self::Zlib(flate2::write::ZlibEncoder::new(Vec::new(), level)),
            Encoding::Brotli => Self::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                5,
                22,
            ))),
            Encoding::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap()),
        }
    }

    fn write_and_flush(&mut self, data: &[u8]) -> Vec<u8> {
        fn step<W: Write>(
            w: &mut W,
            data: &[u8],
            inner: impl FnOnce(&mut W) -> &mut Vec<u8>,
        ) -> Vec<u8> {
            w.write_all(data).unwrap();
            w.flush().unwrap();
            std::mem::take(inner(w))
        }
        match self {
            Self::Gzip(e) => step(e, data, |e| e.get_mut()),
            Self::Zlib(e) => step(e, data, |e| e.get_mut()),
            Self::Brotli(e) => step(e.as_mut(), data, |e| e.get_mut()),
            Self::Zstd(e) => step(e, data, |e| e.get_mut()),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Gzip(e) => e.finish().unwrap(),
            Self::Zlib(e) => e.finish().unwrap(),
            Self::Brotli(e) => e.into_inner(),
            Self::Zstd(e) => e.finish().unwrap(),
        }
    }
}

#[test]
fn stacked_codings_decode_last_applied_first() {
    // `Content-Encoding: gzip, br`: gzip was applied first, brotli over it.
    let body = brotli(&gzip(TEXT));
    let codings = Encoding::parse_list([&b"gzip, br"[..]]).unwrap();
    for chunk in [0, 1, 5] {
        let mut d = Decoder::stacked(&codings).unwrap();
        assert_eq!(decode(&mut d, &body, chunk).unwrap(), TEXT, "chunk {chunk}");
    }
    assert!(Decoder::stacked(&[]).is_none());

    // The inner stream is cut: the inner stage reports it at finish.
    let body = brotli(&gzip(TEXT)[..20]);
    let err = decode(&mut Decoder::stacked(&codings).unwrap(), &body, 3).unwrap_err();
    assert_eq!(
        (err.encoding(), err.kind()),
        (Encoding::Gzip, DecodeErrorKind::Truncated)
    );
}

#[test]
fn oversized_zstd_window_is_refused() {
    let data = vec![7u8; 1 << 16];
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.window_log(ZSTD_WINDOW_LOG_MAX + 2).unwrap();
    // Without a known content size the frame header must declare the big window.
    encoder.include_contentsize(false).unwrap();
    encoder.write_all(&data).unwrap();
    let body = encoder.finish().unwrap();
    let err = decode(&mut Decoder::new(Encoding::Zstd), &body, 0).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::Corrupt);
}

fn arb_stack() -> impl Strategy<Value = Vec<Encoding>> {
    let one = prop::sample::select(ALL.to_vec());
    prop::collection::vec(one, 1..=2)
}

fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        // Repetitive input exercises back-references across chunk splits.
        (prop::collection::vec(any::<u8>(), 1..16), 0usize..400)
            .prop_map(|(unit, times)| unit.repeat(times)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any body, any stack of codings, any split of the compressed stream: the decoded
    /// output is the original body.
    #[test]
    fn any_chunking_decodes_to_the_original(
        body in arb_body(),
        codings in arb_stack(),
        raw in any::<bool>(),
        splits in prop::collection::vec(1usize..64, 1..32),
    ) {
        let mut compressed = body.clone();
        for &coding in &codings {
            compressed = match (coding, raw) {
                (Encoding::Deflate, true) => raw_deflate(&compressed),
                (coding, _) => compress(coding, &compressed),
            };
        }
        let mut decoder = Decoder::stacked(&codings).unwrap();
        let mut out = Vec::new();
        let mut rest = &compressed[..];
        for size in splits.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            decoder.push(piece, &mut out).unwrap();
            rest = tail;
        }
        decoder.finish(&mut out).unwrap();
        prop_assert_eq!(out, body);
    }
}
