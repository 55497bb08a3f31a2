//! The zone (rack) of a client (RFC 0005, "Produce").
//!
//! Kafka producers send no rack (`client.rack` is a consumer setting, carried in Fetch from
//! KIP-392 on), so a producer declares its zone in its `client.id`, which every client sends in
//! every request header: a token `skiff_rack=<rack>`, e.g. `client.id=orders,skiff_rack=az-a`
//! (AutoMQ's convention is the same with `automq_az=`). It is configuration only: unmodified
//! clients of every family set `client.id`. The rack ends at `,`, `;`, whitespace or the end of
//! the id; an empty rack is no rack.

/// The token that introduces a client's rack in its `client.id`.
pub const CLIENT_ID_TOKEN: &str = "skiff_rack=";

/// Longest rack accepted from a client id (longer ones are ignored: a rack is a short label).
const MAX_RACK_LEN: usize = 64;

/// The rack a client declared in `client_id`, if any.
pub fn from_client_id(client_id: &str) -> Option<&str> {
    let mut rest = client_id;
    while let Some(at) = rest.find(CLIENT_ID_TOKEN) {
        // Only a whole token counts: `xskiff_rack=` is someone else's name.
        let starts_token = at == 0 || rest[..at].ends_with([',', ';', ' ', '\t']);
        let after = &rest[at + CLIENT_ID_TOKEN.len()..];
        if starts_token {
            let end = after.find([',', ';', ' ', '\t']).unwrap_or(after.len());
            let rack = &after[..end];
            return (!rack.is_empty() && rack.len() <= MAX_RACK_LEN).then_some(rack);
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rack_is_read_from_the_client_id_token() {
        assert_eq!(from_client_id("skiff_rack=az-a"), Some("az-a"));
        assert_eq!(from_client_id("orders,skiff_rack=az-b"), Some("az-b"));
        assert_eq!(from_client_id("orders;skiff_rack=az-b;x=1"), Some("az-b"));
        assert_eq!(from_client_id("orders skiff_rack=us-east-1a trailing"), Some("us-east-1a"));
        assert_eq!(from_client_id("skiff_rack=az-c,other"), Some("az-c"));
        assert_eq!(from_client_id("orders"), None);
        assert_eq!(from_client_id(""), None);
        assert_eq!(from_client_id("skiff_rack="), None, "an empty rack is no rack");
        assert_eq!(from_client_id("myskiff_rack=az-a"), None, "only a whole token");
        assert_eq!(from_client_id("myskiff_rack=az-a,skiff_rack=az-b"), Some("az-b"));
        assert_eq!(from_client_id(&format!("skiff_rack={}", "r".repeat(65))), None, "bounded");
    }
}
