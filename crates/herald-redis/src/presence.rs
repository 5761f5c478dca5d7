//! Presence over the cluster, kept beside the connection registry in each user's slot: a user is online while
//! its set of nodes is not empty; a hash holds its explicit status (away) and when it was last connected.
//! Every change is one script, so exactly one node sees each cluster-wide transition (the first connection
//! anywhere, the last one gone, a status set) and announces it.

use crate::keys::Keys;
use fred::clients::Pipeline;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use herald_proto::{Millis, PresenceInfo, PresenceStatus, UserId};

/// How long an offline user's last-seen time is kept.
const LAST_SEEN_TTL_MS: i64 = 90 * 24 * 3_600 * 1_000;

/// Adds node ARGV[1] to the user's set (KEYS[1]); if it was the first, the user is online with status
/// ARGV[2] (its hash, KEYS[2]). Returns 1 when the user came online.
const ARRIVE: &str = r"
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[2], 'status', ARGV[2])
  redis.call('HDEL', KEYS[2], 'last_seen')
  redis.call('PERSIST', KEYS[2])
  return 1
end
return 0";

/// Removes node ARGV[1] from the user's set; if it was the last, the user is offline, last seen at ARGV[2].
/// Returns 1 when the user went offline.
const LEAVE: &str = r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[2], 'status', 'offline', 'last_seen', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0";

/// Sets a connected user's status to ARGV[1]; returns 1 if it changed.
const SET_STATUS: &str = r"
if redis.call('SCARD', KEYS[1]) == 0 or redis.call('HGET', KEYS[2], 'status') == ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], 'status', ARGV[1])
return 1";

#[derive(Clone)]
pub struct Presence {
    client: Client,
    keys: Keys,
}

impl Presence {
    pub fn new(client: Client, keys: Keys) -> Self {
        Self { client, keys }
    }

    /// `node` holds a connection of each of `users` now (one pipelined round trip); for each, whether that
    /// made the user online.
    pub async fn arrive(&self, users: &[UserId], node: &str) -> Result<Vec<bool>, Error> {
        let pipeline = self.client.pipeline();
        for user in users {
            let keys = [self.keys.user_nodes(*user), self.keys.user_presence(*user)];
            eval_in(&pipeline, ARRIVE, keys, vec![node.to_owned(), "online".to_owned()]).await?;
        }
        transitions(pipeline).await
    }

    /// `node` holds no connection of any of `users` any more; for each, whether that made it offline.
    pub async fn leave(&self, users: &[UserId], node: &str, now: Millis) -> Result<Vec<bool>, Error> {
        let pipeline = self.client.pipeline();
        for user in users {
            let keys = [self.keys.user_nodes(*user), self.keys.user_presence(*user)];
            let args = vec![node.to_owned(), now.to_string(), LAST_SEEN_TTL_MS.to_string()];
            eval_in(&pipeline, LEAVE, keys, args).await?;
        }
        transitions(pipeline).await
    }

    /// Sets a connected user's explicit status; true if it changed.
    pub async fn set_status(&self, user: UserId, status: PresenceStatus) -> Result<bool, Error> {
        let keys = vec![self.keys.user_nodes(user), self.keys.user_presence(user)];
        let changed: i64 = self.client.eval(SET_STATUS, keys, status_name(status)).await?;
        Ok(changed == 1)
    }

    /// The presence of `users`, in their order (one pipelined round trip).
    pub async fn lookup(&self, users: &[UserId]) -> Result<Vec<PresenceInfo>, Error> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.client.pipeline();
        for user in users {
            pipeline.scard::<(), _>(self.keys.user_nodes(*user)).await?;
            pipeline.hmget::<(), _, _>(self.keys.user_presence(*user), vec!["status", "last_seen"]).await?;
        }
        let replies: Vec<Value> = pipeline.all().await?;
        let mut out = Vec::with_capacity(users.len());
        for (user, pair) in users.iter().zip(replies.chunks(2)) {
            let connected = pair.first().and_then(Value::as_i64).unwrap_or(0) > 0;
            let (status, last_seen): (Option<String>, Option<Millis>) =
                pair.get(1).cloned().map(Value::convert).transpose()?.unwrap_or((None, None));
            out.push(info(*user, connected, status.as_deref(), last_seen));
        }
        Ok(out)
    }
}

/// Queues a script of two keys in a pipeline (fred pipelines have no EVAL of their own), routed by its first
/// key.
async fn eval_in(pipeline: &Pipeline<Client>, script: &str, keys: [String; 2], args: Vec<String>) -> Result<(), Error> {
    let eval = CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false);
    let mut parts = vec![script.to_owned(), "2".to_owned()];
    parts.extend(keys);
    parts.extend(args);
    pipeline.custom::<(), _>(eval, parts).await
}

async fn transitions(pipeline: Pipeline<Client>) -> Result<Vec<bool>, Error> {
    let replies: Vec<i64> = pipeline.all().await?;
    Ok(replies.into_iter().map(|r| r == 1).collect())
}

/// What the stored fields say: connected users are online unless they set another status; others are
/// offline, with when they were last seen if that is known.
fn info(user: UserId, connected: bool, status: Option<&str>, last_seen: Option<Millis>) -> PresenceInfo {
    if connected {
        let status = match status {
            Some("away") => PresenceStatus::Away,
            _ => PresenceStatus::Online,
        };
        PresenceInfo { user_id: user, status, last_seen: None }
    } else {
        PresenceInfo { user_id: user, status: PresenceStatus::Offline, last_seen }
    }
}

fn status_name(status: PresenceStatus) -> &'static str {
    match status {
        PresenceStatus::Online => "online",
        PresenceStatus::Away => "away",
        PresenceStatus::Offline => "offline",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_users_are_online_unless_away_and_others_offline_with_last_seen() {
        let u = UserId::new();
        assert_eq!(info(u, true, None, None).status, PresenceStatus::Online);
        assert_eq!(info(u, true, Some("offline"), Some(5)).status, PresenceStatus::Online);
        assert_eq!(info(u, true, Some("away"), None).status, PresenceStatus::Away);
        let off = info(u, false, Some("away"), Some(7));
        assert_eq!((off.status, off.last_seen), (PresenceStatus::Offline, Some(7)));
    }
}
