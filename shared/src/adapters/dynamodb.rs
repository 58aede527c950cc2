//! DynamoDB as the manifest (the AWS backend).
//!
//! It exists because the Lambda functions need a manifest that many concurrent invocations
//! share, that scales with the event rate of a whole data lake, and that needs no server: one
//! on-demand table. It gives every guarantee listed on [`Manifest`]; the conformance suite in
//! `testkit::manifest_conformance` checks it against a real DynamoDB-compatible server (see
//! `testkit::servers`), as it checks [`SqliteManifest`](super::sqlite) on a file.
//!
//! ```no_run
//! # async fn run() -> Result<(), compactor::ports::ManifestError> {
//! use compactor::adapters::dynamodb::{client_for, DynamoDbManifest};
//! use compactor::domain::layout::Layout;
//! use compactor::ports::Manifest;
//!
//! let layout = Layout::parse("%Y/%m/%d", None).expect("a valid layout");
//! // `None`: the standard environment (AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION, profiles).
//! let manifest = DynamoDbManifest::new(client_for(None).await, "s3-compactor-manifest", layout);
//! manifest.create_table().await?; // once, e.g. from `s3-compactor init`
//! let closed = manifest.closed_partitions(chrono::Utc::now(), 100).await?;
//! println!("{} partitions are ready to seal", closed.len());
//! # Ok(()) }
//! ```
//!
//! # The table
//! One table, string keys `pk` and `sk`, on-demand billing, three global secondary indexes.
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | partition | `P#{bucket}#{path}` | `#PARTITION` | `bucket`, `path`, `period_start`, `period_end`, `closes_at`, `state`, `generation`, `lock_owner`?, `lease_expires_at`?, `sealed_at`?, `ingest_counter`; `gsi1pk`/`gsi1sk` while it may have pending objects; `gsi3pk`/`gsi3sk` always |
//! | object | `O#{bucket}#{path}#{shard:02}` | the object key | `bucket`, `partition_path`, `size`, `etag`?, `sequencer`, `event_time`, `state`, `note`?, `expiry_marked_at`?, `expires_at`?; once flipped `compacted`: `output_key`, `output_generation`, `output_offset`, `output_length`, `output_sha256`, `output_separator_bytes`, and `expiry_by_output` when its output keeps an expiry cursor. A source of an output with `placed_chunks` is not flipped: its item stays as ingest wrote it (`pending`) and reads compacted (see "Derived state" below), unless a write it needs anyway (its own expiry mark, a scanned version's confirmation) records it; `gsi2pk`, `gsi2sk` only on items placed by versions before placement chunks |
//! | output | `P#{bucket}#{path}` | `OUT#{generation:020}#{part:010}#{bucket}#{key}` | `bucket`, `key`, `partition_bucket`, `partition_path`, `generation`, `part_number`, `state`, `size`?, `sha256`?, `object_count`, `upload_id`?, `created_at`, `committed_at`?, `sources_compacted`?, `placed_chunks`? (the directory of its placement chunks, JSON `[[chunk sk, first key, last key], ...]`, written by `record_placements`; absent on outputs placed before it, whose sources are flipped); the expiry cursor, from the commit on: `expiry_done` (Boolean), `expiry_through_offset`?, `expiry_through_key`?, `expiry_marked_at`? |
//! | arrival | `A#{bucket}#{path}` | 20 digits of the writer's clock (microseconds) `#` a hash of the records | `records` (Binary): one ingest batch's records of the partition, in the encoding of [`crate::domain::arrivals`]; immutable, never updated (see "Arrival items" below) |
//! | placement chunk | `PL#{bucket}#{len(path)}#{path}{output key}` | first offset, 20 digits | `generation`, `placements` (JSON, up to 300 KB): see the `placements` module |
//! | output pointer | `OUTKEY#{bucket}#{key}` | `#` | `target_pk`, `target_sk`: where the output item is |
//! | schema | `#SCHEMA` | `#` | `version`: [`SCHEMA_VERSION`], written by `create_table` (`init`); absent on tables made before it (schema 1) |
//!
//! | index | key | projection | holds |
//! |---|---|---|---|
//! | [`PENDING_INDEX`] | `gsi1pk` = `PENDING`, `gsi1sk` = `{closes_at}#{path}#{bucket}` | `lock_owner`, `lease_expires_at` | partitions that have (or may have) pending objects: sparse |
//! | [`SOURCES_INDEX`] | `gsi2pk` = `{bucket}#{len(path)}#{path}{output key}`, `gsi2sk` = offset (N) | all | objects placed by versions before placement chunks, by output and offset; nothing new enters it |
//! | [`PARTITIONS_INDEX`] | `gsi3pk` = `PARTITION`, `gsi3sk` = `{bucket}#{path}` | keys | every partition, in (bucket, path) order |
//!
//! Times are Numbers of microseconds since the Unix epoch; `closes_at` inside `gsi1sk` is
//! written as 20 digits of the order-preserving `micros XOR 2^63`, so string order is time order.
//! The SAM template mirrors [`DynamoDbManifest::create_table`].
//!
//! **Expiry per output.** A committed output's item carries an expiry cursor: the seal tags
//! (or deletes) the output's sources in (offset, key) order, from the placement chunks (no read
//! of the object items: each request is conditional on the placed ETag), and moves the cursor
//! past each page it finished, one write per page instead of one per source. `object` and
//! `output_sources` derive a source's `expiry_marked_at` from the cursor of its output (one
//! Query of the partition's output items for `object`); `objects` pages show a source's own
//! mark only. Sources the store refused (changed, gone, at the tag limit) also get a mark of
//! their own, and so does every source when records expire (below), which needs a time on each
//! item. Outputs committed before the cursor existed have no `expiry_done`: their sources carry
//! their own marks as before, and the seal's recovery finishes them so.
//!
//! **Derived state (the `derived` module).** An output's commit makes its sources compacted
//! ([`crate::domain::derived`]): a record still `pending` whose (key, sequencer) a committed
//! output's placement names is compacted. Outputs placed by this version are never flipped per
//! source; `record_placements` writes, beside the chunks, the output item's `placed_chunks`
//! directory (each chunk's sort key and key range), and every reader of a source's state
//! derives it: `objects` (the seal's pending scan, a batch of the shards' merged items at a
//! time), `partition`'s and `release`'s counts (the same merge over the whole partition, once
//! it has such outputs), `object`, `record_removal` (a compacted source's removal is ignored),
//! `mark_expiry` and the confirmation of a scanned version (both write the flip along with the
//! write they make anyway). Each reads the partition's output items once and only the chunks
//! whose key range holds a stored-pending record it derives, one chunk at a time: a first
//! seal's scan reads none, a reopened partition's the earlier outputs' chunks that overlap its
//! pages. Outputs without the directory (placed by earlier versions) keep `mark_compacted`'s
//! flip, so tables written before need no migration.
//!
//! **Arrival items (the `arrivals` and `scan` modules, schema 4).** Ingest appends one item
//! per partition per batch holding the batch's records (about 51 bytes a CloudTrail record),
//! unconditionally, instead of a conditional object item per object: a replayed batch adds a
//! duplicate that readers drop. A key's record is its object item (written by per-object
//! ingest before schema 4 or with a record TTL, or by the seal for an exception: `missing`,
//! an expiry mark) combined with its arrival records by the ingest rule
//! ([`crate::domain::combined`]), then derived as above. Scans merge the partition's arrival
//! items into key order within a memory budget (sorted runs spill to an anonymous temporary
//! file) and keep the cursor between pages; each later page first Queries the items written
//! since the cursor was made and makes it anew if one is new. Per-key reads (`object`,
//! exceptions, a placement whose key got a new arrival) read the partition's arrival items and
//! keep their keys. Nothing is consumed or deleted: a reopened partition's seal reads them
//! again (read units), and the placements say what is done. A hot partition's arrival items
//! share one key: at ~6 write units per item of 100 records, its 1,000 writes/s take about
//! 16,000 objects/s.
//!
//! **Record expiry (optional, off by default).** The table's time to live is enabled on
//! [`RECORD_EXPIRY_ATTRIBUTE`] (`expires_at`, epoch **seconds**, as DynamoDB's TTL wants), but
//! no item carries that attribute unless [`DynamoDbManifest::with_record_ttl`] is given a
//! duration (`COMPACTOR_RECORD_TTL`): then `mark_expiry` writes it on the object items it
//! marks, the mark's time plus the duration, and DynamoDB deletes them some time (usually
//! within days) after it. Only object items of sources marked for expiry ever carry it: never
//! pending objects (a newer version replaces the whole item, without it), partitions or
//! outputs. Once a record is gone the audit, `restore` and the output's source list no longer
//! know that source; `verify` then checks the output's own sha256 and the sources left.
//!
//! **Write sharding.** A hot date partition takes thousands of new objects per second, more
//! than one DynamoDB partition key takes (1,000 writes/s). Object items are therefore spread
//! over [`OBJECT_SHARDS`] keys per partition by [`object_shard`] (FNV-1a 64 of the key, modulo
//! 16, fixed forever: changing it would hide every recorded object). `objects()` queries every
//! shard and merges the sorted answers, so pages stay in key order. No item grows with the
//! partition: there are no lists and no counters of objects.
//!
//! **The layout.** `object(bucket, key)`, `record_removal` and `mark_expiry` only get a key; the
//! [`Layout`] given to [`DynamoDbManifest::new`] finds its partition, hence its item, without an
//! extra pointer item per object. Changing the layout of a table after ingest hides the
//! recorded objects from those calls: re-ingest (a backfill) into a fresh table instead.
//!
//! # The code
//! `items` turns records into items and back (keys, attribute values, typed reads); `derived`
//! derives sources' states from committed outputs' chunk directories;
//! `requests` holds the requests every call builds on (error classification, the lease fence,
//! single-item writes, queries) and `optimistically`, the
//! one read-decide-conditional-write loop; `arrivals` appends arrival items and reads them back
//! (by key, or through a kept cursor); `ingest` writes object items (with a record TTL) and
//! flags partitions; `scan` merges a partition's object items with its arrival records in key
//! order; `partitions` derives counts and releases; `outputs` and `placements` hold the
//! output lifecycle and the placement chunks; `placed_versions` reads a window's object items by
//! key range for the placement check; `table` creates the table; `manifest` implements
//! the port on top of them.
//!
//! # How it differs from SQLite
//! - **No write per source for compaction.** SQLite flips each source `compacted` (free
//!   there); here the state is derived (above). The remaining per-source writes (`mark_expiry`
//!   for the exceptions or with a record TTL, and `mark_compacted` for outputs placed before
//!   chunk directories) are single-item conditional PartiQL `UPDATE`s sent 25 to a
//!   `BatchExecuteStatement`: the same write units as `UpdateItem`, a 25th of the requests (the
//!   seal's role needs `dynamodb:PartiQLUpdate`; see `sam/template.yaml`).
//! - **Conditional writes instead of transactions.** Every read-then-write reads the item, decides
//!   in Rust (sequencers compare right-padded, which no condition expression can do), and writes
//!   with a condition that the item still holds what was read; on `ConditionalCheckFailed` it
//!   reads again, up to [`OPTIMISTIC_ATTEMPTS`] times. Fenced writes to other items than the
//!   partition are `TransactWriteItems` with a `ConditionCheck` of the partition's generation
//!   and lock owner.
//! - **Counts are derived by reading the objects, not kept.** A partition's pending and
//!   compacted counts are sums over its object items (one paged Query per shard) and arrival
//!   records, and its
//!   committed outputs a Query of its output items. Counters on the partition item would make
//!   it a hot key updated on every ingest. The cost of `partition()`, `partitions()`,
//!   `closed_partitions()` and `release()` therefore grows with the partition's objects: they
//!   are for seals and audits, not for per-event paths. Which partitions to seal never
//!   depends on counts: the sparse [`PENDING_INDEX`] answers it in one Query, and
//!   `closed_partition_keys()`, which the seal calls, returns that answer without counting.
//! - **Indexes are eventually consistent.** `closed_partitions`, `partitions` and
//!   `output_sources` read global secondary indexes, which lag writes by a fraction of a
//!   second; `acquire` and the other writes re-check the item itself, so a stale answer only
//!   delays a seal. Derivation, `mark_compacted` and `output_sources` read an output's placement chunks, on
//!   the base table, strongly consistent; only outputs placed before chunks existed go through
//!   [`SOURCES_INDEX`], where a source placed a moment before may be missed, stays pending with
//!   its placement, and the next seal's recovery (which calls `mark_compacted` for every
//!   committed output first) finishes it.
//!   Base-table reads are strongly consistent.
//! - **A partition with only removed objects stays in the pending index** until a seal
//!   releases it; `closed_partitions` leaves it out of its answer (it counts pending objects),
//!   at the cost of counting it on each call. `closed_partition_keys` does not count and keeps
//!   it, so the seal locks it once, finds nothing and releases it sealed, out of the index. A
//!   `sealing` one whose lease expired is listed even with nothing pending: the interrupted
//!   seal has expiry marks and a release to finish.
//!
//! # Choices the port leaves open (as SQLite; the conformance suite pins them)
//! - The owner of a live lease may `acquire` again: it gets the next generation and its older
//!   lease is fenced.
//! - A released lease is fenced too (the lock owner is removed), so a second `release` fails
//!   with `LeaseLost`.
//! - `begin_output` on a `committed` output changes nothing and succeeds; on an `abandoned`
//!   one it fails with `InvalidOutputState`.
//! - `mark_compacted` on an output that is not committed returns `Ok(0)`; on an unknown one
//!   `NotFound`. On a committed output with a chunk directory it writes nothing per source and
//!   answers, the first time, the object count its commit recorded (a version newer than the
//!   placed one that arrived since is counted, though it reads pending), then 0.
//!   `abandon_output` on an abandoned output succeeds.
//! - A committed output's sources read compacted from the commit on, not from `mark_compacted`
//!   on (the conformance suite's `derives_compacted_at_commit`).
//! - A removal moves the record's sequencer and event time to the removal's, so a replayed
//!   creation of the removed version stays stale; its placement, if any, stays for the audit.
//! - `sealed_at` is the time of the last seal; a reopened partition keeps it.
//! - Times are kept to the microsecond.
//!
//! # The race between ingest and release
//! `release` may seal a partition (drop it from [`PENDING_INDEX`]) only if no pending object
//! can be left behind. Ingest writes the object (its arrival item, or its object item) first,
//! then makes sure the partition item is flagged; release reads the partition item's `ingest_counter`, counts pending objects across
//! the shards, and writes `sealed` on the condition that `ingest_counter` has not moved.
//! Ingest bumps `ingest_counter` whenever it writes the partition item. For an ingest whose
//! object write lands after release counted:
//! - its partition write lands before release's write: the counter moved, release's condition
//!   fails, and release counts again (and finds the object);
//! - its partition write lands after: it sees `sealed`, and reopens and flags the partition.
//!
//! Ingest skips the partition write (the common case on a hot partition) only when a strongly
//! consistent read, made after its object write, shows the partition `open` and flagged: an
//! `open` partition has no lock holder, so any release that could seal it belongs to a later
//! `acquire`, whose count comes after the object write and sees it. That read costs one read
//! unit instead of a write unit (a failed conditional write would still cost a write unit and
//! count against the item's 1,000 writes/s). `record_objects` (one SQS batch, one call) writes
//! all its object items first, then reads each partition's flag once: one read per partition
//! per batch instead of per object, still after every object write of that partition.
//!
//! # Costs per operation (items under 1 KB; a transaction costs double)
//! | call | reads (RCU) | writes (WCU) |
//! |---|---|---|
//! | `record_objects` (n, a batch) | 1 strongly consistent GetItem per partition of the batch (its flag); + 1 for the schema item on a manifest value's first call | per partition, its arrival item's size: about 6 for 100 CloudTrail records; + 1 Update per partition new, sealed or sealing. With a record TTL: n conditional Puts, + 1 read per known key |
//! | `record_object` | `record_objects` of one | 1 (the arrival item) + the Update as above |
//! | `record_removal` | 0 | 1 (an arrival item of one record); with a record TTL as before arrival items: 1 read, + the output items and a chunk when the item is pending |
//! | `acquire`, `renew` | 0 (+ 1 for the schema item, on a manifest value's first `acquire`) | 1 |
//! | `release` | 1 + all object and arrival items of the partition (counting, twice: the count and the record it answers) + the output items, and with derived outputs the chunks holding stored-pending keys (about 0.05 per source they hold) | 1 |
//! | `objects` (one page of n) | about n object items, over 16 Queries (all states once the partition has arrival items; none on a later page once a scan of this manifest value found the shards empty, see `arrivals::ArrivalCursors`), + the partition's arrival items on a scan's first page (its cursor serves the next, after 1 Query of the items written since), + the output items, + the chunks of committed outputs whose key range holds a stored-pending key of the page (none on a first seal) | 0 |
//! | `record_placements` (n) | 1 + the arrival items written since the scan's cursor (none, mostly) + per shard the window's range (strongly consistent Queries, 4 KB a unit: about n / 13 + 16 for n object items of ~300 bytes; by key where a range is mostly other items) + the output items of its generation (the directory) | the chunk items' size: about 0.2 per source, + the output item (its directory) |
//! | `begin_output`, `commit_output`, `abandon_output`, `mark_missing` | 2 to 3 (`mark_missing` of a source recorded by arrivals alone: + the partition's arrival items) | 4 to 6 (a transaction of 2 or 3 items) |
//! | `mark_compacted` (n sources) | the output items | 1 on the output item (0 once done); for outputs placed before chunk directories, + the chunks (about n / 20) read and n written in n / 25 `BatchExecuteStatement`s |
//! | `mark_expiry` (n keys) | n (the items, by key) + the output items and the chunks holding derived ones | n in n / 25 `BatchExecuteStatement`s (+ n for the index's copy, for objects placed before chunks); the seal calls it for exceptions only (changed, gone, tag limit), or for every source with a record TTL |
//! | `output_placements` (a page of n) | the chunks holding them (about n / 20, strongly consistent) + 1 Query to find the first | 0 |
//! | `advance_expiry` | 2 (the output's pointer and item) | 1 (the output item), per page of sources marked |
//! | `partition`, `partitions`, `closed_partitions` | all object, arrival and output items of each partition returned, and with derived outputs the chunks holding stored-pending keys | 0 |
//! | `object` | 1, + the partition's arrival items, + when pending the output items and the chunk holding the key (up to 75 per 300 KB chunk) | 0 |
//! | `closed_partition_keys` | the index Query (keys and lease attributes) + 1 per partition returned | 0 |

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BatchStatementRequest, BillingMode, CancellationReason, ConditionCheck,
    GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::domain::layout::Layout;
