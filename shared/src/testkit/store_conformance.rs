//! The object store conformance suite: every guarantee of [`ObjectStore`], written once and run
//! against every adapter.
//!
//! Each case is `async fn case(store: &dyn ObjectStore, bucket: &str)`: `bucket` is a fresh,
//! empty, existing bucket that the case may fill as it likes; a case assumes nothing about any
//! other bucket. A case panics, with a message naming what broke, when the store does not
//! behave.
//!
//! Cases stay within what S3 accepts, so the same suite runs on S3-compatible servers: keys are
//! never both an object and a prefix of another key (a local directory cannot hold both), and
//! every multipart part but the last is at least 5 MiB.
//!
//! # Running it for a backend
//! [`object_store_conformance_tests!`](crate::object_store_conformance_tests) makes one
//! `#[tokio::test]` per case. Give it an expression, evaluated inside each async test, that
//! yields `(store, bucket, guard)`: `store` is an adapter value, `Box<dyn ObjectStore>` or
//! `Arc<dyn ObjectStore>`; `bucket` a `String` or `&str` naming a fresh, empty bucket; `guard`
//! anything that must live until the test ends (a temporary directory, a server handle). Add
//! `.await` inside the expression when making the store is async:
//!
//! ```ignore
//! #[cfg(test)]
//! mod conformance {
//!     fn local_dir_with_fresh_bucket() -> (LocalDir, String, tempfile::TempDir) { /* ... */ }
//!     compactor::object_store_conformance_tests!(local_dir_with_fresh_bucket());
//!     // or, for an async constructor: (amazon_s3_with_fresh_bucket().await)
//! }
//! ```
//! Put the macro in a module of its own: its tests are named after the cases.
//!
//! For a backend that needs a server which may be absent (the S3 tier), use the `optional:`
//! form: its expression yields `Option<(store, bucket, guard)>`, and a test whose factory
//! returns `None` passes without running its case (the factory says why on stderr):
//!
//! ```ignore
//! compactor::object_store_conformance_tests!(optional: amazon_s3_with_fresh_bucket().await);
//! ```
//!
//! An S3-compatible server may lack what S3 guarantees. Add `known_gaps: f`, where
//! `f(case_name)` gives `Some(reason)` for a case the server is known to fail: that case still
//! runs, must still fail, and its failure is reported instead of failing the test (see
//! [`run_case_with_a_known_gap`]). Gaps belong to a server, never to an adapter: against S3
//! itself every case runs.

use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;

use crate::config::MIN_PART_BYTES;
use crate::ports::object_store::{
    remove_tag, CompletedPart, DeleteRequest, GetOptions, GetRequest, GetResult, ObjectMeta, ObjectStore, PutOptions,
    SeenAtRead, StoreError, Tag, TagOutcome, TagRequest, MAX_KEYS_PER_DELETE,
};

/// Makes one `#[tokio::test]` per conformance case, each calling
/// `$crate::testkit::store_conformance::<case>` on the store `$make_store` yields. See the
/// [module documentation](crate::testkit::store_conformance) for what `$make_store` must give.
#[macro_export]
macro_rules! object_store_conformance_tests {
    // Literal-led arms come before `$make_store:expr`, so that their inputs are never handed
    // to the expression parser.
    (optional: $make_optional_store:expr) => {
        $crate::object_store_conformance_tests!(
            optional: $make_optional_store,
            known_gaps: |_case: &str| -> ::core::option::Option<&'static str> { ::core::option::Option::None }
        );
    };
    (optional: $make_optional_store:expr, known_gaps: $known_gap_of_case:expr) => {
        $crate::object_store_conformance_tests!(@all_cases optional_cases [$make_optional_store, $known_gap_of_case]);
    };
    (@cases [$make_store:expr]; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                let (store, bucket, _guard) = $make_store;
                let store_under_test: &dyn $crate::ports::ObjectStore = &store;
                $crate::testkit::store_conformance::$case(store_under_test, ::core::convert::AsRef::<str>::as_ref(&bucket))
                    .await;
            }
        )*
    };
    (@optional_cases [$make_optional_store:expr, $known_gap_of_case:expr]; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                let ::core::option::Option::Some((store, bucket, _guard)) = $make_optional_store else {
                    return;
                };
                let store_under_test: &dyn $crate::ports::ObjectStore = &store;
                let case_under_test = $crate::testkit::store_conformance::$case(
                    store_under_test,
                    ::core::convert::AsRef::<str>::as_ref(&bucket),
                );
                let known_gap: ::core::option::Option<&str> = ($known_gap_of_case)(stringify!($case));
                match known_gap {
                    ::core::option::Option::None => case_under_test.await,
                    ::core::option::Option::Some(reason) => {
                        $crate::testkit::store_conformance::run_case_with_a_known_gap(
                            stringify!($case),
                            reason,
                            case_under_test,
                        )
                        .await
                    }
                }
            }
        )*
    };
    // The factory travels in brackets: forwarded `expr` fragments are opaque, so a bare
    // `(store, gaps)` pair could not be taken apart again by the arm that uses it.
    (@all_cases $arm:ident [$($factory:tt)*]) => {
        $crate::object_store_conformance_tests!(@$arm [$($factory)*];
            put_then_head_and_get_return_the_same_object,
            empty_object_roundtrips,
            ranged_get_returns_exactly_the_range_and_clamps_to_the_end,
            ranged_get_starting_past_the_end_is_an_invalid_request,
            missing_key_is_not_found,
            get_many_answers_each_object_in_order,
            get_if_match_reads_on_match_and_fails_on_mismatch,
            put_if_none_match_fails_when_the_key_exists,
            concurrent_if_none_match_puts_have_exactly_one_winner,
            etag_changes_when_bytes_change,
            keys_with_spaces_plus_percent_and_unicode_roundtrip,
            list_returns_keys_in_byte_order,
            list_filters_by_prefix,
            list_starts_after_the_given_key,
            list_paginates_with_max_keys,
            multipart_assembles_parts_in_part_number_order,
            multipart_reuploaded_part_replaces_the_earlier_one,
            multipart_with_a_stale_part_etag_is_refused,
            abort_multipart_is_idempotent,
            complete_of_unknown_upload_is_no_such_upload,
            upload_part_copy_copies_a_range_of_another_object,
            tags_put_then_get_roundtrip,
            put_tags_replaces_the_whole_set,
            put_of_new_bytes_clears_tags,
            completed_multipart_clears_tags,
            tags_of_a_missing_key_are_not_found,
            add_tag_many_merges_and_answers_each_object_in_order,
            get_says_how_many_tags_the_object_carries,
            add_tag_many_sets_the_tag_of_an_object_seen_untagged_without_reading_it,
            remove_tag_takes_only_that_tag_off,
            delete_is_idempotent,
            delete_many_deletes_every_key_and_counts_missing_keys_as_deleted,
            delete_many_with_the_current_etag_deletes_and_with_a_stale_one_keeps_the_object,
            delete_many_takes_a_thousand_keys_and_refuses_more,
            large_object_streams_in_several_chunks,
        );
    };
    ($make_store:expr) => {
        $crate::object_store_conformance_tests!(@all_cases cases [$make_store]);
    };
}

