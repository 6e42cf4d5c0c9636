-- Read models folded from the events topic. Everything in this schema is derived from Kafka and
-- can be rebuilt from offset 0 (`astraforge projections rebuild`); no column holds wall-clock time
-- of the projection itself, so a rebuild reproduces the live tables exactly.
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.events (
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    stream_id      text        NOT NULL,
    tenant_id      text        NOT NULL,
    event_id       text        NOT NULL,
    type           text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    actor          text        NOT NULL,
    sandbox_id     text,
    causation_id   text,
    correlation_id text,
    schema_version integer     NOT NULL,
    payload        jsonb       NOT NULL,
    PRIMARY KEY (partition, "offset")
);
CREATE INDEX IF NOT EXISTS events_by_stream ON {schema}.events (stream_id, "offset");

CREATE TABLE IF NOT EXISTS {schema}.streams (
    stream_id    text        PRIMARY KEY,
    tenant_id    text        NOT NULL,
    partition    integer     NOT NULL,
    first_offset bigint      NOT NULL,
    last_offset  bigint      NOT NULL,
    event_count  bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS streams_by_tenant ON {schema}.streams (tenant_id, stream_id);

CREATE TABLE IF NOT EXISTS {schema}.runs (
    run_id      text        PRIMARY KEY,
    tenant_id   text        NOT NULL,
    state       text        NOT NULL,
    attempt     integer     NOT NULL,
    title       text,
    agent       text,
    sandbox_id  text,
    reason      text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    last_offset bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_tenant ON {schema}.runs (tenant_id, run_id);
-- a run's repository and request text (list filters); added after the first release, only when missing
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{schema}.runs'::regclass
                 AND attname = 'repository' AND NOT attisdropped) THEN
    ALTER TABLE {schema}.runs ADD COLUMN repository text, ADD COLUMN spec text;
  END IF;
END $$;
-- `/v1/runs?text=` (a substring of the title or the request, any case) through trigram indexes, not a
-- scan. pg_trgm is a trusted extension: the database's owner (the app role of the local stack) creates
-- it; where the role may not (or the extension is not installed), the filter still works, by a scan.
-- One creator at a time (concurrent CREATE EXTENSION IF NOT EXISTS can fail on a unique key); indexes
-- only when missing (CREATE INDEX IF NOT EXISTS still locks the table against writes first).
-- fastupdate off: a run row is written a few times in its life, and rows waiting in GIN's pending
-- list make the planner scan instead.
SELECT pg_advisory_xact_lock(hashtext('astraforge.pg_trgm'));
DO $$
DECLARE trgm text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
    BEGIN
      CREATE EXTENSION pg_trgm WITH SCHEMA public;
    EXCEPTION WHEN insufficient_privilege OR undefined_file THEN
      RAISE WARNING 'pg_trgm is not available (%): /v1/runs?text= scans the tenant''s runs', SQLERRM;
    END;
  END IF;
  SELECT n.nspname INTO trgm FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
   WHERE e.extname = 'pg_trgm';
  IF trgm IS NOT NULL AND to_regclass('{schema}.runs_title_trgm') IS NULL THEN
    EXECUTE format('CREATE INDEX runs_title_trgm ON {schema}.runs USING gin (title %I.gin_trgm_ops) '
                   'WITH (fastupdate = off)', trgm);
  END IF;
  IF trgm IS NOT NULL AND to_regclass('{schema}.runs_spec_trgm') IS NULL THEN
    EXECUTE format('CREATE INDEX runs_spec_trgm ON {schema}.runs USING gin (spec %I.gin_trgm_ops) '
                   'WITH (fastupdate = off)', trgm);
  END IF;
END $$;

CREATE TABLE IF NOT EXISTS {schema}.sandboxes (
    sandbox_id  text        PRIMARY KEY,
    stream_id   text        NOT NULL,
    tenant_id   text        NOT NULL,
    state       text        NOT NULL,
    provider    text,
    image       text,
    reason      text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    last_offset bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS sandboxes_by_tenant ON {schema}.sandboxes (tenant_id, sandbox_id);
-- the memory limit a sandbox was asked with (per-tenant quotas); added after the first release
-- (only when missing: ALTER TABLE takes an exclusive lock even with IF NOT EXISTS, and every process
-- runs this file at start, so a live API's readers would queue behind it)
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{schema}.sandboxes'::regclass
                 AND attname = 'memory_mb' AND NOT attisdropped) THEN
    ALTER TABLE {schema}.sandboxes ADD COLUMN memory_mb integer;
  END IF;
END $$;

-- One row per command: running from exec.started until exec.finished (per-tenant exec quota).
CREATE TABLE IF NOT EXISTS {schema}.execs (
    command_id  text        PRIMARY KEY,
    sandbox_id  text        NOT NULL,
    tenant_id   text        NOT NULL,
    state       text        NOT NULL,
    exit_code   integer,
    started_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    last_offset bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS execs_running_by_tenant ON {schema}.execs (tenant_id) WHERE state = 'running';

CREATE TABLE IF NOT EXISTS {schema}.artifacts (
    artifact_id  text        PRIMARY KEY,
    stream_id    text        NOT NULL,
    tenant_id    text        NOT NULL,
    key          text        NOT NULL,
    sha256       text        NOT NULL,
    size         bigint      NOT NULL,
    content_type text        NOT NULL,
    name         text,
    created_at   timestamptz NOT NULL,
    "offset"     bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_stream ON {schema}.artifacts (stream_id);
-- set by artifact.deleted (tenant delete or retention); the bytes go at the next sweep
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{schema}.artifacts'::regclass
                 AND attname = 'deleted_at' AND NOT attisdropped) THEN
    ALTER TABLE {schema}.artifacts ADD COLUMN deleted_at timestamptz;
  END IF;
END $$;
CREATE INDEX IF NOT EXISTS artifacts_live_by_tenant ON {schema}.artifacts (tenant_id) WHERE deleted_at IS NULL;

-- Hosted DeepAgent conversations (conversation.created, reply.*): idle or replying, and how the last reply ended.
CREATE TABLE IF NOT EXISTS {schema}.conversations (
    conversation_id text        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    sandbox_id      text        NOT NULL,
    model           text        NOT NULL,
    title           text,
    state           text        NOT NULL,  -- idle | replying
    reply_id        text,                  -- the reply under way, or the last one
    last_reply      text,                  -- completed | failed | cancelled
    reason          text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_offset     bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_tenant ON {schema}.conversations (tenant_id, conversation_id);

-- Partitions a projector stopped at because a record there needs a newer schema (see postgres.py).
CREATE TABLE IF NOT EXISTS {schema}.parked (
    topic     text    NOT NULL,
    partition integer NOT NULL,
    "offset"  bigint  NOT NULL,
    reason    text    NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- The next offset to consume, committed in the same transaction as the rows above.
CREATE TABLE IF NOT EXISTS {schema}.consumer_offsets (
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (topic, partition)
);
