//! `herald chat`: a line-based terminal client, built on the `herald-client` SDK.
//!
//! It logs in (or registers with `--register`), then reads commands and messages from stdin, one per line,
//! and prints incoming messages as they arrive. See `/help` for the commands.

use herald_client::proto::{
    ConversationId, ConversationKind, ConversationSummary, Credentials, Direction, HistoryQuery, Message, SystemEvent,
    UserId,
};
use herald_client::{Api, Client, ClientConfig, ClientEvent, ConnectionState, Events};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use tokio::sync::mpsc;

/// How many messages `/open` shows.
const RECENT: u32 = 20;

const HELP: &str = "\
commands:
  /list                  your conversations, with unread counts
  /open N                switch to conversation N of /list and show its recent messages
  /dm USERNAME           open (or start) a direct conversation
  /group TITLE USER...   start a group (quote a TITLE with spaces: /group \"our trip\" bob carol)
  /help                  this help
  /quit                  leave (Ctrl-D works too)
anything else is sent to the open conversation (start a line with // to send a leading /)";

/// `herald chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Create the account first, instead of logging in.
    #[arg(long)]
    register: bool,
    /// The username (asked for when left out). The password is always asked for.
    #[arg(long)]
    username: Option<String>,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    // Failures a user can act on (a wrong password, a server that is down) get one line, not a report.
    if let Err(e) = chat(args).await {
        eprintln!("herald chat: {e}");
        std::process::exit(1);
    }
    Ok(())
}

async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let mut input = stdin_lines();

    let username = match args.username {
        Some(username) => username,
        None => match prompt(&mut input, "username: ", false).await {
            Some(username) => username,
            None => return Ok(()),
        },
    };
    let Some(password) = prompt(&mut input, "password: ", true).await else { return Ok(()) };
    let credentials =
        Credentials { username: username.trim().to_owned(), password, device_name: Some("herald chat".into()) };
    let session = if args.register { api.register(&credentials).await } else { api.login(&credentials).await };
    let session = match session {
        Ok(session) => session,
        Err(e) => anyhow::bail!("{} failed: {e}", if args.register { "registration" } else { "login" }),
    };
    println!("logged in as {}. /help for commands.", session.user.username);

    let mut config = ClientConfig::new(api.base_url(), session.clone());
    // A fresh device: show what happens from now on; history comes with /open.
    config.start_at_latest = true;
    let (client, events) = Client::connect_with_api(config, api).await?;
    let mut chat = Chat {
        client,
        me: session.user.id,
        names: HashMap::from([(session.user.id, session.user.username.clone())]),
        labels: HashMap::new(),
        listed: Vec::new(),
        open: None,
        shown: HashMap::new(),
        connected_once: false,
        online: false,
    };
    chat.run(&mut input, events).await;

    let client = chat.client;
    // Give messages still in the outbox a moment to go out before leaving.
    if client.outbox_len() > 0 {
        println!("* sending {} queued message(s)…", client.outbox_len());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while client.outbox_len() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        if client.outbox_len() > 0 {
            println!("! {} message(s) could not be sent", client.outbox_len());
        }
    }
    client.close().await;
    // Each run logs in as a new device, which is not reused: log it out rather than leave it behind.
    let session = client.session().await;
    let _ = client.api().logout(&session.access_token).await;
    Ok(())
}

struct Chat {
    client: Client,
    me: UserId,
    /// Usernames by id, as looked up.
    names: HashMap<UserId, String>,
    /// How each conversation is shown: a group's title, or the other user's name.
    labels: HashMap<ConversationId, String>,
    /// The conversations of the last `/list`, for `/open N`.
    listed: Vec<ConversationId>,
    open: Option<ConversationId>,
    /// The highest seq printed per conversation, so a message is not printed twice (history, then live).
    shown: HashMap<ConversationId, u64>,
    connected_once: bool,
    /// Connected now (to report a disconnection once, not at every failed attempt).
    online: bool,
}

impl Chat {
    async fn run(&mut self, input: &mut mpsc::Receiver<String>, mut events: Events) {
        loop {
            tokio::select! {
                line = input.recv() => match line {
                    Some(line) => {
                        if !self.line(line.trim_end_matches(['\r', '\n'])).await {
                            return;
                        }
                    }
                    None => return,
                },
                event = events.recv() => match event {
                    Some(event) => self.event(event).await,
                    None => return,
                },
                _ = tokio::signal::ctrl_c() => return,
            }
        }
    }