/// Runs a case the server under test is known to fail (a gap of an S3-compatible server, not
/// of the adapter), for the `known_gaps:` form of
/// [`object_store_conformance_tests!`](crate::object_store_conformance_tests): the case must
/// still fail, so that a gap the server has since closed is noticed and its entry removed, and
/// its failure is reported on stderr rather than failing the test.
pub async fn run_case_with_a_known_gap(
    case: &str,
    reason: &str,
    case_under_test: impl std::future::Future<Output = ()>,
) {
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(case_under_test)).await;
    match outcome {
        Err(_) => eprintln!("KNOWN GAP: {case} fails on this server, as expected: {reason}"),
        Ok(()) => panic!(
            "{case} is listed as a known gap of this server ({reason}) but passed: the server no longer has \
             the gap, remove it from the list"
        ),
    }
}

/// Bytes that differ from position to position and from seed to seed, so that a misplaced or
/// repeated range never compares equal by accident.
pub fn patterned_bytes(num_bytes: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(num_bytes);
    for _ in 0..num_bytes {
        // xorshift64: cheap enough to make megabytes in a debug build.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push((state >> 24) as u8);
    }
    Bytes::from(bytes)
}

async fn put_bytes(store: &dyn ObjectStore, bucket: &str, key: &str, body: Bytes) -> crate::ports::ObjectMeta {
    store
        .put(bucket, key, body, PutOptions::default())
        .await
        .unwrap_or_else(|error| panic!("{}: put of {key:?} failed: {error}", store.name()))
}

async fn get_bytes(store: &dyn ObjectStore, bucket: &str, key: &str) -> Bytes {
    get_range(store, bucket, key, None).await
}

async fn get_range(store: &dyn ObjectStore, bucket: &str, key: &str, range: Option<Range<u64>>) -> Bytes {
    let options = GetOptions { range: range.clone(), if_match: None };
    let get_result = store
        .get(bucket, key, options)
        .await
        .unwrap_or_else(|error| panic!("{}: get of {key:?} (range {range:?}) failed: {error}", store.name()));
    get_result.bytes().await.unwrap_or_else(|error| panic!("{}: reading {key:?} failed: {error}", store.name()))
}

async fn listed_keys(store: &dyn ObjectStore, bucket: &str, prefix: &str, start_after: Option<&str>) -> Vec<String> {
    let page = store
        .list(bucket, prefix, start_after, 1000)
        .await
        .unwrap_or_else(|error| panic!("{}: list of {prefix:?} failed: {error}", store.name()));
    assert_eq!(page.next_start_after, None, "{}: a page of 1000 should hold these few keys", store.name());
    page.objects.into_iter().map(|object| object.key).collect()
}

fn sorted_tags(mut tags: Vec<Tag>) -> Vec<Tag> {
    tags.sort();
    tags
}

fn assert_not_found<T: std::fmt::Debug>(store: &dyn ObjectStore, what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("{}: {what} should be NotFound, got {other:?}", store.name()),
    }
}

pub async fn put_then_head_and_get_return_the_same_object(store: &dyn ObjectStore, bucket: &str) {
    let body = patterned_bytes(10_000, 1);
    let put_meta = put_bytes(store, bucket, "logs/2024/01/14/a.json", body.clone()).await;
    assert_eq!(put_meta.key, "logs/2024/01/14/a.json");
    assert_eq!(put_meta.size, 10_000);
    assert!(put_meta.etag.is_some(), "{}: put should return an ETag", store.name());

    let head_meta = store.head(bucket, "logs/2024/01/14/a.json").await.expect("head after put");
    assert_eq!(head_meta.size, 10_000);
    assert_eq!(head_meta.etag, put_meta.etag, "{}: head and put should agree on the ETag", store.name());
    assert!(head_meta.last_modified.is_some(), "{}: head should say when the object was written", store.name());

    let get_result = store.get(bucket, "logs/2024/01/14/a.json", GetOptions::default()).await.expect("get after put");
    assert_eq!(get_result.range, 0..10_000);
    assert_eq!(get_result.meta.etag, put_meta.etag);
    assert_eq!(get_result.bytes().await.expect("read body"), body);
}

pub async fn empty_object_roundtrips(store: &dyn ObjectStore, bucket: &str) {
    let put_meta = put_bytes(store, bucket, "empty", Bytes::new()).await;
    assert_eq!(put_meta.size, 0);
    assert_eq!(store.head(bucket, "empty").await.expect("head of empty object").size, 0);
    assert!(get_bytes(store, bucket, "empty").await.is_empty());
}

pub async fn ranged_get_returns_exactly_the_range_and_clamps_to_the_end(store: &dyn ObjectStore, bucket: &str) {
    let body = patterned_bytes(1000, 2);
    put_bytes(store, bucket, "ranged", body.clone()).await;

    assert_eq!(get_range(store, bucket, "ranged", Some(0..1)).await, body.slice(0..1));
    assert_eq!(get_range(store, bucket, "ranged", Some(100..250)).await, body.slice(100..250));
    assert_eq!(get_range(store, bucket, "ranged", Some(999..1000)).await, body.slice(999..1000));

    let clamped = store
        .get(bucket, "ranged", GetOptions { range: Some(900..5000), if_match: None })
        .await
        .expect("a range past the end is clamped");
    assert_eq!(clamped.range, 900..1000, "{}: the result's range should say what was returned", store.name());
    assert_eq!(clamped.meta.size, 1000, "{}: meta.size is the whole object's size", store.name());
    assert_eq!(clamped.bytes().await.expect("read clamped range"), body.slice(900..1000));
}

pub async fn ranged_get_starting_past_the_end_is_an_invalid_request(store: &dyn ObjectStore, bucket: &str) {
    put_bytes(store, bucket, "short", patterned_bytes(10, 3)).await;
    let result = store.get(bucket, "short", GetOptions { range: Some(10..20), if_match: None }).await;
    assert!(
        matches!(result, Err(StoreError::InvalidRequest { .. })),
        "{}: a range starting at the end should be InvalidRequest, got {result:?}",
        store.name()
    );
}

