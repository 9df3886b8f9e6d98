-- The job database (RDS PostgreSQL). Idempotent: apply_schema() runs it on every deploy/start.
-- This file ships inside the layer (sttpipe/adapters/schema.sql); infra/schema.sql links here.
-- Table names are unqualified so that a caller's search_path picks the schema (tests use that).

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
