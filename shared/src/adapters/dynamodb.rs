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
//! | object | `O#{bucket}#{path}#{shard:02}` | the object key | `bucket`, `partition_path`, `size`, `etag`?, `sequencer`, `event_time`, `state`, `note`?, `expiry_marked_at`?, `expires_at`?; once compacted: `output_key`, `output_generation`, `output_offset`, `output_length`, `output_sha256`, `output_separator_bytes`; `gsi2pk`, `gsi2sk` only on items placed by versions before placement chunks |
//! | output | `P#{bucket}#{path}` | `OUT#{generation:020}#{part:010}#{bucket}#{key}` | `bucket`, `key`, `partition_bucket`, `partition_path`, `generation`, `part_number`, `state`, `size`?, `sha256`?, `object_count`, `upload_id`?, `created_at`, `committed_at`?, `sources_compacted`? |
//! | placement chunk | `PL#{bucket}#{len(path)}#{path}{output key}` | first offset, 20 digits | `generation`, `placements` (JSON, up to 300 KB): see the `placements` module |
//! | output pointer | `OUTKEY#{bucket}#{key}` | `#` | `target_pk`, `target_sk`: where the output item is |
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
//! # How it differs from SQLite
//! - **Batched conditional updates.** The seal's per-source writes (`mark_compacted`,
//!   `mark_expiry`) are single-item conditional PartiQL `UPDATE`s sent 25 to a
//!   `BatchExecuteStatement`: the same write units as `UpdateItem`, a 25th of the requests (the
//!   seal's role needs `dynamodb:PartiQLUpdate`; see `sam/template.yaml`).
//! - **Conditional writes instead of transactions.** Every read-then-write reads the item, decides
//!   in Rust (sequencers compare right-padded, which no condition expression can do), and writes
//!   with a condition that the item still holds what was read; on `ConditionalCheckFailed` it
//!   reads again, up to [`OPTIMISTIC_ATTEMPTS`] times. Fenced writes to other items than the
//!   partition are `TransactWriteItems` with a `ConditionCheck` of the partition's generation
//!   and lock owner.
//! - **Counts are derived by reading the objects, not kept.** A partition's pending and
//!   compacted counts are sums over its object items (one paged Query per shard), and its
//!   committed outputs a Query of its output items. Counters on the partition item would make
//!   it a hot key updated on every ingest. The cost of `partition()`, `partitions()`,
//!   `closed_partitions()` and `release()` therefore grows with the partition's objects: they
//!   are for seals and audits, not for per-event paths. Which partitions to seal never
//!   depends on counts: the sparse [`PENDING_INDEX`] answers it in one Query, and
//!   `closed_partition_keys()`, which the seal calls, returns that answer without counting.
//! - **Indexes are eventually consistent.** `closed_partitions`, `partitions` and
//!   `output_sources` read global secondary indexes, which lag writes by a fraction of a
//!   second; `acquire` and the other writes re-check the item itself, so a stale answer only
//!   delays a seal. `mark_compacted` and `output_sources` read an output's placement chunks, on
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
//!   `NotFound`. `abandon_output` on an abandoned output succeeds.
//! - A removal moves the record's sequencer and event time to the removal's, so a replayed
//!   creation of the removed version stays stale; its placement, if any, stays for the audit.
//! - `sealed_at` is the time of the last seal; a reopened partition keeps it.
//! - Times are kept to the microsecond.
//!
//! # The race between ingest and release
//! `release` may seal a partition (drop it from [`PENDING_INDEX`]) only if no pending object
//! can be left behind. Ingest writes the object first, then makes sure the partition item is
//! flagged; release reads the partition item's `ingest_counter`, counts pending objects across
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
//! count against the item's 1,000 writes/s); the alternative, one partition write per partition
//! per SQS batch, needs the ingest engine to batch and is not done here.
//!
//! # Costs per operation (items under 1 KB; a transaction costs double)
//! | call | reads (RCU) | writes (WCU) |
//! |---|---|---|
//! | `record_object` | 2 strongly consistent GetItems (object, partition) | 1 Put; + 1 Update when the partition is new, sealed or sealing |
//! | `record_removal` | 1 | 1 |
//! | `acquire`, `renew` | 0 | 1 |
//! | `release` | 1 + all object items of the partition (counting) | 1 |
//! | `objects` (one page of n) | about n, over 16 Queries | 0 |
//! | `record_placements` (n) | 1 + n (strongly consistent, in `BatchGetItem`s of 100) | the chunk items' size: about 0.2 per source |
//! | `begin_output`, `commit_output`, `abandon_output`, `mark_missing` | 2 to 3 | 4 to 6 (a transaction of 2 or 3 items) |
//! | `mark_compacted` (n sources) | the output items, and the chunks (about n / 20) | n in n / 25 `BatchExecuteStatement`s, + 1 on the output item (0 once done) |
//! | `mark_expiry` (n keys) | 0 | n in n / 25 `BatchExecuteStatement`s (+ n for the index's copy, for objects placed before chunks) |
//! | `partition`, `partitions`, `closed_partitions` | all object and output items of each partition returned | 0 |
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
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, Select, TableStatus, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::domain::layout::Layout;
use crate::domain::partition::PartitionKey;
use crate::domain::records::{
    ObjectRecord, ObjectState, OutputRecord, OutputState, PartitionRecord, PartitionState, Placement,
};
use crate::domain::sequencer;
use crate::ports::manifest::{
    HeldLock, IngestOutcome, Lease, Manifest, ManifestError, NewObject, ObjectQuery, RemovedObject, SourcePlacement,
};

mod placements;

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

// ── keys ────────────────────────────────────────────────────────────────────────────────────

fn partition_item_pk(bucket: &str, path: &str) -> String {
    format!("P#{bucket}#{path}")
}

/// The shard of an object key: FNV-1a (64 bit) of its UTF-8 bytes, modulo [`OBJECT_SHARDS`].
/// Part of the table's format; never change it.
pub fn object_shard(key: &str) -> u32 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME));
    (hash % u64::from(OBJECT_SHARDS)) as u32
}

fn object_shard_pk(bucket: &str, path: &str, shard: u32) -> String {
    format!("O#{bucket}#{path}#{shard:02}")
}

fn object_item_pk(bucket: &str, path: &str, key: &str) -> String {
    object_shard_pk(bucket, path, object_shard(key))
}

fn output_item_sk(output: &OutputRecord) -> String {
    format!(
        "{OUTPUT_SORT_KEY_PREFIX}{:020}#{:010}#{}#{}",
        output.generation, output.part_number, output.bucket, output.key
    )
}

fn output_pointer_pk(bucket: &str, key: &str) -> String {
    format!("OUTKEY#{bucket}#{key}")
}

/// The [`SOURCES_INDEX`] key of an output's sources. The path's length keeps a path holding
/// `#` from ever reading as another (path, output key) pair.
fn sources_index_pk(source_bucket: &str, partition_path: &str, output_key: &str) -> String {
    format!("{source_bucket}#{}#{partition_path}{output_key}", partition_path.len())
}

/// Microseconds as 20 digits whose string order is numeric order, negatives included.
fn ordered_micros(micros: i64) -> String {
    format!("{:020}", (micros as u64) ^ (1 << 63))
}

fn pending_index_sk(closes_at: DateTime<Utc>, path: &str, bucket: &str) -> String {
    format!("{}#{path}#{bucket}", ordered_micros(closes_at.timestamp_micros()))
}

fn partitions_index_sk(bucket: &str, path: &str) -> String {
    // Bucket names only hold [a-z0-9.-], all after '#': string order is (bucket, path) order.
    format!("{bucket}#{path}")
}

fn key_of(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), AttributeValue::S(pk)), ("sk".to_owned(), AttributeValue::S(sk.into()))])
}

// ── attribute values ────────────────────────────────────────────────────────────────────────

fn string_value(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn number_value(value: impl fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn time_value(time: DateTime<Utc>) -> AttributeValue {
    number_value(micros(time))
}

/// Drops what the table does not keep, so that returned values equal what a later read returns.
fn truncated_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// `#name` → `name` for every `#name` in the expressions: the attribute names this adapter
/// uses include DynamoDB reserved words (`state`, `size`, `key`, `bucket`), so every
/// expression names attributes through placeholders.
fn names_in(expressions: &[&str]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for expression in expressions {
        let mut rest = *expression;
        while let Some(start) = rest.find('#') {
            let after = &rest[start + 1..];
            let length = after.find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'));
            let name = &after[..length.unwrap_or(after.len())];
            if !name.is_empty() {
                names.insert(format!("#{name}"), name.to_owned());
            }
            rest = &after[name.len()..];
        }
    }
    names
}

fn values<const N: usize>(pairs: [(&str, AttributeValue); N]) -> HashMap<String, AttributeValue> {
    pairs.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
}

/// Reads typed attributes of one item, naming the item in errors.
struct ItemReader<'item> {
    item: &'item Item,
    table: &'item str,
}

impl<'item> ItemReader<'item> {
    fn new(item: &'item Item, table: &'item str) -> Self {
        Self { item, table }
    }

    fn malformed(&self, attribute: &'static str) -> ManifestError {
        let describe = |name: &str| match self.item.get(name) {
            Some(AttributeValue::S(text)) => text.clone(),
            _ => "?".to_owned(),
        };
        DynamoDbManifestError::Malformed {
            table: self.table.to_owned(),
            item: format!("({}, {})", describe("pk"), describe("sk")),
            attribute,
        }
        .into()
    }

    fn optional_string(&self, attribute: &'static str) -> Result<Option<String>, ManifestError> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(text)) => Ok(Some(text.clone())),
            Some(_) => Err(self.malformed(attribute)),
        }
    }

    fn string(&self, attribute: &'static str) -> Result<String, ManifestError> {
        self.optional_string(attribute)?.ok_or_else(|| self.malformed(attribute))
    }

    fn optional_number<T: FromStr>(&self, attribute: &'static str) -> Result<Option<T>, ManifestError> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(text)) => text.parse().map(Some).map_err(|_| self.malformed(attribute)),
            Some(_) => Err(self.malformed(attribute)),
        }
    }

    fn number<T: FromStr>(&self, attribute: &'static str) -> Result<T, ManifestError> {
        self.optional_number(attribute)?.ok_or_else(|| self.malformed(attribute))
    }

    fn optional_time(&self, attribute: &'static str) -> Result<Option<DateTime<Utc>>, ManifestError> {
        match self.optional_number::<i64>(attribute)? {
            None => Ok(None),
            Some(value) => DateTime::from_timestamp_micros(value).map(Some).ok_or_else(|| self.malformed(attribute)),
        }
    }

    fn time(&self, attribute: &'static str) -> Result<DateTime<Utc>, ManifestError> {
        self.optional_time(attribute)?.ok_or_else(|| self.malformed(attribute))
    }

    fn state<S: FromStr>(&self, attribute: &'static str) -> Result<S, ManifestError> {
        self.string(attribute)?.parse().map_err(|_| self.malformed(attribute))
    }

    fn has(&self, attribute: &str) -> bool {
        self.item.contains_key(attribute)
    }
}

/// A partition item without its derived counts.
struct StoredPartition {
    key: PartitionKey,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    closes_at: DateTime<Utc>,
    state: PartitionState,
    generation: u64,
    lock_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    sealed_at: Option<DateTime<Utc>>,
    /// Absent on items written before the counter existed; ingest creates it.
    ingest_counter: Option<u64>,
    flagged_pending: bool,
}

impl StoredPartition {
    fn from_item(item: &Item, table: &str) -> Result<Self, ManifestError> {
        let reader = ItemReader::new(item, table);
        Ok(Self {
            key: PartitionKey { bucket: reader.string("bucket")?, path: reader.string("path")? },
            period_start: reader.time("period_start")?,
            period_end: reader.time("period_end")?,
            closes_at: reader.time("closes_at")?,
            state: reader.state("state")?,
            generation: reader.number("generation")?,
            lock_owner: reader.optional_string("lock_owner")?,
            lease_expires_at: reader.optional_time("lease_expires_at")?,
            sealed_at: reader.optional_time("sealed_at")?,
            ingest_counter: reader.optional_number("ingest_counter")?,
            flagged_pending: reader.has("gsi1pk"),
        })
    }