pub async fn missing_key_is_not_found(store: &dyn ObjectStore, bucket: &str) {
    assert_not_found(store, "head of a missing key", store.head(bucket, "missing").await);
    assert_not_found(store, "get of a missing key", store.get(bucket, "missing", GetOptions::default()).await);

    // A key below an object, and a prefix of objects, are not objects either.
    put_bytes(store, bucket, "file", Bytes::from_static(b"x")).await;
    put_bytes(store, bucket, "directory/object", Bytes::from_static(b"x")).await;
    assert_not_found(
        store,
        "get of a key below an object",
        store.get(bucket, "file/below", GetOptions::default()).await,
    );
    assert_not_found(store, "head of a prefix of objects", store.head(bucket, "directory").await);
    assert_not_found(store, "get of a prefix of objects", store.get(bucket, "directory", GetOptions::default()).await);
}

pub async fn get_if_match_reads_on_match_and_fails_on_mismatch(store: &dyn ObjectStore, bucket: &str) {
    let put_meta = put_bytes(store, bucket, "conditional", Bytes::from_static(b"version one")).await;
    let etag = put_meta.etag.expect("put returns an ETag");

    let matching = store
        .get(bucket, "conditional", GetOptions { range: None, if_match: Some(etag.clone()) })
        .await
        .expect("get with the current ETag reads");
    assert_eq!(matching.bytes().await.expect("read"), Bytes::from_static(b"version one"));

    put_bytes(store, bucket, "conditional", Bytes::from_static(b"version two")).await;
    let result = store.get(bucket, "conditional", GetOptions { range: None, if_match: Some(etag) }).await;
    assert!(
        matches!(result, Err(StoreError::PreconditionFailed { .. })),
        "{}: get with a stale ETag should be PreconditionFailed, got {result:?}",
        store.name()
    );
}

pub async fn put_if_none_match_fails_when_the_key_exists(store: &dyn ObjectStore, bucket: &str) {
    let create_only = PutOptions { if_none_match: true };
    store.put(bucket, "once", Bytes::from_static(b"first"), create_only.clone()).await.expect("create a new key");
    let result = store.put(bucket, "once", Bytes::from_static(b"second"), create_only).await;
    assert!(
        matches!(result, Err(StoreError::AlreadyExists { .. })),
        "{}: put if_none_match on an existing key should be AlreadyExists, got {result:?}",
        store.name()
    );
    assert_eq!(get_bytes(store, bucket, "once").await, Bytes::from_static(b"first"), "the first write must survive");
}

pub async fn concurrent_if_none_match_puts_have_exactly_one_winner(store: &dyn ObjectStore, bucket: &str) {
    let num_writers = 8;
    let attempts = (0..num_writers).map(|writer| {
        store.put(bucket, "contended", patterned_bytes(64 * 1024, 100 + writer), PutOptions { if_none_match: true })
    });
    let outcomes = futures::future::join_all(attempts).await;
    let winners: Vec<usize> =
        outcomes.iter().enumerate().filter(|(_, outcome)| outcome.is_ok()).map(|(writer, _)| writer).collect();
    assert_eq!(winners.len(), 1, "{}: exactly one racing create should win, outcomes: {outcomes:?}", store.name());
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Ok(_) | Err(StoreError::AlreadyExists { .. })),
            "{}: a losing create should be AlreadyExists, got {outcome:?}",
            store.name()
        );
    }
    assert_eq!(get_bytes(store, bucket, "contended").await, patterned_bytes(64 * 1024, 100 + winners[0] as u64));
}

pub async fn etag_changes_when_bytes_change(store: &dyn ObjectStore, bucket: &str) {
    // Same size on purpose: an ETag made of the size alone would not change.
    let first = put_bytes(store, bucket, "changing", patterned_bytes(4096, 4)).await;
    let second = put_bytes(store, bucket, "changing", patterned_bytes(4096, 5)).await;
    assert_ne!(first.etag, second.etag, "{}: rewriting an object must change its ETag", store.name());
    assert_eq!(store.head(bucket, "changing").await.expect("head").etag, second.etag);
}

pub async fn keys_with_spaces_plus_percent_and_unicode_roundtrip(store: &dyn ObjectStore, bucket: &str) {
    let keys = [
        "logs/2024/01/14/my file.json",
        "logs/2024/01/14/a+b.json",
        "logs/2024/01/14/100%.json",
        "logs/2024/01/14/%20not-a-space.json",
        "logs/2024/01/14/café é.json",
        "logs/日本/ファイル.json",
    ];
    for (index, key) in keys.iter().enumerate() {
        put_bytes(store, bucket, key, patterned_bytes(100, 10 + index as u64)).await;
    }
    for (index, key) in keys.iter().enumerate() {
        assert_eq!(get_bytes(store, bucket, key).await, patterned_bytes(100, 10 + index as u64), "bytes of {key:?}");
        assert_eq!(store.head(bucket, key).await.expect("head").key, *key);
    }
    let mut expected_keys: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
    expected_keys.sort();
    assert_eq!(listed_keys(store, bucket, "logs/", None).await, expected_keys);
    assert_eq!(listed_keys(store, bucket, "logs/日本/", None).await, vec!["logs/日本/ファイル.json".to_owned()]);
    assert_eq!(
        listed_keys(store, bucket, "logs/2024/01/14/a+", None).await,
        vec!["logs/2024/01/14/a+b.json".to_owned()]
    );
    store.delete(bucket, "logs/2024/01/14/café é.json").await.expect("delete a unicode key");
    assert_not_found(store, "a deleted unicode key", store.head(bucket, "logs/2024/01/14/café é.json").await);
}

/// Keys chosen so that a directory walk in name order would list them wrongly: `-` and `.`
/// sort before `/`, and `0` after it.
const BYTE_ORDER_KEYS: [&str; 10] = ["B", "a-c", "a.b", "a/b", "a/c/d", "a0", "b", "z/e", "z/é", "é"];

pub async fn list_returns_keys_in_byte_order(store: &dyn ObjectStore, bucket: &str) {
    for key in BYTE_ORDER_KEYS.iter().rev() {
        put_bytes(store, bucket, key, Bytes::from(key.as_bytes().to_vec())).await;
    }
    let page = store.list(bucket, "", None, 1000).await.expect("list everything");
    let keys: Vec<&str> = page.objects.iter().map(|object| object.key.as_str()).collect();
    assert_eq!(keys, BYTE_ORDER_KEYS, "{}: keys should be in UTF-8 byte order", store.name());
    assert_eq!(page.next_start_after, None);
    for object in &page.objects {
        assert_eq!(object.size, object.key.len() as u64, "size of {:?}", object.key);
        let head_meta = store.head(bucket, &object.key).await.expect("head a listed key");
        assert_eq!(
            object.etag,
            head_meta.etag,
            "{}: list and head should agree on the ETag of {:?}",
            store.name(),
            object.key
        );
    }
}

