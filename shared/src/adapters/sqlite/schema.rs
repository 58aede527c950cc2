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
    expiry_tracked INTEGER NOT NULL DEFAULT 0,
    expiry_through_offset INTEGER,
    expiry_through_key TEXT,
    expiry_done INTEGER NOT NULL DEFAULT 0,
    expiry_marked_at_micros INTEGER,
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

/// An object row with its expiry mark: its own (the exceptions, sources of outputs without a
/// cursor), else its output's cursor's where the cursor has passed it (see
/// `ExpiryCursor::marked_at`). Derived, not copied onto the rows by each move of the cursor:
/// that was the third write of every source's row in a seal (issue 16). Only a compacted row
/// with its own mark missing looks its output up, through `outputs_by_partition` (a partition
/// has few outputs).
pub(super) const OBJECT_SELECT: &str = "
SELECT bucket, key, partition_path, size, etag, sequencer, event_time_micros, state, note, output_key,
       output_generation, output_offset, output_length, output_sha256, output_separator_bytes,
       CASE WHEN expiry_marked_at_micros IS NOT NULL THEN expiry_marked_at_micros
            WHEN state = 'compacted' AND output_key IS NOT NULL THEN
              (SELECT u.expiry_marked_at_micros FROM outputs u
                WHERE u.partition_bucket = objects.bucket AND u.partition_path = objects.partition_path
                  AND u.key = objects.output_key AND u.state = 'committed' AND u.expiry_tracked = 1
                  AND (u.expiry_done = 1
                       OR (objects.output_offset, objects.key) <= (u.expiry_through_offset, u.expiry_through_key)))
       END AS expiry_mark_micros
FROM objects";

/// The index of each column of [`OBJECT_SELECT`] (the test below checks them against its names).
pub(super) mod object_column {
    pub const BUCKET: usize = 0;
    pub const KEY: usize = 1;
    pub const PARTITION_PATH: usize = 2;
    pub const SIZE: usize = 3;
    pub const ETAG: usize = 4;
    pub const SEQUENCER: usize = 5;
    pub const EVENT_TIME_MICROS: usize = 6;
    pub const STATE: usize = 7;
    pub const NOTE: usize = 8;
    pub const OUTPUT_KEY: usize = 9;
    pub const OUTPUT_GENERATION: usize = 10;
    pub const OUTPUT_OFFSET: usize = 11;
    pub const OUTPUT_LENGTH: usize = 12;
    pub const OUTPUT_SHA256: usize = 13;
    pub const OUTPUT_SEPARATOR_BYTES: usize = 14;
    pub const EXPIRY_MARKED_AT_MICROS: usize = 15;
}

pub(super) const OUTPUT_SELECT: &str = "
SELECT bucket, key, partition_bucket, partition_path, generation, part_number, state, size, sha256, object_count,
       upload_id, created_at_micros, committed_at_micros, expiry_tracked, expiry_through_offset, expiry_through_key,
       expiry_done, expiry_marked_at_micros
FROM outputs";

