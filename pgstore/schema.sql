-- once: PostgreSQL schema, version 2.
--
-- Every statement is idempotent: Migrate (and Open) run this file at every
-- start, under an advisory lock, and record the version applied in
-- {{schema_version}}. The placeholders in double braces are replaced with the
-- quoted names that Config.Prefix gives (default: once_records, ...).
{{create_schema}}

-- One row per key: the record, or its tombstone once expires_at has passed.
-- purge_at = expires_at + lease is when the sweeper may delete the row.
-- fillfactor leaves room on each page so that Complete and Release, which
-- change no indexed column, are HOT updates: the new version of a row goes
-- on its page, and no index changes. A page is filled by claims that follow
-- each other closely, and completed as closely, before the versions the
-- completions replaced can be pruned: at 50 (half of each page left free)
-- 97% of completions stay HOT under bench/pg's load, at 80 only 64%, and
-- every other one adds an entry to both indexes. There are no CHECK
-- constraints: PostgreSQL re-reads them from the catalog at every INSERT and
-- UPDATE, which costs more than the rest of a Complete.
CREATE TABLE IF NOT EXISTS {{records}} (
    scope            bytea        NOT NULL,
    key              text         COLLATE "C" NOT NULL,
    fingerprint      bytea,
    state            smallint     NOT NULL,
    token            bigint       NOT NULL,
    attempts         integer      NOT NULL,
    lease            interval     NOT NULL,
    lease_expires_at timestamptz  NOT NULL,
    expires_at       timestamptz  NOT NULL,
    purge_at         timestamptz  NOT NULL,
    created_at       timestamptz  NOT NULL,
    updated_at       timestamptz  NOT NULL,
    completed_at     timestamptz,
    result           bytea,
    meta             jsonb,
    -- watched is set by Watch on an in-progress record, so that only the
    -- completions somebody waits for pay for pg_notify (a notifying commit
    -- takes a cluster-wide lock).
    watched          boolean      NOT NULL DEFAULT false,
    PRIMARY KEY (scope, key)
) WITH (fillfactor = 50);

-- The sweeper deletes in bounded batches from the oldest purge_at.
CREATE INDEX IF NOT EXISTS {{purge_index}} ON {{records}} (purge_at);

-- Advance's monotonic versions. numeric(20) holds every uint64.
CREATE TABLE IF NOT EXISTS {{versions}} (
    scope   bytea         NOT NULL,
    entity  text          COLLATE "C" NOT NULL,
    version numeric(20,0) NOT NULL,
    PRIMARY KEY (scope, entity)
);

CREATE TABLE IF NOT EXISTS {{schema_version}} (
    version    integer     PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Version 2 lowered the records' fillfactor from 80 to 50. A table that
-- version 1 made gets it here, once, at the upgrade (for the pages filled
-- from then on; a fillfactor set by hand before the upgrade is replaced,
-- one set after it is left alone).
DO $$
BEGIN
    IF (SELECT max(version) FROM {{schema_version}}) = 1 THEN
        ALTER TABLE {{records}} SET (fillfactor = 50);
    END IF;
END $$;

INSERT INTO {{schema_version}} (version) VALUES (2) ON CONFLICT DO NOTHING;