pub async fn list_filters_by_prefix(store: &dyn ObjectStore, bucket: &str) {
    for key in ["logs/2024/01/1", "logs/2024/01/14/a", "logs/2024/01/15/b", "logs/2024/02/01/c", "other"] {
        put_bytes(store, bucket, key, Bytes::from_static(b"x")).await;
    }
    // A prefix need not end at a `/`.
    assert_eq!(
        listed_keys(store, bucket, "logs/2024/01/1", None).await,
        ["logs/2024/01/1", "logs/2024/01/14/a", "logs/2024/01/15/b"]
    );
    assert_eq!(listed_keys(store, bucket, "logs/2024/01/14/", None).await, ["logs/2024/01/14/a"]);
    assert_eq!(listed_keys(store, bucket, "logs/2024/02", None).await, ["logs/2024/02/01/c"]);
    assert_eq!(listed_keys(store, bucket, "nothing-here", None).await, Vec::<String>::new());
    assert_eq!(listed_keys(store, bucket, "", None).await.len(), 5);
}

pub async fn list_starts_after_the_given_key(store: &dyn ObjectStore, bucket: &str) {
    for key in BYTE_ORDER_KEYS {
        put_bytes(store, bucket, key, Bytes::from_static(b"x")).await;
    }
    assert_eq!(listed_keys(store, bucket, "", Some("a.b")).await, BYTE_ORDER_KEYS[3..]);
    // `start_after` need not be a key, and may sit inside a directory's keys.
    assert_eq!(listed_keys(store, bucket, "", Some("a/bb")).await, BYTE_ORDER_KEYS[4..]);
    assert_eq!(listed_keys(store, bucket, "", Some("a/")).await, BYTE_ORDER_KEYS[3..]);
    assert_eq!(listed_keys(store, bucket, "z/", Some("z/e")).await, ["z/é"]);
    assert_eq!(listed_keys(store, bucket, "", Some("é")).await, Vec::<String>::new());
}

pub async fn list_paginates_with_max_keys(store: &dyn ObjectStore, bucket: &str) {
    let mut expected_keys: Vec<String> =
        (0..23).map(|index| format!("pages/{:02}/object-{index}", index % 7)).collect();
    for key in &expected_keys {
        put_bytes(store, bucket, key, Bytes::from_static(b"x")).await;
    }
    put_bytes(store, bucket, "outside/the-prefix", Bytes::from_static(b"x")).await;
    expected_keys.sort();

    let mut listed: Vec<String> = Vec::new();
    let mut start_after: Option<String> = None;
    let mut num_pages = 0;
    loop {
        let page = store.list(bucket, "pages/", start_after.as_deref(), 5).await.expect("list a page");
        num_pages += 1;
        assert!(page.objects.len() <= 5, "{}: a page holds at most max_keys objects", store.name());
        listed.extend(page.objects.into_iter().map(|object| object.key));
        match page.next_start_after {
            Some(next_start_after) => {
                assert_eq!(Some(&next_start_after), listed.last(), "next_start_after is the page's last key");
                start_after = Some(next_start_after);
            }
            None => break,
        }
        assert!(num_pages < 10, "{}: pagination does not end", store.name());
    }
    assert_eq!(listed, expected_keys);
    assert_eq!(num_pages, 5, "23 keys in pages of 5");
}

/// Uploads parts in a scrambled order and checks they are assembled by part number: parts 1
/// and 2 at S3's 5 MiB minimum, part 3 small.
pub async fn multipart_assembles_parts_in_part_number_order(store: &dyn ObjectStore, bucket: &str) {
    let part_bodies = [
        patterned_bytes(MIN_PART_BYTES as usize, 21),
        patterned_bytes(MIN_PART_BYTES as usize, 22),
        patterned_bytes(1000, 23),
    ];
    let upload_id = store.create_multipart(bucket, "outputs/assembled").await.expect("create multipart");
    let mut completed_parts = Vec::new();
    for part_number in [3u32, 1, 2] {
        let body = part_bodies[part_number as usize - 1].clone();
        let part = store
            .upload_part(bucket, "outputs/assembled", &upload_id, part_number, body)
            .await
            .unwrap_or_else(|error| panic!("{}: upload part {part_number} failed: {error}", store.name()));
        assert_eq!(part.part_number, part_number);
        completed_parts.push(part);
    }
    completed_parts.sort_by_key(|part| part.part_number);
    assert_not_found(store, "an object before its upload completes", store.head(bucket, "outputs/assembled").await);

    let meta = store
        .complete_multipart(bucket, "outputs/assembled", &upload_id, &completed_parts)
        .await
        .expect("complete multipart");
    let expected: Vec<u8> = part_bodies.iter().flat_map(|body| body.iter().copied()).collect();
    assert_eq!(meta.size, expected.len() as u64);
    let assembled = get_bytes(store, bucket, "outputs/assembled").await;
    assert!(assembled == expected, "{}: parts should be assembled in part-number order", store.name());
    assert_eq!(store.head(bucket, "outputs/assembled").await.expect("head").etag, meta.etag);
}

pub async fn multipart_reuploaded_part_replaces_the_earlier_one(store: &dyn ObjectStore, bucket: &str) {
    let upload_id = store.create_multipart(bucket, "outputs/replaced").await.expect("create multipart");
    store
        .upload_part(bucket, "outputs/replaced", &upload_id, 1, patterned_bytes(MIN_PART_BYTES as usize, 31))
        .await
        .expect("first upload of part 1");
    let replacement_body = patterned_bytes(MIN_PART_BYTES as usize, 32);
    let part_one = store
        .upload_part(bucket, "outputs/replaced", &upload_id, 1, replacement_body.clone())
        .await
        .expect("second upload of part 1");
    let part_two = store
        .upload_part(bucket, "outputs/replaced", &upload_id, 2, Bytes::from_static(b"tail"))
        .await
        .expect("upload part 2");
    store.complete_multipart(bucket, "outputs/replaced", &upload_id, &[part_one, part_two]).await.expect("complete");
    let mut expected = replacement_body.to_vec();
    expected.extend_from_slice(b"tail");
    assert!(
        get_bytes(store, bucket, "outputs/replaced").await == expected,
        "{}: the last upload of a part wins",
        store.name()
    );
}

pub async fn multipart_with_a_stale_part_etag_is_refused(store: &dyn ObjectStore, bucket: &str) {
    let upload_id = store.create_multipart(bucket, "outputs/stale").await.expect("create multipart");
    let first_upload = store
        .upload_part(bucket, "outputs/stale", &upload_id, 1, patterned_bytes(1000, 41))
        .await
        .expect("first upload of part 1");
    let second_upload = store
        .upload_part(bucket, "outputs/stale", &upload_id, 1, patterned_bytes(1000, 42))
        .await
        .expect("second upload of part 1");
    assert_ne!(first_upload.etag, second_upload.etag, "{}: a part with other bytes has another ETag", store.name());
    let result = store.complete_multipart(bucket, "outputs/stale", &upload_id, &[first_upload]).await;
    assert!(
        matches!(result, Err(StoreError::InvalidRequest { .. })),
        "{}: completing with a replaced part's ETag should be InvalidRequest, got {result:?}",
        store.name()
    );
    assert_not_found(store, "the object of a refused completion", store.head(bucket, "outputs/stale").await);
    store.abort_multipart(bucket, "outputs/stale", &upload_id).await.expect("abort");
}

