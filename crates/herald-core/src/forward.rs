//! Records that reach a node which does not own their partition are forwarded to the owner over HTTP; the
//! owner applies them like requests of its own and answers with the outcome, which the first node hands to
//! its waiting request. This is the wire form both sides share and the token that lets only nodes of the
//! same cluster (which share the token secret) in.

use crate::CoreError;
use crate::delivery::Applied;
use herald_proto::ErrorCode;
use serde::{Deserialize, Serialize};

/// Where a node accepts forwarded records (POST, a `LogRecord` as JSON, `authorization: Bearer <token>`).
/// Not for clients: a load balancer in front of the nodes must not route it.
pub const FORWARD_PATH: &str = "/internal/v1/forward";

/// The answer to a forwarded record: the outcome, as the owner's sequencer produced it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RemoteOutcome {
    Applied { applied: Box<Applied> },
    Failed { code: ErrorCode, message: String, retry_after_ms: Option<u64> },
}

impl From<Result<Applied, CoreError>> for RemoteOutcome {
    fn from(result: Result<Applied, CoreError>) -> Self {
        match result {
            Ok(applied) => RemoteOutcome::Applied { applied: Box::new(applied) },
            Err(CoreError::RateLimited { retry_after_ms }) => RemoteOutcome::Failed {
                code: ErrorCode::RateLimited,
                message: String::new(),
                retry_after_ms: Some(retry_after_ms),
            },
            Err(e @ CoreError::Overloaded { .. }) => RemoteOutcome::Failed {
                code: ErrorCode::Unavailable,
                message: e.to_string(),
                retry_after_ms: e.retry_after_ms(),
            },
            Err(CoreError::Internal(detail)) => {
                // The detail stays in the owner's log, as for any internal error.
                tracing::error!(%detail, "a forwarded record failed");
                RemoteOutcome::Failed {
                    code: ErrorCode::Internal,
                    message: "internal error".into(),
                    retry_after_ms: None,
                }
            }
            Err(CoreError::Client { code, message }) => RemoteOutcome::Failed { code, message, retry_after_ms: None },
        }
    }
}

impl From<RemoteOutcome> for Result<Applied, CoreError> {
    fn from(outcome: RemoteOutcome) -> Self {
        match outcome {
            RemoteOutcome::Applied { applied } => Ok(*applied),
            RemoteOutcome::Failed { code: ErrorCode::RateLimited, retry_after_ms, .. } => {
                Err(CoreError::RateLimited { retry_after_ms: retry_after_ms.unwrap_or(1000) })
            }
            RemoteOutcome::Failed { code: ErrorCode::Unavailable, retry_after_ms: Some(retry_after_ms), .. } => {
                Err(CoreError::Overloaded { retry_after_ms })
            }
            RemoteOutcome::Failed { code: ErrorCode::Internal, .. } => {
                Err(CoreError::Internal("the partition's owner node failed the record".into()))
            }
            RemoteOutcome::Failed { code, message, .. } => Err(CoreError::new(code, message)),
        }
    }
}

/// The bearer token of node-to-node requests, derived from the cluster's shared token secret (so the secret
/// itself never travels) and compared in constant time by [`token_matches`].
pub fn cluster_token(secret: &[u8]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"herald cluster token v1\n");
    hasher.update(secret);
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is `expected`, without an early exit that would time-leak how much of it matched.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (g, e) = (given.as_bytes(), expected.as_bytes());
    g.len() == e.len() && g.iter().zip(e).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_the_wire() {
        let failed: Result<Applied, CoreError> = Err(CoreError::forbidden("not a member"));
        let json = serde_json::to_string(&RemoteOutcome::from(failed)).expect("encodes");
        let back: RemoteOutcome = serde_json::from_str(&json).expect("decodes");
        match Result::<Applied, CoreError>::from(back) {
            Err(CoreError::Client { code: ErrorCode::Forbidden, message }) => assert_eq!(message, "not a member"),
            other => panic!("unexpected {other:?}"),
        }
        let limited: Result<Applied, CoreError> = Err(CoreError::RateLimited { retry_after_ms: 250 });
        let back: RemoteOutcome =
            serde_json::from_str(&serde_json::to_string(&RemoteOutcome::from(limited)).expect("encodes"))
                .expect("decodes");
        assert!(matches!(
            Result::<Applied, CoreError>::from(back),
            Err(CoreError::RateLimited { retry_after_ms: 250 })
        ));
        let internal: Result<Applied, CoreError> = Err(CoreError::Internal("disk on fire at /var/x".into()));
        let json = serde_json::to_string(&RemoteOutcome::from(internal)).expect("encodes");
        assert!(!json.contains("/var/x"), "internal detail must not travel: {json}");
    }

    #[test]
    fn tokens_differ_by_secret_and_compare_exactly() {
        let a = cluster_token(b"one");
        assert_eq!(a.len(), 64);
        assert_ne!(a, cluster_token(b"two"));
        assert!(token_matches(&a, &cluster_token(b"one")));
        assert!(!token_matches(&a, &cluster_token(b"two")));
        assert!(!token_matches(&a[..63], &a));
    }
}
