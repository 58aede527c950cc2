//! DynamoDB request units as AWS bills them, from the requests and responses the benchmark's
//! interceptor sees.
//!
//! A write is billed on the larger of the item before and after it, and each global secondary
//! index entry it puts, changes or removes is billed again on the entry's projected size. A
//! request shows neither the item before nor, for an UpdateItem, the item after, so the
//! counter keeps a shadow copy of every table it has seen written through the counted client:
//! each successful write is applied to it (update expressions evaluated), and the tables'
//! key schemas and indexes come from their CreateTable requests. The rules themselves (units
//! per size, number sizes) are `compactor::domain::cost`'s, pinned there against DynamoDB's
//! documented examples.
//!
//! Known approximations, each small for the manifest's requests: items written before the
//! counter existed, or by another client, are sized as absent (one unit); a Query or Scan's
//! items dropped by a filter are sized as the mean of those it returned; a cancelled
//! transaction is billed as its items' current sizes, twice, with no index writes; update
//! expressions on nested paths (`a.b`, `a[0]`) are sized by the values they write.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::batch_execute_statement::BatchExecuteStatementInput;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemInput;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput;
use aws_sdk_dynamodb::operation::create_table::CreateTableInput;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemInput;
use aws_sdk_dynamodb::operation::get_item::GetItemInput;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::query::QueryInput;
use aws_sdk_dynamodb::operation::scan::ScanInput;
use aws_sdk_dynamodb::operation::transact_get_items::TransactGetItemsInput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::{AttributeValue, KeySchemaElement, KeyType, ProjectionType};
use compactor::domain::cost;

pub type Item = HashMap<String, AttributeValue>;

/// An item's size as DynamoDB bills it: attribute names plus values.
pub fn item_bytes(item: &Item) -> u64 {
    item.iter().map(|(name, value)| name.len() as u64 + value_bytes(value)).sum()
}

/// A value's size ("Item sizes and formats" in DynamoDB's developer guide): strings and
/// binaries their bytes, numbers by significant digits, null and booleans one byte, lists and
/// maps three bytes plus one per element (and a map element's name).
pub fn value_bytes(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(text) => text.len() as u64,
        AttributeValue::N(number) => cost::number_bytes(number),
        AttributeValue::B(blob) => blob.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(items) => items.iter().map(|text| text.len() as u64).sum(),
        AttributeValue::Ns(items) => items.iter().map(|number| cost::number_bytes(number)).sum(),
        AttributeValue::Bs(items) => items.iter().map(|blob| blob.as_ref().len() as u64).sum(),
        AttributeValue::L(items) => 3 + items.iter().map(|item| 1 + value_bytes(item)).sum::<u64>(),
        AttributeValue::M(map) => {
            3 + map.iter().map(|(name, item)| 1 + name.len() as u64 + value_bytes(item)).sum::<u64>()
        }
        _ => 0,
    }
}

/// Which items an index holds and what of them.
#[derive(Debug, Clone)]
struct IndexSchema {
    hash: String,
    range: Option<String>,
    /// `None`: every attribute (`ALL`); otherwise the non-key attributes projected.
    projected: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
struct TableSchema {
    hash: String,
    range: Option<String>,
    indexes: Vec<IndexSchema>,
}

fn key_attributes(elements: &[KeySchemaElement]) -> (String, Option<String>) {
    let named = |key_type: KeyType| {
        elements
            .iter()
            .find(|element| element.key_type() == &key_type)
            .map(|element| element.attribute_name().to_string())
    };
    (named(KeyType::Hash).unwrap_or_default(), named(KeyType::Range))
}

impl TableSchema {
    fn key_of(&self, item: &Item) -> String {
        let part = |name: &str| item.get(name).map_or_else(String::new, |value| format!("{value:?}"));
        match &self.range {
            Some(range) => format!("{}\u{0}{}", part(&self.hash), part(range)),
            None => part(&self.hash),
        }
    }