pub async fn abort_multipart_is_idempotent(store: &dyn ObjectStore, bucket: &str) {
    let upload_id = store.create_multipart(bucket, "outputs/aborted").await.expect("create multipart");
    let part = store
        .upload_part(bucket, "outputs/aborted", &upload_id, 1, Bytes::from_static(b"part"))
        .await
        .expect("upload part");
    store.abort_multipart(bucket, "outputs/aborted", &upload_id).await.expect("abort");
    store.abort_multipart(bucket, "outputs/aborted", &upload_id).await.expect("a second abort succeeds");

    let result = store.complete_multipart(bucket, "outputs/aborted", &upload_id, &[part]).await;
    assert!(
        matches!(result, Err(StoreError::NoSuchUpload { .. })),
        "{}: completing an aborted upload should be NoSuchUpload, got {result:?}",
        store.name()
    );
    let result = store.upload_part(bucket, "outputs/aborted", &upload_id, 2, Bytes::from_static(b"late")).await;
    assert!(
        matches!(result, Err(StoreError::NoSuchUpload { .. })),
        "{}: uploading to an aborted upload should be NoSuchUpload, got {result:?}",
        store.name()
    );
    assert_not_found(store, "the object of an aborted upload", store.head(bucket, "outputs/aborted").await);
}

pub async fn complete_of_unknown_upload_is_no_such_upload(store: &dyn ObjectStore, bucket: &str) {
    let made_up_part = CompletedPart { part_number: 1, etag: "made-up".to_owned() };
    let result = store.complete_multipart(bucket, "outputs/unknown", "no-such-upload-id", &[made_up_part]).await;
    assert!(
        matches!(result, Err(StoreError::NoSuchUpload { .. })),
        "{}: completing an unknown upload should be NoSuchUpload, got {result:?}",
        store.name()
    );
}

pub async fn upload_part_copy_copies_a_range_of_another_object(store: &dyn ObjectStore, bucket: &str) {
    let source_body = patterned_bytes(10_000, 51);
    let source_meta = put_bytes(store, bucket, "sources/a", source_body.clone()).await;
    let source_etag = source_meta.etag.expect("put returns an ETag");
    let first_part_body = patterned_bytes(MIN_PART_BYTES as usize, 52);

    let upload_id = store.create_multipart(bucket, "outputs/copied").await.expect("create multipart");
    let part_one = store
        .upload_part(bucket, "outputs/copied", &upload_id, 1, first_part_body.clone())
        .await
        .expect("upload part 1");

    let stale_copy = store
        .upload_part_copy(
            bucket,
            "outputs/copied",
            &upload_id,
            2,
            bucket,
            "sources/a",
            Some(1000..3000),
            Some("\"stale\""),
        )
        .await;
    assert!(
        matches!(stale_copy, Err(StoreError::PreconditionFailed { .. })),
        "{}: a copy with a stale source ETag should be PreconditionFailed, got {stale_copy:?}",
        store.name()
    );

    let part_two = store
        .upload_part_copy(
            bucket,
            "outputs/copied",
            &upload_id,
            2,
            bucket,
            "sources/a",
            Some(1000..3000),
            Some(&source_etag),
        )
        .await
        .expect("copy a range as part 2");
    assert_eq!(part_two.part_number, 2);
    store.complete_multipart(bucket, "outputs/copied", &upload_id, &[part_one, part_two]).await.expect("complete");

    let mut expected = first_part_body.to_vec();
    expected.extend_from_slice(&source_body[1000..3000]);
    assert!(
        get_bytes(store, bucket, "outputs/copied").await == expected,
        "{}: part 2 should hold bytes 1000..3000",
        store.name()
    );
    assert_eq!(get_bytes(store, bucket, "sources/a").await, source_body, "the source is unchanged");
}

pub async fn tags_put_then_get_roundtrip(store: &dyn ObjectStore, bucket: &str) {
    put_bytes(store, bucket, "tagged", Bytes::from_static(b"x")).await;
    assert_eq!(store.get_tags(bucket, "tagged").await.expect("tags of an untagged object"), Vec::<Tag>::new());
    let tags = vec![Tag::new("compactor-state", "compacted"), Tag::new("team", "data platform é")];
    store.put_tags(bucket, "tagged", &tags).await.expect("put tags");
    assert_eq!(sorted_tags(store.get_tags(bucket, "tagged").await.expect("get tags")), sorted_tags(tags));
    assert_eq!(get_bytes(store, bucket, "tagged").await, Bytes::from_static(b"x"), "tagging leaves the bytes alone");
}

pub async fn put_tags_replaces_the_whole_set(store: &dyn ObjectStore, bucket: &str) {
    put_bytes(store, bucket, "retagged", Bytes::from_static(b"x")).await;
    store.put_tags(bucket, "retagged", &[Tag::new("a", "1"), Tag::new("b", "2")]).await.expect("first tag set");
    store.put_tags(bucket, "retagged", &[Tag::new("b", "3"), Tag::new("c", "4")]).await.expect("second tag set");
    assert_eq!(
        sorted_tags(store.get_tags(bucket, "retagged").await.expect("get tags")),
        vec![Tag::new("b", "3"), Tag::new("c", "4")],
        "{}: put_tags replaces the whole set, it does not merge",
        store.name()
    );
    store.put_tags(bucket, "retagged", &[]).await.expect("empty tag set");
    assert_eq!(store.get_tags(bucket, "retagged").await.expect("get tags"), Vec::<Tag>::new());
}

pub async fn put_of_new_bytes_clears_tags(store: &dyn ObjectStore, bucket: &str) {
    put_bytes(store, bucket, "rewritten", Bytes::from_static(b"old")).await;
    store.put_tags(bucket, "rewritten", &[Tag::new("compactor-state", "compacted")]).await.expect("put tags");
    put_bytes(store, bucket, "rewritten", Bytes::from_static(b"new")).await;
    assert_eq!(
        store.get_tags(bucket, "rewritten").await.expect("get tags"),
        Vec::<Tag>::new(),
        "{}: a new object has no tags, as on S3; stale tags could expire fresh data",
        store.name()
    );
}

