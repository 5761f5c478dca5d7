//! Signed, expiring media URLs. A URL carries its own permission (HMAC over the upload, the variant and the
//! expiry), so `<img src>`, a video player's Range requests and a CDN need no credentials; whoever may
//! see the upload gets one from `GET /api/v1/media/{id}`, which checks membership first.
//!
//! Expiry times are rounded up to a bucket (half the lifetime), so every request within a bucket gets the
//! same URL and a CDN can cache it; a URL then lives between one and one and a half lifetimes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_proto::MediaId;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// How many bytes of the HMAC the URL carries: 128 bits is far beyond guessing within a URL's life.
const SIGNATURE_BYTES: usize = 16;

#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
    lifetime: Duration,
}

/// Why a URL was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the link has expired")]
    Expired,
    #[error("the link's signature is invalid")]
    BadSignature,
}

impl UrlSigner {
    /// `key` should be secret and stable across restarts (the server derives it from its token secret).
    pub fn new(key: &[u8], lifetime: Duration) -> Self {
        Self { key: key.to_vec(), lifetime: lifetime.max(Duration::from_secs(2)) }
    }

    /// The expiry (Unix seconds) of URLs made at `now_secs`.
    pub fn expiry(&self, now_secs: u64) -> u64 {
        let bucket = (self.lifetime.as_secs() / 2).max(1);
        (now_secs + self.lifetime.as_secs()).div_ceil(bucket) * bucket
    }

    /// The path and query of a variant's URL, valid until `expires` (Unix seconds).
    pub fn url(&self, id: MediaId, variant: &str, expires: u64) -> String {
        format!("/media/{id}/{variant}?exp={expires}&sig={}", self.signature(id, variant, expires))
    }

    /// Checks a URL's signature and expiry at `now_secs`.
    pub fn verify(
        &self,
        id: MediaId,
        variant: &str,
        expires: u64,
        signature: &str,
        now_secs: u64,
    ) -> Result<(), UrlError> {
        let given = URL_SAFE_NO_PAD.decode(signature).map_err(|_| UrlError::BadSignature)?;
        let mac = self.mac(id, variant, expires);
        // `verify_truncated_left` compares in constant time.
        mac.verify_truncated_left(&given).map_err(|_| UrlError::BadSignature)?;
        if given.len() != SIGNATURE_BYTES {
            return Err(UrlError::BadSignature);
        }
        if expires < now_secs {
            return Err(UrlError::Expired);
        }
        Ok(())
    }

    fn signature(&self, id: MediaId, variant: &str, expires: u64) -> String {
        let tag = self.mac(id, variant, expires).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&tag[..SIGNATURE_BYTES])
    }

    fn mac(&self, id: MediaId, variant: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        // Unambiguous: the id has a fixed length and the variant cannot contain '\n'.
        mac.update(format!("{id}\n{variant}\n{expires}").as_bytes());
        mac
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_verifies_until_it_expires_and_not_when_altered() {
        let signer = UrlSigner::new(b"secret", Duration::from_secs(3600));
        let id = MediaId::new();
        let exp = signer.expiry(1_000_000);
        assert!((1_000_000 + 3600..=1_000_000 + 3600 + 1800).contains(&exp));
        let url = signer.url(id, "original", exp);
        let sig = url.rsplit("sig=").next().expect("sig");
        assert_eq!(signer.verify(id, "original", exp, sig, 1_000_000), Ok(()));
        assert_eq!(signer.verify(id, "original", exp, sig, exp + 1), Err(UrlError::Expired));
        assert_eq!(signer.verify(id, "thumb_150", exp, sig, 1_000_000), Err(UrlError::BadSignature));
        assert_eq!(signer.verify(id, "original", exp + 1, sig, 1_000_000), Err(UrlError::BadSignature));
        assert_eq!(signer.verify(MediaId::new(), "original", exp, sig, 1_000_000), Err(UrlError::BadSignature));
        assert_eq!(signer.verify(id, "original", exp, "", 1_000_000), Err(UrlError::BadSignature));
        assert_eq!(signer.verify(id, "original", exp, &sig[..4], 1_000_000), Err(UrlError::BadSignature));
        assert_eq!(signer.verify(id, "original", exp, "!!", 1_000_000), Err(UrlError::BadSignature));
        let other = UrlSigner::new(b"other", Duration::from_secs(3600));
        assert_eq!(other.verify(id, "original", exp, sig, 1_000_000), Err(UrlError::BadSignature));
    }

    #[test]
    fn urls_made_within_a_bucket_are_identical_so_a_cdn_can_cache_them() {
        let signer = UrlSigner::new(b"secret", Duration::from_secs(3600));
        let id = MediaId::new();
        let a = signer.url(id, "original", signer.expiry(1_800_001));
        let b = signer.url(id, "original", signer.expiry(1_801_000));
        assert_eq!(a, b);
    }
}
