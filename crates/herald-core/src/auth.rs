//! Credentials: argon2id password hashes computed on a bounded pool of blocking threads, short-lived JWT
//! access tokens (HS256 only: `alg: none` and every other algorithm are refused), and single-use refresh
//! tokens of the form `<device_id>.<secret>` whose SHA-256 is stored on the device.

use crate::{CoreError, CoreResult, now_millis};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm as Argon2Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_proto::{DeviceId, Millis, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Argon2id cost. The defaults are OWASP's recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Clone, Debug)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
    /// How many hashes may run at once; more wait, so logins cannot starve the runtime.
    pub concurrency: usize,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, concurrency: 2 }
    }
}

pub struct Passwords {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the user does not exist so that a login's
    /// timing does not tell whether a username is registered.
    decoy: String,
}

impl Passwords {
    pub fn new(cost: &PasswordCost) -> CoreResult<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
            .map_err(|e| CoreError::Internal(format!("argon2 parameters: {e}")))?;
        let argon2 = Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params);
        let decoy = hash_with(&argon2, &random_token())?;
        Ok(Self { argon2, permits: Arc::new(Semaphore::new(cost.concurrency.max(1))), decoy })
    }

    pub async fn hash(&self, password: String) -> CoreResult<String> {
        let argon2 = self.argon2.clone();
        self.blocking(move || hash_with(&argon2, &password)).await?
    }

    /// Verifies against `hash`, or against the decoy when there is no user, so both take the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> CoreResult<bool> {
        let exists = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.clone());
        let argon2 = self.argon2.clone();
        let ok = self.blocking(move || argon2.verify_password(password.as_bytes(), hash.as_str()).is_ok()).await?;
        Ok(ok && exists)
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> CoreResult<T> {
        let _permit = self.permits.acquire().await.map_err(|_| CoreError::unavailable("shutting down"))?;
        tokio::task::spawn_blocking(f).await.map_err(|e| CoreError::Internal(format!("hashing task: {e}")))
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> CoreResult<String> {
    // A random 16-byte salt from the OS, encoded in the PHC string.
    let hash: argon2::password_hash::phc::PasswordHash =
        argon2.hash_password(password.as_bytes()).map_err(|e| CoreError::Internal(format!("argon2: {e}")))?;
    Ok(hash.to_string())
}

/// 32 random bytes, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Who is calling: a user on one of its devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: UserId,
    pub device: DeviceId,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: UserId,
    dev: DeviceId,
    iat: u64,
    exp: u64,
}

/// Issues and checks tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

/// A freshly issued refresh token and what to store for it.
pub struct NewRefresh {
    pub token: String,
    pub hash: [u8; 32],
    pub expires_at: Millis,
}

impl Tokens {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// An access token and when it expires.
    pub fn access_token(&self, principal: Principal) -> CoreResult<(String, Millis)> {
        let now = now_millis();
        let exp_ms = now + self.access_ttl.as_millis() as Millis;
        let claims = Claims {
            sub: principal.user,
            dev: principal.device,
            iat: (now / 1000) as u64,
            exp: (exp_ms / 1000) as u64,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| CoreError::Internal(format!("jwt encode: {e}")))?;
        Ok((token, exp_ms))
    }

    /// Checks signature, algorithm and expiry. Whether the device still exists is the caller's check.
    pub fn verify_access(&self, token: &str) -> CoreResult<Principal> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| CoreError::unauthorized(format!("invalid access token: {e}")))?;
        Ok(Principal { user: data.claims.sub, device: data.claims.dev })
    }

    pub fn new_refresh(&self, device: DeviceId) -> NewRefresh {
        let token = format!("{device}.{}", random_token());
        NewRefresh {
            hash: Self::refresh_hash(&token),
            token,
            expires_at: now_millis() + self.refresh_ttl.as_millis() as Millis,
        }
    }

    /// The device a refresh token claims to belong to (not yet verified).
    pub fn refresh_device(token: &str) -> CoreResult<DeviceId> {
        token
            .split_once('.')
            .and_then(|(device, _)| device.parse().ok())
            .ok_or_else(|| CoreError::unauthorized("malformed refresh token"))
    }

    pub fn refresh_hash(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_other_keys() {
        let t = Tokens::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60), Duration::from_secs(60));
        let p = Principal { user: UserId::new(), device: DeviceId::new() };
        let (token, _) = t.access_token(p).expect("issue");
        assert_eq!(t.verify_access(&token).expect("verify"), p);
        let other = Tokens::new(b"another-secret-another-secret-xx", Duration::from_secs(60), Duration::from_secs(60));
        assert!(other.verify_access(&token).is_err());
        assert!(t.verify_access("not.a.token").is_err());
    }

    #[test]
    fn refresh_token_names_its_device() {
        let t = Tokens::new(b"k", Duration::from_secs(1), Duration::from_secs(1));
        let d = DeviceId::new();
        let r = t.new_refresh(d);
        assert_eq!(Tokens::refresh_device(&r.token).expect("device"), d);
        assert_eq!(Tokens::refresh_hash(&r.token), r.hash);
        assert!(Tokens::refresh_device("garbage").is_err());
    }
}