pub async fn completed_multipart_clears_tags(store: &dyn ObjectStore, bucket: &str) {
    put_bytes(store, bucket, "outputs/rewritten", Bytes::from_static(b"old")).await;
    store.put_tags(bucket, "outputs/rewritten", &[Tag::new("compactor-state", "compacted")]).await.expect("put tags");
    let upload_id = store.create_multipart(bucket, "outputs/rewritten").await.expect("create multipart");
    let part = store
        .upload_part(bucket, "outputs/rewritten", &upload_id, 1, Bytes::from_static(b"new"))
        .await
        .expect("upload part");
    store.complete_multipart(bucket, "outputs/rewritten", &upload_id, &[part]).await.expect("complete");
    assert_eq!(get_bytes(store, bucket, "outputs/rewritten").await, Bytes::from_static(b"new"));
    assert_eq!(store.get_tags(bucket, "outputs/rewritten").await.expect("get tags"), Vec::<Tag>::new());
}

pub async fn tags_of_a_missing_key_are_not_found(store: &dyn ObjectStore, bucket: &str) {
    assert_not_found(store, "get_tags of a missing key", store.get_tags(bucket, "missing").await);
    assert_not_found(
        store,
        "put_tags of a missing key",
        store.put_tags(bucket, "missing", &[Tag::new("a", "1")]).await,
    );
    // Tags do not outlive their object.
    put_bytes(store, bucket, "short-lived", Bytes::from_static(b"x")).await;
    store.put_tags(bucket, "short-lived", &[Tag::new("a", "1")]).await.expect("put tags");
    store.delete(bucket, "short-lived").await.expect("delete");
    assert_not_found(store, "get_tags of a deleted key", store.get_tags(bucket, "short-lived").await);
    put_bytes(store, bucket, "short-lived", Bytes::from_static(b"y")).await;
    assert_eq!(store.get_tags(bucket, "short-lived").await.expect("get tags"), Vec::<Tag>::new());
}

pub async fn get_many_answers_each_object_in_order(store: &dyn ObjectStore, bucket: &str) {
    let first = put_bytes(store, bucket, "many/first", Bytes::from_static(b"first object")).await;
    put_bytes(store, bucket, "many/empty", Bytes::new()).await;
    let stale = put_bytes(store, bucket, "many/rewritten", Bytes::from_static(b"old")).await;
    put_bytes(store, bucket, "many/rewritten", Bytes::from_static(b"new")).await;
    let request = |key: &str, options: GetOptions| GetRequest { key: key.to_owned(), options };
    let requests = [
        request("many/first", GetOptions { if_match: first.etag.clone(), ..GetOptions::default() }),
        request("many/missing", GetOptions::default()),
        request("many/empty", GetOptions::default()),
        request("many/rewritten", GetOptions { if_match: stale.etag.clone(), ..GetOptions::default() }),
        request("many/first", GetOptions { range: Some(6..12), ..GetOptions::default() }),
    ];
    let answers = store.get_many(bucket, &requests).await;
    assert_eq!(answers.len(), requests.len(), "{}: one answer per request", store.name());
    let mut answers = answers.into_iter();
    let first_answer = answers.next().expect("an answer");
    assert_eq!(answer_bytes(store, "the first object", first_answer).await, Bytes::from_static(b"first object"));
    assert_not_found(store, "a missing key in get_many", answers.next().expect("an answer").map(drop));
    assert_eq!(answer_bytes(store, "the empty object", answers.next().expect("an answer")).await, Bytes::new());
    assert!(
        matches!(answers.next(), Some(Err(StoreError::PreconditionFailed { .. }))),
        "{}: a stale if_match fails that object alone",
        store.name()
    );
    assert_eq!(answer_bytes(store, "a range", answers.next().expect("an answer")).await, Bytes::from_static(b"object"));
}

async fn answer_bytes(store: &dyn ObjectStore, what: &str, answer: Result<GetResult, StoreError>) -> Bytes {
    let body = answer.unwrap_or_else(|error| panic!("{}: {what}: {error}", store.name()));
    body.bytes().await.unwrap_or_else(|error| panic!("{}: {what}: {error}", store.name()))
}

pub async fn add_tag_many_merges_and_answers_each_object_in_order(store: &dyn ObjectStore, bucket: &str) {
    let tag = Tag::new("compacted", "true");
    let untagged = put_bytes(store, bucket, "expiry/untagged", Bytes::from_static(b"a")).await;
    let with_other_tags = put_bytes(store, bucket, "expiry/other-tags", Bytes::from_static(b"b")).await;
    store
        .put_tags(bucket, "expiry/other-tags", &[Tag::new("team", "x"), Tag::new("compacted", "false")])
        .await
        .expect("tags");
    let full = put_bytes(store, bucket, "expiry/ten-tags", Bytes::from_static(b"c")).await;
    let ten_tags: Vec<Tag> = (0..10).map(|index| Tag::new(format!("key-{index}"), "v")).collect();
    store.put_tags(bucket, "expiry/ten-tags", &ten_tags).await.expect("ten tags");
    let already = put_bytes(store, bucket, "expiry/already", Bytes::from_static(b"d")).await;
    store.put_tags(bucket, "expiry/already", std::slice::from_ref(&tag)).await.expect("our tag");
    let stale = put_bytes(store, bucket, "expiry/rewritten", Bytes::from_static(b"old")).await;
    put_bytes(store, bucket, "expiry/rewritten", Bytes::from_static(b"new")).await;

    let request = |key: &str, meta: Option<&ObjectMeta>| TagRequest {
        key: key.to_owned(),
        if_match: meta.and_then(|meta| meta.etag.clone()),
        seen: None,
    };
    let requests = [
        request("expiry/untagged", Some(&untagged)),
        request("expiry/other-tags", Some(&with_other_tags)),
        request("expiry/ten-tags", Some(&full)),
        request("expiry/already", Some(&already)),
        request("expiry/rewritten", Some(&stale)),
        request("expiry/missing", None),
    ];
    let outcomes: Vec<TagOutcome> = store
        .add_tag_many(bucket, &requests, &tag)
        .await
        .into_iter()
        .map(|outcome| outcome.expect("no object fails"))
        .collect();
    assert_eq!(
        outcomes,
        [
            TagOutcome::Tagged,
            TagOutcome::Tagged,
            TagOutcome::TagLimit,
            TagOutcome::AlreadyTagged,
            TagOutcome::Changed,
            TagOutcome::Gone
        ],
        "{}",
        store.name()
    );
    assert_eq!(store.get_tags(bucket, "expiry/untagged").await.expect("tags"), vec![tag.clone()]);
    assert_eq!(
        sorted_tags(store.get_tags(bucket, "expiry/other-tags").await.expect("tags")),
        sorted_tags(vec![Tag::new("team", "x"), tag.clone()]),
        "{}: the other tags are kept, ours replaces its own key only",
        store.name()
    );
    assert_eq!(sorted_tags(store.get_tags(bucket, "expiry/ten-tags").await.expect("tags")), sorted_tags(ten_tags));
    assert_eq!(
        store.get_tags(bucket, "expiry/rewritten").await.expect("tags"),
        Vec::<Tag>::new(),
        "{}: a newer version is never tagged",
        store.name()
    );
    assert_eq!(store.add_tag_many(bucket, &[], &tag).await.len(), 0, "an empty batch is no work");
}

