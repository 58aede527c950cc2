//! The tables, their indexes, and the columns each record is read from.

/// The schema. Times are microseconds since the Unix epoch (`*_micros`), sizes and generations
/// are SQLite's signed 64-bit integers.
pub(super) const SCHEMA_SQL: &str = "
CREATE TABLE partitions (
    bucket TEXT NOT NULL,
    path TEXT NOT NULL,
    period_start_micros INTEGER NOT NULL,
    period_end_micros INTEGER NOT NULL,
    closes_at_micros INTEGER NOT NULL,
    state TEXT NOT NULL,
    generation INTEGER NOT NULL,
    lock_owner TEXT,
    lease_expires_at_micros INTEGER,
    sealed_at_micros INTEGER,
    PRIMARY KEY (bucket, path)
) WITHOUT ROWID;

-- The closed-partition query walks this index in close-time order. Sealed partitions (the
-- ones that pile up over the years, and never hold pending objects) are left out of it, like
-- DynamoDB's sparse index leaves out partitions without pending objects.
CREATE INDEX partitions_unsealed_by_close_time ON partitions (closes_at_micros, path, bucket)
    WHERE state <> 'sealed';

CREATE TABLE objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    partition_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT,
    sequencer TEXT NOT NULL,
    event_time_micros INTEGER NOT NULL,
    state TEXT NOT NULL,
    note TEXT,
    output_key TEXT,
    output_generation INTEGER,
    output_offset INTEGER,
    output_length INTEGER,
    output_sha256 TEXT,
    output_separator_bytes INTEGER,
    expiry_marked_at_micros INTEGER,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;

-- A partition's objects by state in key order (the seal's pages), and with size as the last
-- column the index covers the partition counts, so they never read the table.
CREATE INDEX objects_by_partition_state ON objects (bucket, partition_path, state, key, size);

-- All of a partition's objects in key order (audit and restore page through them).
CREATE INDEX objects_by_partition ON objects (bucket, partition_path, key);

-- The sources of one output by offset. Objects without a placement are left out.
CREATE INDEX objects_by_output ON objects (bucket, output_key, output_offset)
    WHERE output_key IS NOT NULL;

CREATE TABLE outputs (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    partition_bucket TEXT NOT NULL,
    partition_path TEXT NOT NULL,
    generation INTEGER NOT NULL,
    part_number INTEGER NOT NULL,
    state TEXT NOT NULL,
    size INTEGER,
    sha256 TEXT,
    object_count INTEGER NOT NULL,
    upload_id TEXT,
    created_at_micros INTEGER NOT NULL,
    committed_at_micros INTEGER,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;

CREATE INDEX outputs_by_partition ON outputs (partition_bucket, partition_path, generation, part_number, state);
";

/// A partition row with its derived counts. Each count is a correlated subquery on a covering
/// index, so reading one partition costs a few index range scans, never a table scan.
pub(super) const PARTITION_SELECT: &str = "
SELECT p.bucket, p.path, p.period_start_micros, p.period_end_micros, p.closes_at_micros, p.state, p.generation,
       p.lock_owner, p.lease_expires_at_micros, p.sealed_at_micros,
       (SELECT count(*) FROM objects o
         WHERE o.bucket = p.bucket AND o.partition_path = p.path AND o.state = 'pending') AS pending_objects,
       (SELECT coalesce(sum(o.size), 0) FROM objects o
         WHERE o.bucket = p.bucket AND o.partition_path = p.path AND o.state = 'pending') AS pending_bytes,
       (SELECT count(*) FROM objects o
         WHERE o.bucket = p.bucket AND o.partition_path = p.path AND o.state = 'compacted') AS compacted_objects,
       (SELECT coalesce(sum(o.size), 0) FROM objects o
         WHERE o.bucket = p.bucket AND o.partition_path = p.path AND o.state = 'compacted') AS compacted_bytes,
       (SELECT count(*) FROM outputs u
         WHERE u.partition_bucket = p.bucket AND u.partition_path = p.path AND u.state = 'committed')
         AS committed_outputs
FROM partitions p";

pub(super) const OBJECT_SELECT: &str = "
SELECT bucket, key, partition_path, size, etag, sequencer, event_time_micros, state, note, output_key,
       output_generation, output_offset, output_length, output_sha256, output_separator_bytes,
       expiry_marked_at_micros
FROM objects";

pub(super) const OUTPUT_SELECT: &str = "
SELECT bucket, key, partition_bucket, partition_path, generation, part_number, state, size, sha256, object_count,
       upload_id, created_at_micros, committed_at_micros
FROM outputs";
