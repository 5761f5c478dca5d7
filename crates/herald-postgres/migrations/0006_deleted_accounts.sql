-- Herald's schema, version 6: deleted accounts. An admin deletes an account: its username becomes a placeholder
-- (`deleted:` and its id), its password hash empty, its devices and blocks go, and the row stays (its id is the
-- sender of messages kept under "deleted user"; see docs/api.md, "User administration").
ALTER TABLE users ADD COLUMN deleted_at bigint;
