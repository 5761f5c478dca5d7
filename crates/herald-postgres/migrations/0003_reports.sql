-- Herald's schema, version 3: reports of messages and users for the server's admins. `record` is the whole
-- report as the API shows it (with its copy of a reported message); `state` and `open_key` are kept beside it
-- for the indexes. `open_key` names the reporter and the target: a reporter has one open report per target.
CREATE TABLE reports (
    id uuid PRIMARY KEY,
    state text NOT NULL,
    open_key text NOT NULL,
    record jsonb NOT NULL
);
CREATE UNIQUE INDEX reports_open_once ON reports (open_key) WHERE state = 'open';
-- Listing by state, newest first (ids are time-ordered).
CREATE INDEX reports_by_state ON reports (state, id);