use crate::domain::partition::PartitionKey;
use crate::domain::records::{
    source_expiry_mark, ExpiryCursor, ObjectRecord, ObjectState, OutputRecord, OutputState, PartitionRecord,
    PartitionState, Placement,
};
use crate::domain::sequencer;
use crate::ports::manifest::{
    HeldLock, IngestOutcome, Lease, Manifest, ManifestError, NewObject, ObjectQuery, RemovedObject, SourcePlacement,
};

mod arrivals;
mod derived;
mod ingest;
mod items;
mod manifest;
mod outputs;
mod partitions;
mod placed_versions;
mod placements;
mod requests;
mod scan;
mod table;

pub use items::object_shard;
use items::*;
use requests::*;

const BACKEND_NAME: &str = "dynamodb";

/// How many keys a partition's object items are spread over. Part of the table's format: a
/// table written with one value cannot be read with another.
pub const OBJECT_SHARDS: u32 = 16;

/// The sparse index of partitions that have (or may have) pending objects, by close time.
pub const PENDING_INDEX: &str = "pending_partitions_by_close_time";
/// The index of placed objects by output and offset.
pub const SOURCES_INDEX: &str = "sources_by_output_offset";
/// The index of every partition in (bucket, path) order.
pub const PARTITIONS_INDEX: &str = "partitions_by_bucket_and_path";

