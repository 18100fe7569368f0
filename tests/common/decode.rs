//! The client's side of "no real secret reaches the agent": everything received is decoded every
//! way an agent could decode it, and the results are searched. Decodings: the bytes as they
//! are, percent-decoded, JSON-unescaped, both orders of those two, and within each of these every
//! run of base64 characters (either alphabet, from each of its first four offsets) and every run
//! of hex digits (contiguous or one byte per space-separated pair).

pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = input
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (input[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Undoes JSON string escapes (`\/`, `\"`, `\\`, `\uXXXX` below 0x80, `\n`...).
pub fn json_unescape(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let simple = match input[i + 1] {
            b'/' => Some(b'/'),
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'n' => Some(b'\n'),
            b't' => Some(b'\t'),
            b'r' => Some(b'\r'),
            _ => None,
        };
        let unicode = (input[i + 1] == b'u')
            .then(|| input.get(i + 2..i + 6))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u16::from_str_radix(h, 16).ok())
            .and_then(|v| u8::try_from(v).ok());
        match (simple, unicode) {
            (Some(b), _) => {
                out.push(b);
                i += 2;
            }
            (None, Some(b)) => {
                out.push(b);
                i += 6;
            }
            (None, None) => {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    out
}

/// Decodes a run of base64 characters leniently: any alphabet mix, no padding rules, trailing
/// bits dropped.
pub fn base64_lenient(run: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(run.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in run {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Every decoding of `received` the client tries: the bytes, percent-decoded, JSON-unescaped,
/// both orders of those two, and each of these with every base64 run decoded from each of its
/// first four offsets.
pub fn decodings(received: &[u8]) -> Vec<Vec<u8>> {
    let mut layers = vec![
        received.to_vec(),
        percent_decode(received),
        json_unescape(received),
        json_unescape(&percent_decode(received)),
        percent_decode(&json_unescape(received)),
    ];
    let mut decoded = Vec::new();
    for layer in &layers {
        let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || b"+/-_".contains(b);
        for run in layer.split(|b| !is_b64(b)).filter(|r| r.len() >= 8) {
            for skip in 0..4 {
                decoded.push(base64_lenient(&run[skip..]));
            }
        }
        // Hex: contiguous digits, from both parities, and with single spaces between bytes.
        let is_hex_or_space = |b: &u8| b.is_ascii_hexdigit() || *b == b' ';
        for run in layer
            .split(|b| !is_hex_or_space(b))
            .filter(|r| r.len() >= 8)
        {
            let digits: Vec<u8> = run.iter().copied().filter(|b| *b != b' ').collect();
            for skip in 0..2 {
                decoded.push(hex_lenient(&digits[skip.min(digits.len())..]));
            }
        }
    }
    layers.extend(decoded);
    layers
}

pub fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn any_decoding_holds(received: &[u8], needle: &[u8]) -> bool {
    decodings(received).iter().any(|d| holds(d, needle))
}

/// Decodes pairs of hex digits; a trailing odd digit is dropped.
pub fn hex_lenient(digits: &[u8]) -> Vec<u8> {
    let v = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    digits
        .chunks_exact(2)
        .map(|p| v(p[0]) << 4 | v(p[1]))
        .collect()
}