    /// One line of input; false to quit.
    async fn line(&mut self, line: &str) -> bool {
        if let Some(text) = line.strip_prefix("//") {
            self.say(format!("/{text}"));
            return true;
        }
        let Some(command) = line.strip_prefix('/') else {
            if !line.trim().is_empty() {
                self.say(line.to_owned());
            }
            return true;
        };
        let (name, rest) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
        let rest = rest.trim();
        match name {
            "quit" | "exit" | "q" => return false,
            "help" | "h" | "?" => println!("{HELP}"),
            "list" | "ls" => self.list().await,
            "open" | "o" => match rest.parse::<usize>() {
                Ok(n) if (1..=self.listed.len()).contains(&n) => self.open(self.listed[n - 1]).await,
                _ if self.listed.is_empty() => println!("! /list first, then /open N"),
                _ => println!("! /open N, with N from 1 to {} (see /list)", self.listed.len()),
            },
            "dm" => match rest.split_whitespace().collect::<Vec<_>>()[..] {
                [username] => self.dm(username).await,
                _ => println!("! usage: /dm USERNAME"),
            },
            "group" => match parse_group(rest) {
                Some((title, usernames)) => self.group(&title, &usernames).await,
                None => println!("! usage: /group TITLE USER... (quote a title with spaces)"),
            },
            _ => println!("! unknown command /{name}; /help lists them"),
        }
        true
    }

    /// Sends text to the open conversation. The message shows when the server has stored it.
    fn say(&mut self, text: String) {
        let Some(conversation) = self.open else {
            println!("! no conversation open: /list then /open N, or /dm USERNAME");
            return;
        };
        if !self.client.state().is_connected() {
            println!("* offline: the message will be sent when the connection is back");
        }
        let pending = self.client.send(conversation, text);
        tokio::spawn(async move {
            if let Err(e) = pending.await {
                println!("! not sent: {e}");
            }
        });
    }

    async fn list(&mut self) {
        let page = match self.client.list_conversations(Some(50), None).await {
            Ok(page) => page,
            Err(e) => return println!("! {e}"),
        };
        if page.conversations.is_empty() {
            return println!("no conversations yet: /dm USERNAME or /group TITLE USER...");
        }
        self.listed.clear();
        for (n, summary) in page.conversations.iter().enumerate() {
            let label = self.summary_label(summary).await;
            let id = summary.conversation.id;
            self.listed.push(id);
            let marker = if self.open == Some(id) { "*" } else { " " };
            let unread = if summary.unread > 0 { format!(" ({} unread)", summary.unread) } else { String::new() };
            println!("{marker}{:>3}. {label}{unread}", n + 1);
        }
    }

    async fn dm(&mut self, username: &str) {
        let user = match self.client.find_user(username).await {
            Ok(user) => user,
            Err(e) if e.code() == Some(herald_client::proto::ErrorCode::NotFound) => {
                return println!("! no user named {username}");
            }
            Err(e) => return println!("! {e}"),
        };
        self.names.insert(user.id, user.username.clone());
        match self.client.create_direct(user.id).await {
            Ok(details) => {
                self.labels.insert(details.conversation.id, user.username);
                self.open(details.conversation.id).await;
            }
            Err(e) => println!("! {e}"),
        }
    }

    async fn group(&mut self, title: &str, usernames: &[String]) {
        let mut members = Vec::new();
        for username in usernames {
            match self.client.find_user(username).await {
                Ok(user) => {
                    self.names.insert(user.id, user.username);
                    members.push(user.id);
                }
                Err(e) => return println!("! {username}: {e}"),
            }
        }
        match self.client.create_group(title, &members).await {
            Ok(details) => {
                self.labels.insert(details.conversation.id, title.to_owned());
                self.open(details.conversation.id).await;
            }
            Err(e) => println!("! {e}"),
        }
    }