    /// The entry `item` has in `index`, if it has one.
    fn projection(&self, index: &IndexSchema, item: &Item) -> Option<Item> {
        let index_keys = std::iter::once(&index.hash).chain(index.range.as_ref());
        if index_keys.clone().any(|name| !item.contains_key(name)) {
            return None;
        }
        let Some(projected) = &index.projected else { return Some(item.clone()) };
        let table_keys = std::iter::once(&self.hash).chain(self.range.as_ref());
        Some(
            table_keys
                .chain(index_keys)
                .chain(projected)
                .filter_map(|name| Some((name.clone(), item.get(name)?.clone())))
                .collect(),
        )
    }

    /// Index write units of changing `before` into `after` (either absent).
    fn index_write_units(&self, before: Option<&Item>, after: Option<&Item>) -> u64 {
        let units = |entry: &Item| cost::index_write_units(item_bytes(entry));
        let index_key = |index: &IndexSchema, entry: &Item| {
            (entry.get(&index.hash).cloned(), index.range.as_ref().and_then(|range| entry.get(range).cloned()))
        };
        self.indexes
            .iter()
            .map(|index| {
                let old = before.and_then(|item| self.projection(index, item));
                let new = after.and_then(|item| self.projection(index, item));
                match (old, new) {
                    (None, None) => 0,
                    (None, Some(entry)) | (Some(entry), None) => units(&entry),
                    // A new index key: the old entry is deleted, the new one put.
                    (Some(old), Some(new)) if index_key(index, &old) != index_key(index, &new) => {
                        units(&old) + units(&new)
                    }
                    (Some(old), Some(new)) if old != new => units(&old).max(units(&new)),
                    (Some(_), Some(_)) => 0,
                }
            })
            .sum()
    }
}

/// One item a write request names.
#[derive(Debug, Clone)]
pub struct WriteAction {
    table: String,
    key: Item,
    change: Change,
}

#[derive(Debug, Clone)]
enum Change {
    Put(Item),
    Update {
        expression: String,
        names: HashMap<String, String>,
        values: Item,
    },
    Delete,
    /// A PartiQL `UPDATE ... SET "a" = ? ...`: the attributes it sets.
    Assign(Item),
    /// A transaction's condition check: billed as a write of the item, changes nothing.
    Check,
}

/// A read request: what the response will be billed by.
#[derive(Debug, Clone)]
pub enum ReadAction {
    /// GetItem, BatchGetItem (each item on its own) and TransactGetItems (`transactional`).
    Items { table_of_each: Vec<String>, consistent: bool, transactional: bool },
    /// Query or Scan: one request over the items read together.
    Range { table: String, index: Option<String>, consistent: bool },
}

/// What the counter learns from a request before it is sent.
#[derive(Debug, Clone)]
pub enum Request {
    Write {
        actions: Vec<WriteAction>,
        transactional: bool,
    },
    /// BatchExecuteStatement: each statement succeeds or fails on its own.
    Statements(Vec<Option<WriteAction>>),
    Read(ReadAction),
    CreateTable {
        table: String,
        schema: TableSchemaHandle,
    },
    Other,
}

/// A table schema, opaque outside this module.
#[derive(Debug, Clone)]
pub struct TableSchemaHandle(TableSchema);

/// The shadow copy of every table written through the counted clients.
#[derive(Debug, Default)]
pub struct Shadow {
    schemas: HashMap<String, TableSchema>,
    tables: HashMap<String, HashMap<String, Item>>,
}

/// How a write request ended, as far as billing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Succeeded,
    /// Refused by its condition (or a transaction cancelled): billed, nothing changed.
    Refused,
}

