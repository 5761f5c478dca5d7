//! A client SDK for Herald: typed REST helpers and a WebSocket client that stays connected.
//!
//! - [`Api`] is a thin, typed wrapper around the REST API (`docs/api.md`): register, log in, refresh,
//!   create and list conversations, history … Errors keep the server's `{code, message}`
//!   ([`ClientError::Server`]).
//! - [`Client`] owns one WebSocket (`docs/protocol.md`) in a background task. It authenticates, syncs from
//!   its feed position, and reconnects by itself with exponential backoff and jitter ([`backoff`]),
//!   honouring the server's `reconnect {after_ms}` hint and a 429's `Retry-After`. It renews the access
//!   token when the server refuses it.
//! - [`Client::send`] puts a message in an in-memory outbox with a fresh `client_msg_id` (UUIDv7) and
//!   returns a future of its ack. The outbox survives disconnections: messages are (re)sent after every
//!   reconnect with the same `client_msg_id` until acknowledged, so the server stores each exactly once,
//!   and a conversation's messages are stored in the order they were written.
//! - [`Events`] is a `Stream` of [`ClientEvent`]s: messages, updates, receipts, typing, presence,
//!   connection state changes, resyncs. It never reports a feed position twice, nor a message
//!   (`conversation_id`, `seq`) twice.
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use herald_client::{Api, Client, ClientConfig, ClientEvent};
//! use herald_client::proto::Credentials;
//!
//! # async fn demo() -> Result<(), herald_client::ClientError> {
//! let api = Api::new("http://127.0.0.1:8080")?;
//! let credentials = Credentials { username: "alice".into(), password: "correct horse".into(), device_name: None };
//! let session = api.login(&credentials).await?;
//!
//! let (client, mut events) = Client::connect(ClientConfig::new(api.base_url(), session)).await?;
//! let bob = client.find_user("bob").await?;
//! let chat = client.create_direct(bob.id).await?.conversation.id;
//!
//! // Queued at once; sent now or after the next reconnect; stored exactly once.
//! let ack = client.send(chat, "hi Bob").await?;
//! println!("stored as seq {}", ack.seq);
//!
//! while let Some(event) = events.next().await {
//!     match event {
//!         ClientEvent::Message { message, .. } => println!("{}: {}", message.sender, message.body),
//!         ClientEvent::State(state) => println!("* {state:?}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Plain `http://` only for now: the crate is built without TLS.

#![warn(missing_docs)]

mod api;
pub mod backoff;
mod client;
mod error;
mod event;
mod outbox;

pub use api::Api;
pub use backoff::{Backoff, BackoffConfig, Jitter};
pub use client::{Client, ClientConfig, PendingSend, Reply};
pub use error::ClientError;
pub use event::{ClientEvent, ConnectionState, Events};
/// The wire types (`herald-proto`), re-exported so applications need not depend on it themselves.
pub use herald_proto as proto;
