-- Herald's schema, version 5: suspended accounts. An admin suspends an account: its sessions are closed and it
-- cannot log in until the suspension is lifted (see docs/api.md, "User administration"). All three are set
-- together, or all are null.
ALTER TABLE users
    ADD COLUMN suspended_at bigint,
    ADD COLUMN suspended_by uuid,
    ADD COLUMN suspension_reason text;