pub async fn get_says_how_many_tags_the_object_carries(store: &dyn ObjectStore, bucket: &str) {
    put_bytes(store, bucket, "seen/untagged", Bytes::from_static(b"a")).await;
    put_bytes(store, bucket, "seen/tagged", Bytes::from_static(b"b")).await;
    store.put_tags(bucket, "seen/tagged", &[Tag::new("team", "x"), Tag::new("tier", "1")]).await.expect("tags");
    let untagged = store.get(bucket, "seen/untagged", GetOptions::default()).await.expect("get");
    let tagged = store.get(bucket, "seen/tagged", GetOptions::default()).await.expect("get");
    // The tag step trusts a count of 0 to replace the tag set: a store must never under-count.
    assert_eq!(untagged.seen.tag_count, Some(0), "{}: an object without tags", store.name());
    assert_eq!(tagged.seen.tag_count, Some(2), "{}: an object with two tags", store.name());
    // Fresh buckets are unversioned: a version named here would be tagged instead of the key.
    assert_eq!((untagged.seen.version_id, tagged.seen.version_id), (None, None), "{}", store.name());
    let many = store
        .get_many(bucket, &[GetRequest { key: "seen/tagged".into(), options: GetOptions::default() }])
        .await
        .pop()
        .expect("one answer")
        .expect("get_many");
    assert_eq!(many.seen.tag_count, Some(2), "{}: get_many says it too", store.name());
}

pub async fn add_tag_many_sets_the_tag_of_an_object_seen_untagged_without_reading_it(
    store: &dyn ObjectStore,
    bucket: &str,
) {
    let tag = Tag::new("compacted", "true");
    let seen_untagged = Some(SeenAtRead { tag_count: Some(0), version_id: None });
    put_bytes(store, bucket, "seen/plain", Bytes::from_static(b"a")).await;
    put_bytes(store, bucket, "seen/with-tags", Bytes::from_static(b"b")).await;
    store.put_tags(bucket, "seen/with-tags", &[Tag::new("team", "x")]).await.expect("tags");
    let requests = [
        TagRequest { key: "seen/plain".into(), if_match: None, seen: seen_untagged.clone() },
        TagRequest {
            key: "seen/with-tags".into(),
            if_match: None,
            seen: Some(SeenAtRead { tag_count: Some(1), version_id: None }),
        },
        TagRequest { key: "seen/gone".into(), if_match: None, seen: seen_untagged },
    ];
    let outcomes: Vec<TagOutcome> = store
        .add_tag_many(bucket, &requests, &tag)
        .await
        .into_iter()
        .map(|outcome| outcome.expect("no object fails"))
        .collect();
    assert_eq!(outcomes, [TagOutcome::Tagged, TagOutcome::Tagged, TagOutcome::Gone], "{}", store.name());
    assert_eq!(store.get_tags(bucket, "seen/plain").await.expect("tags"), vec![tag.clone()], "{}", store.name());
    assert_eq!(
        sorted_tags(store.get_tags(bucket, "seen/with-tags").await.expect("tags")),
        sorted_tags(vec![Tag::new("team", "x"), tag.clone()]),
        "{}: an object seen with tags keeps them",
        store.name()
    );
    assert_not_found(store, "a gone key stays gone", store.get(bucket, "seen/gone", GetOptions::default()).await);
}

pub async fn remove_tag_takes_only_that_tag_off(store: &dyn ObjectStore, bucket: &str) {
    let tag = Tag::new("compacted", "true");
    put_bytes(store, bucket, "unmark/only-ours", Bytes::from_static(b"a")).await;
    store.put_tags(bucket, "unmark/only-ours", std::slice::from_ref(&tag)).await.expect("tags");
    put_bytes(store, bucket, "unmark/with-others", Bytes::from_static(b"b")).await;
    store.put_tags(bucket, "unmark/with-others", &[Tag::new("team", "x"), tag.clone()]).await.expect("tags");
    put_bytes(store, bucket, "unmark/not-ours", Bytes::from_static(b"c")).await;
    store.put_tags(bucket, "unmark/not-ours", &[Tag::new("compacted", "false")]).await.expect("tags");

    assert!(remove_tag(store, bucket, "unmark/only-ours", &tag).await.expect("remove"), "{}", store.name());
    assert_eq!(store.get_tags(bucket, "unmark/only-ours").await.expect("tags"), Vec::<Tag>::new());
    assert!(remove_tag(store, bucket, "unmark/with-others", &tag).await.expect("remove"), "{}", store.name());
    assert_eq!(store.get_tags(bucket, "unmark/with-others").await.expect("tags"), vec![Tag::new("team", "x")]);
    assert!(!remove_tag(store, bucket, "unmark/not-ours", &tag).await.expect("remove"), "{}", store.name());
    assert_eq!(store.get_tags(bucket, "unmark/not-ours").await.expect("tags"), vec![Tag::new("compacted", "false")]);
    assert!(!remove_tag(store, bucket, "unmark/gone", &tag).await.expect("a gone key"), "{}", store.name());
    store.delete_tags(bucket, "unmark/only-ours").await.expect("deleting no tags succeeds");
}

pub async fn delete_is_idempotent(store: &dyn ObjectStore, bucket: &str) {
    put_bytes(store, bucket, "logs/2024/01/14/doomed", Bytes::from_static(b"x")).await;
    put_bytes(store, bucket, "logs/2024/01/14/kept", Bytes::from_static(b"y")).await;
    store.delete(bucket, "logs/2024/01/14/doomed").await.expect("delete");
    assert_not_found(store, "a deleted key", store.get(bucket, "logs/2024/01/14/doomed", GetOptions::default()).await);
    store.delete(bucket, "logs/2024/01/14/doomed").await.expect("deleting again succeeds");
    store.delete(bucket, "never/existed").await.expect("deleting a key that never existed succeeds");
    assert_eq!(listed_keys(store, bucket, "", None).await, ["logs/2024/01/14/kept"]);

    // Once the last key under a prefix is gone, the prefix can be a key itself.
    store.delete(bucket, "logs/2024/01/14/kept").await.expect("delete");
    put_bytes(store, bucket, "logs/2024/01/14", Bytes::from_static(b"z")).await;
    assert_eq!(listed_keys(store, bucket, "", None).await, ["logs/2024/01/14"]);
}

/// The outcomes of a `delete_many` that must succeed as a call, with the store's name on failure.
async fn delete_many_outcomes(
    store: &dyn ObjectStore,
    bucket: &str,
    requests: &[DeleteRequest],
) -> Vec<Result<(), StoreError>> {
    let outcomes = store.delete_many(bucket, requests).await.unwrap_or_else(|error| {
        panic!("{}: delete_many of {} keys failed as a whole: {error}", store.name(), requests.len())
    });
    assert_eq!(outcomes.len(), requests.len(), "{}: one outcome per key, in order", store.name());
    outcomes
}