/// The attribute the table's time to live reads: epoch seconds after which DynamoDB deletes
/// the item. Written on marked object items only, and only with a record TTL.
pub const RECORD_EXPIRY_ATTRIBUTE: &str = "expires_at";

/// How often a read-decide-write is tried before the call fails: each retry means another
/// writer changed the item in between, which takes a very hot key to happen more than once.
pub const OPTIMISTIC_ATTEMPTS: usize = 8;

/// The item layout this build writes, recorded in the table's schema item by `create_table`
/// (`s3-compactor init`), and by a seal's first `acquire` on a table of an older one. 1: before
/// the marker existed; 2: placement chunks carry ETags and sizes, and outputs an expiry cursor;
/// 3: outputs carry a chunk directory and their sources are derived compacted, never flipped
/// (`derived`), which a build of schema 2 would read as pending and compact again; 4: ingest
/// appends arrival items (`arrivals`), which a build of schema 3 would not read at all (its
/// release would seal a partition whose objects it never saw). All read the same way here, so
/// an older table needs no migration; a table of a newer schema is refused, never misread.
/// Ingest records this build's version before its first arrival item, as the seal does before
/// its first lock.
pub const SCHEMA_VERSION: u64 = 4;

/// How many attempts the SDK makes for a throttled or failed request (standard retry mode,
/// exponential back-off with jitter) before the error reaches the caller.
pub const SDK_MAX_ATTEMPTS: u32 = 8;

