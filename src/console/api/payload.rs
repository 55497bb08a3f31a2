//! How record keys, values and header values are shown and given (pure).
//!
//! Shown: JSON (an object or array) pretty-printed, other UTF-8 text as is, anything else
//! (invalid UTF-8, control characters) as lower-case hex; cut to [`MAX_SHOWN_BYTES`].
//! Given (a produced test message): text, hex or base64.

use serde::Serialize;

/// Bytes of one key, value or header value shown at most.
pub const MAX_SHOWN_BYTES: usize = 64 * 1024;

/// One key, value or header value as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    /// `json`, `text` or `binary`.
    pub encoding: &'static str,
    /// The raw text (UTF-8); null for binary.
    pub text: Option<String>,
    /// Pretty-printed JSON, for `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
    /// Lower-case hex, for `binary`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    /// The whole payload's size.
    pub size_bytes: usize,
    /// Whether only the first [`MAX_SHOWN_BYTES`] are shown.
    pub truncated: bool,
}

impl Payload {
    pub fn of(bytes: &[u8]) -> Payload {
        let truncated = bytes.len() > MAX_SHOWN_BYTES;
        let shown = &bytes[..bytes.len().min(MAX_SHOWN_BYTES)];
        let base =
            Payload { encoding: "binary", text: None, json: None, hex: None, size_bytes: bytes.len(), truncated };
        // A cut may split a UTF-8 sequence: the valid prefix is still text.
        let text = match std::str::from_utf8(shown) {
            Ok(t) => Some(t),
            Err(e) if truncated && e.error_len().is_none() => std::str::from_utf8(&shown[..e.valid_up_to()]).ok(),
            Err(_) => None,
        };
        match text {
            Some(t) if !t.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n')) => {
                let json = if truncated { None } else { pretty_json(t) };
                Payload {
                    encoding: if json.is_some() { "json" } else { "text" },
                    text: Some(t.to_string()),
                    json,
                    ..base
                }
            }
            _ => Payload { hex: Some(hex(shown)), ..base },
        }
    }
}

/// `t` pretty-printed if it is a JSON object or array.
fn pretty_json(t: &str) -> Option<String> {
    let trimmed = t.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(t).ok()?;
    serde_json::to_string_pretty(&v).ok()
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// How a produced message's strings are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Text,
    Hex,
    Base64,
}

impl Encoding {
    /// The bytes `s` stands for.
    pub fn decode(self, s: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Text => Ok(s.as_bytes().to_vec()),
            Encoding::Hex => decode_hex(s),
            Encoding::Base64 => decode_base64(s),
        }
    }
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return Err("hex has an odd number of digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()).ok_or_else(|| format!("'{s}' is not hex"))
        })
        .collect()
}

/// Standard base64 (RFC 4648, `+/`, padding optional; whitespace ignored).
fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let digits = digits.strip_suffix(b"==").or_else(|| digits.strip_suffix(b"=")).unwrap_or(&digits);
    if digits.len() % 4 == 1 {
        return Err("base64 has a bad length".into());
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c).ok_or_else(|| format!("'{}' is not base64", *c as char))? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_and_binary() {
        let p = Payload::of(br#"{"a":1,"b":[true]}"#);
        assert_eq!(p.encoding, "json");
        assert_eq!(p.json.as_deref(), Some("{\n  \"a\": 1,\n  \"b\": [\n    true\n  ]\n}"));
        assert_eq!(p.text.as_deref(), Some(r#"{"a":1,"b":[true]}"#));
        let p = Payload::of(b"hello\tworld\n");
        assert_eq!((p.encoding, p.json, p.hex), ("text", None, None));
        // A JSON scalar stays text; broken JSON too.
        assert_eq!(Payload::of(b"42").encoding, "text");
        assert_eq!(Payload::of(b"{nope").encoding, "text");
        let p = Payload::of(&[0, 1, 0xfe, 0xff]);
        assert_eq!((p.encoding, p.text, p.hex.as_deref()), ("binary", None, Some("0001feff")));
        assert_eq!(Payload::of(b"a\x01b").encoding, "binary");
    }

    #[test]
    fn large_payloads_are_cut() {
        let mut big = "é".repeat(MAX_SHOWN_BYTES);
        big.push('x');
        let p = Payload::of(big.as_bytes());
        assert!(p.truncated);
        assert_eq!(p.encoding, "text");
        assert_eq!(p.size_bytes, big.len());
        assert_eq!(p.text.map(|t| t.len()), Some(MAX_SHOWN_BYTES));
    }

    #[test]
    fn given_encodings() {
        assert_eq!(Encoding::Text.decode("hé").as_deref(), Ok("hé".as_bytes()));
        assert_eq!(Encoding::Hex.decode("00ff10").as_deref(), Ok(&[0u8, 255, 16][..]));
        assert!(Encoding::Hex.decode("0").is_err());
        assert!(Encoding::Hex.decode("zz").is_err());
        assert_eq!(Encoding::Base64.decode("aGVsbG8=").as_deref(), Ok(&b"hello"[..]));
        assert_eq!(Encoding::Base64.decode("aGVsbG8h").as_deref(), Ok(&b"hello!"[..]));
        assert_eq!(Encoding::Base64.decode("aA==").as_deref(), Ok(&b"h"[..]));
        assert!(Encoding::Base64.decode("a").is_err());
        assert!(Encoding::Base64.decode("a*==").is_err());
    }
}