    fn holds(&self, lease: &Lease) -> bool {
        self.generation == lease.generation && self.lock_owner.as_deref() == Some(lease.owner.as_str())
    }

    fn with_counts(self, counts: PartitionCounts) -> PartitionRecord {
        PartitionRecord {
            key: self.key,
            period_start: self.period_start,
            period_end: self.period_end,
            closes_at: self.closes_at,
            state: self.state,
            generation: self.generation,
            lock_owner: self.lock_owner,
            lease_expires_at: self.lease_expires_at,
            pending_objects: counts.pending_objects,
            pending_bytes: counts.pending_bytes,
            compacted_objects: counts.compacted_objects,
            compacted_bytes: counts.compacted_bytes,
            committed_outputs: counts.committed_outputs,
            sealed_at: self.sealed_at,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PartitionCounts {
    pending_objects: u64,
    pending_bytes: u64,
    compacted_objects: u64,
    compacted_bytes: u64,
    committed_outputs: u64,
}

fn object_from_item(item: &Item, table: &str) -> Result<ObjectRecord, ManifestError> {
    let reader = ItemReader::new(item, table);
    let placement = match reader.optional_string("output_key")? {
        None => None,
        Some(output_key) => Some(Placement {
            output_key,
            generation: reader.number("output_generation")?,
            offset: reader.number("output_offset")?,
            length: reader.number("output_length")?,
            sha256: reader.string("output_sha256")?,
            separator_bytes: reader.number("output_separator_bytes")?,
        }),
    };
    Ok(ObjectRecord {
        bucket: reader.string("bucket")?,
        key: reader.string("sk")?,
        partition_path: reader.string("partition_path")?,
        size: reader.number("size")?,
        etag: reader.optional_string("etag")?,
        sequencer: reader.optional_string("sequencer")?.unwrap_or_default(),
        event_time: reader.time("event_time")?,
        state: reader.state("state")?,
        placement,
        expiry_marked_at: reader.optional_time("expiry_marked_at")?,
        note: reader.optional_string("note")?,
    })
}

fn output_from_item(item: &Item, table: &str) -> Result<OutputRecord, ManifestError> {
    let reader = ItemReader::new(item, table);
    Ok(OutputRecord {
        bucket: reader.string("bucket")?,
        key: reader.string("key")?,
        partition: PartitionKey { bucket: reader.string("partition_bucket")?, path: reader.string("partition_path")? },
        generation: reader.number("generation")?,
        part_number: reader.number("part_number")?,
        state: reader.state("state")?,
        size: reader.optional_number("size")?,
        sha256: reader.optional_string("sha256")?,
        object_count: reader.number("object_count")?,
        upload_id: reader.optional_string("upload_id")?,
        created_at: reader.time("created_at")?,
        committed_at: reader.optional_time("committed_at")?,
    })
}

/// The item of a newly recorded object version: a full replacement, so that nothing decided
/// about an older version (placement, compaction, expiry, note) carries over.
fn new_object_item(object: &NewObject) -> Item {
    let mut item = key_of(object_item_pk(&object.bucket, &object.partition.path, &object.key), object.key.clone());
    item.insert("bucket".to_owned(), string_value(&object.bucket));
    item.insert("partition_path".to_owned(), string_value(&object.partition.path));
    item.insert("size".to_owned(), number_value(object.size));
    if let Some(etag) = &object.etag {
        item.insert("etag".to_owned(), string_value(etag));
    }
    item.insert("sequencer".to_owned(), string_value(&object.sequencer));
    item.insert("event_time".to_owned(), time_value(object.event_time));
    item.insert("state".to_owned(), string_value(ObjectState::Pending.as_str()));
    item
}

fn new_partition_item(object: &NewObject) -> Item {
    let path = &object.partition.path;
    let mut item = key_of(partition_item_pk(&object.bucket, path), PARTITION_SORT_KEY);
    item.insert("bucket".to_owned(), string_value(&object.bucket));
    item.insert("path".to_owned(), string_value(path));
    item.insert("period_start".to_owned(), time_value(object.partition.period.start));
    item.insert("period_end".to_owned(), time_value(object.partition.period.end));
    item.insert("closes_at".to_owned(), time_value(object.closes_at));
    item.insert("state".to_owned(), string_value(PartitionState::Open.as_str()));
    item.insert("generation".to_owned(), number_value(0));
    item.insert("ingest_counter".to_owned(), number_value(1));
    item.insert("gsi1pk".to_owned(), string_value(PENDING_FLAG));
    item.insert("gsi1sk".to_owned(), string_value(pending_index_sk(object.closes_at, path, &object.bucket)));
    item.insert("gsi3pk".to_owned(), string_value(PARTITIONS_FLAG));
    item.insert("gsi3sk".to_owned(), string_value(partitions_index_sk(&object.bucket, path)));
    item
}

fn cancellation_codes(reasons: &[CancellationReason]) -> Vec<String> {
    reasons.iter().map(|reason| reason.code().unwrap_or("None").to_owned()).collect()
}

const CONDITION_FAILED_CODE: &str = "ConditionalCheckFailed";

/// What release step one saw.
struct ReleaseCount {
    stored: StoredPartition,
    pending_objects: u64,
}

/// What a canceled fenced transaction (the fence check first) means.
enum TransactionOutcome {
    Committed,
    /// An item other than the fence changed since it was read: read again and retry.
    Conflict,
}

impl DynamoDbManifest {
    /// A manifest on `table`, whose source keys follow `layout` (see the module doc: changing
    /// the layout after ingest needs a re-ingest).
    pub fn new(client: Client, table: impl Into<String>, layout: Layout) -> Self {
        Self { client, table: table.into(), layout, record_ttl: None }
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

    /// Creates the table with the schema of the module doc (on-demand billing, the three
    /// indexes), waits until it and its indexes are active, and enables its time to live on
    /// [`RECORD_EXPIRY_ATTRIBUTE`] (harmless while no item carries it, and ready for
    /// `COMPACTOR_RECORD_TTL`). A table that already exists keeps its schema; its time to live
    /// is enabled if it is not, which a table made before record expiry existed needs.
    pub async fn create_table(&self) -> Result<(), ManifestError> {
        let string_attribute = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build()
        };
        let key =
            |name: &str, key_type: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(key_type).build();
        let index = |name: &str, hash: &str, range: &str, projection: Projection| -> Result<_, BuildError> {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(hash, KeyType::Hash)?)
                .key_schema(key(range, KeyType::Range)?)
                .projection(projection)
                .build()
        };
        let build = || -> Result<_, BuildError> {
            Ok(self
                .client
                .create_table()
                .table_name(&self.table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(string_attribute("pk")?)
                .attribute_definitions(string_attribute("sk")?)
                .attribute_definitions(string_attribute("gsi1pk")?)
                .attribute_definitions(string_attribute("gsi1sk")?)
                .attribute_definitions(string_attribute("gsi2pk")?)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("gsi2sk")
                        .attribute_type(ScalarAttributeType::N)
                        .build()?,
                )
                .attribute_definitions(string_attribute("gsi3pk")?)
                .attribute_definitions(string_attribute("gsi3sk")?)
                .key_schema(key("pk", KeyType::Hash)?)
                .key_schema(key("sk", KeyType::Range)?)
                // The lease attributes are projected so the lease filter runs on the index;
                // other partition updates then never touch the index.
                .global_secondary_indexes(index(
                    PENDING_INDEX,
                    "gsi1pk",
                    "gsi1sk",
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("lock_owner")
                        .non_key_attributes("lease_expires_at")
                        .build(),
                )?)
                // All attributes: `output_sources` answers from the index without a read per
                // source.
                .global_secondary_indexes(index(
                    SOURCES_INDEX,
                    "gsi2pk",
                    "gsi2sk",
                    Projection::builder().projection_type(ProjectionType::All).build(),
                )?)
                // Keys only: the index is written when a partition is created, never after.
                .global_secondary_indexes(index(
                    PARTITIONS_INDEX,
                    "gsi3pk",
                    "gsi3sk",
                    Projection::builder().projection_type(ProjectionType::KeysOnly).build(),
                )?))
        };
        let request = build().map_err(DynamoDbManifestError::Build)?;
        match request.send().await.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(_) | Err(aws_sdk_dynamodb::Error::ResourceInUseException(_)) => {}
            Err(error) => return Err(self.request_error("CreateTable", error)),
        }
        self.wait_until_active().await?;
        self.enable_record_expiry().await
    }

    /// Turns the table's time to live on for [`RECORD_EXPIRY_ATTRIBUTE`], unless it already is.
    async fn enable_record_expiry(&self) -> Result<(), ManifestError> {
        use aws_sdk_dynamodb::types::{TimeToLiveSpecification, TimeToLiveStatus};
        let described = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|error| self.request_error("DescribeTimeToLive", error.into()))?;
        let description = described.time_to_live_description();
        let status = description.and_then(|description| description.time_to_live_status());
        let attribute = description.and_then(|description| description.attribute_name());
        match (status, attribute) {
            (Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling), Some(RECORD_EXPIRY_ATTRIBUTE)) => Ok(()),
            (Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling), Some(other)) => {
                Err(DynamoDbManifestError::ForeignTimeToLive { table: self.table.clone(), attribute: other.to_owned() }
                    .into())
            }
            _ => {
                let specification = TimeToLiveSpecification::builder()
                    .attribute_name(RECORD_EXPIRY_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(DynamoDbManifestError::Build)?;
                self.client
                    .update_time_to_live()
                    .table_name(&self.table)
                    .time_to_live_specification(specification)
                    .send()
                    .await
                    .map_err(|error| self.request_error("UpdateTimeToLive", error.into()))?;
                Ok(())
            }
        }
    }

    async fn wait_until_active(&self) -> Result<(), ManifestError> {
        let started = tokio::time::Instant::now();
        loop {
            let description = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|error| self.request_error("DescribeTable", error.into()))?;
            let table = description.table();
            let table_active = table.and_then(|table| table.table_status()) == Some(&TableStatus::Active);
            let indexes_active =
                table.map(|table| table.global_secondary_indexes()).unwrap_or_default().iter().all(|index| {
                    index.index_status().is_none_or(|status| *status == aws_sdk_dynamodb::types::IndexStatus::Active)
                });
            if table_active && indexes_active {
                return Ok(());
            }
            if started.elapsed() > TABLE_ACTIVE_TIMEOUT {
                return Err(DynamoDbManifestError::NotActive {
                    table: self.table.clone(),
                    timeout: TABLE_ACTIVE_TIMEOUT,
                }
                .into());
            }
            tokio::time::sleep(StdDuration::from_millis(250)).await;
        }
    }

    // ── errors ──────────────────────────────────────────────────────────────────────────

    fn request_error(&self, operation: &'static str, error: aws_sdk_dynamodb::Error) -> ManifestError {
        use aws_sdk_dynamodb::Error as SdkError;
        let table = self.table.clone();
        match error {
            SdkError::ResourceNotFoundException(_) => DynamoDbManifestError::MissingTable { table }.into(),
            SdkError::ProvisionedThroughputExceededException(_)
            | SdkError::RequestLimitExceeded(_)
            | SdkError::ThrottlingException(_) => {
                DynamoDbManifestError::Throttled { table, operation, source: error }.into()
            }
            other => DynamoDbManifestError::Request { table, operation, source: other }.into(),
        }
    }

    /// Sorts a failure into what callers act on: a failed condition, a canceled transaction,
    /// or an error for the caller (a missing table, throttling after retries, anything else).
    fn classify(&self, operation: &'static str, error: aws_sdk_dynamodb::Error) -> Failure {
        match error {
            aws_sdk_dynamodb::Error::ConditionalCheckFailedException(failed) => {
                Failure::ConditionFailed(failed.item().cloned())
            }
            aws_sdk_dynamodb::Error::TransactionCanceledException(canceled) => {
                Failure::TransactionCanceled(cancellation_codes(canceled.cancellation_reasons()))
            }
            other => Failure::Other(self.request_error(operation, other)),
        }
    }

    // ── single-item requests ────────────────────────────────────────────────────────────

    /// A strongly consistent read of one item.
    async fn get_item(&self, key: Item) -> Result<Option<Item>, ManifestError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| self.request_error("GetItem", error.into()))?;
        Ok(output.item)
    }

    async fn get_partition(&self, key: &PartitionKey) -> Result<Option<StoredPartition>, ManifestError> {
        let item = self.get_item(key_of(partition_item_pk(&key.bucket, &key.path), PARTITION_SORT_KEY)).await?;
        item.map(|item| StoredPartition::from_item(&item, &self.table)).transpose()
    }

    /// The fencing rule of every call that takes a [`Lease`]: the partition's generation and
    /// lock owner must still be the lease's. Expiry is not checked: a lease past its expiry
    /// that nobody took over is still the newest, and a takeover bumps the generation, which
    /// is what fences. Writes re-check it atomically ([`Self::fence_check`]); this read gives
    /// the error before any other (as SQLite checks it first).
    async fn check_fence(&self, lease: &Lease) -> Result<StoredPartition, ManifestError> {
        match self.get_partition(&lease.partition).await? {
            Some(partition) if partition.holds(lease) => Ok(partition),
            _ => Err(lease_lost(lease)),
        }
    }

    /// The fencing condition as a transaction's first action.
    fn fence_check(&self, lease: &Lease) -> Result<TransactWriteItem, ManifestError> {
        let condition = "#generation = :lease_generation AND #lock_owner = :lease_owner";
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key_of(
                partition_item_pk(&lease.partition.bucket, &lease.partition.path),
                PARTITION_SORT_KEY,
            )))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_in(&[condition])))
            .set_expression_attribute_values(Some(values([
                (":lease_generation", number_value(lease.generation)),
                (":lease_owner", string_value(&lease.owner)),
            ])))
            .build()
            .map_err(DynamoDbManifestError::Build)?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Runs a transaction whose first action is the lease's fence check.
    async fn fenced_transaction(
        &self,
        lease: &Lease,
        writes: Vec<TransactWriteItem>,
    ) -> Result<TransactionOutcome, ManifestError> {
        let mut actions = Vec::with_capacity(writes.len() + 1);
        actions.push(self.fence_check(lease)?);
        actions.extend(writes);
        let result = self.client.transact_write_items().set_transact_items(Some(actions)).send().await;
        match result.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(_) => Ok(TransactionOutcome::Committed),
            Err(error) => match self.classify("TransactWriteItems", error) {
                Failure::TransactionCanceled(codes) => {
                    if codes.first().map(String::as_str) == Some(CONDITION_FAILED_CODE) {
                        Err(lease_lost(lease))
                    } else {
                        // A changed item, or a conflict with another transaction on one of the
                        // items: both are resolved by reading again.
                        Ok(TransactionOutcome::Conflict)
                    }
                }
                Failure::ConditionFailed(_) => Ok(TransactionOutcome::Conflict),
                Failure::Other(error) => Err(error),
            },
        }
    }

    fn update(
        &self,
        key: Item,
        update_expression: &str,
        condition: &str,
        expression_values: HashMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, ManifestError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update_expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_in(&[update_expression, condition])))
            .set_expression_attribute_values(Some(expression_values).filter(|values| !values.is_empty()))
            .build()
            .map_err(DynamoDbManifestError::Build)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, ManifestError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_names(condition.map(|condition| names_in(&[condition])))
            .build()
            .map_err(DynamoDbManifestError::Build)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A conditional UpdateItem. `Ok(Err(old item))` when the condition failed.
    async fn conditional_update(
        &self,
        key: Item,
        update_expression: &str,
        condition: &str,
        expression_values: HashMap<String, AttributeValue>,
        return_new: bool,
    ) -> Result<Result<Option<Item>, Option<Item>>, ManifestError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update_expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_in(&[update_expression, condition])))
            .set_expression_attribute_values(Some(expression_values).filter(|values| !values.is_empty()))
            .return_values(if return_new { ReturnValue::AllNew } else { ReturnValue::None })
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(output) => Ok(Ok(output.attributes)),
            Err(error) => match self.classify("UpdateItem", error) {
                Failure::ConditionFailed(old_item) => Ok(Err(old_item)),
                Failure::TransactionCanceled(_) => Ok(Err(None)),
                Failure::Other(error) => Err(error),
            },
        }
    }

    /// A conditional PutItem: `Ok(false)` when the condition failed.
    async fn conditional_put(
        &self,
        item: Item,
        condition: &str,
        expression_values: HashMap<String, AttributeValue>,
    ) -> Result<bool, ManifestError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_in(&[condition])))
            .set_expression_attribute_values(Some(expression_values).filter(|values| !values.is_empty()))
            .send()
            .await;
        match result.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(_) => Ok(true),
            Err(error) => match self.classify("PutItem", error) {
                Failure::ConditionFailed(_) | Failure::TransactionCanceled(_) => Ok(false),
                Failure::Other(error) => Err(error),
            },
        }
    }

    // ── queries ─────────────────────────────────────────────────────────────────────────

    /// Every item of a Query, all pages.
    async fn query_all(
        &self,
        index: Option<&str>,
        key_condition: &str,
        filter: Option<&str>,
        expression_values: HashMap<String, AttributeValue>,
        consistent: bool,
    ) -> Result<Vec<Item>, ManifestError> {
        let mut items = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let page = self
                .query_page(index, key_condition, filter, expression_values.clone(), consistent, start_key, None)
                .await?;
            items.extend(page.items.unwrap_or_default());
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                return Ok(items);
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the fields of one Query request
    async fn query_page(
        &self,
        index: Option<&str>,
        key_condition: &str,
        filter: Option<&str>,
        expression_values: HashMap<String, AttributeValue>,
        consistent: bool,
        start_key: Option<Item>,
        limit: Option<i32>,
    ) -> Result<aws_sdk_dynamodb::operation::query::QueryOutput, ManifestError> {
        let mut expressions = vec![key_condition];
        expressions.extend(filter);
        self.client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(key_condition)
            .set_filter_expression(filter.map(str::to_owned))
            .set_expression_attribute_names(Some(names_in(&expressions)))
            .set_expression_attribute_values(Some(expression_values))
            // Global secondary indexes only serve eventually consistent reads.
            .consistent_read(consistent && index.is_none())
            .set_exclusive_start_key(start_key)
            .set_limit(limit)
            .send()
            .await
            .map_err(|error| self.request_error("Query", error.into()))
    }

    /// A partition's pending and compacted counts and bytes, summed over its shards, and its
    /// committed outputs. Reads every object item of the partition: see the module doc.
    async fn counts(&self, key: &PartitionKey) -> Result<PartitionCounts, ManifestError> {
        let shard_counts = stream::iter(0..OBJECT_SHARDS)
            .map(|shard| self.count_shard(object_shard_pk(&key.bucket, &key.path, shard)))
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<_>>();
        let (shard_counts, committed_outputs) = futures::try_join!(shard_counts, self.count_committed_outputs(key))?;
        let mut counts = PartitionCounts { committed_outputs, ..PartitionCounts::default() };
        for shard in shard_counts {
            counts.pending_objects += shard.pending_objects;
            counts.pending_bytes += shard.pending_bytes;
            counts.compacted_objects += shard.compacted_objects;
            counts.compacted_bytes += shard.compacted_bytes;
        }
        Ok(counts)
    }

    async fn count_shard(&self, shard_pk: String) -> Result<PartitionCounts, ManifestError> {
        let mut counts = PartitionCounts::default();
        let mut start_key: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .projection_expression("#state, #size")
                .set_expression_attribute_names(Some(names_in(&["#pk", "#state, #size"])))
                .expression_attribute_values(":pk", string_value(&shard_pk))
                .consistent_read(true)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|error| self.request_error("Query", error.into()))?;
            for item in page.items() {
                let reader = ItemReader::new(item, &self.table);
                let size: u64 = reader.number("size")?;
                match reader.state::<ObjectState>("state")? {
                    ObjectState::Pending => {
                        counts.pending_objects += 1;
                        counts.pending_bytes += size;
                    }
                    ObjectState::Compacted => {
                        counts.compacted_objects += 1;
                        counts.compacted_bytes += size;
                    }
                    ObjectState::Missing | ObjectState::Removed => {}
                }
            }
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                return Ok(counts);
            }
        }
    }

    /// Pending objects of a partition, counted by the server (`Select = COUNT`).
    async fn count_pending(&self, key: &PartitionKey) -> Result<u64, ManifestError> {
        let per_shard = stream::iter(0..OBJECT_SHARDS)
            .map(|shard| async move {
                let shard_pk = object_shard_pk(&key.bucket, &key.path, shard);
                let mut count = 0_u64;
                let mut start_key: Option<Item> = None;
                loop {
                    let page = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("#pk = :pk")
                        .filter_expression("#state = :pending")
                        .set_expression_attribute_names(Some(names_in(&["#pk", "#state"])))
                        .expression_attribute_values(":pk", string_value(&shard_pk))
                        .expression_attribute_values(":pending", string_value(ObjectState::Pending.as_str()))
                        .select(Select::Count)
                        .consistent_read(true)
                        .set_exclusive_start_key(start_key)
                        .send()
                        .await
                        .map_err(|error| self.request_error("Query", error.into()))?;
                    count += u64::try_from(page.count).unwrap_or(0);
                    start_key = page.last_evaluated_key;
                    if start_key.is_none() {
                        return Ok::<u64, ManifestError>(count);
                    }
                }
            })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<u64>>()
            .await?;
        Ok(per_shard.into_iter().sum())
    }

    async fn output_items(&self, key: &PartitionKey) -> Result<Vec<Item>, ManifestError> {
        self.query_all(
            None,
            "#pk = :pk AND begins_with(#sk, :output_prefix)",
            None,
            values([
                (":pk", string_value(partition_item_pk(&key.bucket, &key.path))),
                (":output_prefix", string_value(OUTPUT_SORT_KEY_PREFIX)),
            ]),
            true,
        )
        .await
    }

    async fn count_committed_outputs(&self, key: &PartitionKey) -> Result<u64, ManifestError> {
        let mut committed = 0;
        for item in self.output_items(key).await? {
            if ItemReader::new(&item, &self.table).state::<OutputState>("state")? == OutputState::Committed {
                committed += 1;
            }
        }
        Ok(committed)
    }

    /// Closed partitions flagged in [`PENDING_INDEX`] and not under a live lease, earliest
    /// close first, at most `limit`. Each is read back from its item, since the index lags the
    /// table. With `counted`, each comes with its record and only those with work are kept (a
    /// pending object, or an interrupted seal); without, every candidate is kept, uncounted.
    /// One page of [`PENDING_INDEX`]: the partitions flagged pending that closed at or before
    /// `now`, in close order, filtered on their lock by `lock_filter` (`:now` is `now`). The
    /// index projects the lock's owner and expiry, so the filter reads no item.
    async fn closed_pending_page(
        &self,
        now: DateTime<Utc>,
        lock_filter: &str,
        start_key: Option<Item>,
        limit: usize,
    ) -> Result<aws_sdk_dynamodb::operation::query::QueryOutput, ManifestError> {
        // Every sort key of a partition closed at or before `now` sorts before this bound.
        let bound = ordered_micros(micros(now).saturating_add(1));
        self.query_page(
            Some(PENDING_INDEX),
            "#gsi1pk = :pending_flag AND #gsi1sk < :bound",
            Some(lock_filter),
            values([
                (":pending_flag", string_value(PENDING_FLAG)),
                (":bound", string_value(bound)),
                (":now", time_value(now)),
            ]),
            false,
            start_key,
            Some(limit_i32(limit)),
        )
        .await
    }

    async fn closed_from_index(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        counted: bool,
    ) -> Result<Vec<(PartitionKey, Option<PartitionRecord>)>, ManifestError> {
        let mut closed = Vec::new();
        let mut start_key: Option<Item> = None;
        while closed.len() < limit {
            let page = self
                .closed_pending_page(
                    now,
                    "attribute_not_exists(#lock_owner) OR #lease_expires_at <= :now",
                    start_key.take(),
                    limit,
                )
                .await?;
            for item in page.items() {
                if closed.len() >= limit {
                    break;
                }
                let reader = ItemReader::new(item, &self.table);
                let Some(stored) = self.get_item(key_of(reader.string("pk")?, reader.string("sk")?)).await? else {
                    continue;
                };
                let stored = StoredPartition::from_item(&stored, &self.table)?;
                // The index lags the table: re-check what the query filtered on.
                let lease_live =
                    stored.lock_owner.is_some() && stored.lease_expires_at.is_some_and(|expiry| expiry > now);
                if lease_live || !stored.flagged_pending || stored.closes_at > now {
                    continue;
                }
                if !counted {
                    closed.push((stored.key, None));
                    continue;
                }
                let record = self.partition_record(stored).await?;
                // An interrupted seal (still `sealing`, its lease expired) is work even with
                // nothing pending: its commits may need finishing and its sources marking.
                if record.pending_objects > 0 || record.state == PartitionState::Sealing {
                    closed.push((record.key.clone(), Some(record)));
                }
            }
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                break;
            }
        }
        Ok(closed)
    }

    async fn partition_record(&self, stored: StoredPartition) -> Result<PartitionRecord, ManifestError> {
        let counts = self.counts(&stored.key).await?;
        Ok(stored.with_counts(counts))
    }

    /// The output item (and its key) through its pointer item.
    async fn load_output(&self, bucket: &str, key: &str) -> Result<Option<(Item, OutputRecord)>, ManifestError> {
        let Some(pointer) = self.get_item(key_of(output_pointer_pk(bucket, key), OUTPUT_POINTER_SORT_KEY)).await?
        else {
            return Ok(None);
        };
        let reader = ItemReader::new(&pointer, &self.table);
        let output_key = key_of(reader.string("target_pk")?, reader.string("target_sk")?);
        let Some(item) = self.get_item(output_key.clone()).await? else {
            return Ok(None);
        };
        let record = output_from_item(&item, &self.table)?;
        Ok(Some((output_key, record)))
    }

    /// An output a fenced call changes: the lease must hold, and the output must exist and
    /// belong to the leased partition.
    async fn load_leased_output(
        &self,
        lease: &Lease,
        output_bucket: &str,
        output_key: &str,
    ) -> Result<(Item, OutputRecord), ManifestError> {
        self.check_fence(lease).await?;
        let (item_key, output) = self
            .load_output(output_bucket, output_key)
            .await?
            .ok_or_else(|| output_not_found(output_bucket, output_key))?;
        check_output_partition(lease, &output)?;
        Ok((item_key, output))
    }

    /// Release, step one: the fenced partition item as read, and its pending objects counted
    /// after that read.
    async fn count_for_release(&self, lease: &Lease) -> Result<ReleaseCount, ManifestError> {
        let stored = self.check_fence(lease).await?;
        let pending_objects = self.count_pending(&lease.partition).await?;
        Ok(ReleaseCount { stored, pending_objects })
    }

    /// Release, step two: `sealed` if nothing was pending and no ingest wrote the partition item
    /// since it was read, `open` otherwise. `Ok(None)` when the fence or the ingest counter moved:
    /// count again (the next [`Self::count_for_release`] tells a lost lease).
    async fn write_release(
        &self,
        lease: &Lease,
        counted: ReleaseCount,
        now: DateTime<Utc>,
    ) -> Result<Option<PartitionRecord>, ManifestError> {
        let partition = &lease.partition;
        let item_key = key_of(partition_item_pk(&partition.bucket, &partition.path), PARTITION_SORT_KEY);
        let fence = "#generation = :lease_generation AND #lock_owner = :lease_owner";
        let mut expression_values = values([
            (":lease_generation", number_value(lease.generation)),
            (":lease_owner", string_value(&lease.owner)),
        ]);
        let (update, condition) = if counted.pending_objects == 0 {
            expression_values.insert(":sealed".to_owned(), string_value(PartitionState::Sealed.as_str()));
            expression_values.insert(":now".to_owned(), time_value(now));
            let counter_unchanged = match counted.stored.ingest_counter {
                Some(read_counter) => {
                    expression_values.insert(":read_counter".to_owned(), number_value(read_counter));
                    "#ingest_counter = :read_counter"
                }
                None => "attribute_not_exists(#ingest_counter)",
            };
            (
                "SET #state = :sealed, #sealed_at = :now REMOVE #lock_owner, #lease_expires_at, #gsi1pk, #gsi1sk",
                format!("{fence} AND {counter_unchanged}"),
            )
        } else {
            // A late object arrived during the seal: the next seal writes a new generation.
            expression_values.insert(":open".to_owned(), string_value(PartitionState::Open.as_str()));
            expression_values.insert(":pending_flag".to_owned(), string_value(PENDING_FLAG));
            expression_values.insert(
                ":pending_sort_key".to_owned(),
                string_value(pending_index_sk(counted.stored.closes_at, &partition.path, &partition.bucket)),
            );
            (
                "SET #state = :open, #gsi1pk = :pending_flag, #gsi1sk = :pending_sort_key \
                 REMOVE #lock_owner, #lease_expires_at",
                fence.to_owned(),
            )
        };
        match self.conditional_update(item_key, update, &condition, expression_values, true).await? {
            Ok(new_item) => {
                let stored = StoredPartition::from_item(&new_item.unwrap_or_default(), &self.table)?;
                Ok(Some(self.partition_record(stored).await?))
            }
            Err(_) => Ok(None),
        }
    }

    // ── ingest helpers ──────────────────────────────────────────────────────────────────

    /// Makes sure the partition of a pending object is recorded, `open` (unless a seal holds
    /// it) and in [`PENDING_INDEX`]; see "The race between ingest and release" in the module
    /// doc for why this runs after the object write and when it may skip the write.
    async fn flag_partition_pending(&self, object: &NewObject) -> Result<(), ManifestError> {
        let key = PartitionKey::new(object.bucket.clone(), object.partition.path.clone());
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            let Some(stored) = self.get_partition(&key).await? else {
                if self.conditional_put(new_partition_item(object), "attribute_not_exists(#pk)", HashMap::new()).await?
                {
                    return Ok(());
                }
                continue;
            };
            if stored.state == PartitionState::Open && stored.flagged_pending {
                return Ok(());
            }
            // A sealed partition reopens; a sealing one stays so (its release sees the pending
            // object and opens it). The counter tells a running release that it counted too early.
            let next_state = if stored.state == PartitionState::Sealed { PartitionState::Open } else { stored.state };
            let written = self
                .conditional_update(
                    key_of(partition_item_pk(&key.bucket, &key.path), PARTITION_SORT_KEY),
                    "SET #state = :next_state, #gsi1pk = :pending_flag, #gsi1sk = :pending_sort_key \
                     ADD #ingest_counter :one",
                    "#state = :read_state",
                    values([
                        (":next_state", string_value(next_state.as_str())),
                        (":read_state", string_value(stored.state.as_str())),
                        (":pending_flag", string_value(PENDING_FLAG)),
                        (":pending_sort_key", string_value(pending_index_sk(stored.closes_at, &key.path, &key.bucket))),
                        (":one", number_value(1)),
                    ]),
                    false,
                )
                .await?;
            if written.is_ok() {
                return Ok(());
            }
        }
        Err(DynamoDbManifestError::Contended { what: format!("partition {key}") }.into())
    }
}

