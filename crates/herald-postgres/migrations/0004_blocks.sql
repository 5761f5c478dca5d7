-- Herald's schema, version 4: whom each user blocks. A block hides each from the other's typing and presence
-- and stops direct messages and invitations between them (see docs/api.md, "Blocking").
CREATE TABLE blocks (
    blocker uuid NOT NULL,
    blocked uuid NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
-- Who blocks a user.
CREATE INDEX blocks_by_blocked ON blocks (blocked, blocker);