/// Schema 1 to 2: outputs gain an expiry cursor. Outputs committed under schema 1 get none
/// (`expiry_tracked = 0`): their sources carry their own expiry marks, as they always did.
pub(super) const MIGRATE_1_TO_2_SQL: &str = "
ALTER TABLE outputs ADD COLUMN expiry_tracked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outputs ADD COLUMN expiry_through_offset INTEGER;
ALTER TABLE outputs ADD COLUMN expiry_through_key TEXT;
ALTER TABLE outputs ADD COLUMN expiry_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outputs ADD COLUMN expiry_marked_at_micros INTEGER;
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_column_indexes_name_the_columns_of_object_select() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection.execute_batch(SCHEMA_SQL).unwrap();
        let statement = connection.prepare(OBJECT_SELECT).unwrap();
        let names = statement.column_names();
        let expected = [
            (object_column::BUCKET, "bucket"),
            (object_column::KEY, "key"),
            (object_column::PARTITION_PATH, "partition_path"),
            (object_column::SIZE, "size"),
            (object_column::ETAG, "etag"),
            (object_column::SEQUENCER, "sequencer"),
            (object_column::EVENT_TIME_MICROS, "event_time_micros"),
            (object_column::STATE, "state"),
            (object_column::NOTE, "note"),
            (object_column::OUTPUT_KEY, "output_key"),
            (object_column::OUTPUT_GENERATION, "output_generation"),
            (object_column::OUTPUT_OFFSET, "output_offset"),
            (object_column::OUTPUT_LENGTH, "output_length"),
            (object_column::OUTPUT_SHA256, "output_sha256"),
            (object_column::OUTPUT_SEPARATOR_BYTES, "output_separator_bytes"),
            (object_column::EXPIRY_MARKED_AT_MICROS, "expiry_mark_micros"),
        ];
        assert_eq!(names.len(), expected.len(), "every column of OBJECT_SELECT has an index: {names:?}");
        for (index, name) in expected {
            assert_eq!(names[index], name, "column {index}");
        }
    }

    /// The plan SQLite picks for `sql`, one line per step.
    fn query_plan(connection: &rusqlite::Connection, sql: &str) -> String {
        let mut statement = connection.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // The plan does not depend on the values: NULL for each parameter.
        let nulls = vec![rusqlite::types::Null; statement.parameter_count()];
        let steps = statement.query_map(rusqlite::params_from_iter(nulls), |row| row.get::<_, String>(3)).unwrap();
        steps.collect::<Result<Vec<_>, _>>().unwrap().join("\n")
    }

    /// Issue 16: the flip runs once per output. Walking more than the output's own rows made
    /// the seal of a large partition quadratic; looking each row up from `objects_by_output`
    /// cost a seek of the primary key per source. So: the output's key range from its index
    /// alone, then one walk of the primary key within it.
    #[test]
    fn the_seals_per_output_flip_walks_the_primary_key_within_the_outputs_key_range() {
        use super::super::rows::{MARK_COMPACTED_SQL, OUTPUT_KEY_RANGE_SQL};
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection.execute_batch(SCHEMA_SQL).unwrap();
        let range = query_plan(&connection, OUTPUT_KEY_RANGE_SQL);
        assert!(range.contains("USING COVERING INDEX objects_by_output (bucket=? AND output_key=?)"), "{range}");
        let compacted = query_plan(&connection, MARK_COMPACTED_SQL);
        assert!(compacted.contains("USING PRIMARY KEY (bucket=? AND key>? AND key<?)"), "{compacted}");
        assert!(!compacted.contains("INDEX"), "no index walk, no lookup from one: {compacted}");
    }

    /// Issue 16: the seal plans from every pending object's key and size. Read from the rows,
    /// each was a lookup of its row by primary key and the decoding of its whole record (7% of
    /// the instructions of the seal of 100,000 tiny objects); from the covering index, none.
    #[test]
    fn the_seals_pending_page_reads_the_state_index_alone_never_a_row() {
        use super::super::rows::PENDING_SIZES_SQL;
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection.execute_batch(SCHEMA_SQL).unwrap();
        let plan = query_plan(&connection, PENDING_SIZES_SQL);
        assert!(
            plan.contains(
                "USING COVERING INDEX objects_by_partition_state (bucket=? AND partition_path=? AND state=? AND key>?)"
            ),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "the page is read in key order, never sorted: {plan}");
    }

    /// A row's derived expiry mark looks its output up by the partition's outputs index, not by
    /// a walk of every output.
    #[test]
    fn an_objects_derived_expiry_mark_reads_its_output_through_the_partitions_outputs() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection.execute_batch(SCHEMA_SQL).unwrap();
        let plan = query_plan(&connection, &format!("{OBJECT_SELECT} WHERE bucket = ?1 AND key = ?2"));
        assert!(plan.contains("USING INDEX outputs_by_partition (partition_bucket=? AND partition_path=?)"), "{plan}");
    }
}
