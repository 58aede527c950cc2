//! One function per dataset kind: a file's key, body and event time from `(spec, day, file)`.
//!
//! Each file draws from its own PRNG stream, seeded from the dataset seed, the kind and the
//! file's ordinal. So files can be generated in any order, one at a time (memory does not grow
//! with the dataset), and a change to one kind's records never shifts another kind's bytes.

use std::fmt::Write as _;
use std::io::Write as _;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Days, Duration, NaiveDate, SecondsFormat, Timelike, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::rng::{mix64, SplitMix64};
use crate::{DatasetKind, DatasetSpec, GeneratedObject};

const MILLIS_PER_DAY: u64 = 86_400_000;

/// Generates file `file` of day `day` (both 0-based).
pub(crate) fn object_at(spec: &DatasetSpec, day: u32, file: u32) -> GeneratedObject {
    let mut file_rng = file_rng(spec.seed, spec.kind, day, file);
    let unique_id = unique_id(spec.seed, day, file);
    let date = date_of(spec, day);
    let event_time = file_time(&mut file_rng, date, file, spec.files_per_day);
    let context = FileContext { spec, date, file, unique_id, event_time, rng: file_rng };
    match spec.kind {
        DatasetKind::SeedJson => seed_json(context),
        DatasetKind::CloudTrail => cloudtrail(context),
        DatasetKind::HiveNdjson => hive_ndjson(context),
        DatasetKind::HiveCsv => hive_csv(context),
        DatasetKind::Parquet => parquet_batch(context),
    }
}

/// The date of day `day` of the dataset.
pub(crate) fn date_of(spec: &DatasetSpec, day: u32) -> NaiveDate {
    spec.start_date + Days::new(u64::from(day))
}

struct FileContext<'a> {
    spec: &'a DatasetSpec,
    date: NaiveDate,
    file: u32,
    /// Unique per (seed, day, file): keys embed it, so keys never collide.
    unique_id: u64,
    /// When the file was written: increasing with `file` within a day.
    event_time: DateTime<Utc>,
    rng: SplitMix64,
}

fn file_rng(seed: u64, kind: DatasetKind, day: u32, file: u32) -> SplitMix64 {
    let kind_salt = match kind {
        DatasetKind::SeedJson => 0x5EED,
        DatasetKind::CloudTrail => 0xC10D,
        DatasetKind::HiveNdjson => 0x4D15,
        DatasetKind::HiveCsv => 0xC5F0,
        DatasetKind::Parquet => 0xFEA7,
    };
    SplitMix64::new(mix64(mix64(seed ^ kind_salt) ^ ordinal(day, file)))
}

fn ordinal(day: u32, file: u32) -> u64 {
    (u64::from(day) << 32) | u64::from(file)
}

/// `mix64` is a bijection, and so is xor with a constant: distinct (day, file) pairs get
/// distinct identifiers for a given seed, with no bookkeeping.
fn unique_id(seed: u64, day: u32, file: u32) -> u64 {
    mix64(ordinal(day, file) ^ mix64(seed))
}

/// Files of a day are spread evenly over it, each at a random moment of its own slot, so
/// event times increase with the file index, as a real writer's would.
fn file_time(rng: &mut SplitMix64, date: NaiveDate, file: u32, files_per_day: u32) -> DateTime<Utc> {
    let files_per_day = u64::from(files_per_day.max(1));
    let slot_start = MILLIS_PER_DAY * u64::from(file) / files_per_day;
    let slot_end = MILLIS_PER_DAY * (u64::from(file) + 1) / files_per_day;
    let offset = slot_start + rng.below((slot_end - slot_start).max(1));
    start_of(date) + Duration::milliseconds(offset as i64)
}

fn start_of(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// `count` increasing record times ending at `end`, within the `window` before it but never
/// before the day started (so every record belongs to the file's partition).
fn record_times(rng: &mut SplitMix64, date: NaiveDate, end: DateTime<Utc>, window: Duration, count: u64) -> Vec<i64> {
    let first_allowed = (end - window).max(start_of(date)).timestamp_millis();
    let span = (end.timestamp_millis() - first_allowed).max(0) as u64;
    let mut offsets: Vec<u64> = (0..count).map(|_| rng.below(span + 1)).collect();
    offsets.sort_unstable();
    offsets.into_iter().map(|offset| first_allowed + offset as i64).collect()
}

fn millis_to_rfc3339(millis: i64, format: SecondsFormat) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis).expect("in range").to_rfc3339_opts(format, true)
}