pub async fn delete_many_deletes_every_key_and_counts_missing_keys_as_deleted(store: &dyn ObjectStore, bucket: &str) {
    let doomed = ["logs/2024/01/14/a.json", "logs/2024/01/14/my file+x é%.json", "logs/2024/01/15/b.json"];
    for (index, key) in doomed.iter().enumerate() {
        put_bytes(store, bucket, key, patterned_bytes(100, index as u64)).await;
    }
    put_bytes(store, bucket, "logs/2024/01/14/kept.json", Bytes::from_static(b"kept")).await;
    let mut requests: Vec<DeleteRequest> = doomed.iter().map(|key| DeleteRequest::new(*key)).collect();
    requests.push(DeleteRequest::new("logs/2024/01/14/never existed.json"));

    let outcomes = delete_many_outcomes(store, bucket, &requests).await;
    for (request, outcome) in requests.iter().zip(&outcomes) {
        assert!(outcome.is_ok(), "{}: deleting {:?} should succeed, got {outcome:?}", store.name(), request.key);
    }
    for key in doomed {
        assert_not_found(store, "a key deleted by delete_many", store.head(bucket, key).await);
    }
    assert_eq!(listed_keys(store, bucket, "", None).await, ["logs/2024/01/14/kept.json"]);

    // Again: nothing is left to delete, which is success.
    let again = delete_many_outcomes(store, bucket, &requests).await;
    assert!(again.iter().all(Result::is_ok), "{}: deleting deleted keys should succeed: {again:?}", store.name());
    assert!(
        store.delete_many(bucket, &[]).await.expect("an empty batch").is_empty(),
        "{}: an empty batch has no outcomes",
        store.name()
    );
    let missing_bucket = store.delete_many("compactor-no-such-bucket-0d1e2f", &requests[..1]).await;
    assert!(
        matches!(missing_bucket, Err(StoreError::NoSuchBucket { .. })),
        "{}: a batch in a missing bucket should fail as NoSuchBucket, got {missing_bucket:?}",
        store.name()
    );
}

pub async fn delete_many_with_the_current_etag_deletes_and_with_a_stale_one_keeps_the_object(
    store: &dyn ObjectStore,
    bucket: &str,
) {
    let unchanged = put_bytes(store, bucket, "unchanged", Bytes::from_static(b"version one")).await;
    let overwritten_first = put_bytes(store, bucket, "overwritten", Bytes::from_static(b"version one")).await;
    let overwritten_now = put_bytes(store, bucket, "overwritten", Bytes::from_static(b"version two, longer")).await;
    assert_ne!(overwritten_first.etag, overwritten_now.etag, "{}: a rewrite changes the ETag", store.name());
    let requests = [
        DeleteRequest::if_match("unchanged", unchanged.etag.clone().expect("put returns an ETag")),
        DeleteRequest::if_match("overwritten", overwritten_first.etag.clone().expect("put returns an ETag")),
        // Gone already: nothing is left to delete, whatever the ETag asked for.
        DeleteRequest::if_match("never existed", unchanged.etag.clone().expect("put returns an ETag")),
    ];

    let outcomes = delete_many_outcomes(store, bucket, &requests).await;
    assert!(outcomes[0].is_ok(), "{}: the current ETag should delete, got {:?}", store.name(), outcomes[0]);
    assert!(
        matches!(outcomes[1], Err(StoreError::PreconditionFailed { ref key, .. }) if key == "overwritten"),
        "{}: a stale ETag should be PreconditionFailed for that key, got {:?}",
        store.name(),
        outcomes[1]
    );
    assert!(outcomes[2].is_ok(), "{}: a missing key counts as deleted, got {:?}", store.name(), outcomes[2]);
    assert_not_found(store, "a key deleted with its current ETag", store.head(bucket, "unchanged").await);
    assert_eq!(
        get_bytes(store, bucket, "overwritten").await,
        Bytes::from_static(b"version two, longer"),
        "{}: the newer version must survive a delete conditional on the older one",
        store.name()
    );
}

pub async fn delete_many_takes_a_thousand_keys_and_refuses_more(store: &dyn ObjectStore, bucket: &str) {
    let stored = ["batch/0000", "batch/0500", "batch/0999"];
    for key in stored {
        put_bytes(store, bucket, key, Bytes::from_static(b"x")).await;
    }
    let full_batch: Vec<DeleteRequest> =
        (0..MAX_KEYS_PER_DELETE).map(|index| DeleteRequest::new(format!("batch/{index:04}"))).collect();
    let mut oversized_batch = full_batch.clone();
    oversized_batch.push(DeleteRequest::new("batch/1000"));

    let refused = store.delete_many(bucket, &oversized_batch).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidRequest { .. })),
        "{}: a batch of {} keys should be refused as InvalidRequest, got {:?}",
        store.name(),
        oversized_batch.len(),
        refused.map(|outcomes| outcomes.len())
    );
    assert_eq!(
        listed_keys(store, bucket, "batch/", None).await,
        stored,
        "{}: a refused batch deletes nothing",
        store.name()
    );

    let outcomes = delete_many_outcomes(store, bucket, &full_batch).await;
    assert!(outcomes.iter().all(Result::is_ok), "{}: a full batch should succeed", store.name());
    assert!(
        listed_keys(store, bucket, "batch/", None).await.is_empty(),
        "{}: a full batch deletes them all",
        store.name()
    );
}

pub async fn large_object_streams_in_several_chunks(store: &dyn ObjectStore, bucket: &str) {
    let num_bytes = 3 * 1024 * 1024 + 17;
    let body = patterned_bytes(num_bytes, 61);
    put_bytes(store, bucket, "large", body.clone()).await;

    let get_result = store.get(bucket, "large", GetOptions::default()).await.expect("get large object");
    assert_eq!(get_result.range, 0..num_bytes as u64);
    let mut chunks = get_result.body;
    let mut num_chunks = 0;
    let mut streamed = Vec::with_capacity(num_bytes);
    while let Some(chunk) = chunks.next().await {
        streamed.extend_from_slice(&chunk.expect("read a chunk"));
        num_chunks += 1;
    }
    assert!(num_chunks > 1, "{}: a 3 MiB object should stream in several chunks, got {num_chunks}", store.name());
    assert!(streamed == body, "{}: streamed bytes should match what was put", store.name());

    let middle = 1024 * 1024 - 5..2 * 1024 * 1024 + 5;
    assert!(
        get_range(store, bucket, "large", Some(middle.clone())).await
            == body.slice(middle.start as usize..middle.end as usize)
    );
}