    /// Switches to a conversation and shows its recent messages.
    async fn open(&mut self, conversation: ConversationId) {
        self.open = Some(conversation);
        let label = self.label(conversation).await;
        println!("--- {label} ---");
        let query = HistoryQuery { from: None, dir: Direction::Backward, limit: Some(RECENT) };
        let page = match self.client.history(conversation, &query).await {
            Ok(page) => page,
            Err(e) => return println!("! {e}"),
        };
        if page.messages.is_empty() {
            println!("(no messages yet)");
        }
        for message in page.messages.iter().rev() {
            let line = self.format(message, true).await;
            println!("{line}");
        }
        let shown = self.shown.entry(conversation).or_default();
        *shown = (*shown).max(page.last_seq);
        if page.last_seq > 0 {
            self.mark_read(conversation, page.last_seq);
        }
    }

    async fn event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Message { message, .. } => {
                let conversation = message.conversation_id;
                let shown = self.shown.entry(conversation).or_default();
                if message.seq <= *shown {
                    return;
                }
                *shown = message.seq;
                let here = self.open == Some(conversation);
                let line = self.format(&message, here).await;
                if here {
                    println!("{line}");
                    if message.sender != self.me {
                        self.mark_read(conversation, message.seq);
                    }
                } else {
                    let label = self.label(conversation).await;
                    println!("[{label}] {line}");
                }
            }
            ClientEvent::MessageUpdated { message, .. } if self.open == Some(message.conversation_id) => {
                let who = self.name(message.sender).await;
                let what = if message.deleted { "deleted" } else { "updated" };
                println!("* {who} {what} message #{}", message.seq);
            }
            ClientEvent::Typing { conversation_id, user_id, active: true, .. }
                if self.open == Some(conversation_id) =>
            {
                let who = self.name(user_id).await;
                println!("* {who} is typing…");
            }
            ClientEvent::State(state) => self.state(state),
            ClientEvent::Resync { .. } => {
                println!("* resynced: some messages may have been missed here; /open reloads a conversation");
            }
            ClientEvent::ServerError { code, message } => println!("! {code}: {message}"),
            _ => {}
        }
    }

    fn state(&mut self, state: ConnectionState) {
        match state {
            ConnectionState::Connected => {
                if self.connected_once {
                    println!("* reconnected");
                }
                self.connected_once = true;
                self.online = true;
            }
            ConnectionState::Disconnected { reason } if self.online => {
                self.online = false;
                println!("* disconnected ({reason})");
            }
            ConnectionState::Reconnecting { delay, attempt } if attempt == 0 || delay.as_secs() >= 2 => {
                println!("* reconnecting in {:.1} s", delay.as_secs_f64());
            }
            ConnectionState::Closed { reason } => println!("* connection closed: {reason}"),
            _ => {}
        }
    }

    fn mark_read(&self, conversation: ConversationId, seq: u64) {
        // Best effort: an unread count that lags is no reason to bother the user.
        let reply = self.client.mark_read(conversation, seq);
        tokio::spawn(async move {
            let _ = reply.await;
        });
    }

    /// `name: body`, or a notice for membership changes.
    async fn format(&mut self, message: &Message, in_view: bool) -> String {
        let sender = self.name(message.sender).await;
        let seq = if in_view { format!("#{:<3} ", message.seq) } else { String::new() };
        if let Some(system) = &message.system {
            let notice = match system {
                SystemEvent::MemberAdded { user_id } => format!("{} was added", self.name(*user_id).await),
                SystemEvent::MemberRemoved { user_id } => format!("{} was removed", self.name(*user_id).await),
                SystemEvent::MemberLeft { user_id } => format!("{} left", self.name(*user_id).await),
                SystemEvent::RoleChanged { user_id, role } => {
                    format!("{} is now {role:?}", self.name(*user_id).await).to_lowercase()
                }
                SystemEvent::TitleChanged { title } => format!("the title is now {title:?}"),
            };
            return format!("{seq}* {notice} (by {sender})");
        }
        if message.deleted {
            return format!("{seq}{sender}: (deleted)");
        }
        let mut line = format!("{seq}{sender}: {}", message.body);
        // Attachments by name, type and size (their bytes are for a client that can show them).
        for a in &message.attachments {
            let name = a.filename.as_deref().unwrap_or("file");
            line.push_str(&format!(" [attachment: {name}, {}, {} KB]", a.content_type, a.size.div_ceil(1024)));
        }
        line
    }

    async fn name(&mut self, user: UserId) -> String {
        if let Some(name) = self.names.get(&user) {
            return name.clone();
        }
        match self.client.user(user).await {
            Ok(profile) => {
                self.names.insert(user, profile.username.clone());
                profile.username
            }
            // Not cached, so a later lookup may succeed.
            Err(_) => short(&user.to_string()),
        }
    }

    async fn summary_label(&mut self, summary: &ConversationSummary) -> String {
        let label = match (&summary.conversation.title, summary.peer) {
            (Some(title), _) => title.clone(),
            (None, Some(peer)) => self.name(peer).await,
            (None, None) => short(&summary.conversation.id.to_string()),
        };
        self.labels.insert(summary.conversation.id, label.clone());
        label
    }

    async fn label(&mut self, conversation: ConversationId) -> String {
        if let Some(label) = self.labels.get(&conversation) {
            return label.clone();
        }
        let details = match self.client.conversation(conversation).await {
            Ok(details) => details,
            Err(_) => return short(&conversation.to_string()),
        };
        let label = match (details.conversation.kind, details.conversation.title) {
            (ConversationKind::Group, Some(title)) => title,
            _ => {
                let peer = details.members.iter().map(|m| m.user_id).find(|id| *id != self.me);
                match peer {
                    Some(peer) => self.name(peer).await,
                    None => short(&conversation.to_string()),
                }
            }
        };
        self.labels.insert(conversation, label.clone());
        label
    }
}