impl Request {
    /// Reads a request input; anything the counter need not know is `Other`.
    pub fn from_input(input: &aws_smithy_runtime_api::client::interceptors::context::Input) -> Request {
        let names = |names: Option<&HashMap<String, String>>| names.cloned().unwrap_or_default();
        let values = |values: Option<&Item>| values.cloned().unwrap_or_default();
        let one = |action: WriteAction| Request::Write { actions: vec![action], transactional: false };
        if let Some(put) = input.downcast_ref::<PutItemInput>() {
            let item = put.item().cloned().unwrap_or_default();
            return one(WriteAction {
                table: put.table_name().unwrap_or_default().to_string(),
                key: item.clone(),
                change: Change::Put(item),
            });
        }
        if let Some(update) = input.downcast_ref::<UpdateItemInput>() {
            return one(WriteAction {
                table: update.table_name().unwrap_or_default().to_string(),
                key: update.key().cloned().unwrap_or_default(),
                change: Change::Update {
                    expression: update.update_expression().unwrap_or_default().to_string(),
                    names: names(update.expression_attribute_names()),
                    values: values(update.expression_attribute_values()),
                },
            });
        }
        if let Some(delete) = input.downcast_ref::<DeleteItemInput>() {
            return one(WriteAction {
                table: delete.table_name().unwrap_or_default().to_string(),
                key: delete.key().cloned().unwrap_or_default(),
                change: Change::Delete,
            });
        }
        if let Some(transaction) = input.downcast_ref::<TransactWriteItemsInput>() {
            let actions = transaction
                .transact_items()
                .iter()
                .filter_map(|item| {
                    if let Some(put) = item.put() {
                        Some(WriteAction {
                            table: put.table_name().to_string(),
                            key: put.item().clone(),
                            change: Change::Put(put.item().clone()),
                        })
                    } else if let Some(update) = item.update() {
                        Some(WriteAction {
                            table: update.table_name().to_string(),
                            key: update.key().clone(),
                            change: Change::Update {
                                expression: update.update_expression().to_string(),
                                names: names(update.expression_attribute_names()),
                                values: values(update.expression_attribute_values()),
                            },
                        })
                    } else if let Some(delete) = item.delete() {
                        Some(WriteAction {
                            table: delete.table_name().to_string(),
                            key: delete.key().clone(),
                            change: Change::Delete,
                        })
                    } else {
                        item.condition_check().map(|check| WriteAction {
                            table: check.table_name().to_string(),
                            key: check.key().clone(),
                            change: Change::Check,
                        })
                    }
                })
                .collect();
            return Request::Write { actions, transactional: true };
        }
        if let Some(batch) = input.downcast_ref::<BatchWriteItemInput>() {
            let mut actions = Vec::new();
            for (table, requests) in batch.request_items().into_iter().flatten() {
                for request in requests {
                    if let Some(put) = request.put_request() {
                        let item = put.item().clone();
                        actions.push(WriteAction {
                            table: table.clone(),
                            key: item.clone(),
                            change: Change::Put(item),
                        });
                    } else if let Some(delete) = request.delete_request() {
                        actions.push(WriteAction {
                            table: table.clone(),
                            key: delete.key().clone(),
                            change: Change::Delete,
                        });
                    }
                }
            }
            return Request::Write { actions, transactional: false };
        }
        if let Some(batch) = input.downcast_ref::<BatchExecuteStatementInput>() {
            let statements = batch
                .statements()
                .iter()
                .map(|statement| partiql_update(statement.statement(), statement.parameters()))
                .collect();
            return Request::Statements(statements);
        }
        if let Some(get) = input.downcast_ref::<GetItemInput>() {
            return Request::Read(ReadAction::Items {
                table_of_each: vec![get.table_name().unwrap_or_default().to_string()],
                consistent: get.consistent_read().unwrap_or(false),
                transactional: false,
            });
        }
        if let Some(batch) = input.downcast_ref::<BatchGetItemInput>() {
            // Responses name their table per item; consistency is per table (all the same here).
            let consistent =
                batch.request_items().into_iter().flatten().any(|(_, keys)| keys.consistent_read().unwrap_or(false));
            return Request::Read(ReadAction::Items { table_of_each: Vec::new(), consistent, transactional: false });
        }
        if let Some(transaction) = input.downcast_ref::<TransactGetItemsInput>() {
            let table_of_each = transaction
                .transact_items()
                .iter()
                .filter_map(|item| item.get().map(|get| get.table_name().to_string()))
                .collect();
            return Request::Read(ReadAction::Items { table_of_each, consistent: true, transactional: true });
        }
        if let Some(query) = input.downcast_ref::<QueryInput>() {
            return Request::Read(ReadAction::Range {
                table: query.table_name().unwrap_or_default().to_string(),
                index: query.index_name().map(str::to_string),
                consistent: query.consistent_read().unwrap_or(false),
            });
        }
        if let Some(scan) = input.downcast_ref::<ScanInput>() {
            return Request::Read(ReadAction::Range {
                table: scan.table_name().unwrap_or_default().to_string(),
                index: scan.index_name().map(str::to_string),
                consistent: scan.consistent_read().unwrap_or(false),
            });
        }
        if let Some(create) = input.downcast_ref::<CreateTableInput>() {
            let (hash, range) = key_attributes(create.key_schema());
            let indexes = create
                .global_secondary_indexes()
                .iter()
                .map(|index| {
                    let (hash, range) = key_attributes(index.key_schema());
                    let projection = index.projection();
                    let projected = match projection.and_then(|projection| projection.projection_type()) {
                        Some(ProjectionType::All) | None => None,
                        Some(_) => Some(
                            projection.map(|projection| projection.non_key_attributes().to_vec()).unwrap_or_default(),
                        ),
                    };
                    IndexSchema { hash, range, projected }
                })
                .collect();
            return Request::CreateTable {
                table: create.table_name().unwrap_or_default().to_string(),
                schema: TableSchemaHandle(TableSchema { hash, range, indexes }),
            };
        }
        Request::Other
    }
}

