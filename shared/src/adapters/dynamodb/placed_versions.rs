//! The seal's check that each placed source is still the version it planned, read by key range.
//!
//! Why: `record_placements` must know, for each source of a window, whether its object item
//! still holds the placed version, pending (else the placement is superseded and left out of
//! the chunks). Read by key (`BatchGetItem`), every item is billed on its own, one read unit
//! (strongly consistent, 4 KB) however small: one unit per source. A window's sources are a run
//! of the partition's pending keys in key order (`domain::ranges`), so on each of the
//! partition's [`OBJECT_SHARDS`](super::OBJECT_SHARDS) keys they lie in one sort-key range; a
//! strongly consistent Query over that range is billed on the size of all the items it reads
//! together, 4 KB a unit, about 14 object items of ~300 bytes.
//!
//! The range also holds items the check does not need (objects compacted by an earlier seal,
//! removed or missing ones, pending ones of another format class), which are read and billed
//! too. So each shard's Query has a budget of items ([`read_budget`]): past it, the keys it has
//! not reached yet are read by key instead, so a shard's keys never cost more than about 1.2
//! times (plus a few units) what reading them by key would. A shard holding a single key of the window is read by key
//! (a Query costs at least a unit too). Memory: one Query page and the window's items.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{
    names_in, object_shard, object_shard_pk, string_value, DynamoDbManifest, Item, ManifestError, CONCURRENT_REQUESTS,
};
use crate::domain::partition::PartitionKey;

/// What the check reads of an object item. The sort key is the object key; the partition key
/// lets a counter find the whole item (a Query is billed on whole items, whatever it projects).
const PROJECTION: &str = "#pk, #sk, #state, #sequencer";

/// Items one shard's range Query may read before the keys it has not reached are read by key:
/// twice its keys, plus a little for small windows.
pub(super) fn read_budget(keys: usize) -> usize {
    2 * keys + 16
}

/// Items per page of a shard's range Query: its keys and a little more, so a range of little
/// else is one page, and a dense one reaches its budget in two pages, never a 1 MB page.
fn page_limit(keys: usize) -> i32 {
    i32::try_from(keys + 16).unwrap_or(i32::MAX)
}

/// The window's keys by shard, each shard's in key order: the shards with two keys or more,
/// read by range, and the keys alone on their shard, read by key.
pub(super) fn split_by_shard(keys: &[&str]) -> (BTreeMap<u32, Vec<String>>, Vec<String>) {
    let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for key in keys {
        by_shard.entry(object_shard(key)).or_default().push((*key).to_owned());
    }
    let mut by_key = Vec::new();
    by_shard.retain(|_, shard_keys| {
        if shard_keys.len() < 2 {
            by_key.append(shard_keys);
            return false;
        }
        shard_keys.sort();
        shard_keys.dedup();
        true
    });
    (by_shard, by_key)
}

impl DynamoDbManifest {
    /// The object items of `keys` (one window's sources), strongly consistent, keyed by object
    /// key; absent items are missing. Projected to [`PROJECTION`].
    pub(super) async fn placed_version_items(
        &self,
        partition: &PartitionKey,
        keys: &[&str],
    ) -> Result<HashMap<String, Item>, ManifestError> {
        if self.shards_known_empty(partition) {
            return Ok(HashMap::new());
        }
        let (by_shard, mut by_key) = split_by_shard(keys);
        let mut found: HashMap<String, Item> = HashMap::with_capacity(keys.len());
        let ranges: Vec<(HashMap<String, Item>, Vec<String>)> = stream::iter(by_shard)
            .map(|(shard, shard_keys)| async move { self.shard_range_items(partition, shard, shard_keys).await })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        for (items, unread) in ranges {
            found.extend(items);
            by_key.extend(unread);
        }
        if !by_key.is_empty() {
            let by_key: Vec<&str> = by_key.iter().map(String::as_str).collect();
            found.extend(self.object_items(partition, &by_key, Some("#sk, #state, #sequencer")).await?);
        }
        Ok(found)
    }

