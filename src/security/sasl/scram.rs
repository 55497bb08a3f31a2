//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka's `ScramSaslServer` runs
//! them: no channel binding (`n,`), an optional authorization id that must equal the user
//! name, the `tokenauth` extension refused (no delegation tokens).
//!
//! Pure: the server nonce and the credential come in as values, so the exchange is tested with
//! RFC 7677's vectors. Every parser takes bytes from the network and returns an error, never
//! panics (`fuzz/fuzz_targets/sasl_scram.rs`). Proofs are compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use skiff_controller::intent::{ScramCredential, ScramMechanism};
use subtle::ConstantTimeEq;

/// Kafka's bounds on iterations (`ScramMechanism.minIterations()` and the controller's max).
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

/// Why an exchange failed. The message the client sees is always the same
/// ([`ScramError::client_message`]); the reason is for the broker's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("the SCRAM exchange is already complete")]
    Complete,
}

fn hmac(m: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match m {
        ScramMechanism::ScramSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        ScramMechanism::ScramSha512 => {
            let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(m: ScramMechanism, data: &[u8]) -> Vec<u8> {
    match m {
        ScramMechanism::ScramSha256 => Sha256::digest(data).to_vec(),
        ScramMechanism::ScramSha512 => Sha512::digest(data).to_vec(),
    }
}

/// `Hi(password, salt, i)` (RFC 5802 2.2): PBKDF2 with HMAC, one block.
pub fn salted_password(m: ScramMechanism, password: &[u8], salt: &[u8], iterations: i32) -> Vec<u8> {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(m, password, &block);
    let mut out = u.clone();
    for _ in 1..iterations.max(1) {
        u = hmac(m, password, &u);
        out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// The stored credential for a salted password (what AlterUserScramCredentials carries).
pub fn credential_from_salted(m: ScramMechanism, salted: &[u8], salt: &[u8], iterations: i32) -> ScramCredential {
    let client_key = hmac(m, salted, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        stored_key: hash(m, &client_key),
        server_key: hmac(m, salted, b"Server Key"),
        iterations,
    }
}

/// The stored credential for a password.
pub fn credential(m: ScramMechanism, password: &str, salt: &[u8], iterations: i32) -> ScramCredential {
    credential_from_salted(m, &salted_password(m, password.as_bytes(), salt, iterations), salt, iterations)
}

/// Whether `password` matches `cred` (SASL/PLAIN against the SCRAM store), in constant time.
pub fn password_matches(m: ScramMechanism, cred: &ScramCredential, password: &str) -> bool {
    let salted = salted_password(m, password.as_bytes(), &cred.salt, cred.iterations);
    let stored = hash(m, &hmac(m, &salted, b"Client Key"));
    bool::from(stored.ct_eq(&cred.stored_key))
}

/// `client-first-message` (RFC 5802 section 7), as Kafka accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// `n,` or `n,a=<authzid>,`: echoed in the final message's channel binding.
    pub gs2_header: String,
    pub authzid: Option<String>,
    pub user: String,
    pub nonce: String,
    /// `client-first-message-bare`, part of the AuthMessage.
    pub bare: String,
}

/// Decodes a `saslname` (`=2C` is `,`, `=3D` is `=`; any other `=` is an error).
fn sasl_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in a user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn printable_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

pub fn parse_client_first(bytes: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (flag, rest) = text.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
    match flag {
        "n" => {}
        "y" | "p" => return Err(ScramError::Unsupported("channel binding")),
        f if f.starts_with("p=") => return Err(ScramError::Unsupported("channel binding")),
        _ => return Err(ScramError::Malformed("bad GS2 channel binding flag")),
    }
    let (authz, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no GS2 authzid field"))?;
    let authzid = match authz {
        "" => None,
        a => Some(sasl_name(a.strip_prefix("a=").ok_or(ScramError::Malformed("bad GS2 authzid"))?)?),
    };
    let mut fields = bare.split(',');
    if bare.starts_with("m=") {
        return Err(ScramError::Unsupported("mandatory extension"));
    }
    let user = fields.next().and_then(|f| f.strip_prefix("n=")).ok_or(ScramError::Malformed("no user name"))?;
    let user = sasl_name(user)?;
    let nonce = fields.next().and_then(|f| f.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
    if !printable_nonce(nonce) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    for ext in fields {
        // Kafka's only extension is `tokenauth` (delegation tokens), which Skiff does not serve.
        if ext.starts_with("tokenauth=") {
            return Err(ScramError::Unsupported("delegation tokens (tokenauth)"));
        }
    }
    if user.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(ClientFirst {
        gs2_header: format!("n,{authz},"),
        authzid,
        user,
        nonce: nonce.to_string(),
        bare: bare.to_string(),
    })
}

/// `client-final-message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFinal {
    pub channel_binding: Vec<u8>,
    pub nonce: String,
    pub proof: Vec<u8>,
    /// `client-final-message-without-proof`, part of the AuthMessage.
    pub without_proof: String,
}

pub fn parse_client_final(bytes: &[u8]) -> Result<ClientFinal, ScramError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
    let mut fields = without_proof.split(',');
    let c = fields.next().and_then(|f| f.strip_prefix("c=")).ok_or(ScramError::Malformed("no channel binding"))?;
    let nonce = fields.next().and_then(|f| f.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
    let channel_binding = B64.decode(c).map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
    let proof = B64.decode(proof).map_err(|_| ScramError::Malformed("proof is not base64"))?;
    Ok(ClientFinal { channel_binding, nonce: nonce.to_string(), proof, without_proof: without_proof.to_string() })
}

/// What the server remembers between the two client messages.
#[derive(Debug)]
struct Pending {
    first: ClientFirst,
    server_first: String,
    nonce: String,
    /// `None` for an unknown user: the exchange goes on with a made-up salt and fails at the
    /// proof, like a wrong password, so the answer does not say whether the user exists.
    credential: Option<ScramCredential>,
}

/// One server side of one exchange.
#[derive(Debug)]
pub struct ScramServer {
    mechanism: ScramMechanism,
    pending: Option<Pending>,
    done: bool,
    /// The user the client named in its first message (for the failure log).
    user: Option<String>,
}

/// The result of a completed exchange: the server-final message and the authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub server_final: Vec<u8>,
    pub user: String,
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> Self {
        Self { mechanism, pending: None, done: false, user: None }
    }

    /// The user the client claimed to be, once its first message parsed.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Handles the next client message. `credential` looks a user up; `server_nonce` is fresh
    /// randomness (printable, no comma); `decoy_salt` is the salt shown for an unknown user.
    pub fn step(
        &mut self,
        message: &[u8],
        credential: impl FnOnce(&str) -> Option<ScramCredential>,
        server_nonce: &str,
        decoy_salt: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<Step, ScramError> {
        if self.done {
            return Err(ScramError::Complete);
        }
        match self.pending.take() {
            None => {
                let first = parse_client_first(message)?;
                self.user = Some(first.user.clone());
                if first.authzid.as_ref().is_some_and(|a| *a != first.user) {
                    return Err(ScramError::InvalidCredentials);
                }
                let credential = credential(&first.user);
                let (salt, iterations) = match &credential {
                    Some(c) => (c.salt.clone(), c.iterations),
                    None => (decoy_salt(&first.user), MIN_ITERATIONS),
                };
                let nonce = format!("{}{server_nonce}", first.nonce);
                let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
                let out = server_first.clone().into_bytes();
                self.pending = Some(Pending { first, server_first, nonce, credential });
                Ok(Step::Continue(out))
            }
            Some(p) => {
                self.done = true;
                let last = parse_client_final(message)?;
                if last.nonce != p.nonce {
                    return Err(ScramError::Malformed("nonce differs from the server's"));
                }
                if last.channel_binding != p.first.gs2_header.as_bytes() {
                    return Err(ScramError::Malformed("channel binding differs from the GS2 header"));
                }
                let Some(cred) = p.credential else { return Err(ScramError::InvalidCredentials) };
                let m = self.mechanism;
                let auth_message = format!("{},{},{}", p.first.bare, p.server_first, last.without_proof);
                let signature = hmac(m, &cred.stored_key, auth_message.as_bytes());
                if last.proof.len() != signature.len() {
                    return Err(ScramError::InvalidCredentials);
                }
                let client_key: Vec<u8> = last.proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
                if !bool::from(hash(m, &client_key).ct_eq(&cred.stored_key)) {
                    return Err(ScramError::InvalidCredentials);
                }
                let server_signature = hmac(m, &cred.server_key, auth_message.as_bytes());
                let server_final = format!("v={}", B64.encode(server_signature)).into_bytes();
                Ok(Step::Done(Authenticated { server_final, user: p.first.user }))
            }
        }
    }
}

/// What the server answers a client message with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Continue(Vec<u8>),
    Done(Authenticated),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil", SCRAM-SHA-256.
    #[test]
    fn rfc7677_exchange() {
        let m = ScramMechanism::ScramSha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        let cred = credential(m, "pencil", &salt, 4096);
        let mut server = ScramServer::new(m);
        let first = server
            .step(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                |_| Some(cred.clone()),
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                |_| vec![],
            )
            .expect("first");
        assert_eq!(
            first,
            Step::Continue(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".to_vec()
            )
        );
        let done = server
            .step(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                |_| None,
                "",
                |_| vec![],
            )
            .expect("final");
        assert_eq!(
            done,
            Step::Done(Authenticated {
                server_final: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
                user: "user".into()
            })
        );
        assert!(password_matches(m, &cred, "pencil"));
        assert!(!password_matches(m, &cred, "pencil2"));
    }

    #[test]
    fn wrong_proof_and_unknown_user_fail_alike() {
        let m = ScramMechanism::ScramSha512;
        let cred = credential(m, "secret", b"salt", 4096);
        for known in [true, false] {
            let mut server = ScramServer::new(m);
            let c = cred.clone();
            let Step::Continue(first) = server
                .step(b"n,,n=alice,r=abc", move |_| known.then_some(c), "def", |_| b"decoy".to_vec())
                .expect("first")
            else {
                panic!("continue expected")
            };
            assert!(String::from_utf8(first).expect("utf8").ends_with(",i=4096"));
            let proof = B64.encode([0u8; 64]);
            let last = format!("c=biws,r=abcdef,p={proof}");
            assert_eq!(server.step(last.as_bytes(), |_| None, "", |_| vec![]), Err(ScramError::InvalidCredentials));
        }
    }

    #[test]
    fn parsers_refuse_what_kafka_refuses() {
        assert!(parse_client_first(b"y,,n=a,r=b").is_err());
        assert!(parse_client_first(b"p=tls-unique,,n=a,r=b").is_err());
        assert!(parse_client_first(b"n,,n=a,r=b,tokenauth=true").is_err());
        assert!(parse_client_first(b"n,,n=a=2,r=b").is_err());
        assert!(parse_client_first(b"n,,n=,r=b").is_err());
        assert!(parse_client_first(b"n,,r=b").is_err());
        assert!(parse_client_first(&[0xff, 0xfe]).is_err());
        let f = parse_client_first(b"n,a=a=3Db,n=a=3Db,r=xyz").expect("escaped names");
        assert_eq!((f.user.as_str(), f.authzid.as_deref(), f.gs2_header.as_str()), ("a=b", Some("a=b"), "n,a=a=3Db,"));
        assert!(parse_client_final(b"c=biws,r=x").is_err());
        assert!(parse_client_final(b"c=!!,r=x,p=AA==").is_err());
        assert!(parse_client_final(b"r=x,c=biws,p=AA==").is_err());
    }
}

/// The HMAC for tests that play the client side.
#[cfg(test)]
pub(crate) mod tests_support {
    pub fn hmac(m: super::ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
        super::hmac(m, key, data)
    }
}