fn lease_lost(lease: &Lease) -> ManifestError {
    ManifestError::LeaseLost { partition: lease.partition.clone(), generation: lease.generation }
}

fn output_not_found(bucket: &str, key: &str) -> ManifestError {
    ManifestError::NotFound { what: format!("output s3://{bucket}/{key}") }
}

fn partition_not_found(key: &PartitionKey) -> ManifestError {
    ManifestError::NotFound { what: format!("partition {key}") }
}

fn check_output_partition(lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError> {
    if output.partition == lease.partition {
        Ok(())
    } else {
        Err(DynamoDbManifestError::WrongPartition {
            what: format!("output s3://{}/{}", output.bucket, output.key),
            found: output.partition.clone(),
            leased: lease.partition.clone(),
        }
        .into())
    }
}

fn limit_i32(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX).max(1)
}

/// One shard's share of an `objects` page: a buffer of its next items in key order.
struct ShardCursor {
    shard_pk: String,
    buffer: VecDeque<ObjectRecord>,
    next_start_key: Option<Item>,
    exhausted: bool,
}

impl ShardCursor {
    /// Fetches this shard's next non-empty page (a filter may empty some pages).
    async fn refill(
        &mut self,
        manifest: &DynamoDbManifest,
        query: &ObjectQuery,
        page_size: i32,
    ) -> Result<(), ManifestError> {
        let key_condition = if query.start_after.is_some() { "#pk = :pk AND #sk > :start_after" } else { "#pk = :pk" };
        let mut filters = Vec::new();
        let mut expression_values = values([(":pk", string_value(&self.shard_pk))]);
        if let Some(start_after) = &query.start_after {
            expression_values.insert(":start_after".to_owned(), string_value(start_after));
        }
        if let Some(state) = query.state {
            filters.push("#state = :state");
            expression_values.insert(":state".to_owned(), string_value(state.as_str()));
        }
        if query.expiry_unmarked {
            filters.push("#state = :compacted AND attribute_not_exists(#expiry_marked_at)");
            expression_values.insert(":compacted".to_owned(), string_value(ObjectState::Compacted.as_str()));
        }
        let filter = (!filters.is_empty()).then(|| filters.join(" AND "));
        while self.buffer.is_empty() && !self.exhausted {
            let page = manifest
                .query_page(
                    None,
                    key_condition,
                    filter.as_deref(),
                    expression_values.clone(),
                    true,
                    self.next_start_key.take(),
                    Some(page_size),
                )
                .await?;
            for item in page.items() {
                self.buffer.push_back(object_from_item(item, &manifest.table)?);
            }
            self.next_start_key = page.last_evaluated_key;
            self.exhausted = self.next_start_key.is_none();
        }
        Ok(())
    }
}