impl Shadow {
    pub fn learn_schema(&mut self, table: &str, schema: &TableSchemaHandle) {
        self.schemas.insert(table.to_string(), schema.0.clone());
    }

    fn schema(&self, table: &str) -> TableSchema {
        // A table this counter never saw created: keyed by the manifest's `pk`/`sk`, no indexes.
        self.schemas.get(table).cloned().unwrap_or_else(|| TableSchema {
            hash: "pk".into(),
            range: Some("sk".into()),
            indexes: Vec::new(),
        })
    }

    /// Write units of a write request that ended with `outcome`, applying it to the shadow
    /// when it succeeded.
    pub fn write(&mut self, actions: &[WriteAction], transactional: bool, outcome: WriteOutcome) -> u64 {
        let mut units = 0;
        for action in actions {
            let schema = self.schema(&action.table);
            let key = schema.key_of(&action.key);
            let table = self.tables.entry(action.table.clone()).or_default();
            let before = table.get(&key).cloned();
            let after = match (outcome, &action.change) {
                (WriteOutcome::Refused, _) | (_, Change::Check) => before.clone(),
                (_, Change::Delete) => None,
                (_, Change::Put(item)) => Some(item.clone()),
                (_, Change::Assign(assigned)) => {
                    let mut item = before.clone().unwrap_or_else(|| action.key.clone());
                    item.extend(assigned.iter().map(|(name, value)| (name.clone(), value.clone())));
                    Some(item)
                }
                (_, Change::Update { expression, names, values }) => {
                    let mut item = before.clone().unwrap_or_else(|| action.key.clone());
                    apply_update(&mut item, expression, names, values);
                    Some(item)
                }
            };
            let size = |item: &Option<Item>| item.as_ref().map_or(0, item_bytes);
            let item_units = cost::write_units(size(&before).max(size(&after)));
            units += if transactional { 2 * item_units } else { item_units };
            if outcome == WriteOutcome::Succeeded {
                units += schema.index_write_units(before.as_ref(), after.as_ref());
                match after {
                    Some(item) => table.insert(key, item),
                    None => table.remove(&key),
                };
            }
        }
        units
    }

