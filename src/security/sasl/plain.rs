//! SASL/PLAIN (RFC 4616) as Kafka's `PlainSaslServer` reads it: `authzid NUL authcid NUL
//! passwd`, UTF-8, the authorization id empty or equal to the user name. Bytes from the
//! network: errors, never panics (`fuzz/fuzz_targets/sasl_plain.rs`).

/// A parsed PLAIN response. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainResponse {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for PlainResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainResponse").field("user", &self.user).finish_non_exhaustive()
    }
}

/// Why a PLAIN response was refused (Kafka's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("Invalid SASL/PLAIN response: expected 3 tokens, got {0}")]
    Tokens(usize),
    #[error("Invalid SASL/PLAIN response: not UTF-8")]
    NotUtf8,
    #[error("Authentication failed: username not specified")]
    NoUser,
    #[error("Authentication failed: password not specified")]
    NoPassword,
    #[error("Authentication failed: Client requested an authorization id that is different from username")]
    AuthzidDiffers,
}

pub fn parse(bytes: &[u8]) -> Result<PlainResponse, PlainError> {
    let text = std::str::from_utf8(bytes).map_err(|_| PlainError::NotUtf8)?;
    let tokens: Vec<&str> = text.split('\u{0}').collect();
    let [authzid, user, password] = tokens.as_slice() else { return Err(PlainError::Tokens(tokens.len())) };
    if user.is_empty() {
        return Err(PlainError::NoUser);
    }
    if password.is_empty() {
        return Err(PlainError::NoPassword);
    }
    if !authzid.is_empty() && authzid != user {
        return Err(PlainError::AuthzidDiffers);
    }
    Ok(PlainResponse { user: user.to_string(), password: password.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_kafka() {
        assert_eq!(parse(b"\0alice\0pw"), Ok(PlainResponse { user: "alice".into(), password: "pw".into() }));
        assert_eq!(parse(b"alice\0alice\0pw").map(|r| r.user), Ok("alice".into()));
        assert_eq!(parse(b"bob\0alice\0pw"), Err(PlainError::AuthzidDiffers));
        assert_eq!(parse(b"\0alice"), Err(PlainError::Tokens(2)));
        assert_eq!(parse(b"\0\0pw"), Err(PlainError::NoUser));
        assert_eq!(parse(b"\0a\0"), Err(PlainError::NoPassword));
        assert_eq!(parse(&[0, 0xff, 0, 1]), Err(PlainError::NotUtf8));
        assert!(!format!("{:?}", parse(b"\0alice\0hunter2")).contains("hunter2"));
    }
}
