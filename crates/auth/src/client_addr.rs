//! Which client a login comes from, for the per-client rate limit.
//!
//! Behind the gateway every request reaches auth-service from the gateway's
//! own address, so the gateway appends its caller's address to
//! `X-Forwarded-For`. Only the entries appended by proxies we run can be
//! believed: anything to their left arrived in the client's own header, and
//! a client that could choose its address would dodge the limit with a new
//! made-up value on every request. `TRUSTED_PROXY_HOPS` says how many of our
//! proxies append to the header (1: the gateway; 2: an ingress in front of
//! it), and the client is the entry that many places from the right. With
//! no header, or with 0 hops, the client is the TCP peer.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// The client's address as text, for a rate-limit key.
pub(crate) fn client_addr(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trusted_hops: usize,
) -> String {
    let forwarded = if trusted_hops == 0 {
        None
    } else {
        let chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        // A chain shorter than the trusted hops came straight from a trusted hop.
        let index = chain.len().saturating_sub(trusted_hops);
        chain.get(index).and_then(|e| parse_ip(e))
    };
    forwarded
        .or(peer.map(|p| p.ip()))
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_canonical().to_string())
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`.
fn parse_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn peer() -> Option<SocketAddr> {
        Some("10.1.1.1:40000".parse().unwrap())
    }

    #[test]
    fn without_the_header_the_peer_is_the_client() {
        assert_eq!(client_addr(&headers(&[]), peer(), 1), "10.1.1.1");
        assert_eq!(client_addr(&headers(&[]), None, 1), "unknown");
    }

    #[test]
    fn the_entry_the_gateway_appended_is_the_client() {
        assert_eq!(
            client_addr(&headers(&["203.0.113.7"]), peer(), 1),
            "203.0.113.7"
        );
        assert_eq!(
            client_addr(&headers(&["1.1.1.1, 203.0.113.7"]), peer(), 1),
            "203.0.113.7",
            "the left entry came from the client and may be forged"
        );
        assert_eq!(
            client_addr(&headers(&["1.1.1.1", "203.0.113.7"]), peer(), 1),
            "203.0.113.7",
            "several header lines form one chain"
        );
    }

    #[test]
    fn more_trusted_hops_reach_further_left() {
        let h = headers(&["9.9.9.9, 198.51.100.1, 10.0.0.5"]);
        assert_eq!(client_addr(&h, peer(), 2), "198.51.100.1");
        assert_eq!(client_addr(&h, peer(), 5), "9.9.9.9");
        assert_eq!(
            client_addr(&h, peer(), 0),
            "10.1.1.1",
            "0 ignores the header"
        );
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_normalised() {
        assert_eq!(
            client_addr(&headers(&["203.0.113.7:5000"]), peer(), 1),
            "203.0.113.7"
        );
        assert_eq!(
            client_addr(&headers(&["[2001:db8::1]:443"]), peer(), 1),
            "2001:db8::1"
        );
        assert_eq!(
            client_addr(&headers(&["::ffff:192.0.2.1"]), peer(), 1),
            "192.0.2.1"
        );
    }

    #[test]
    fn garbage_falls_back_to_the_peer() {
        assert_eq!(client_addr(&headers(&["unknown"]), peer(), 1), "10.1.1.1");
        assert_eq!(client_addr(&headers(&[" , "]), peer(), 1), "10.1.1.1");
    }
}
