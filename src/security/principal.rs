//! Who a TLS client is: the subject of its certificate as Java's `X500Principal.getName()`
//! (RFC 2253) writes it, mapped by Kafka's `ssl.principal.mapping.rules`.
//!
//! The certificate was already verified by rustls against `tls_client_ca`; this module only
//! reads its subject. The DER walk is bounds-checked and never panics (it reads bytes a client
//! sent); anything it does not understand makes the subject `None` and the handshake's
//! principal is refused.

use regex::Regex;

/// One DER element: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The subject of a DER certificate, RFC 2253 (most significant RDN last, as Java prints it).
pub fn subject_of_certificate(der: &[u8]) -> Option<String> {
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // version [0] EXPLICIT, optional.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (tag, subject, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    name_rfc2253(subject)
}

/// An X.501 `Name` (the contents of its SEQUENCE) in RFC 2253 form.
pub fn name_rfc2253(mut name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (tag, set, rest) = tlv(name)?;
        if tag != SET {
            return None;
        }
        name = rest;
        let mut attrs = Vec::new();
        let mut set = set;
        while !set.is_empty() {
            let (tag, atv, rest) = tlv(set)?;
            if tag != SEQUENCE {
                return None;
            }
            set = rest;
            let (tag, oid, value) = tlv(atv)?;
            if tag != OID {
                return None;
            }
            let (vtag, vcontent, after) = tlv(value)?;
            let value_der = &value[..value.len() - after.len()];
            let oid = oid_string(oid)?;
            let text = match keyword(&oid) {
                Some(k) => match string_value(vtag, vcontent) {
                    Some(s) => format!("{k}={}", escape(&s)),
                    None => format!("{k}=#{}", hex(value_der)),
                },
                None => format!("{oid}=#{}", hex(value_der)),
            };
            attrs.push(text);
        }
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

fn oid_string(bytes: &[u8]) -> Option<String> {
    let (&first, rest) = bytes.split_first()?;
    let mut parts = vec![u64::from(first / 40).min(2), 0];
    parts[1] = u64::from(first) - parts[0] * 40;
    let mut acc: u64 = 0;
    for &b in rest {
        acc = acc.checked_mul(128)?.checked_add(u64::from(b & 0x7f))?;
        if b & 0x80 == 0 {
            parts.push(acc);
            acc = 0;
        }
    }
    Some(parts.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

/// The RFC 2253 keywords Java prints by name.
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn string_value(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, TeletexString (as Latin-1 would be a guess: UTF-8 only),
        // IA5String.
        0x0c | 0x13 | 0x14 | 0x16 => std::str::from_utf8(content).ok().map(str::to_string),
        // BMPString: UTF-16BE.
        0x1e if content.len().is_multiple_of(2) => {
            let units: Vec<u16> = content.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// RFC 2253 section 2.4 escaping.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Kafka's `ssl.principal.mapping.rules`: `RULE:pattern/replacement/[LU]` and `DEFAULT`,
/// comma-separated, the first rule whose pattern matches the whole name wins.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace { pattern: Regex, replacement: String, case: Option<char> },
}

impl Default for PrincipalMapper {
    fn default() -> Self {
        Self { rules: vec![Rule::Default] }
    }
}

impl PrincipalMapper {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut rest = text;
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if rest.is_empty() {
                break;
            }
            if let Some(r) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = r;
                continue;
            }
            let Some(r) = rest.strip_prefix("RULE:") else {
                return Err(format!("invalid rule at `{rest}`: expected RULE:pattern/replacement/[LU] or DEFAULT"));
            };
            let (pattern, r) = until_slash(r).ok_or_else(|| format!("rule `{rest}`: missing `/` after the pattern"))?;
            let (replacement, r) =
                until_slash(r).ok_or_else(|| format!("rule `{rest}`: missing `/` after the replacement"))?;
            let (case, r) = match r.chars().next() {
                Some(c @ ('L' | 'U')) => (Some(c), &r[1..]),
                _ => (None, r),
            };
            let regex = Regex::new(&format!("^(?:{})$", pattern.replace("\\/", "/")))
                .map_err(|e| format!("rule `{rest}`: bad pattern: {e}"))?;
            rules.push(Rule::Replace { pattern: regex, replacement: java_replacement(&replacement), case });
            rest = r;
        }
        if rules.is_empty() {
            return Err("no rules (use DEFAULT)".into());
        }
        Ok(Self { rules })
    }

    /// The principal name for a distinguished name, or `None` when no rule matches (Kafka then
    /// fails the authentication).
    pub fn map(&self, dn: &str) -> Option<String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Some(dn.to_string()),
                Rule::Replace { pattern, replacement, case } => {
                    if pattern.is_match(dn) {
                        let out = pattern.replace_all(dn, replacement.as_str()).into_owned();
                        return Some(match case {
                            Some('L') => out.to_lowercase(),
                            Some('U') => out.to_uppercase(),
                            _ => out,
                        });
                    }
                }
            }
        }
        None
    }
}

/// Text up to the next unescaped `/`, and what follows it.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's `$1` group references as the regex crate's `${1}` (its `$1a` would name group `1a`).
fn java_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            '\\' => {
                if let Some(n) = chars.next() {
                    if n == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(n);
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SEQUENCE/SET/OID helpers to build names.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 128 {
            out.push(content.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    fn atv(oid: &[u8], tag: u8, value: &str) -> Vec<u8> {
        let mut c = der(OID, oid);
        c.extend(der(tag, value.as_bytes()));
        der(SEQUENCE, &c)
    }

    #[test]
    fn names_print_most_significant_last() {
        let mut name = Vec::new();
        name.extend(der(SET, &atv(&[0x55, 0x04, 0x06], 0x13, "US")));
        name.extend(der(SET, &atv(&[0x55, 0x04, 0x0a], 0x0c, "Acme, Inc.")));
        let mut multi = atv(&[0x55, 0x04, 0x0b], 0x0c, "eng");
        multi.extend(atv(&[0x55, 0x04, 0x03], 0x0c, "alice"));
        name.extend(der(SET, &multi));
        // emailAddress has no keyword: printed as OID=#hex of the DER value.
        name.extend(der(SET, &atv(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01], 0x16, "a@b")));
        assert_eq!(
            name_rfc2253(&name).as_deref(),
            Some("1.2.840.113549.1.9.1=#1603614062,OU=eng+CN=alice,O=Acme\\, Inc.,C=US")
        );
    }

    #[test]
    fn garbage_is_not_a_subject() {
        for bytes in [&[][..], &[0x30], &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], &[0x30, 0x02, 0x31, 0x05]] {
            assert_eq!(subject_of_certificate(bytes), None);
        }
    }

    #[test]
    fn mapping_rules_as_kafka() {
        let m = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, DEFAULT",
        )
        .expect("rules");
        assert_eq!(m.map("CN=kafka-svc,OU=ServiceUsers,O=Acme").as_deref(), Some("kafka-svc"));
        assert_eq!(m.map("CN=Alice,OU=Eng,O=Acme,L=Paris,ST=IDF,C=FR").as_deref(), Some("alice@eng"));
        assert_eq!(m.map("CN=bob").as_deref(), Some("CN=bob"));
        let strict = PrincipalMapper::parse("RULE:^CN=([a-z]+)$/$1/U").expect("rule");
        assert_eq!(strict.map("CN=bob").as_deref(), Some("BOB"));
        assert_eq!(strict.map("CN=Bob,O=x"), None, "no rule matched: authentication fails");
        assert!(PrincipalMapper::parse("RULE:abc").is_err());
        assert!(PrincipalMapper::parse("bogus").is_err());
    }
}