/// Concurrent single-item requests of one call (`mark_compacted`, `mark_expiry`, reads of a
/// placement batch): enough to hide latency, few enough to stay polite to a shared table.
const CONCURRENT_REQUESTS: usize = 16;

/// How long `create_table` waits for the table and its indexes to become active.
const TABLE_ACTIVE_TIMEOUT: StdDuration = StdDuration::from_secs(300);

const PARTITION_SORT_KEY: &str = "#PARTITION";
const OUTPUT_POINTER_SORT_KEY: &str = "#";
const OUTPUT_SORT_KEY_PREFIX: &str = "OUT#";
const PENDING_FLAG: &str = "PENDING";
const PARTITIONS_FLAG: &str = "PARTITION";

type Item = HashMap<String, AttributeValue>;

/// The retry set-up of every client this adapter builds: standard mode, [`SDK_MAX_ATTEMPTS`]
/// attempts, so a burst of throttling is absorbed before it becomes an error.
pub fn retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard().with_max_attempts(SDK_MAX_ATTEMPTS)
}

/// A DynamoDB client from the standard environment (`AWS_REGION`, `AWS_PROFILE`, credentials,
/// `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_DYNAMODB`), with [`retry_config`]. An explicit
/// `endpoint_url` (a local server, a VPC endpoint) overrides the environment's.
pub async fn client_for(endpoint_url: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry_config());
    if let Some(endpoint_url) = endpoint_url {
        loader = loader.endpoint_url(endpoint_url);
    }
    Client::new(&loader.load().await)
}

