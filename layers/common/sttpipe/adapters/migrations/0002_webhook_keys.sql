-- Migration 2: each tenant's webhook key generation (sttpipe/services/webhook_keys.py). The
-- secrets are derived from the deployment's signing key and the generation, never stored.
CREATE TABLE webhook_keys (
    tenant_id   text        PRIMARY KEY,
    generation  integer     NOT NULL CHECK (generation >= 1),
    rotated_at  timestamptz NOT NULL DEFAULT now()
);
