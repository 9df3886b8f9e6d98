-- Migration 1: the job database (RDS PostgreSQL) as it stood before numbered migrations. Every
-- statement is idempotent, so that a database made by hand from the old infra/schema.sql takes
-- it too. Table names are unqualified: a caller's search_path picks the schema (tests use that).

CREATE TABLE IF NOT EXISTS jobs (
    job_id          text        PRIMARY KEY,
    tenant_id       text        NOT NULL DEFAULT 'default',
    filename        text        NOT NULL,
    content_type    text,
    language        text,
    priority        text        NOT NULL DEFAULT 'normal'
                                CHECK (priority IN ('high', 'normal', 'low')),
    status          text        NOT NULL DEFAULT 'AWAITING_UPLOAD'
                                CHECK (status IN ('AWAITING_UPLOAD', 'SPLITTING', 'TRANSCRIBING',
                                                  'MERGING', 'COMPLETED', 'PARTIAL', 'FAILED')),
    upload_key      text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    failure_reason  text,
    stats           jsonb       NOT NULL DEFAULT '{}'::jsonb
);

-- Added after the first release: databases created before it gain the column here.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS webhook_url text;
-- Executions the job has had: 1, plus one per re-run of its failed chunks.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS runs integer NOT NULL DEFAULT 1 CHECK (runs >= 1);
-- The job's initial prompt or vocabulary for the speech API.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS prompt text;

-- Where the job's language comes from (LanguageSource): named, to detect, detected, per chunk.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS language_source text NOT NULL DEFAULT 'requested'
    CHECK (language_source IN ('requested', 'detect', 'detected', 'per_chunk'));

-- The ETag of the upload the job was claimed with (its form is single-use).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS upload_etag text;

-- Listing a tenant's jobs newest first, paginated by the (created_at, job_id) cursor.
CREATE INDEX IF NOT EXISTS jobs_tenant_created_idx
    ON jobs (tenant_id, created_at DESC, job_id DESC);

-- One row per chunk; a job's progress is counted from here and stored nowhere else.
CREATE TABLE IF NOT EXISTS job_chunks (
    job_id      text        NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    idx         integer     NOT NULL CHECK (idx >= 0),
    start_ms    integer     NOT NULL CHECK (start_ms >= 0),
    end_ms      integer     NOT NULL CHECK (end_ms >= start_ms),
    state       text        NOT NULL DEFAULT 'PENDING'
                            CHECK (state IN ('PENDING', 'DONE', 'FAILED', 'SILENT')),
    error       text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, idx)
);

-- What the job's cache entries are keyed by (its upload's hash, its chunks' PCM hashes): a
-- delete finds them here for as long as the job exists, not in an object that expires.
CREATE TABLE IF NOT EXISTS job_content (
    job_id          text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    content_sha256  text NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (job_id, content_sha256)
);

-- L3 of the transcript cache (sttpipe/cache/postgres.py): content-addressed entries, one per
-- key, for chunks (kind 'chunk') and whole uploads ('upload'). `value` holds the same sealed
-- bytes as Redis does. Rows past expires_at are never served; the cache warmer deletes them.
CREATE TABLE IF NOT EXISTS chunk_cache (
    namespace         text        NOT NULL,
    key_id            text        NOT NULL CHECK (key_id ~ '^[0-9a-f]{64}$'),
    kind              text        NOT NULL CHECK (kind IN ('chunk', 'upload')),
    scope             text        NOT NULL,  -- the tenant, or '*' when tenants share entries
    content_sha256    text        NOT NULL,  -- canonical-PCM hash (chunk) or object hash (upload)
    model             text        NOT NULL,
    pipeline_version  text        NOT NULL,
    value             bytea       NOT NULL,
    size_bytes        integer     GENERATED ALWAYS AS (octet_length(value)) STORED,
    hits              bigint      NOT NULL DEFAULT 0,  -- at every level; the warmer ranks by it
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_hit_at       timestamptz,
    expires_at        timestamptz NOT NULL,
    PRIMARY KEY (namespace, key_id)
);

-- Purging expired rows.
CREATE INDEX IF NOT EXISTS chunk_cache_expires_idx ON chunk_cache (expires_at);
-- Warming: the most used entries of a namespace first.
CREATE INDEX IF NOT EXISTS chunk_cache_hits_idx ON chunk_cache (namespace, hits DESC);
-- Invalidation by model and by pipeline version.
CREATE INDEX IF NOT EXISTS chunk_cache_model_idx ON chunk_cache (namespace, model);
CREATE INDEX IF NOT EXISTS chunk_cache_version_idx ON chunk_cache (namespace, pipeline_version);
