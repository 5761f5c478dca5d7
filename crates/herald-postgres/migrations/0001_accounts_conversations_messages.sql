-- Herald's schema, version 1: accounts, conversations, messages with per-user feeds, cursors.
-- docs/postgres.md gives the CQL each table maps to. No foreign keys: every table is read by its own key,
-- as it would be in Cassandra, and the store's writes keep the references consistent.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    username text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE devices (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    name text NOT NULL,
    created_at bigint NOT NULL,
    refresh_hash bytea NOT NULL,
    refresh_expires_at bigint NOT NULL,
    previous_refresh_hash bytea
);
CREATE INDEX devices_by_user ON devices (user_id);

CREATE TABLE conversations (
    id uuid PRIMARY KEY,
    kind text NOT NULL,
    title text,
    created_by uuid NOT NULL,
    created_at bigint NOT NULL
);

-- One direct conversation per pair, the pair's ids in ascending order.
CREATE TABLE direct_pairs (
    low uuid NOT NULL,
    high uuid NOT NULL,
    conversation_id uuid NOT NULL,
    PRIMARY KEY (low, high)
);

CREATE TABLE members (
    conversation_id uuid NOT NULL,
    user_id uuid NOT NULL,
    role text NOT NULL,
    joined_at bigint NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
-- The conversations of a user (Cassandra: a second table, memberships_by_user).
CREATE INDEX members_by_user ON members (user_id, conversation_id);

-- The last seq of each conversation: the conditional write of a message moves it from last to last + k.
CREATE TABLE conversation_heads (
    conversation_id uuid PRIMARY KEY,
    last_seq bigint NOT NULL
);

-- Messages by conversation, clustered by seq, in time partitions: `bucket` is the 30-day window of
-- `sent_at`, and old messages go by dropping a whole partition, never by deleting rows. Each partition is a
-- table `messages_b<bucket>`, created ahead of time by the store's upkeep; the default partition catches a
-- clock far off the windows that exist.
CREATE TABLE messages (
    conversation_id uuid NOT NULL,
    seq bigint NOT NULL,
    bucket integer NOT NULL,
    sender uuid NOT NULL,
    sent_at bigint NOT NULL,
    -- The message as the protocol's JSON.
    payload bytea NOT NULL,
    PRIMARY KEY (conversation_id, seq, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE messages_default PARTITION OF messages DEFAULT;

-- Idempotency keys: a send is stored at most once per (conversation, sender, client_msg_id).
CREATE TABLE message_ids (
    conversation_id uuid NOT NULL,
    sender uuid NOT NULL,
    client_msg_id text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (conversation_id, sender, client_msg_id)
);

-- The highest seq each member has sent in a conversation.
CREATE TABLE last_sent (
    conversation_id uuid NOT NULL,
    sender uuid NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (conversation_id, sender)
);

-- Each user's feed: dense positions 1, 2, 3 … given out by moving `feed_heads.last`.
CREATE TABLE feed_heads (
    user_id uuid PRIMARY KEY,
    last bigint NOT NULL
);
-- kind: 1 message, 2 message updated, 3 receipt. A receipt's `seq` is its delivered position, `read` its
-- read position and `receipt_user` whose receipt it is.
CREATE TABLE feed (
    user_id uuid NOT NULL,
    position bigint NOT NULL,
    kind smallint NOT NULL,
    conversation_id uuid NOT NULL,
    seq bigint NOT NULL,
    receipt_user uuid,
    read bigint,
    PRIMARY KEY (user_id, position)
);

-- Delivered and read positions per device.
CREATE TABLE cursors (
    conversation_id uuid NOT NULL,
    user_id uuid NOT NULL,
    device_id uuid NOT NULL,
    delivered bigint NOT NULL,
    read bigint NOT NULL,
    PRIMARY KEY (conversation_id, user_id, device_id)
);

-- Which uploads a message attaches, written in the message's commit.
CREATE TABLE media_refs (
    media_id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq)
);