/// `TITLE USER...` or `"A TITLE" USER...`.
fn parse_group(rest: &str) -> Option<(String, Vec<String>)> {
    let (title, users) = match rest.strip_prefix('"') {
        Some(quoted) => {
            let (title, users) = quoted.split_once('"')?;
            (title.trim().to_owned(), users)
        }
        None => {
            let (title, users) = rest.split_once(char::is_whitespace)?;
            (title.to_owned(), users)
        }
    };
    let users: Vec<String> = users.split_whitespace().map(str::to_owned).collect();
    (!title.is_empty() && !users.is_empty()).then_some((title, users))
}

fn short(id: &str) -> String {
    id.chars().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect()
}

/// Stdin lines, read on a thread of their own (a blocking read cannot be cancelled, so it must not hold
/// up the runtime's shutdown). The channel closes at end of input.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) => {
                    if tx.blocking_send(line).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

/// Asks for one line; `hidden` turns the terminal's echo off meanwhile. None at end of input or Ctrl-C.
async fn prompt(input: &mut mpsc::Receiver<String>, question: &str, hidden: bool) -> Option<String> {
    print!("{question}");
    let _ = std::io::stdout().flush();
    let _echo = hidden.then(EchoOff::new);
    let line = tokio::select! {
        line = input.recv() => line,
        _ = tokio::signal::ctrl_c() => None,
    };
    if hidden {
        println!();
    }
    line.map(|l| l.trim_end_matches(['\r', '\n']).to_owned())
}

/// Turns the terminal's echo off (with `stty`, when stdin is a terminal) until dropped.
struct EchoOff(bool);

impl EchoOff {
    fn new() -> Self {
        if !std::io::stdin().is_terminal() {
            return EchoOff(false);
        }
        EchoOff(stty("-echo"))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if self.0 {
            stty("echo");
        }
    }
}

fn stty(setting: &str) -> bool {
    std::process::Command::new("stty")
        .arg(setting)
        .stdin(std::process::Stdio::inherit())
        .status()
        .is_ok_and(|status| status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_arguments() {
        assert_eq!(parse_group("trip bob carol"), Some(("trip".into(), vec!["bob".into(), "carol".into()])));
        assert_eq!(parse_group("\"our trip\" bob"), Some(("our trip".into(), vec!["bob".into()])));
        assert_eq!(parse_group("trip"), None);
        assert_eq!(parse_group("\"unterminated bob"), None);
        assert_eq!(parse_group("\"\" bob"), None);
        assert_eq!(parse_group(""), None);
    }

    #[test]
    fn short_ids() {
        assert_eq!(short("0123456789"), "456789");
        assert_eq!(short("ab"), "ab");
    }
}