    /// One shard's items among `keys` (in key order) by a range Query, page by page. Returns
    /// them, and the keys the Query had not reached when it used up its [`read_budget`].
    async fn shard_range_items(
        &self,
        partition: &PartitionKey,
        shard: u32,
        keys: Vec<String>,
    ) -> Result<(HashMap<String, Item>, Vec<String>), ManifestError> {
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else { return Ok((HashMap::new(), keys)) };
        let key_condition = "#pk = :pk AND #sk BETWEEN :first AND :last";
        let expression_values = HashMap::from([
            (":pk".to_owned(), string_value(object_shard_pk(&partition.bucket, &partition.path, shard))),
            (":first".to_owned(), string_value(first)),
            (":last".to_owned(), string_value(last)),
        ]);
        let wanted: HashSet<&str> = keys.iter().map(String::as_str).collect();
        let mut found = HashMap::new();
        let mut read = 0;
        let mut start_key: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(key_condition)
                .projection_expression(PROJECTION)
                .set_expression_attribute_names(Some(names_in(&[key_condition, PROJECTION])))
                .set_expression_attribute_values(Some(expression_values.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take())
                .limit(page_limit(keys.len()))
                .send()
                .await
                .map_err(|error| self.request_error("Query", error.into()))?;
            for item in page.items.unwrap_or_default() {
                read += 1;
                if let Some(AttributeValue::S(key)) = item.get("sk") {
                    if wanted.contains(key.as_str()) {
                        found.insert(key.clone(), item);
                    }
                }
            }
            let Some(next) = page.last_evaluated_key else { return Ok((found, Vec::new())) };
            if read > read_budget(keys.len()) {
                // The range is mostly other items: what is left goes by key.
                let passed = match next.get("sk") {
                    Some(AttributeValue::S(key)) => key.clone(),
                    _ => String::new(),
                };
                let unread = keys.iter().filter(|key| **key > passed).cloned().collect();
                return Ok((found, unread));
            }
            start_key = Some(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_with_two_keys_or_more_is_read_by_range_and_a_lone_key_by_key() {
        let keys: Vec<String> = (0..64).map(|index| format!("logs/2024/01/14/{index:03}.json")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (by_shard, by_key) = split_by_shard(&keys);
        let ranged: usize = by_shard.values().map(Vec::len).sum();
        assert_eq!(ranged + by_key.len(), keys.len(), "every key is read one way or the other, once");
        for (shard, shard_keys) in &by_shard {
            assert!(shard_keys.len() >= 2, "shard {shard}: {shard_keys:?}");
            assert!(shard_keys.windows(2).all(|pair| pair[0] < pair[1]), "in key order: {shard_keys:?}");
            assert!(shard_keys.iter().all(|key| object_shard(key) == *shard));
        }
        for key in &by_key {
            let alone = keys.iter().filter(|other| object_shard(other) == object_shard(key)).count();
            assert_eq!(alone, 1, "{key} is read by key only when alone on its shard");
        }

        let lone = ["logs/2024/01/14/only.json"];
        let (by_shard, by_key) = split_by_shard(&lone);
        assert!(by_shard.is_empty());
        assert_eq!(by_key, ["logs/2024/01/14/only.json"]);
    }

    /// The worst case: a shard's range full of other items. The Query reads pages until past
    /// its budget, then every key is still read by key: what it adds to reading by key alone.
    #[test]
    fn a_range_query_that_finds_a_dense_range_adds_at_most_a_fifth_and_a_few_units() {
        const ITEM_BYTES: usize = 300;
        for keys in [2_usize, 10, 62, 1000, 5000] {
            let limit = page_limit(keys) as usize;
            let pages = read_budget(keys) / limit + 1;
            let units_per_page = (limit * ITEM_BYTES).div_ceil(4096);
            let extra = pages * units_per_page;
            assert!(extra as f64 <= 0.2 * keys as f64 + 4.0, "{keys} keys: {extra} extra units");
            assert!(limit > keys, "a range of only the window's keys is one page");
        }
    }
}