    /// Read units of items returned by a GetItem, BatchGetItem or TransactGetItems: each item
    /// rounded on its own, billed on its full size however little of it was projected.
    pub fn read_items<'a>(
        &self,
        items: impl Iterator<Item = (&'a str, &'a Item)>,
        consistent: bool,
        transactional: bool,
    ) -> f64 {
        let mut units = 0.0;
        let mut any = false;
        for (table, returned) in items {
            any = true;
            let bytes = self.full_size(table, None, returned);
            units +=
                if transactional { 2.0 * cost::read_units(bytes, true) } else { cost::read_units(bytes, consistent) };
        }
        if !any {
            // Nothing found: the request still costs its minimum.
            units = if transactional { 2.0 } else { cost::read_units(0, consistent) };
        }
        units
    }

    /// Read units of a Query or Scan page: the items read, together, rounded once.
    pub fn read_range(
        &self,
        table: &str,
        index: Option<&str>,
        consistent: bool,
        returned: &[Item],
        scanned: u64,
    ) -> f64 {
        let bytes: u64 = returned.iter().map(|item| self.full_size(table, index, item)).sum();
        // Items a filter dropped were read too: sized as the mean of those returned.
        let dropped = scanned.saturating_sub(returned.len() as u64);
        let mean = bytes / (returned.len() as u64).max(1);
        cost::read_units(bytes + dropped * mean, consistent)
    }

    /// The billed size of a returned item: the shadow's whole item (or its index entry) when
    /// the counter knows it, otherwise what came back.
    fn full_size(&self, table: &str, index: Option<&str>, returned: &Item) -> u64 {
        let schema = self.schema(table);
        let Some(full) = self.tables.get(table).and_then(|items| items.get(&schema.key_of(returned))) else {
            return item_bytes(returned);
        };
        let entry = match index {
            // Index names are not kept; an index read is billed on what it returned, which is
            // its projection, unless the returned item was cut by a projection expression.
            Some(_) => return item_bytes(returned),
            None => full,
        };
        item_bytes(entry).max(item_bytes(returned))
    }
}

/// A PartiQL `UPDATE "table" SET "a" = ? ... WHERE "pk" = ? AND "sk" = ? AND ...` as a write
/// of the attributes it sets to the item its key names: each `"name" = ?` takes the next
/// parameter. `None` for any other statement (a read, an insert, a delete), which the
/// manifest does not send in batches; it is then counted as a request without units.
fn partiql_update(statement: &str, parameters: &[AttributeValue]) -> Option<WriteAction> {
    let rest = statement.trim_start().strip_prefix("UPDATE")?.trim_start();
    let table = rest.strip_prefix('"')?.split('"').next()?.to_string();
    let (assignments, conditions) = rest.split_once(" WHERE ")?;
    let mut parameters = parameters.iter();
    let mut bound = |text: &str| -> Vec<(String, AttributeValue)> {
        text.split('"')
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|pair| pair[1].trim_start().starts_with("= ?"))
            .filter_map(|pair| Some((pair[0].to_string(), parameters.next()?.clone())))
            .collect()
    };
    let assigned: Item = bound(assignments).into_iter().collect();
    let key: Item = bound(conditions).into_iter().filter(|(name, _)| name == "pk" || name == "sk").collect();
    Some(WriteAction { table, key, change: Change::Assign(assigned) })
}

