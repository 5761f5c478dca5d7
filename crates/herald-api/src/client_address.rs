//! Who is asking, by network address: the peer of the TCP connection, or, when that peer is a proxy the
//! operator named (`server.trusted_proxies`, e.g. nginx in front of the nodes), the address the proxy
//! appended to `X-Forwarded-For`. The header is read from the right and the first address that is not a
//! trusted proxy wins: everything left of it was written by the client and proves nothing.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use std::net::{IpAddr, SocketAddr};

/// The client's address (see the module's doc).
pub struct ClientAddress(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // The server loop puts the peer on every request; a router driven without it (never in Herald) is a
        // bug, answered as an internal error rather than trusting a header.
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied() else {
            return Err(ApiError(herald_core::CoreError::Internal("no peer address on the request".into())));
        };
        Ok(Self(client_address(peer.ip(), &parts.headers, &state.logins.trusted_proxies)))
    }
}

fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut nearest = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else { return nearest };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(address) => {
                    let address = address.to_canonical();
                    if !trusted.contains(&address) {
                        return address;
                    }
                    nearest = address;
                }
                // Garbage in the chain: the last trusted hop is the best we know.
                Err(_) => return nearest,
            }
        }
    }
    nearest
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("a header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let peer: IpAddr = ip("198.51.100.7");
        assert_eq!(client_address(peer, &headers(&["1.2.3.4"]), &[PROXY]), peer);
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let h = headers(&["6.6.6.6, 198.51.100.7"]);
        assert_eq!(client_address(PROXY, &h, &[PROXY]), ip("198.51.100.7"));
        // Two proxies, over two header lines.
        let inner: IpAddr = ip("10.0.0.2");
        let h = headers(&["6.6.6.6, 198.51.100.9", "10.0.0.2"]);
        assert_eq!(client_address(PROXY, &h, &[PROXY, inner]), ip("198.51.100.9"));
        assert_eq!(client_address(PROXY, &headers(&[]), &[PROXY]), PROXY, "no header: the proxy itself");
        assert_eq!(client_address(PROXY, &headers(&["junk"]), &[PROXY]), PROXY);
        let mapped: IpAddr = ip("::ffff:10.0.0.1");
        assert_eq!(client_address(mapped, &headers(&["203.0.113.5"]), &[PROXY]), ip("203.0.113.5"));
    }
}
