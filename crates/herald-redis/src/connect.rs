//! Redis clients: one for commands (pipelined over a multiplexed connection per server) and one for the
//! node's subscription, both reconnecting by themselves (exponential backoff, 50 ms up to 2 s, for ever).

use crate::settings::Settings;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use std::time::Duration;

/// Messages a subscriber may have waiting before the oldest are lost (and the node catches up instead).
const SUBSCRIBER_BUFFER: usize = 65_536;

fn config(settings: &Settings) -> Result<Config, Error> {
    let Some(first) = settings.urls.first() else {
        return Err(Error::new(ErrorKind::Config, "no Redis URL given"));
    };
    if !settings.cluster {
        return Config::from_url(first);
    }
    // fred names a cluster as `redis-cluster://first?node=second&node=third`.
    let mut url = first.replacen("redis://", "redis-cluster://", 1);
    for (i, other) in settings.urls.iter().skip(1).enumerate() {
        let host = other.rsplit('@').next().unwrap_or(other);
        let host = host.trim_start_matches("redis://").trim_end_matches('/');
        url.push(if i == 0 && !url.contains('?') { '?' } else { '&' });
        url.push_str("node=");
        url.push_str(host);
    }
    Config::from_url(&url)
}

fn builder(settings: &Settings) -> Result<Builder, Error> {
    let mut builder = Builder::from_config(config(settings)?);
    let timeout = settings.command_timeout;
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 2;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
            p.broadcast_channel_capacity = SUBSCRIBER_BUFFER;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    Ok(builder)
}

/// Connects the command client; fails when Redis cannot be reached at all (a node does not start blind).
pub async fn commands(settings: &Settings) -> Result<Client, Error> {
    let client = builder(settings)?.build()?;
    client.init().await?;
    Ok(client)
}

/// Connects the subscriber; its subscriptions are renewed after every reconnect.
pub async fn subscriber(settings: &Settings) -> Result<SubscriberClient, Error> {
    let client = builder(settings)?.build_subscriber_client()?;
    client.init().await?;
    // Detached: it runs for as long as the client does.
    drop(client.manage_subscriptions());
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_seeds_become_one_url() {
        let mut settings = Settings::new(
            vec!["redis://127.0.0.1:7000".into(), "redis://127.0.0.1:7001".into(), "redis://127.0.0.1:7002".into()],
            true,
            "http://n".into(),
            vec![],
        );
        let config = config(&settings).expect("parses");
        match config.server {
            ServerConfig::Clustered { hosts, .. } => {
                let mut ports: Vec<u16> = hosts.iter().map(|h| h.port).collect();
                ports.sort_unstable();
                assert_eq!(ports, vec![7000, 7001, 7002]);
            }
            other => panic!("not a cluster: {other:?}"),
        }
        settings.cluster = false;
        assert!(matches!(config_of(&settings), ServerConfig::Centralized { .. }));
    }

    fn config_of(settings: &Settings) -> ServerConfig {
        config(settings).expect("parses").server
    }
}
