//! A minimal Herald client: logs in, prints every event, and sends each line read on stdin to a direct
//! conversation.
//!
//! ```sh
//! cargo run -p herald-client --example echo -- http://127.0.0.1:8080 alice 'alice-secret-1' bob
//! ```
//!
//! Set `HERALD_REGISTER=1` to create the account first. `RUST_LOG=herald_client=debug` shows the
//! client's connection handling.

use futures_util::StreamExt;
use herald_client::proto::Credentials;
use herald_client::{Api, Client, ClientConfig, ClientEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run().await {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, username, password, peer] = args.as_slice() else {
        return Err("usage: echo SERVER_URL USERNAME PASSWORD PEER_USERNAME".into());
    };
    let api = Api::new(server)?;
    let credentials =
        Credentials { username: username.clone(), password: password.clone(), device_name: Some("echo".into()) };
    let session = if std::env::var_os("HERALD_REGISTER").is_some() {
        api.register(&credentials).await?
    } else {
        api.login(&credentials).await?
    };
    println!("logged in as {} (device {})", session.user.username, session.device_id);

    let (client, mut events) = Client::connect(ClientConfig::new(server.as_str(), session)).await?;
    let peer = client.find_user(peer).await?;
    let conversation = client.create_direct(peer.id).await?.conversation.id;
    println!("talking to {} in {conversation}; type lines to send, Ctrl-D to quit", peer.username);

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if !line.trim().is_empty() => {
                    // Not awaited here: the ack is printed when it comes, and the loop keeps reading.
                    let pending = client.send(conversation, line);
                    tokio::spawn(async move {
                        match pending.await {
                            Ok(ack) => println!("  (stored as seq {})", ack.seq),
                            Err(e) => println!("  (not sent: {e})"),
                        }
                    });
                }
                Some(_) => {}
                None => break,
            },
            event = events.next() => match event {
                Some(ClientEvent::Message { pos, message }) => {
                    println!("[{pos}] #{} {}: {}", message.seq, message.sender, message.body);
                }
                // A real application would persist the new session; its Debug output holds the tokens.
                Some(ClientEvent::SessionRefreshed(_)) => println!("(session refreshed)"),
                Some(event) => println!("{event:?}"),
                None => break,
            },
        }
    }
    client.close().await;
    Ok(())
}