fn uuid_like(unique_id: u64, rng: &mut SplitMix64) -> String {
    let random = rng.next_u64();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        unique_id >> 32,
        (unique_id >> 16) & 0xFFFF,
        unique_id & 0xFFFF,
        random >> 48,
        random & 0xFFFF_FFFF_FFFF
    )
}

fn random_uuid(rng: &mut SplitMix64) -> String {
    let high = rng.next_u64();
    uuid_like(high, rng)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // GzEncoder writes mtime 0 and no file name, so the header carries nothing but the bytes;
    // the deflate stream itself is pinned by the flate2 version in Cargo.lock. The fastest
    // level: the demo's CloudTrail is most of a gigabyte of JSON, and level 6 took four times as long for
    // files a quarter smaller. The size mix (44% under 1,000 bytes) is tuned at this level.
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4 + 64), Compression::fast());
    encoder.write_all(bytes).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

const WORDS: &[&str] = &[
    "order",
    "shipped",
    "customer",
    "payment",
    "accepted",
    "retry",
    "timeout",
    "cache",
    "miss",
    "warehouse",
    "invoice",
    "refund",
    "checkout",
    "session",
    "expired",
    "mobile",
    "desktop",
    "promotion",
    "applied",
    "discount",
    "inventory",
    "low",
    "stock",
    "updated",
    "profile",
    "address",
    "changed",
    "delivery",
    "window",
    "selected",
    "express",
    "standard",
    "gift",
    "wrap",
    "requested",
    "review",
    "submitted",
    "rating",
    "five",
    "stars",
    "coupon",
    "invalid",
    "cart",
    "abandoned",
    "reminder",
    "sent",
    "email",
    "opened",
    "link",
    "clicked",
    "search",
    "results",
    "empty",
    "filter",
    "price",
    "ascending",
    "category",
    "shoes",
    "books",
    "garden",
    "kitchen",
    "toys",
    "the",
    "a",
    "and",
    "with",
    "for",
];

/// Appends words until `text` has grown by at least `length` bytes.
fn push_words(rng: &mut SplitMix64, length: u64, text: &mut String) {
    let target = text.len() + length as usize;
    let mut first = true;
    while text.len() < target {
        if !first {
            text.push(' ');
        }
        first = false;
        text.push_str(rng.pick(WORDS));
    }
}