/// Applies an update expression's SET, REMOVE and ADD actions on top-level attributes to
/// `item`. What it cannot evaluate (nested paths, DELETE from sets) it sizes by the values it
/// names, so a write is never billed below what it sent.
fn apply_update(item: &mut Item, expression: &str, names: &HashMap<String, String>, values: &Item) {
    let name_of = |path: &str| -> Option<String> {
        let path = path.trim();
        if path.contains(['.', '[']) {
            return None;
        }
        Some(names.get(path).cloned().unwrap_or_else(|| path.to_string()))
    };
    for (clause, body) in clauses(expression) {
        for action in split_top_level(body) {
            match clause.as_str() {
                "SET" => {
                    let Some((path, value)) = action.split_once('=') else { continue };
                    let Some(name) = name_of(path) else { continue };
                    if let Some(value) = evaluate(value.trim(), item, &name_of, values) {
                        item.insert(name, value);
                    }
                }
                "REMOVE" => {
                    if let Some(name) = name_of(action) {
                        item.remove(&name);
                    }
                }
                "ADD" => {
                    let mut words = action.split_whitespace();
                    let (Some(path), Some(placeholder)) = (words.next(), words.next()) else { continue };
                    let (Some(name), Some(value)) = (name_of(path), values.get(placeholder)) else { continue };
                    let sum = match (item.get(&name), value) {
                        (Some(AttributeValue::N(old)), AttributeValue::N(add)) => {
                            AttributeValue::N(add_numbers(old, add))
                        }
                        (Some(AttributeValue::Ss(old)), AttributeValue::Ss(add)) => {
                            let mut set = old.clone();
                            set.extend(add.iter().filter(|text| !old.contains(text)).cloned());
                            AttributeValue::Ss(set)
                        }
                        _ => value.clone(),
                    };
                    item.insert(name, sum);
                }
                _ => {}
            }
        }
    }
}

/// The expression's clauses: keyword (upper case) and its text.
fn clauses(expression: &str) -> Vec<(String, &str)> {
    const KEYWORDS: [&str; 4] = ["SET", "REMOVE", "ADD", "DELETE"];
    let mut starts = Vec::new();
    let bytes = expression.as_bytes();
    for (position, _) in expression.char_indices() {
        let boundary_before = position == 0 || !is_word_byte(bytes[position - 1]);
        if !boundary_before {
            continue;
        }
        for keyword in KEYWORDS {
            let end = position + keyword.len();
            if end <= bytes.len()
                && expression[position..end].eq_ignore_ascii_case(keyword)
                && (end == bytes.len() || !is_word_byte(bytes[end]))
                && (position == 0 || !matches!(bytes[position - 1], b'#' | b':'))
            {
                starts.push((position, keyword));
            }
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(index, (position, keyword))| {
            let end = starts.get(index + 1).map_or(expression.len(), |(next, _)| *next);
            (keyword.to_string(), &expression[position + keyword.len()..end])
        })
        .collect()
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (position, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(text[start..position].trim());
                start = position + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts.into_iter().filter(|part| !part.is_empty()).collect()
}

/// A SET value: an operand, or two joined by `+` or `-`.
fn evaluate(
    text: &str,
    item: &Item,
    name_of: &dyn Fn(&str) -> Option<String>,
    values: &Item,
) -> Option<AttributeValue> {
    let depth_zero_operator = {
        let mut depth = 0usize;
        text.char_indices().find_map(|(position, character)| match character {
            '(' => {
                depth += 1;
                None
            }
            ')' => {
                depth = depth.saturating_sub(1);
                None
            }
            '+' | '-' if depth == 0 => Some((position, character)),
            _ => None,
        })
    };
    if let Some((position, operator)) = depth_zero_operator {
        let left = operand(text[..position].trim(), item, name_of, values)?;
        let right = operand(text[position + 1..].trim(), item, name_of, values)?;
        let (AttributeValue::N(left), AttributeValue::N(right)) = (left, right) else { return None };
        let right = if operator == '-' { format!("-{right}") } else { right };
        return Some(AttributeValue::N(add_numbers(&left, &right)));
    }
    operand(text, item, name_of, values)
}

fn operand(text: &str, item: &Item, name_of: &dyn Fn(&str) -> Option<String>, values: &Item) -> Option<AttributeValue> {
    if text.starts_with(':') {
        return values.get(text).cloned();
    }
    if let Some(arguments) = function_arguments(text, "if_not_exists") {
        let [path, fallback] = arguments.as_slice() else { return None };
        return item.get(&name_of(path)?).cloned().or_else(|| operand(fallback, item, name_of, values));
    }
    if let Some(arguments) = function_arguments(text, "list_append") {
        let [first, second] = arguments.as_slice() else { return None };
        let (AttributeValue::L(mut first), AttributeValue::L(second)) =
            (operand(first, item, name_of, values)?, operand(second, item, name_of, values)?)
        else {
            return None;
        };
        first.extend(second);
        return Some(AttributeValue::L(first));
    }
    item.get(&name_of(text)?).cloned()
}

fn function_arguments<'a>(text: &'a str, function: &str) -> Option<Vec<&'a str>> {
    let inner = text.strip_prefix(function)?.trim_start().strip_prefix('(')?.strip_suffix(')')?;
    Some(split_top_level(inner))
}

