-- Full-text search. Each message's words as the core cuts them (lowercased runs of letters and digits, with
-- their positions), written by the commit as a tsvector: the same words the embedded node's index holds, so
-- both backends find the same messages. NULL for a deleted message and a notice. Queries are prefix matches
-- on every word (`'meet':* & 'noon':*`), served by the GIN index.
ALTER TABLE messages ADD COLUMN search tsvector;
CREATE INDEX messages_search ON messages USING gin (search);

-- Messages stored before this migration: their body's words, cut by PostgreSQL's own parser (close to the
-- core's; new and edited messages get the core's).
UPDATE messages SET search = to_tsvector('simple', convert_from(payload, 'UTF8')::jsonb ->> 'body')
 WHERE NOT coalesce((convert_from(payload, 'UTF8')::jsonb ->> 'deleted')::boolean, false)
   AND coalesce(jsonb_typeof(convert_from(payload, 'UTF8')::jsonb -> 'system'), 'null') = 'null';
