-- Herald's schema, version 2: media bookkeeping. Uploads, the contents they point to (one row per content
-- hash), per-user usage, takedowns and the perceptual-hash blocklist. Which messages attach an upload is
-- `media_refs` (version 1), written by the message commit. Blobs live in blob storage, not here.

-- One upload. `state`, `reason`: the protocol's names (pending, scanning, processing, ready, rejected;
-- malware, taken_down …). `charged`: the bytes it counts against its owner's usage (the declared size until
-- ready, the content's size once ready, 0 once rejected), so releasing it gives back exactly what was taken.
CREATE TABLE media (
    id uuid PRIMARY KEY,
    owner uuid NOT NULL,
    state text NOT NULL,
    reason text,
    detail text,
    declared_size bigint NOT NULL,
    charged bigint NOT NULL,
    filename text,
    claimed_type text,
    content_type text,
    content_hash text,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
-- Uploads to resume after a restart.
CREATE INDEX media_unfinished ON media (id) WHERE state IN ('pending', 'scanning', 'processing');
-- Garbage collection: the oldest uploads first, each checked against media_refs.
CREATE INDEX media_by_created ON media (created_at, id);
-- A takedown finds the ready uploads of a hash.
CREATE INDEX media_ready_by_hash ON media (content_hash, id) WHERE state = 'ready';

-- One stored content, shared by every ready upload of the same bytes; `refs` counts them. `variants`: the
-- variant name -> where it is stored (key, type, size, dimensions). `tier`: hot or cold.
CREATE TABLE media_contents (
    hash text PRIMARY KEY,
    content_type text NOT NULL,
    size bigint NOT NULL,
    width bigint,
    height bigint,
    duration_ms bigint,
    variants jsonb NOT NULL,
    tier text NOT NULL,
    refs bigint NOT NULL,
    created_at bigint NOT NULL,
    last_access bigint NOT NULL
);
-- Tiering: the contents of a tier nobody fetched for a while.
CREATE INDEX media_contents_idle ON media_contents (tier, last_access, hash);

-- The bytes counted against each user's quota: the sum of `media.charged` over the user's uploads.
CREATE TABLE media_usage (
    user_id uuid PRIMARY KEY,
    bytes bigint NOT NULL
);

-- Content hashes refused for good; the first takedown's note and time stay.
CREATE TABLE media_takedowns (
    hash text PRIMARY KEY,
    note text,
    taken_at bigint NOT NULL
);

-- Perceptual hashes of blocked images: the u64 stored bit for bit in a bigint.
CREATE TABLE media_blocklist (
    phash bigint PRIMARY KEY,
    note text,
    created_at bigint NOT NULL
);