/// The ways this adapter fails besides the domain's errors, with what to do about each.
#[derive(Debug, thiserror::Error)]
enum DynamoDbManifestError {
    #[error(
        "the manifest table {table} does not exist (or is in another region or account): create it with \
         `s3-compactor init` (DynamoDbManifest::create_table), or point the manifest at the right table and region"
    )]
    MissingTable { table: String },
    #[error(
        "DynamoDB throttled {operation} on table {table} after {SDK_MAX_ATTEMPTS} attempts: the table's or a key's \
         throughput is exhausted; retry later, or raise the table's on-demand maximum"
    )]
    Throttled {
        table: String,
        operation: &'static str,
        #[source]
        source: aws_sdk_dynamodb::Error,
    },
    #[error("DynamoDB {operation} on table {table} failed")]
    Request {
        table: String,
        operation: &'static str,
        #[source]
        source: aws_sdk_dynamodb::Error,
    },
    #[error("item {item} of table {table} has no valid {attribute}: the table holds data this build cannot read")]
    Malformed { table: String, item: String, attribute: &'static str },
    #[error("{what} kept changing under this call for {OPTIMISTIC_ATTEMPTS} attempts: retry it")]
    Contended { what: String },
    #[error(
        "DynamoDB refused a statement of a BatchExecuteStatement ({code}: {message}): check the table's permissions \
         (dynamodb:PartiQLUpdate) and that it was created by `s3-compactor init`"
    )]
    Statement { code: String, message: String },
    #[error(
        "table {table} holds schema version {found}, newer than this build's {SCHEMA_VERSION}: it was written by a \
         newer s3-compactor; upgrade this one (every seal, ingest and CLI) before using the table"
    )]
    NewerSchema { table: String, found: u64 },
    #[error("{now} + lease of {lease_for} is past the end of time: use a shorter lease")]
    LeaseOverflow { now: DateTime<Utc>, lease_for: Duration },
    #[error("{what} belongs to partition {found}, not to the leased partition {leased}: this is a bug in the caller")]
    WrongPartition { what: String, found: PartitionKey, leased: PartitionKey },
    #[error("table {table} did not become active within {timeout:?}: check it in the DynamoDB console")]
    NotActive { table: String, timeout: StdDuration },
    #[error("could not build a DynamoDB request: {0}")]
    Build(#[from] BuildError),
    #[error(
        "table {table} already expires items by attribute {attribute:?}, and a table has one time-to-live \
         attribute: the manifest's record expiry needs {RECORD_EXPIRY_ATTRIBUTE:?}; use a table of its own for the \
         manifest"
    )]
    ForeignTimeToLive { table: String, attribute: String },
    #[error("arrival item {pk} / {sk} of table {table} cannot be read: {source}")]
    DamagedArrivals {
        table: String,
        pk: String,
        sk: String,
        #[source]
        source: crate::domain::arrivals::ArrivalsError,
    },
}