/// The sum of two DynamoDB numbers, exact for integers (the manifest's counters and times).
fn add_numbers(left: &str, right: &str) -> String {
    match (left.parse::<i128>(), right.parse::<i128>()) {
        (Ok(left), Ok(right)) => (left + right).to_string(),
        _ => (left.parse::<f64>().unwrap_or(0.0) + right.parse::<f64>().unwrap_or(0.0)).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.into())
    }

    fn n(number: &str) -> AttributeValue {
        AttributeValue::N(number.into())
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs.iter().map(|(name, value)| (name.to_string(), value.clone())).collect()
    }

    #[test]
    fn item_sizes_follow_the_documented_rules() {
        // "pk" + "abcd" = 6; "n" + 12345 (three two-digit groups, plus one) = 1 + 4.
        assert_eq!(item_bytes(&item(&[("pk", s("abcd")), ("n", n("12345"))])), 11);
        // A map: 3 bytes, plus per element 1 byte, its name and its value.
        let map = AttributeValue::M(item(&[("a", s("xy")), ("flag", AttributeValue::Bool(true))]));
        assert_eq!(item_bytes(&item(&[("m", map)])), 1 + 3 + (1 + 1 + 2) + (1 + 4 + 1));
        // A list: 3 bytes, plus per element 1 byte and its value.
        let list = AttributeValue::L(vec![s("abc"), n("7")]);
        assert_eq!(item_bytes(&item(&[("l", list)])), 1 + 3 + (1 + 3) + (1 + 2));
    }

    #[test]
    fn partiql_updates_set_the_attributes_of_the_item_their_key_names() {
        let statement = "UPDATE \"t\" SET \"state\" = ? SET \"n\" = ? WHERE \"pk\" = ? AND \"sk\" = ? AND \"state\" = ? AND \"x\" IS MISSING";
        let parameters = [s("compacted"), n("7"), s("p"), s("k"), s("pending")];
        let action = partiql_update(statement, &parameters).expect("an update");
        assert_eq!(action.table, "t");
        assert_eq!(action.key, item(&[("pk", s("p")), ("sk", s("k"))]));
        let Change::Assign(assigned) = action.change else { panic!("an assignment") };
        assert_eq!(assigned, item(&[("state", s("compacted")), ("n", n("7"))]));
        assert!(partiql_update("SELECT * FROM \"t\"", &[]).is_none());
    }

    #[test]
    fn update_expressions_set_add_and_remove_top_level_attributes() {
        let mut current = item(&[("pk", s("p")), ("count", n("4")), ("gone", s("x"))]);
        let names = HashMap::from([("#c".to_string(), "count".to_string()), ("#s".to_string(), "state".to_string())]);
        let values = item(&[(":one", n("1")), (":s", s("sealed")), (":d", s("d"))]);
        apply_update(
            &mut current,
            "SET #s = :s, #c = #c + :one, d = if_not_exists(d, :d) REMOVE gone",
            &names,
            &values,
        );
        assert_eq!(current.get("state"), Some(&s("sealed")));
        assert_eq!(current.get("count"), Some(&n("5")));
        assert_eq!(current.get("d"), Some(&s("d")));
        assert!(!current.contains_key("gone"));
        apply_update(&mut current, "ADD #c :one", &names, &values);
        assert_eq!(current.get("count"), Some(&n("6")));
    }

    fn table_with_index(projected: Option<Vec<String>>) -> Shadow {
        let mut shadow = Shadow::default();
        shadow.schemas.insert(
            "t".into(),
            TableSchema {
                hash: "pk".into(),
                range: Some("sk".into()),
                indexes: vec![IndexSchema { hash: "gpk".into(), range: Some("gsk".into()), projected }],
            },
        );
        shadow
    }

    fn put(item: Item) -> WriteAction {
        WriteAction { table: "t".into(), key: item.clone(), change: Change::Put(item) }
    }

    fn update(key: Item, expression: &str, values: Item) -> WriteAction {
        WriteAction {
            table: "t".into(),
            key,
            change: Change::Update { expression: expression.into(), names: HashMap::new(), values },
        }
    }

    const DONE: WriteOutcome = WriteOutcome::Succeeded;

    #[test]
    fn writes_are_billed_on_the_larger_item_and_on_every_index_entry_they_touch() {
        let mut shadow = table_with_index(None);
        let key = item(&[("pk", s("p")), ("sk", s("k"))]);
        let big = "x".repeat(1500);
        // A 1.5 KB item outside the index: two units.
        let mut first = key.clone();
        first.insert("body".into(), s(&big));
        assert_eq!(shadow.write(&[put(first)], false, DONE), 2);
        // A small update of it is still billed on the item's size, 1.5 KB.
        assert_eq!(shadow.write(&[update(key.clone(), "SET a = :a", item(&[(":a", s("1"))]))], false, DONE), 2);
        // Adding the index keys puts an entry of the whole item (ALL) into the index.
        let values = item(&[(":g", s("g")), (":h", s("h"))]);
        assert_eq!(shadow.write(&[update(key.clone(), "SET gpk = :g, gsk = :h", values)], false, DONE), 2 + 2);
        // A new index sort key: the old entry deleted, the new one put.
        let values = item(&[(":h", s("i"))]);
        assert_eq!(shadow.write(&[update(key.clone(), "SET gsk = :h", values)], true, DONE), 2 * 2 + 2 + 2);
        // Refused by its condition: billed for the item, nothing changes.
        let values = item(&[(":b", s(""))]);
        assert_eq!(shadow.write(&[update(key.clone(), "SET body = :b", values)], false, WriteOutcome::Refused), 2);
        assert_eq!(shadow.write(&[WriteAction { table: "t".into(), key, change: Change::Delete }], false, DONE), 2 + 2);
    }

    #[test]
    fn keys_only_indexes_bill_the_keys_alone() {
        let mut shadow = table_with_index(Some(Vec::new()));
        let mut indexed = item(&[("pk", s("p")), ("sk", s("k")), ("gpk", s("g")), ("gsk", s("h"))]);
        indexed.insert("body".into(), s(&"x".repeat(3000)));
        assert_eq!(shadow.write(&[put(indexed.clone())], false, DONE), 3 + 1);
        // A change outside the projection leaves the entry as it was.
        indexed.insert("body".into(), s("short"));
        assert_eq!(shadow.write(&[put(indexed)], false, DONE), 3);
    }

    #[test]
    fn reads_round_up_per_request_and_per_item() {
        let shadow = Shadow::default();
        let small = item(&[("pk", s("p")), ("sk", s("k"))]);
        let pages = vec![small.clone(); 10];
        assert_eq!(shadow.read_range("t", None, false, &pages, 10), 0.5);
        assert_eq!(shadow.read_range("t", None, true, &[], 0), 1.0);
        let items = [("t", &small), ("t", &small)];
        assert_eq!(shadow.read_items(items.into_iter(), true, false), 2.0);
        assert_eq!(shadow.read_items(std::iter::empty(), false, false), 0.5);
    }
}