#[async_trait]
impl Manifest for DynamoDbManifest {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    async fn record_object(&self, object: &NewObject) -> Result<IngestOutcome, ManifestError> {
        // Most events announce a key the manifest has never seen: try the create first, and read
        // the recorded item only when it exists (a replay, an overwrite). One request, not two.
        if self.conditional_put(new_object_item(object), "attribute_not_exists(#pk)", HashMap::new()).await? {
            self.flag_partition_pending(object).await?;
            return Ok(IngestOutcome::Recorded);
        }
        let item_key = key_of(object_item_pk(&object.bucket, &object.partition.path, &object.key), object.key.clone());
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            let outcome = match self.get_item(item_key.clone()).await? {
                None => {
                    if !self
                        .conditional_put(new_object_item(object), "attribute_not_exists(#pk)", HashMap::new())
                        .await?
                    {
                        continue;
                    }
                    IngestOutcome::Recorded
                }
                Some(recorded) => {
                    let reader = ItemReader::new(&recorded, &self.table);
                    let recorded_sequencer = reader.optional_string("sequencer")?.unwrap_or_default();
                    let recorded_etag = reader.optional_string("etag")?;
                    let recorded_state = reader.state::<ObjectState>("state")?;
                    let order = sequencer::order(
                        sequencer::Version {
                            sequencer: &object.sequencer,
                            etag: object.etag.as_deref(),
                            time: object.event_time,
                        },
                        sequencer::Version {
                            sequencer: &recorded_sequencer,
                            etag: recorded_etag.as_deref(),
                            time: reader.time("event_time")?,
                        },
                        recorded_state == ObjectState::Removed,
                    );
                    if order == sequencer::VersionOrder::ConfirmsScanned {
                        // The same bytes: whatever was decided about them stands; only later
                        // events must now be ordered by this one's sequencer.
                        let confirmed = self
                            .conditional_update(
                                item_key.clone(),
                                "SET #sequencer = :sequencer, #event_time = :event_time",
                                "#sequencer = :recorded_sequencer",
                                values([
                                    (":sequencer", string_value(&object.sequencer)),
                                    (":event_time", time_value(object.event_time)),
                                    (":recorded_sequencer", string_value(&recorded_sequencer)),
                                ]),
                                false,
                            )
                            .await?;
                        if confirmed.is_err() {
                            continue;
                        }
                    }
                    if order != sequencer::VersionOrder::Newer {
                        // A replay of a pending object still makes sure its partition is flagged:
                        // the first delivery may have crashed between the two writes.
                        if recorded_state == ObjectState::Pending {
                            self.flag_partition_pending(object).await?;
                        }
                        return Ok(IngestOutcome::Stale);
                    }
                    let condition = "#sequencer = :recorded_sequencer";
                    let written = self
                        .conditional_put(
                            new_object_item(object),
                            condition,
                            values([(":recorded_sequencer", string_value(recorded_sequencer))]),
                        )
                        .await?;
                    if !written {
                        continue;
                    }
                    IngestOutcome::Updated
                }
            };
            self.flag_partition_pending(object).await?;
            return Ok(outcome);
        }
        Err(DynamoDbManifestError::Contended { what: format!("object s3://{}/{}", object.bucket, object.key) }.into())
    }

    /// Side by side, [`CONCURRENT_REQUESTS`] at a time: DynamoDB has no batch conditional write.
    async fn record_objects(&self, objects: &[NewObject]) -> Result<Vec<IngestOutcome>, ManifestError> {
        // Owned objects: a stream of borrowed ones trips the `Send` bound async_trait puts on this.
        stream::iter(objects.to_vec())
            .map(|object| async move { self.record_object(&object).await })
            .buffered(CONCURRENT_REQUESTS)
            .try_collect()
            .await
    }

    async fn record_removal(&self, removal: &RemovedObject) -> Result<IngestOutcome, ManifestError> {
        let Ok(partition) = self.layout.partition_of(&removal.key) else {
            return Ok(IngestOutcome::RemovalIgnored);
        };
        let item_key = key_of(object_item_pk(&removal.bucket, &partition.path, &removal.key), removal.key.clone());
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            // Unknown keys get no record: there is nothing to leave out of a plan.
            let Some(recorded) = self.get_item(item_key.clone()).await? else {
                return Ok(IngestOutcome::RemovalIgnored);
            };
            let reader = ItemReader::new(&recorded, &self.table);
            let recorded_sequencer = reader.optional_string("sequencer")?.unwrap_or_default();
            if reader.state::<ObjectState>("state")? != ObjectState::Pending
                || !sequencer::supersedes(&removal.sequencer, &recorded_sequencer)
            {
                return Ok(IngestOutcome::RemovalIgnored);
            }
            // The sequencer and event time move with the state, so a replayed creation of the
            // removed version stays stale; the placement, if any, stays for the audit.
            let written = self
                .conditional_update(
                    item_key.clone(),
                    "SET #state = :removed, #sequencer = :sequencer, #event_time = :event_time",
                    "#state = :pending AND #sequencer = :recorded_sequencer",
                    values([
                        (":removed", string_value(ObjectState::Removed.as_str())),
                        (":pending", string_value(ObjectState::Pending.as_str())),
                        (":sequencer", string_value(&removal.sequencer)),
                        (":event_time", time_value(removal.event_time)),
                        (":recorded_sequencer", string_value(recorded_sequencer)),
                    ]),
                    false,
                )
                .await?;
            if written.is_ok() {
                return Ok(IngestOutcome::Removed);
            }
        }
        Err(DynamoDbManifestError::Contended { what: format!("object s3://{}/{}", removal.bucket, removal.key) }.into())
    }

    /// One Query of [`PENDING_INDEX`] (paged), filtered on the lease. Flagged partitions whose
    /// objects were all removed are counted and left out, as SQLite's `EXISTS` does.
    async fn closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<PartitionRecord>, ManifestError> {
        let closed = self.closed_from_index(now, limit, true).await?;
        Ok(closed.into_iter().filter_map(|(_, record)| record).collect())
    }

    /// The same Query of [`PENDING_INDEX`] and a strongly consistent GetItem per partition,
    /// without counting: flagged partitions whose objects were all removed are in the answer,
    /// and a seal that locks one releases it sealed, which takes it out of the index.
    async fn closed_partition_keys(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PartitionKey>, ManifestError> {
        let closed = self.closed_from_index(now, limit, false).await?;
        Ok(closed.into_iter().map(|(key, _)| key).collect())
    }

    /// One Query of [`PENDING_INDEX`] (paged), filtered on a live lease; the index projects the
    /// lock's owner and expiry, so no item is read.
    async fn locked_closed_partitions(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<HeldLock>, ManifestError> {
        let mut locks = Vec::new();
        let mut start_key: Option<Item> = None;
        while locks.len() < limit {
            let page = self
                .closed_pending_page(
                    now,
                    "attribute_exists(#lock_owner) AND #lease_expires_at > :now",
                    start_key.take(),
                    limit,
                )
                .await?;
            for item in page.items().iter().take(limit - locks.len()) {
                let reader = ItemReader::new(item, &self.table);
                let Some((bucket, path)) = reader
                    .string("pk")?
                    .strip_prefix("P#")
                    .and_then(|rest| rest.split_once('#').map(|(bucket, path)| (bucket.to_owned(), path.to_owned())))
                else {
                    continue;
                };
                locks.push(HeldLock {
                    partition: PartitionKey::new(bucket, path),
                    owner: reader.string("lock_owner")?,
                    expires_at: reader.time("lease_expires_at")?,
                });
            }
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                break;
            }
        }
        Ok(locks)
    }

    async fn partition(&self, key: &PartitionKey) -> Result<Option<PartitionRecord>, ManifestError> {
        match self.get_partition(key).await? {
            Some(stored) => Ok(Some(self.partition_record(stored).await?)),
            None => Ok(None),
        }
    }

    async fn partitions(
        &self,
        start_after: Option<&PartitionKey>,
        limit: usize,
    ) -> Result<Vec<PartitionRecord>, ManifestError> {
        let (key_condition, mut expression_values) = match start_after {
            Some(after) => (
                "#gsi3pk = :partitions_flag AND #gsi3sk > :after",
                values([(":after", string_value(partitions_index_sk(&after.bucket, &after.path)))]),
            ),
            None => ("#gsi3pk = :partitions_flag", HashMap::new()),
        };
        expression_values.insert(":partitions_flag".to_owned(), string_value(PARTITIONS_FLAG));
        let page = self
            .query_page(
                Some(PARTITIONS_INDEX),
                key_condition,
                None,
                expression_values,
                false,
                None,
                Some(limit_i32(limit)),
            )
            .await?;
        let mut records = Vec::new();
        for item in page.items().iter().take(limit) {
            let reader = ItemReader::new(item, &self.table);
            if let Some(stored) = self.get_item(key_of(reader.string("pk")?, reader.string("sk")?)).await? {
                records.push(self.partition_record(StoredPartition::from_item(&stored, &self.table)?).await?);
            }
        }
        Ok(records)
    }

    /// Re-acquiring a live lease by its own owner is allowed and still bumps the generation: the
    /// caller gets a fresh lease and its older one is fenced, as after any other takeover.
    async fn acquire(
        &self,
        partition: &PartitionKey,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<Lease, ManifestError> {
        let expires_at = now
            .checked_add_signed(lease_for)
            .map(truncated_to_micros)
            .ok_or(DynamoDbManifestError::LeaseOverflow { now, lease_for })?;
        let result = self
            .conditional_update(
                key_of(partition_item_pk(&partition.bucket, &partition.path), PARTITION_SORT_KEY),
                "SET #generation = #generation + :one, #state = :sealing, #lock_owner = :owner, \
                 #lease_expires_at = :expires_at",
                "attribute_exists(#pk) AND (attribute_not_exists(#lock_owner) OR #lease_expires_at <= :now \
                 OR #lock_owner = :owner)",
                values([
                    (":one", number_value(1)),
                    (":sealing", string_value(PartitionState::Sealing.as_str())),
                    (":owner", string_value(owner)),
                    (":expires_at", time_value(expires_at)),
                    (":now", time_value(now)),
                ]),
                true,
            )
            .await?;
        match result {
            Ok(new_item) => {
                let new_item = new_item.unwrap_or_default();
                let generation = ItemReader::new(&new_item, &self.table).number("generation")?;
                Ok(Lease { partition: partition.clone(), owner: owner.to_owned(), generation, expires_at })
            }
            Err(None) => Err(partition_not_found(partition)),
            Err(Some(old_item)) => {
                let holder = StoredPartition::from_item(&old_item, &self.table)?;
                Err(ManifestError::Locked {
                    partition: partition.clone(),
                    owner: holder.lock_owner.unwrap_or_default(),
                    expires_at: holder.lease_expires_at.unwrap_or(now),
                })
            }
        }
    }

    async fn renew(&self, lease: &Lease, now: DateTime<Utc>, lease_for: Duration) -> Result<Lease, ManifestError> {
        let expires_at = now
            .checked_add_signed(lease_for)
            .map(truncated_to_micros)
            .ok_or(DynamoDbManifestError::LeaseOverflow { now, lease_for })?;
        let result = self
            .conditional_update(
                key_of(partition_item_pk(&lease.partition.bucket, &lease.partition.path), PARTITION_SORT_KEY),
                "SET #lease_expires_at = :expires_at",
                "#generation = :lease_generation AND #lock_owner = :lease_owner",
                values([
                    (":expires_at", time_value(expires_at)),
                    (":lease_generation", number_value(lease.generation)),
                    (":lease_owner", string_value(&lease.owner)),
                ]),
                false,
            )
            .await?;
        match result {
            Ok(_) => Ok(Lease { expires_at, ..lease.clone() }),
            Err(_) => Err(lease_lost(lease)),
        }
    }

    /// Seals only on the condition that no ingest touched the partition item since the pending
    /// objects were counted (see the module doc); otherwise counts again.
    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> Result<PartitionRecord, ManifestError> {
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            let counted = self.count_for_release(lease).await?;
            if let Some(record) = self.write_release(lease, counted, now).await? {
                return Ok(record);
            }
        }
        Err(DynamoDbManifestError::Contended { what: format!("partition {}", lease.partition) }.into())
    }

    /// Queries every shard and merges their key-ordered answers, fetching from a shard only
    /// when its buffer runs dry, so a page of n costs about n items read, not 16 n.
    async fn objects(&self, partition: &PartitionKey, query: &ObjectQuery) -> Result<Vec<ObjectRecord>, ManifestError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let page_size = limit_i32((query.limit / OBJECT_SHARDS as usize + 1).clamp(8, 1000));
        let mut cursors: Vec<ShardCursor> = (0..OBJECT_SHARDS)
            .map(|shard| ShardCursor {
                shard_pk: object_shard_pk(&partition.bucket, &partition.path, shard),
                buffer: VecDeque::new(),
                next_start_key: None,
                exhausted: false,
            })
            .collect();
        let mut page = Vec::new();
        while page.len() < query.limit {
            futures::future::try_join_all(
                cursors
                    .iter_mut()
                    .filter(|cursor| cursor.buffer.is_empty() && !cursor.exhausted)
                    .map(|cursor| cursor.refill(self, query, page_size)),
            )
            .await?;
            let next = cursors
                .iter_mut()
                .filter(|cursor| !cursor.buffer.is_empty())
                .min_by(|left, right| left.buffer[0].key.cmp(&right.buffer[0].key));
            match next.and_then(|cursor| cursor.buffer.pop_front()) {
                Some(object) => page.push(object),
                None => break,
            }
        }
        Ok(page)
    }

    async fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, ManifestError> {
        let Ok(partition) = self.layout.partition_of(key) else {
            return Ok(None);
        };
        let item = self.get_item(key_of(object_item_pk(bucket, &partition.path, key), key)).await?;
        item.map(|item| object_from_item(&item, &self.table)).transpose()
    }

    /// An output the manifest does not know has no sources.
    ///
    /// [`SOURCES_INDEX`] sorts by offset alone, and returns the sources of one offset (empty
    /// ones share theirs with the source after them) in no fixed order. So the Query starts at
    /// the cursor's offset (`>=`), skips what is at or before the cursor, and reads on until it
    /// holds `limit` sources and the next one lies at a greater offset (every source of the
    /// page's last offset seen); the page is then sorted by (offset, key). Memory stays under
    /// twice `limit` sources; a run of many empty sources at one offset is read again by each
    /// page that ends inside it.
    async fn output_sources(
        &self,
        output_bucket: &str,
        output_key: &str,
        start_after: Option<(u64, &str)>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, ManifestError> {
        let Some((_, output)) = self.load_output(output_bucket, output_key).await? else {
            return Ok(Vec::new());
        };
        if self.has_chunks(&output.partition, &output.key).await? {
            return self.sources_from_chunks(&output.partition, &output.key, start_after, limit).await;
        }
        // Placed by an older version of this adapter: the index of placed object items.
        let sources_pk = sources_index_pk(&output.partition.bucket, &output.partition.path, &output.key);
        let (key_condition, mut expression_values) = match start_after {
            Some((offset, _)) => {
                ("#gsi2pk = :sources_pk AND #gsi2sk >= :offset", values([(":offset", number_value(offset))]))
            }
            None => ("#gsi2pk = :sources_pk", HashMap::new()),
        };
        expression_values.insert(":sources_pk".to_owned(), string_value(sources_pk));
        let position = |source: &ObjectRecord| {
            (source.placement.as_ref().map_or(0, |placement| placement.offset), source.key.clone())
        };
        let by_position = |one: &ObjectRecord, other: &ObjectRecord| position(one).cmp(&position(other));
        let mut sources: Vec<ObjectRecord> = Vec::new();
        let mut last_offset_taken: Option<u64> = None;
        let mut start_key: Option<Item> = None;
        'pages: loop {
            let page = self
                .query_page(
                    Some(SOURCES_INDEX),
                    key_condition,
                    None,
                    expression_values.clone(),
                    false,
                    start_key.take(),
                    Some(limit_i32(limit.saturating_add(1))),
                )
                .await?;
            for item in page.items() {
                let source = object_from_item(item, &self.table)?;
                let (offset, key) = position(&source);
                if start_after
                    .is_some_and(|(after_offset, after_key)| (offset, key.as_str()) <= (after_offset, after_key))
                {
                    continue;
                }
                // Offsets only grow from here: past the last one taken, the page is complete.
                if sources.len() >= limit && last_offset_taken.is_some_and(|last| offset > last) {
                    break 'pages;
                }
                last_offset_taken = Some(offset);
                sources.push(source);
                if sources.len() >= limit.saturating_mul(2) {
                    sources.sort_by(by_position);
                    sources.truncate(limit);
                }
            }
            start_key = page.last_evaluated_key;
            if start_key.is_none() {
                break;
            }
        }
        sources.sort_by(by_position);
        sources.truncate(limit);
        Ok(sources)
    }

    async fn mark_missing(&self, lease: &Lease, key: &str, sequencer: &str, note: &str) -> Result<(), ManifestError> {
        let partition = &lease.partition;
        let item_key = key_of(object_item_pk(&partition.bucket, &partition.path, key), key);
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            self.check_fence(lease).await?;
            let Some(recorded) = self.get_item(item_key.clone()).await? else {
                return Ok(());
            };
            let reader = ItemReader::new(&recorded, &self.table);
            let recorded_sequencer = reader.optional_string("sequencer")?.unwrap_or_default();
            // A newer version arrived since the seal read it: that one is still to be compacted.
            if reader.state::<ObjectState>("state")? != ObjectState::Pending
                || !sequencer::compare(&recorded_sequencer, sequencer).is_eq()
            {
                return Ok(());
            }
            let write = self.update(
                item_key.clone(),
                "SET #state = :missing, #note = :note",
                "#state = :pending AND #sequencer = :recorded_sequencer",
                values([
                    (":missing", string_value(ObjectState::Missing.as_str())),
                    (":pending", string_value(ObjectState::Pending.as_str())),
                    (":note", string_value(note)),
                    (":recorded_sequencer", string_value(recorded_sequencer)),
                ]),
            )?;
            match self.fenced_transaction(lease, vec![write]).await? {
                TransactionOutcome::Committed => return Ok(()),
                TransactionOutcome::Conflict => continue,
            }
        }
        Err(DynamoDbManifestError::Contended { what: format!("object {key}") }.into())
    }

    /// Beginning an output that is already `writing` updates its upload id and object count (a
    /// retried upload). Beginning one that is already `committed` changes nothing and succeeds.
    /// An `abandoned` one is never written again: [`ManifestError::InvalidOutputState`].
    async fn begin_output(&self, lease: &Lease, output: &OutputRecord) -> Result<(), ManifestError> {
        check_output_partition(lease, output)?;
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            self.check_fence(lease).await?;
            let writes = match self.load_output(&output.bucket, &output.key).await? {
                None => {
                    let output_pk = partition_item_pk(&output.partition.bucket, &output.partition.path);
                    let output_sk = output_item_sk(output);
                    let mut item = key_of(output_pk.clone(), output_sk.clone());
                    item.insert("bucket".to_owned(), string_value(&output.bucket));
                    item.insert("key".to_owned(), string_value(&output.key));
                    item.insert("partition_bucket".to_owned(), string_value(&output.partition.bucket));
                    item.insert("partition_path".to_owned(), string_value(&output.partition.path));
                    item.insert("generation".to_owned(), number_value(output.generation));
                    item.insert("part_number".to_owned(), number_value(output.part_number));
                    item.insert("state".to_owned(), string_value(OutputState::Writing.as_str()));
                    item.insert("object_count".to_owned(), number_value(output.object_count));
                    if let Some(upload_id) = &output.upload_id {
                        item.insert("upload_id".to_owned(), string_value(upload_id));
                    }
                    item.insert("created_at".to_owned(), time_value(output.created_at));
                    let mut pointer = key_of(output_pointer_pk(&output.bucket, &output.key), OUTPUT_POINTER_SORT_KEY);
                    pointer.insert("target_pk".to_owned(), string_value(output_pk));
                    pointer.insert("target_sk".to_owned(), string_value(output_sk));
                    vec![
                        self.put(item, Some("attribute_not_exists(#pk)"))?,
                        self.put(pointer, Some("attribute_not_exists(#pk)"))?,
                    ]
                }
                Some((item_key, existing)) => match existing.state {
                    OutputState::Writing => {
                        let mut expression_values = values([
                            (":object_count", number_value(output.object_count)),
                            (":writing", string_value(OutputState::Writing.as_str())),
                        ]);
                        let update = match &output.upload_id {
                            Some(upload_id) => {
                                expression_values.insert(":upload_id".to_owned(), string_value(upload_id));
                                "SET #upload_id = :upload_id, #object_count = :object_count"
                            }
                            None => "SET #object_count = :object_count REMOVE #upload_id",
                        };
                        vec![self.update(item_key, update, "#state = :writing", expression_values)?]
                    }
                    OutputState::Committed => return Ok(()),
                    OutputState::Abandoned => {
                        return Err(ManifestError::InvalidOutputState {
                            key: output.key.clone(),
                            state: existing.state,
                        })
                    }
                },
            };
            match self.fenced_transaction(lease, writes).await? {
                TransactionOutcome::Committed => return Ok(()),
                TransactionOutcome::Conflict => continue,
            }
        }
        Err(DynamoDbManifestError::Contended { what: format!("output s3://{}/{}", output.bucket, output.key) }.into())
    }

    async fn record_placements(
        &self,
        lease: &Lease,
        output_key: &str,
        placements: &[SourcePlacement],
    ) -> Result<Vec<String>, ManifestError> {
        self.check_fence(lease).await?;
        // No transaction: chunk items count for nothing until the commit, which is fenced, and
        // name an output of this lease's generation, which a stalled run cannot commit.
        self.write_placement_chunks(&lease.partition, output_key, placements).await
    }

    async fn commit_output(
        &self,
        lease: &Lease,
        output_bucket: &str,
        output_key: &str,
        size: u64,
        sha256: &str,
        object_count: u64,
        now: DateTime<Utc>,
    ) -> Result<(), ManifestError> {
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            let (item_key, output) = self.load_leased_output(lease, output_bucket, output_key).await?;
            match output.state {
                OutputState::Writing => {}
                // A repeated commit of the same bytes: the first one stands.
                OutputState::Committed if output.sha256.as_deref() == Some(sha256) => return Ok(()),
                state => return Err(ManifestError::InvalidOutputState { key: output_key.to_owned(), state }),
            }
            let write = self.update(
                item_key,
                "SET #state = :committed, #size = :size, #sha256 = :sha256, #object_count = :object_count, \
                 #committed_at = :now",
                "#state = :writing",
                values([
                    (":committed", string_value(OutputState::Committed.as_str())),
                    (":writing", string_value(OutputState::Writing.as_str())),
                    (":size", number_value(size)),
                    (":sha256", string_value(sha256)),
                    (":object_count", number_value(object_count)),
                    (":now", time_value(now)),
                ]),
            )?;
            match self.fenced_transaction(lease, vec![write]).await? {
                TransactionOutcome::Committed => return Ok(()),
                TransactionOutcome::Conflict => continue,
            }
        }
        Err(DynamoDbManifestError::Contended { what: format!("output s3://{output_bucket}/{output_key}") }.into())
    }

    /// An output that is not committed (yet, or ever) compacts nothing: `Ok(0)`. An unknown
    /// output is [`ManifestError::NotFound`].
    async fn mark_compacted(&self, partition: &PartitionKey, output_key: &str) -> Result<u64, ManifestError> {
        let mut found = None;
        for item in self.output_items(partition).await? {
            let record = output_from_item(&item, &self.table)?;
            if record.key == output_key {
                found = Some((record.state, item));
                break;
            }
        }
        let Some((output_state, output_item)) = found else {
            return Err(ManifestError::NotFound { what: format!("output {output_key} of partition {partition}") });
        };
        if output_state != OutputState::Committed {
            return Ok(0);
        }
        if output_item.contains_key(placements::SOURCES_COMPACTED) {
            return Ok(0);
        }
        if self.has_chunks(partition, output_key).await? {
            let changed = self.compact_from_chunks(partition, output_key).await?;
            self.mark_sources_compacted(&output_item).await?;
            return Ok(changed);
        }
        // Placed by an older version of this adapter, on the object items.
        let sources = self
            .query_all(
                Some(SOURCES_INDEX),
                "#gsi2pk = :sources_pk",
                Some("#state = :pending AND #output_key = :output_key"),
                values([
                    (":sources_pk", string_value(sources_index_pk(&partition.bucket, &partition.path, output_key))),
                    (":pending", string_value(ObjectState::Pending.as_str())),
                    (":output_key", string_value(output_key)),
                ]),
                false,
            )
            .await?;
        let changed: Vec<bool> = stream::iter(sources)
            .map(|item| async move {
                let reader = ItemReader::new(&item, &self.table);
                let key = key_of(reader.string("pk")?, reader.string("sk")?);
                let recorded_sequencer = reader.optional_string("sequencer")?.unwrap_or_default();
                // Still pending, still placed here, still the version that was placed: the index
                // may lag a newer version, which must stay pending.
                let result = self
                    .conditional_update(
                        key,
                        "SET #state = :compacted",
                        "#state = :pending AND #output_key = :output_key AND #sequencer = :recorded_sequencer",
                        values([
                            (":compacted", string_value(ObjectState::Compacted.as_str())),
                            (":pending", string_value(ObjectState::Pending.as_str())),
                            (":output_key", string_value(output_key)),
                            (":recorded_sequencer", string_value(recorded_sequencer)),
                        ]),
                        false,
                    )
                    .await?;
                Ok::<bool, ManifestError>(result.is_ok())
            })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        Ok(changed.into_iter().filter(|changed| *changed).count() as u64)
    }

    async fn mark_expiry(&self, bucket: &str, keys: &[String], at: DateTime<Utc>) -> Result<(), ManifestError> {
        // Keys outside the layout have no record to mark; a batch must not name an item twice.
        let keys: std::collections::BTreeSet<&String> = keys.iter().collect();
        let item_keys: Vec<Item> = keys
            .into_iter()
            .filter_map(|key| {
                let partition = self.layout.partition_of(key).ok()?;
                Some(key_of(object_item_pk(bucket, &partition.path, key), key.clone()))
            })
            .collect();
        // Only the first mark counts: it is when the source was tagged (or deleted). A failed
        // condition (not compacted, already marked, unknown) changes nothing, so a pending item
        // never gets an expiry time. One conditional update per key, 25 to a request.
        let expires_at = self
            .record_ttl
            .map(|record_ttl| at.checked_add_signed(record_ttl).unwrap_or(DateTime::<Utc>::MAX_UTC).timestamp());
        let statement = format!(
            "UPDATE \"{}\" SET \"expiry_marked_at\" = ?{} WHERE \"pk\" = ? AND \"sk\" = ? AND \"state\" = ? \
             AND \"expiry_marked_at\" IS MISSING",
            self.table,
            if expires_at.is_some() { " SET \"expires_at\" = ?" } else { "" },
        );
        let statements = item_keys
            .into_iter()
            .map(|mut item_key| {
                let mut parameters = vec![time_value(at)];
                parameters.extend(expires_at.map(number_value));
                parameters.extend(item_key.remove("pk"));
                parameters.extend(item_key.remove("sk"));
                parameters.push(string_value(ObjectState::Compacted.as_str()));
                BatchStatementRequest::builder()
                    .statement(&statement)
                    .set_parameters(Some(parameters))
                    .build()
                    .map_err(|error| DynamoDbManifestError::Build(error).into())
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        self.conditional_statements(statements).await?;
        Ok(())
    }

    /// Abandoning an abandoned output again succeeds (idempotence); a committed output is never
    /// abandoned: [`ManifestError::InvalidOutputState`].
    async fn abandon_output(&self, lease: &Lease, output_bucket: &str, output_key: &str) -> Result<(), ManifestError> {
        for _attempt in 0..OPTIMISTIC_ATTEMPTS {
            let (item_key, output) = self.load_leased_output(lease, output_bucket, output_key).await?;
            match output.state {
                OutputState::Writing => {}
                OutputState::Abandoned => return Ok(()),
                OutputState::Committed => {
                    return Err(ManifestError::InvalidOutputState { key: output_key.to_owned(), state: output.state })
                }
            }
            let write = self.update(
                item_key,
                "SET #state = :abandoned",
                "#state = :writing",
                values([
                    (":abandoned", string_value(OutputState::Abandoned.as_str())),
                    (":writing", string_value(OutputState::Writing.as_str())),
                ]),
            )?;
            match self.fenced_transaction(lease, vec![write]).await? {
                TransactionOutcome::Committed => return Ok(()),
                TransactionOutcome::Conflict => continue,
            }
        }
        Err(DynamoDbManifestError::Contended { what: format!("output s3://{output_bucket}/{output_key}") }.into())
    }

    async fn outputs(
        &self,
        partition: &PartitionKey,
        state: Option<OutputState>,
    ) -> Result<Vec<OutputRecord>, ManifestError> {
        let mut outputs = Vec::new();
        // The sort key orders them by generation, then part number.
        for item in self.output_items(partition).await? {
            let output = output_from_item(&item, &self.table)?;
            if state.is_none_or(|state| state == output.state) {
                outputs.push(output);
            }
        }
        Ok(outputs)
    }

    async fn output(&self, bucket: &str, key: &str) -> Result<Option<OutputRecord>, ManifestError> {
        Ok(self.load_output(bucket, key).await?.map(|(_, output)| output))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_dynamodb::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, ProvisionedThroughputExceededException, ResourceNotFoundException,
    };
    use aws_smithy_mocks::{create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode};

    use super::*;
    use crate::testkit::manifest_conformance::{at, day_partition, key_of as partition_key_of, new_object};
    use crate::testkit::servers;

    fn test_layout() -> Layout {
        Layout::parse("%Y/%m/%d", None).expect("a valid layout")
    }

    async fn new_table(client: Client, endpoint: &str) -> (DynamoDbManifest, servers::FreshTable) {
        servers::dynamodb_manifest_on_fresh_table(client, endpoint, test_layout()).await
    }

    async fn new_test_manifest() -> Option<(DynamoDbManifest, servers::FreshTable)> {
        servers::dynamodb_manifest_with_fresh_table(test_layout()).await
    }

    async fn new_dynamodb_manifest() -> Option<(Arc<dyn Manifest>, servers::FreshTable)> {
        let (manifest, guard) = new_test_manifest().await?;
        Some((Arc::new(manifest), guard))
    }

    mod conformance {
        crate::manifest_conformance_tests!(optional super::new_dynamodb_manifest);
    }

    // ── pure parts ──────────────────────────────────────────────────────────────────────

    #[test]
    fn shards_are_fnv1a_and_never_change() {
        // Pinned to the published FNV-1a 64 values: a change here would hide every recorded
        // object of every table.
        assert_eq!(object_shard(""), (0xcbf2_9ce4_8422_2325_u64 % 16) as u32);
        assert_eq!(object_shard("a"), (0xaf63_dc4c_8601_ec8c_u64 % 16) as u32);
        assert_eq!(object_shard("foobar"), (0x8594_4171_f739_67e8_u64 % 16) as u32);
        let shards: BTreeSet<u32> =
            (0..200).map(|index| object_shard(&format!("logs/2024/01/14/{index}.json"))).collect();
        assert_eq!(shards.len(), OBJECT_SHARDS as usize, "keys spread over every shard");
    }

    #[test]
    fn close_times_sort_as_strings_in_time_order() {
        let times = [-5_i64, -1, 0, 1, 1_700_000_000_000_000, i64::MAX];
        let encoded: Vec<String> = times.iter().map(|micros| ordered_micros(*micros)).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        assert!(encoded.iter().all(|text| text.len() == 20));
    }

    #[test]
    fn expressions_name_every_attribute_through_a_placeholder() {
        let names = names_in(&["#state = :pending AND #output_key = :k", "SET #size = :size REMOVE #gsi1pk"]);
        let mut placeholders: Vec<&str> = names.keys().map(String::as_str).collect();
        placeholders.sort();
        assert_eq!(placeholders, ["#gsi1pk", "#output_key", "#size", "#state"]);
        assert_eq!(names["#state"], "state");
    }

    #[test]
    fn sources_index_keys_cannot_be_confused_across_paths() {
        assert_ne!(sources_index_pk("b", "x/#y/", "z"), sources_index_pk("b", "x/", "#y/z"));
    }

    // ── offline: error mapping with stubbed responses ───────────────────────────────────

    fn mocked_manifest(rules: &[&Rule]) -> DynamoDbManifest {
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in rules {
            interceptor = interceptor.with_rule(rule);
        }
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "testtesttest", None, None, "mock"))
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build();
        DynamoDbManifest::new(Client::from_conf(config), "manifest-table", test_layout())
    }

    #[tokio::test]
    async fn a_missing_table_says_how_to_create_it() {
        let missing = mock!(Client::get_item).then_error(|| {
            GetItemError::ResourceNotFoundException(
                ResourceNotFoundException::builder().message("Requested resource not found").build(),
            )
        });
        let manifest = mocked_manifest(&[&missing]);
        let error = manifest.object("source", "logs/2024/01/14/a.json").await.expect_err("the table is missing");
        assert!(matches!(error, ManifestError::Backend { backend: "dynamodb", .. }), "{error:?}");
        let message =
            format!("{error}: {}", std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default());
        assert!(message.contains("manifest-table does not exist"), "{message}");
        assert!(message.contains("s3-compactor init"), "{message}");
    }

    #[tokio::test]
    async fn throttling_after_the_sdk_retries_is_a_backend_error_that_says_so() {
        let object = new_object(&day_partition("logs", 14), "a.json", "10", 10);
        let absent = mock!(Client::get_item)
            .then_output(|| aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder().build());
        let throttled = mock!(Client::put_item).then_error(|| {
            PutItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder().message("Rate exceeded").build(),
            )
        });
        let manifest = mocked_manifest(&[&absent, &throttled]);
        let error = manifest.record_object(&object).await.expect_err("throttled");
        let message = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
        assert!(message.contains("throttled PutItem on table manifest-table"), "{message}");
    }

    #[tokio::test]
    async fn a_failed_lock_condition_is_locked_with_the_holder_or_not_found() {
        let partition = partition_key_of(&day_partition("logs", 14));
        let now = at("2024-01-16T00:00:00Z");
        let expires_at = now + Duration::minutes(5);
        let held = mock!(Client::update_item).then_error(move || {
            UpdateItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .item("pk", string_value("P#conformance-source#logs/2024/01/14/"))
                    .item("sk", string_value(PARTITION_SORT_KEY))
                    .item("bucket", string_value("conformance-source"))
                    .item("path", string_value("logs/2024/01/14/"))
                    .item("period_start", time_value(now))
                    .item("period_end", time_value(now))
                    .item("closes_at", time_value(now))
                    .item("state", string_value("sealing"))
                    .item("generation", number_value(3))
                    .item("lock_owner", string_value("seal-elsewhere"))
                    .item("lease_expires_at", time_value(expires_at))
                    .build(),
            )
        });
        match mocked_manifest(&[&held]).acquire(&partition, "me", now, Duration::minutes(15)).await {
            Err(ManifestError::Locked { owner, expires_at: when, .. }) => {
                assert_eq!((owner.as_str(), when), ("seal-elsewhere", expires_at));
            }
            other => panic!("a held lock is Locked, got {other:?}"),
        }

        let unknown = mock!(Client::update_item).then_error(|| {
            UpdateItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build())
        });
        let result = mocked_manifest(&[&unknown]).acquire(&partition, "me", now, Duration::minutes(15)).await;
        assert!(
            matches!(result, Err(ManifestError::NotFound { .. })),
            "no old item: unknown partition, got {result:?}"
        );
    }

    // ── against the server ──────────────────────────────────────────────────────────────

    /// Records the operation (`x-amz-target`) of every request a client sends.
    #[derive(Debug, Clone, Default)]
    struct OperationLog(Arc<Mutex<Vec<String>>>);

    impl Intercept for OperationLog {
        fn name(&self) -> &'static str {
            "OperationLog"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _runtime_components: &RuntimeComponents,
            _cfg: &mut ConfigBag,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let target = context.request().headers().get("x-amz-target").unwrap_or("?");
            let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(operation);
            Ok(())
        }
    }

    impl OperationLog {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
        }
    }

    #[tokio::test]
    async fn a_hot_partition_spreads_over_shards_and_pages_in_key_order() {
        let Some((manifest, _table)) = new_test_manifest().await else { return };
        let partition = day_partition("hot", 14);
        let key = partition_key_of(&partition);
        let names: Vec<String> = (0..300).map(|index| format!("object {index:04} é.json")).collect();
        stream::iter(&names)
            .map(|name| {
                let object = new_object(&partition, name, "10", 1);
                let manifest = &manifest;
                async move { manifest.record_object(&object).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .expect("ingest a burst into one partition");

        let mut items_per_shard = Vec::new();
        for shard in 0..OBJECT_SHARDS {
            let items = manifest
                .query_all(
                    None,
                    "#pk = :pk",
                    None,
                    values([(":pk", string_value(object_shard_pk(&key.bucket, &key.path, shard)))]),
                    true,
                )
                .await
                .unwrap();
            items_per_shard.push(items.len());
        }
        let shards_used = items_per_shard.iter().filter(|count| **count > 0).count();
        assert!(shards_used >= 8, "one partition's objects spread over the shards: {items_per_shard:?}");
        assert_eq!(items_per_shard.iter().sum::<usize>(), names.len());

        let removed = new_object(&partition, &names[7], "10", 1);
        manifest.record_removal(&crate::testkit::manifest_conformance::removal_of(&removed, "20")).await.unwrap();
        for (query, expected_count) in
            [(ObjectQuery::all(), names.len()), (ObjectQuery::in_state(ObjectState::Pending), names.len() - 1)]
        {
            let mut paged = Vec::new();
            let mut query = ObjectQuery { limit: 37, ..query };
            loop {
                let page = manifest.objects(&key, &query).await.unwrap();
                assert!(page.len() <= 37);
                let Some(last) = page.last() else { break };
                query.start_after = Some(last.key.clone());
                paged.extend(page.into_iter().map(|object| object.key));
            }
            let mut sorted = paged.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(paged, sorted, "pages are in key order across shards, without repeats");
            assert_eq!(paged.len(), expected_count);
        }
        let record = manifest.partition(&key).await.unwrap().unwrap();
        assert_eq!((record.pending_objects, record.pending_bytes), (names.len() as u64 - 1, names.len() as u64 - 1));
    }

    #[tokio::test]
    async fn closed_partitions_is_a_query_of_the_sparse_index_never_a_scan() {
        let Some(endpoint) = servers::dynamodb_endpoint() else { return };
        let log = OperationLog::default();
        let config = servers::dynamodb_test_config(&endpoint).await.interceptor(log.clone()).build();
        let (manifest, _table) = new_table(Client::from_conf(config), &endpoint).await;
        for day in 10..13 {
            manifest.record_object(&new_object(&day_partition("logs", day), "a.json", "10", 10)).await.unwrap();
        }
        log.take();

        let closed = manifest.closed_partitions(at("2024-01-20T00:00:00Z"), 10).await.unwrap();
        assert_eq!(closed.len(), 3);
        let operations = log.take();
        assert!(!operations.iter().any(|operation| operation == "Scan"), "{operations:?}");
        assert_eq!(operations.iter().filter(|operation| *operation == "Scan").count(), 0);
        assert!(operations.contains(&"Query".to_owned()), "{operations:?}");

        manifest.partitions(None, 10).await.unwrap();
        manifest.objects(&partition_key_of(&day_partition("logs", 10)), &ObjectQuery::all()).await.unwrap();
        let operations = log.take();
        assert!(!operations.iter().any(|operation| operation == "Scan"), "{operations:?}");

        // The index is sparse: a sealed partition leaves it.
        let sealed_key = partition_key_of(&day_partition("logs", 10));
        let now = at("2024-01-20T00:00:00Z");
        let lease = manifest.acquire(&sealed_key, "seal-1", now, Duration::minutes(15)).await.unwrap();
        manifest.mark_missing(&lease, "logs/2024/01/10/a.json", "10", "gone").await.unwrap();
        manifest.release(&lease, now).await.unwrap();
        let flagged = manifest
            .query_all(
                Some(PENDING_INDEX),
                "#gsi1pk = :pending_flag",
                None,
                values([(":pending_flag", string_value(PENDING_FLAG))]),
                false,
            )
            .await
            .unwrap();
        assert_eq!(flagged.len(), 2, "only the partitions that may have pending objects are in the index");
    }

    /// What the seal asks for costs one index Query and a GetItem per partition, whatever the
    /// partitions hold; `closed_partitions` reads every object item of each (16 shard Queries)
    /// and its outputs on top.
    #[tokio::test]
    async fn closed_partition_keys_reads_the_index_and_the_partition_items_only() {
        let Some(endpoint) = servers::dynamodb_endpoint() else { return };
        let log = OperationLog::default();
        let config = servers::dynamodb_test_config(&endpoint).await.interceptor(log.clone()).build();
        let (manifest, _table) = new_table(Client::from_conf(config), &endpoint).await;
        for day in 10..13 {
            for name in ["a.json", "b.json", "c.json"] {
                manifest.record_object(&new_object(&day_partition("logs", day), name, "10", 10)).await.unwrap();
            }
        }
        // Day 9: its only object removed, so it has no work, which only counting shows.
        let removed = new_object(&day_partition("logs", 9), "a.json", "10", 10);
        manifest.record_object(&removed).await.unwrap();
        manifest.record_removal(&crate::testkit::manifest_conformance::removal_of(&removed, "20")).await.unwrap();
        let now = at("2024-01-20T00:00:00Z");
        log.take();

        let keys = manifest.closed_partition_keys(now, 10).await.unwrap();
        let paths: Vec<&str> = keys.iter().map(|key| key.path.as_str()).collect();
        assert_eq!(paths, ["logs/2024/01/09/", "logs/2024/01/10/", "logs/2024/01/11/", "logs/2024/01/12/"]);
        let operations = log.take();
        assert_eq!(
            (count_of(&operations, "Query"), count_of(&operations, "GetItem"), operations.len()),
            (1, 4, 5),
            "{operations:?}"
        );

        let records = manifest.closed_partitions(now, 10).await.unwrap();
        assert_eq!(records.len(), 3, "counting leaves out the partition without work");
        let operations = log.take();
        assert!(count_of(&operations, "Query") >= 3 * (OBJECT_SHARDS as usize + 1), "{operations:?}");

        // Sealing day 9 (nothing to do) takes it out of the index for good.
        let day_9 = partition_key_of(&day_partition("logs", 9));
        let lease = manifest.acquire(&day_9, "seal-1", now, Duration::minutes(15)).await.unwrap();
        assert_eq!(manifest.release(&lease, now).await.unwrap().state, PartitionState::Sealed);
        assert_eq!(manifest.closed_partition_keys(now, 10).await.unwrap().len(), 3);
    }

    fn count_of(operations: &[String], name: &str) -> usize {
        operations.iter().filter(|operation| *operation == name).count()
    }

    /// `COMPACTOR_RECORD_TTL`: the table's time to live is on `expires_at` either way; with a
    /// TTL, marking a compacted source writes `expires_at` (epoch seconds, mark + TTL) on its
    /// item and on nothing else (pending objects, partitions, outputs); without one, nothing
    /// carries it. A newer version of a marked source replaces the item, without it.
    #[tokio::test]
    async fn a_record_ttl_puts_expires_at_on_marked_objects_only() {
        use crate::testkit::manifest_conformance::{lease_for, seal_pending_into_one_output, SOURCE_BUCKET};

        let Some(endpoint) = servers::dynamodb_endpoint() else { return };
        let client = servers::dynamodb_test_client(&endpoint).await;
        for record_ttl in [Some(Duration::days(400)), None] {
            let (manifest, table) = new_table(client.clone(), &endpoint).await;
            let manifest = manifest.with_record_ttl(record_ttl);
            let described = client.describe_time_to_live().table_name(table.table()).send().await.unwrap();
            let description = described.time_to_live_description().expect("a TTL description");
            assert_eq!(description.attribute_name(), Some(RECORD_EXPIRY_ATTRIBUTE));
            assert_eq!(
                description.time_to_live_status(),
                Some(&aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled),
                "create_table enables the table's TTL whatever the manifest's record TTL"
            );
            // Creating it again (a rerun of `init`) finds it enabled and leaves it.
            manifest.create_table().await.expect("create_table is idempotent");

            let partition = day_partition("logs", 14);
            let key = partition_key_of(&partition);
            let [marked, unmarked] =
                ["marked.json", "unmarked.json"].map(|name| new_object(&partition, name, "10", 10));
            for object in [&marked, &unmarked] {
                manifest.record_object(object).await.unwrap();
            }
            let now = at("2024-01-16T00:00:00Z");
            let lease = manifest.acquire(&key, "seal-1", now, lease_for()).await.unwrap();
            let output = seal_pending_into_one_output(&manifest, &lease, 1, now).await;
            let pending = new_object(&partition, "pending.json", "10", 10);
            manifest.record_object(&pending).await.unwrap();
            let mark_time = at("2024-01-16T00:05:00Z");
            manifest.mark_expiry(SOURCE_BUCKET, &[marked.key.clone(), pending.key.clone()], mark_time).await.unwrap();
            manifest.release(&lease, now).await.unwrap();

            let object_item = |object: &NewObject| {
                key_of(object_item_pk(&object.bucket, &object.partition.path, &object.key), object.key.clone())
            };
            let expires_at_of = |item: Option<Item>| -> Option<String> {
                item.expect("the item exists").get(RECORD_EXPIRY_ATTRIBUTE).map(|value| {
                    value
                        .as_n()
                        .cloned()
                        .unwrap_or_else(|_| panic!("{RECORD_EXPIRY_ATTRIBUTE} must be a Number: {value:?}"))
                })
            };
            let expected = record_ttl.map(|record_ttl| (mark_time + record_ttl).timestamp().to_string());
            assert_eq!(
                expires_at_of(manifest.get_item(object_item(&marked)).await.unwrap()),
                expected,
                "{record_ttl:?}"
            );
            assert_eq!(expires_at_of(manifest.get_item(object_item(&unmarked)).await.unwrap()), None, "not marked yet");
            assert_eq!(expires_at_of(manifest.get_item(object_item(&pending)).await.unwrap()), None, "pending");
            let partition_item = key_of(partition_item_pk(SOURCE_BUCKET, &partition.path), PARTITION_SORT_KEY);
            assert_eq!(expires_at_of(manifest.get_item(partition_item).await.unwrap()), None, "partition");
            let (output_item, _) =
                manifest.load_output(&output.bucket, &output.key).await.unwrap().expect("the output");
            assert_eq!(expires_at_of(Some(output_item)), None, "output");

            // A newer version of the marked source is pending again, and loses the expiry time.
            manifest.record_object(&new_object(&partition, "marked.json", "20", 12)).await.unwrap();
            let replaced = manifest.get_item(object_item(&marked)).await.unwrap();
            assert_eq!(expires_at_of(replaced), None, "a newer, pending version");
        }
    }

    /// The interleaving the ingest counter exists for: release counts nothing pending, a late
    /// object is ingested, then release writes. The write must not seal (or drop the partition
    /// from the pending index); the next round counts the object and opens the partition.
    #[tokio::test]
    async fn a_release_that_counted_before_a_late_ingest_does_not_seal() {
        let Some((manifest, _table)) = new_test_manifest().await else { return };
        let partition = day_partition("logs", 14);
        let key = partition_key_of(&partition);
        manifest.record_object(&new_object(&partition, "a.json", "10", 10)).await.unwrap();
        let now = at("2024-01-16T00:00:00Z");
        let lease = manifest.acquire(&key, "seal-1", now, Duration::minutes(15)).await.unwrap();
        manifest.mark_missing(&lease, "logs/2024/01/14/a.json", "10", "gone").await.unwrap();

        let counted = manifest.count_for_release(&lease).await.unwrap();
        assert_eq!(counted.pending_objects, 0);
        let late = new_object(&partition, "late.json", "10", 7);
        assert_eq!(manifest.record_object(&late).await.unwrap(), IngestOutcome::Recorded);
        assert!(manifest.write_release(&lease, counted, now).await.unwrap().is_none(), "the stale count must not seal");

        let released = manifest.release(&lease, now).await.unwrap();
        assert_eq!((released.state, released.pending_objects), (PartitionState::Open, 1));
        let closed = manifest.closed_partitions(now, 10).await.unwrap();
        assert_eq!(closed.into_iter().map(|record| record.key).collect::<Vec<_>>(), [key]);
    }

    /// The same race with real concurrency, many times: whatever the interleaving, a pending
    /// object always leaves its partition `open` and in the pending index.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_ingests_and_releases_never_strand_a_pending_object() {
        let Some((manifest, _table)) = new_test_manifest().await else { return };
        let manifest = Arc::new(manifest);
        let partition = day_partition("race", 14);
        let key = partition_key_of(&partition);
        manifest.record_object(&new_object(&partition, "first.json", "10", 1)).await.unwrap();
        let now = at("2024-01-16T00:00:00Z");
        for round in 0..12 {
            let lease = manifest.acquire(&key, "seal", now, Duration::minutes(15)).await.unwrap();
            for object in manifest.objects(&key, &ObjectQuery::in_state(ObjectState::Pending)).await.unwrap() {
                manifest.mark_missing(&lease, &object.key, &object.sequencer, "cleared for the race").await.unwrap();
            }
            let ingester = {
                let manifest = Arc::clone(&manifest);
                let late = new_object(&partition, &format!("late-{round}.json"), "10", 1);
                tokio::spawn(async move { manifest.record_object(&late).await })
            };
            let releaser = {
                let manifest = Arc::clone(&manifest);
                let lease = lease.clone();
                tokio::spawn(async move { manifest.release(&lease, now).await })
            };
            ingester.await.unwrap().unwrap();
            releaser.await.unwrap().unwrap();
            let record = manifest.partition(&key).await.unwrap().unwrap();
            assert_eq!(record.pending_objects, 1, "round {round}");
            assert_eq!(record.state, PartitionState::Open, "round {round}: a pending object keeps the partition open");
            let closed = manifest.closed_partitions(now, 10).await.unwrap();
            assert_eq!(closed.len(), 1, "round {round}: the pending object's partition stays in the pending index");
        }
    }
}