const EVENT_TYPES: &[&str] =
    &["page_view", "page_view", "page_view", "click", "click", "search", "add_to_cart", "purchase", "login", "logout"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY", "SEK"];
const COUNTRIES: &[&str] = &["DE", "FR", "US", "GB", "JP", "SE", "BR", "IN", "NL", "ES"];
const DEVICES: &[&str] = &["ios", "android", "web", "web", "desktop"];

/// Probability that a SeedJson file lacks its final newline, so the compactor's newline
/// insertion between concatenated line files gets exercised.
pub(crate) const SEED_JSON_NO_FINAL_NEWLINE_PER_MILLE: u64 = 50;

fn seed_json(mut context: FileContext<'_>) -> GeneratedObject {
    let rng = &mut context.rng;
    let key = format!(
        "{}{:04}/{:02}/{:02}/events-{}.json",
        context.spec.prefix,
        context.date.year(),
        context.date.month(),
        context.date.day(),
        uuid_like(context.unique_id, rng)
    );
    // The record count is fixed by the spec (as in the reference generator); sizes vary
    // through the message length, chosen per file on a log scale so files span about
    // 1-25 KiB, most of them small.
    let mean_message_bytes = rng.octave_spread(8, 9);
    let records = u64::from(context.spec.records_per_file.max(1));
    let times = record_times(rng, context.date, context.event_time, Duration::minutes(5), records);
    let mut body = String::with_capacity((records * (220 + mean_message_bytes)) as usize);
    for millis in times {
        let amount_cents = rng.below(50_000);
        let _ = write!(
            body,
            r#"{{"timestamp":"{}","user_id":"u-{:06}","event_type":"{}","amount":{}.{:02},"currency":"{}","session_id":"{:016x}","country":"{}","device":"{}","message":""#,
            millis_to_rfc3339(millis, SecondsFormat::Millis),
            rng.below(1_000_000),
            rng.pick(EVENT_TYPES),
            amount_cents / 100,
            amount_cents % 100,
            rng.pick(CURRENCIES),
            rng.next_u64(),
            rng.pick(COUNTRIES),
            rng.pick(DEVICES),
        );
        let message_bytes = mean_message_bytes / 2 + rng.below(mean_message_bytes + 1);
        push_words(rng, message_bytes, &mut body);
        body.push_str("\"}\n");
    }
    if rng.chance_per_mille(SEED_JSON_NO_FINAL_NEWLINE_PER_MILLE) {
        body.pop();
    }
    GeneratedObject { key, body: Bytes::from(body), event_time: context.event_time }
}

/// Share of CloudTrail files holding a single record: these are the files under 1,000
/// bytes, 44% in the CloudTrail repository the design cites.
pub(crate) const CLOUDTRAIL_SINGLE_RECORD_PER_MILLE: u64 = 440;

/// Fewest records in a CloudTrail file that is not a single-record one: three records gzip
/// to more than 1,000 bytes, so the size mix follows the single-record share.
const CLOUDTRAIL_MIN_MULTI_RECORDS: u64 = 3;

fn cloudtrail(mut context: FileContext<'_>) -> GeneratedObject {
    let spec = context.spec;
    let rng = &mut context.rng;
    // CloudTrail delivers about every five minutes; the file name carries the delivery time.
    let delivery_minute = context.event_time.minute() / 5 * 5;
    let records = if rng.chance_per_mille(CLOUDTRAIL_SINGLE_RECORD_PER_MILLE) {
        1
    } else {
        // Heavy-tailed around the mean the spec asks for: most files hold tens of records,
        // about 1 in 250 holds hundreds and passes 128 KiB.
        let mean_records = f64::from(spec.records_per_file.max(2));
        let multi_mean = (mean_records - CLOUDTRAIL_SINGLE_RECORD_PER_MILLE as f64 / 1000.0)
            / (1.0 - CLOUDTRAIL_SINGLE_RECORD_PER_MILLE as f64 / 1000.0);
        let extra_mean = (multi_mean - CLOUDTRAIL_MIN_MULTI_RECORDS as f64).max(0.0);
        let spread = rng.binomial_octave_spread() as f64;
        CLOUDTRAIL_MIN_MULTI_RECORDS + (spread * extra_mean / 37.9) as u64
    };
    let times = record_times(rng, context.date, context.event_time, Duration::minutes(5), records);
    let mut json = String::with_capacity(times.len() * 1_400 + 16);
    json.push_str(r#"{"Records":["#);
    for (index, millis) in times.into_iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        push_cloudtrail_record(rng, spec, millis, &mut json);
    }
    json.push_str("]}");
    let suffix = base62_suffix(context.unique_id, rng);
    let account = &spec.account_id;
    let region = &spec.region;
    let (year, month, day) = (context.date.year(), context.date.month(), context.date.day());
    let key = format!(
        "{}AWSLogs/{account}/CloudTrail/{region}/{year:04}/{month:02}/{day:02}/\
         {account}_CloudTrail_{region}_{year:04}{month:02}{day:02}T{:02}{delivery_minute:02}Z_{suffix}.json.gz",
        spec.prefix,
        context.event_time.hour(),
    );
    GeneratedObject { key, body: Bytes::from(gzip(json.as_bytes())), event_time: context.event_time }
}

/// CloudTrail file names end in 16 alphanumerics: 11 encode the unique id (so names never
/// collide), 5 are random.
fn base62_suffix(unique_id: u64, rng: &mut SplitMix64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut suffix = String::with_capacity(16);
    let mut rest = unique_id;
    for _ in 0..11 {
        suffix.push(ALPHABET[(rest % 62) as usize] as char);
        rest /= 62;
    }
    for _ in 0..5 {
        suffix.push(rng.pick(ALPHABET) as char);
    }
    suffix
}

/// (eventSource, eventName, readOnly) as a busy account's trail shows them.
const CLOUDTRAIL_CALLS: &[(&str, &str, bool)] = &[
    ("s3.amazonaws.com", "GetBucketAcl", true),
    ("s3.amazonaws.com", "ListBuckets", true),
    ("s3.amazonaws.com", "PutBucketPolicy", false),
    ("sts.amazonaws.com", "AssumeRole", true),
    ("sts.amazonaws.com", "GetCallerIdentity", true),
    ("ec2.amazonaws.com", "DescribeInstances", true),
    ("ec2.amazonaws.com", "RunInstances", false),
    ("ec2.amazonaws.com", "DescribeSecurityGroups", true),
    ("kms.amazonaws.com", "Decrypt", true),
    ("kms.amazonaws.com", "GenerateDataKey", true),
    ("iam.amazonaws.com", "GetRole", true),
    ("iam.amazonaws.com", "ListAttachedRolePolicies", true),
    ("lambda.amazonaws.com", "GetFunction", true),
    ("logs.amazonaws.com", "CreateLogStream", false),
    ("dynamodb.amazonaws.com", "DescribeTable", true),
    ("monitoring.amazonaws.com", "GetMetricData", true),
];

const USER_AGENTS: &[&str] = &[
    "aws-cli/2.15.10 Python/3.11.6 Linux/6.1.66 exe/x86_64.amzn.2023 prompt/off command/s3api.list-buckets",
    "Boto3/1.34.14 md/Botocore#1.34.14 ua/2.0 os/linux#5.10.205 md/arch#x86_64 lang/python#3.12.1",
    "aws-sdk-rust/1.1.2 os/linux lang/rust/1.75.0",
    "console.amazonaws.com",
    "AWS Internal",
    "cloudformation.amazonaws.com",
];

const ROLE_NAMES: &[&str] = &["AdminRole", "DeployRole", "lambda-ingest-role", "ReadOnly", "ci-runner"];
const USER_NAMES: &[&str] = &["alice", "bob", "carol", "deploy-bot", "terraform"];

/// Appends one CloudTrail record as JSON, fields in the order CloudTrail writes them. Written
/// by hand rather than through `serde_json::Value` (several times faster, which matters
/// for the demo's 600,000 records): every string here is drawn from tables or formatted from
/// numbers, so none needs escaping.
fn push_cloudtrail_record(rng: &mut SplitMix64, spec: &DatasetSpec, millis: i64, json: &mut String) {
    let (event_source, event_name, read_only) = rng.pick(CLOUDTRAIL_CALLS);
    let account = spec.account_id.as_str();
    let region = spec.region.as_str();
    let access_key = format!("ASIA{:016X}", rng.next_u64());
    json.push_str(r#"{"eventVersion":"1.09","userIdentity":"#);
    match rng.below(3) {
        0 => {
            let user = rng.pick(USER_NAMES);
            let _ = write!(
                json,
                r#"{{"type":"IAMUser","principalId":"AIDA{:016X}","arn":"arn:aws:iam::{account}:user/{user}","accountId":"{account}","accessKeyId":"{access_key}","userName":"{user}"}}"#,
                rng.next_u64()
            );
        }
        1 => {
            let role = rng.pick(ROLE_NAMES);
            let session = format!("session-{:08x}", rng.below(1 << 32));
            let principal = format!("AROA{:016X}", rng.next_u64());
            let _ = write!(
                json,
                r#"{{"type":"AssumedRole","principalId":"{principal}:{session}","arn":"arn:aws:sts::{account}:assumed-role/{role}/{session}","accountId":"{account}","accessKeyId":"{access_key}","sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"{principal}","arn":"arn:aws:iam::{account}:role/{role}","accountId":"{account}","userName":"{role}"}},"attributes":{{"creationDate":"{}","mfaAuthenticated":"false"}}}}}}"#,
                millis_to_rfc3339(millis - 600_000, SecondsFormat::Secs)
            );
        }
        _ => {
            let _ = write!(json, r#"{{"type":"AWSService","invokedBy":"{event_source}"}}"#);
        }
    }
    let source_ip = if rng.chance_per_mille(250) {
        event_source.to_string()
    } else {
        format!("{}.{}.{}.{}", rng.between(3, 223), rng.below(256), rng.below(256), rng.between(1, 254))
    };
    let _ = write!(
        json,
        r#","eventTime":"{}","eventSource":"{event_source}","eventName":"{event_name}","awsRegion":"{region}","sourceIPAddress":"{source_ip}","userAgent":"{}","requestParameters":"#,
        millis_to_rfc3339(millis, SecondsFormat::Secs),
        rng.pick(USER_AGENTS),
    );
    let _ = match event_source {
        "s3.amazonaws.com" => {
            write!(json, r#"{{"bucketName":"data-{:04}","Host":"s3.amazonaws.com"}}"#, rng.below(40))
        }
        "ec2.amazonaws.com" => write!(json, r#"{{"maxResults":1000,"filterSet":{{}}}}"#),
        "kms.amazonaws.com" => write!(
            json,
            r#"{{"encryptionAlgorithm":"SYMMETRIC_DEFAULT","keyId":"arn:aws:kms:{region}:{account}:key/{}"}}"#,
            random_uuid(rng)
        ),
        "sts.amazonaws.com" if event_name == "AssumeRole" => write!(
            json,
            r#"{{"roleArn":"arn:aws:iam::{account}:role/{}","roleSessionName":"session-{:08x}","durationSeconds":3600}}"#,
            rng.pick(ROLE_NAMES),
            rng.below(1 << 32)
        ),
        "logs.amazonaws.com" => write!(
            json,
            r#"{{"logGroupName":"/aws/lambda/function-{}","logStreamName":"2024/01/01/[$LATEST]{:016x}"}}"#,
            rng.below(30),
            rng.next_u64()
        ),
        _ => write!(json, "null"),
    };
    let _ = write!(
        json,
        r#","responseElements":null,"requestID":"{}","eventID":"{}","readOnly":{read_only},"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"{account}","eventCategory":"Management"}}"#,
        random_uuid(rng),
        random_uuid(rng),
    );
}

/// Share of Hive files written gzip-compressed.
pub(crate) const HIVE_GZIP_PER_MILLE: u64 = 300;

const PAGES: &[&str] = &["/", "/products", "/products/item", "/cart", "/checkout", "/search", "/account", "/help"];
const REFERRERS: &[&str] =
    &["", "https://www.google.com/", "https://www.bing.com/", "https://news.ycombinator.com/", "https://t.co/"];
const BROWSER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
];
const STATUSES: &[u16] = &[200, 200, 200, 200, 200, 200, 301, 304, 404, 500];

/// One click-stream row, shared by the NDJSON and CSV kinds.
struct ClickRow {
    timestamp: String,
    session_id: u64,
    user_id: u64,
    page: String,
    referrer: &'static str,
    status: u16,
    latency_ms: u64,
    response_bytes: u64,
    user_agent: &'static str,
}

/// The CSV header every HiveCsv file starts with.
pub const HIVE_CSV_HEADER: &str =
    "timestamp,session_id,user_id,page,referrer,status,latency_ms,response_bytes,user_agent\n";

fn click_rows(rng: &mut SplitMix64, context_date: NaiveDate, end: DateTime<Utc>, mean_records: u32) -> Vec<ClickRow> {
    // Uniform in [mean/4, 7*mean/4]: the mean the spec asks for, with some spread.
    let mean_records = u64::from(mean_records.max(1));
    let count = (mean_records / 4 + rng.below(mean_records * 3 / 2 + 1)).max(1);
    let times = record_times(rng, context_date, end, Duration::minutes(60), count);
    times
        .into_iter()
        .map(|millis| {
            let mut page = rng.pick(PAGES).to_string();
            if page == "/products/item" {
                page = format!("/products/{}", rng.below(100_000));
            } else if page == "/search" {
                page.push_str("?q=");
                page.push_str(rng.pick(WORDS));
            }
            ClickRow {
                timestamp: millis_to_rfc3339(millis, SecondsFormat::Millis),
                session_id: rng.next_u64(),
                user_id: rng.below(1_000_000),
                page,
                referrer: rng.pick(REFERRERS),
                status: rng.pick(STATUSES),
                latency_ms: 5 + rng.octave_spread(4, 8),
                response_bytes: rng.octave_spread(256, 8),
                user_agent: rng.pick(BROWSER_AGENTS),
            }
        })
        .collect()
}

fn hive_directory(spec: &DatasetSpec, date: NaiveDate) -> String {
    format!("{}year={:04}/month={:02}/day={:02}/", spec.prefix, date.year(), date.month(), date.day())
}

fn hive_ndjson(mut context: FileContext<'_>) -> GeneratedObject {
    let rng = &mut context.rng;
    let compressed = rng.chance_per_mille(HIVE_GZIP_PER_MILLE);
    let rows = click_rows(rng, context.date, context.event_time, context.spec.records_per_file);
    let mut body = String::with_capacity(rows.len() * 400);
    for row in rows {
        let _ = writeln!(
            body,
            r#"{{"timestamp":"{}","session_id":"{:016x}","user_id":{},"page":"{}","referrer":"{}","status":{},"latency_ms":{},"response_bytes":{},"user_agent":"{}"}}"#,
            row.timestamp,
            row.session_id,
            row.user_id,
            row.page,
            row.referrer,
            row.status,
            row.latency_ms,
            row.response_bytes,
            row.user_agent
        );
    }
    let key = format!(
        "{}hour={:02}/part-{:05}.ndjson{}",
        hive_directory(context.spec, context.date),
        context.event_time.hour(),
        context.file,
        if compressed { ".gz" } else { "" }
    );
    let body = if compressed { Bytes::from(gzip(body.as_bytes())) } else { Bytes::from(body) };
    GeneratedObject { key, body, event_time: context.event_time }
}

fn hive_csv(mut context: FileContext<'_>) -> GeneratedObject {
    let rng = &mut context.rng;
    let compressed = rng.chance_per_mille(HIVE_GZIP_PER_MILLE);
    let rows = click_rows(rng, context.date, context.event_time, context.spec.records_per_file);
    let mut body = String::with_capacity(HIVE_CSV_HEADER.len() + rows.len() * 300);
    body.push_str(HIVE_CSV_HEADER);
    for row in rows {
        // User agents hold commas: quote them, as any CSV writer would.
        let _ = writeln!(
            body,
            "{},{:016x},{},{},{},{},{},{},\"{}\"",
            row.timestamp,
            row.session_id,
            row.user_id,
            row.page,
            row.referrer,
            row.status,
            row.latency_ms,
            row.response_bytes,
            row.user_agent
        );
    }
    let key = format!(
        "{}part-{:05}.csv{}",
        hive_directory(context.spec, context.date),
        context.file,
        if compressed { ".gz" } else { "" }
    );
    let body = if compressed { Bytes::from(gzip(body.as_bytes())) } else { Bytes::from(body) };
    GeneratedObject { key, body, event_time: context.event_time }
}

/// A feature-store ingestion batch: one Parquet file of the compactor's feature-store schema.
fn parquet_batch(mut context: FileContext<'_>) -> GeneratedObject {
    use compactor::testkit::parquet_files::{file_bytes, FileSpec, Schema};
    let rng = &mut context.rng;
    let mut spec = FileSpec::from_seed(rng.next_u64(), Schema::Wide);
    let mean = u64::from(context.spec.records_per_file);
    spec.rows = rng.between(1, (2 * mean - 1).clamp(1, 500)) as u32;
    spec.first_row_group_rows = spec.first_row_group_rows.min(spec.rows).max(1);
    let body = file_bytes(&spec).expect("writing Parquet to a Vec cannot fail");
    let key = format!(
        "{}{:04}/{:02}/{:02}/batch-{:016x}.parquet",
        context.spec.prefix,
        context.date.year(),
        context.date.month(),
        context.date.day(),
        context.unique_id
    );
    GeneratedObject { key, body: Bytes::from(body), event_time: context.event_time }
}