impl From<DynamoDbManifestError> for ManifestError {
    fn from(error: DynamoDbManifestError) -> Self {
        ManifestError::backend(BACKEND_NAME, error)
    }
}

/// What a failed request means to the caller, from the SDK's typed error.
enum Failure {
    /// `ConditionalCheckFailedException`, with the item as it was when
    /// `ReturnValuesOnConditionCheckFailure = ALL_OLD` asked for it.
    ConditionFailed(Option<Item>),
    /// `TransactionCanceledException`: one code per action of the transaction, in order
    /// (`None`, `ConditionalCheckFailed`, `TransactionConflict`, ...).
    TransactionCanceled(Vec<String>),
    Other(ManifestError),
}

/// DynamoDB as the manifest. Cheap to clone: clones share the client's connection pool.
#[derive(Clone)]
pub struct DynamoDbManifest {
    client: Client,
    table: String,
    layout: Layout,
    /// How long an object item outlives its expiry mark; `None` keeps it.
    record_ttl: Option<Duration>,
    /// The table's schema, checked once, by the first seal call (see [`SCHEMA_VERSION`]).
    schema_checked: std::sync::Arc<tokio::sync::OnceCell<()>>,
    /// Committed outputs' chunks read lately, for derivation (see `derived`).
    chunk_cache: std::sync::Arc<derived::ChunkCache>,
    /// Cursors over partitions' arrival records, kept between the pages of a scan (`arrivals`).
    arrival_cursors: std::sync::Arc<arrivals::ArrivalCursors>,
}

impl fmt::Debug for DynamoDbManifest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DynamoDbManifest")
            .field("table", &self.table)
            .field("layout", &self.layout.as_str())
            .field("record_ttl", &self.record_ttl)
            .finish_non_exhaustive()
    }
}

impl DynamoDbManifest {
    /// A manifest on `table`, whose source keys follow `layout` (see the module doc: changing
    /// the layout after ingest needs a re-ingest).
    pub fn new(client: Client, table: impl Into<String>, layout: Layout) -> Self {
        Self {
            client,
            table: table.into(),
            layout,
            record_ttl: None,
            schema_checked: Default::default(),
            chunk_cache: Default::default(),
            arrival_cursors: Default::default(),
        }
    }

    /// Lets DynamoDB delete a source's object item `record_ttl` after the source was marked for
    /// expiry (see the module doc); `None`, the default, keeps every record.
    pub fn with_record_ttl(mut self, record_ttl: Option<Duration>) -> Self {
        self.record_ttl = record_ttl;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

#[cfg(test)]
mod tests;
