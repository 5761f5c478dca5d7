-- Threads. Each thread's replies, written in the reply's commit; `sender` because a thread's unread count leaves
-- out one's own replies. On Cassandra: thread_replies((conversation_id, thread_root), seq) -> sender.
CREATE TABLE thread_replies (
    conversation_id uuid NOT NULL,
    thread_root bigint NOT NULL,
    seq bigint NOT NULL,
    sender uuid NOT NULL,
    PRIMARY KEY (conversation_id, thread_root, seq)
);
-- The same rows in seq order: what a conversation's unread count leaves out (each thread keeps its own).
-- On Cassandra, a second table: thread_replies_by_seq((conversation_id), seq) -> thread_root.
CREATE INDEX thread_replies_by_seq ON thread_replies (conversation_id, seq);

-- Each user's read position in a thread.
CREATE TABLE thread_reads (
    conversation_id uuid NOT NULL,
    user_id uuid NOT NULL,
    thread_root bigint NOT NULL,
    read bigint NOT NULL,
    PRIMARY KEY (conversation_id, user_id, thread_root)
);
