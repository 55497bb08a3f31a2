//! Kafka listeners: `PLAINTEXT://host:port`, `SSL://…`, `SASL_PLAINTEXT://…`, `SASL_SSL://…`
//! (a bare `host:port` is PLAINTEXT), each with its own advertised address.
//!
//! As in Kafka with default listener names, a listener is named by its security protocol, so
//! there is at most one of each; `kafka_advertise` lists the advertised addresses the same way
//! (`SASL_SSL://broker1.example.com:9094,...`), or one bare `host:port` for a single listener.
//! A listener with no advertised address advertises the address it bound.

use std::fmt;
use std::net::SocketAddr;

/// Kafka's `security.protocol` of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [Self::Plaintext, Self::Ssl, Self::SaslPlaintext, Self::SaslSsl];

    /// The name Kafka uses (also the listener's name).
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(name))
    }

    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One configured listener: where to bind and how clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
}

/// `PROTOCOL://rest` or a bare `rest` (PLAINTEXT).
fn split_protocol(item: &str) -> Result<(SecurityProtocol, &str), String> {
    match item.split_once("://") {
        Some((proto, rest)) => {
            let p = SecurityProtocol::from_name(proto).ok_or_else(|| {
                format!("`{item}`: unknown security protocol `{proto}` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
            })?;
            Ok((p, rest))
        }
        None => Ok((SecurityProtocol::Plaintext, item)),
    }
}

fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Parses `kafka_listen`: comma-separated listeners, at most one per protocol.
pub fn parse_listeners(text: &str) -> Result<Vec<ListenerSpec>, String> {
    let mut out: Vec<ListenerSpec> = Vec::new();
    for item in items(text) {
        let (protocol, addr) = split_protocol(item)?;
        let bind = addr
            .parse::<SocketAddr>()
            .map_err(|_| format!("`{item}`: `{addr}` is not HOST:PORT with an IP address"))?;
        if out.iter().any(|l| l.protocol == protocol) {
            return Err(format!("`{item}`: a second {protocol} listener (one listener per security protocol)"));
        }
        out.push(ListenerSpec { protocol, bind });
    }
    if out.is_empty() {
        return Err("no listener given".into());
    }
    Ok(out)
}

/// An advertised `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub host: String,
    pub port: i32,
}

impl fmt::Display for Advertised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn parse_host_port(item: &str, addr: &str) -> Result<Advertised, String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) => Ok(Advertised { host: host.to_string(), port: i32::from(port) }),
            Err(_) => Err(format!("`{item}` is not HOST:PORT")),
        },
        _ => Err(format!("`{item}` is not HOST:PORT")),
    }
}

/// Parses `kafka_advertise` against the listeners: `PROTOCOL://host:port` items name their
/// listener; a bare `host:port` is allowed only when there is one listener. Returns one entry
/// per listener, in the listeners' order (`None`: advertise the bound address).
pub fn parse_advertised(text: &str, listeners: &[ListenerSpec]) -> Result<Vec<Option<Advertised>>, String> {
    let mut out = vec![None; listeners.len()];
    for item in items(text) {
        let index = match item.split_once("://") {
            Some(_) => {
                let (protocol, _) = split_protocol(item)?;
                listeners
                    .iter()
                    .position(|l| l.protocol == protocol)
                    .ok_or_else(|| format!("`{item}`: there is no {protocol} listener in kafka_listen"))?
            }
            None if listeners.len() == 1 => 0,
            None => {
                return Err(format!(
                    "`{item}`: with several listeners each advertised address names its listener (SSL://host:port)"
                ));
            }
        };
        let addr = item.split_once("://").map_or(item, |(_, a)| a);
        if out[index].is_some() {
            return Err(format!("`{item}`: listener {} is advertised twice", listeners[index].protocol));
        }
        out[index] = Some(parse_host_port(item, addr)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_address_is_plaintext() {
        let l = parse_listeners("127.0.0.1:9092").expect("parse");
        assert_eq!(
            l,
            vec![ListenerSpec {
                protocol: SecurityProtocol::Plaintext,
                bind: "127.0.0.1:9092".parse().expect("address")
            }]
        );
    }

    #[test]
    fn several_listeners_with_advertised_addresses() {
        let l = parse_listeners("PLAINTEXT://127.0.0.1:9092, sasl_ssl://0.0.0.0:9094,SSL://[::1]:9093").expect("parse");
        assert_eq!(
            l.iter().map(|l| l.protocol).collect::<Vec<_>>(),
            vec![SecurityProtocol::Plaintext, SecurityProtocol::SaslSsl, SecurityProtocol::Ssl]
        );
        let a = parse_advertised("SASL_SSL://kafka.example.com:19094", &l).expect("advertise");
        assert_eq!(a, vec![None, Some(Advertised { host: "kafka.example.com".into(), port: 19094 }), None]);
        assert!(parse_advertised("kafka.example.com:1", &l).is_err(), "bare address with several listeners");
        assert!(parse_advertised("SASL_PLAINTEXT://h:1", &l).is_err(), "no such listener");
        assert!(parse_advertised("SSL://h:1,SSL://h:2", &l).is_err(), "twice");
        assert!(parse_advertised("SSL://h:x", &l).is_err());
    }

    #[test]
    fn refuses_bad_listeners() {
        assert!(parse_listeners("").is_err());
        assert!(parse_listeners("TLS://127.0.0.1:1").is_err());
        assert!(parse_listeners("SSL://localhost:1").is_err(), "bind needs an IP address");
        assert!(parse_listeners("SSL://127.0.0.1:1,SSL://127.0.0.1:2").is_err());
    }
}
