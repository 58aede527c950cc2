//! Decoding S3 notifications into [`ObjectEvent`]s.
//!
//! Three envelopes carry the same facts, and all three are accepted:
//! - an S3 notification delivered directly (`{"Records": [{"eventSource": "aws:s3", ...}]}`);
//! - the same notification inside SQS messages (`{"Records": [{"eventSource": "aws:sqs",
//!   "body": "<S3 notification JSON>"}]}`), including the `s3:TestEvent` S3 sends when a
//!   notification is configured, which is ignored;
//! - EventBridge `Object Created` / `Object Deleted` events.
//!
//! Keys in S3 notifications are URL-encoded with `+` for a space; EventBridge's are not.

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use aws_lambda_events::event::sqs::SqsEvent;
use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happened to the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ObjectEventKind {
    Created { size: u64, etag: Option<String> },
    Removed,
}

/// One object event, whatever envelope it came in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEvent {
    #[serde(flatten)]
    pub kind: ObjectEventKind,
    pub bucket: String,
    /// The decoded key.
    pub key: String,
    pub sequencer: String,
    pub event_time: DateTime<Utc>,
    /// The S3 event name (`ObjectCreated:Put`) or EventBridge detail type.
    pub event_name: String,
}

/// The events of one envelope, and the records in it that are not object events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    pub events: Vec<ObjectEvent>,
    /// Records that are valid but carry nothing to ingest (`s3:TestEvent`, tagging, restore
    /// and replication events), with what they were.
    pub ignored: Vec<String>,
}

/// An event that cannot be decoded: what is wrong, where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    #[error("event is not JSON: {0}")]
    NotJson(String),
    #[error(
        "event is not an S3 notification, an SQS batch of them, or an EventBridge S3 event ({0}): \
         check what the trigger delivers"
    )]
    UnknownShape(String),
    #[error("malformed {envelope} event: {reason}")]
    Malformed { envelope: &'static str, reason: String },
}

/// Decodes any of the three envelopes from JSON text.
pub fn decode_json(text: &str) -> Result<Decoded, EventError> {
    let value: Value = serde_json::from_str(text).map_err(|error| EventError::NotJson(error.to_string()))?;
    decode_value(value)
}

/// Decodes any of the three envelopes from a parsed JSON value.
pub fn decode_value(value: Value) -> Result<Decoded, EventError> {
    if is_test_event(&value) {
        return Ok(Decoded { events: vec![], ignored: vec!["s3:TestEvent".into()] });
    }
    if value.get("detail-type").is_some() {
        return decode_eventbridge(value);
    }
    let first_source = value
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first())
        .and_then(|record| record.get("eventSource").or_else(|| record.get("EventSource")))
        .and_then(Value::as_str)
        .map(str::to_string);
    match first_source.as_deref() {
        Some("aws:sqs") => {
            let event: SqsEvent = serde_json::from_value(value)
                .map_err(|error| EventError::Malformed { envelope: "SQS", reason: error.to_string() })?;
            let mut decoded = Decoded::default();
            for message in event.records {
                let body = message.body.ok_or_else(|| EventError::Malformed {
                    envelope: "SQS",
                    reason: format!("message {} has no body", message.message_id.unwrap_or_default()),
                })?;
                let inner = decode_json(&body)?;
                decoded.events.extend(inner.events);
                decoded.ignored.extend(inner.ignored);
            }
            Ok(decoded)
        }
        Some("aws:s3") => {
            let event: S3Event = serde_json::from_value(value)
                .map_err(|error| EventError::Malformed { envelope: "S3", reason: error.to_string() })?;
            decode_s3_event(&event)
        }
        Some(other) => Err(EventError::UnknownShape(format!("eventSource {other:?}"))),
        None if value.get("Records").map(|records| records.as_array().is_some_and(Vec::is_empty)) == Some(true) => {
            Ok(Decoded::default())
        }
        None => Err(EventError::UnknownShape(describe(&value))),
    }
}

/// Decodes a typed S3 notification.
pub fn decode_s3_event(event: &S3Event) -> Result<Decoded, EventError> {
    let mut decoded = Decoded::default();
    for record in &event.records {
        match decode_s3_record(record)? {
            Some(object_event) => decoded.events.push(object_event),
            None => decoded.ignored.push(record.event_name.clone().unwrap_or_default()),
        }
    }
    Ok(decoded)
}

fn decode_s3_record(record: &S3EventRecord) -> Result<Option<ObjectEvent>, EventError> {
    let malformed = |reason: String| EventError::Malformed { envelope: "S3", reason };
    let event_name = record.event_name.clone().ok_or_else(|| malformed("a record has no eventName".into()))?;
    let bucket =
        record.s3.bucket.name.clone().ok_or_else(|| malformed(format!("{event_name} record has no bucket name")))?;
    let raw_key =
        record.s3.object.key.as_deref().ok_or_else(|| malformed(format!("{event_name} record has no object key")))?;
    let key = decode_key(raw_key).map_err(malformed)?;
    let sequencer = record.s3.object.sequencer.clone().unwrap_or_default();
    let kind = match s3_event_kind(&event_name) {
        Some(EventKindName::Created) => {
            let size =
                record.s3.object.size.ok_or_else(|| malformed(format!("{event_name} of {key:?} has no size")))?;
            let size =
                u64::try_from(size).map_err(|_| malformed(format!("{event_name} of {key:?} has size {size}")))?;
            ObjectEventKind::Created { size, etag: record.s3.object.e_tag.clone().filter(|etag| !etag.is_empty()) }
        }
        Some(EventKindName::Removed) => ObjectEventKind::Removed,
        None => return Ok(None),
    };
    Ok(Some(ObjectEvent { kind, bucket, key, sequencer, event_time: record.event_time, event_name }))
}

enum EventKindName {
    Created,
    Removed,
}

fn s3_event_kind(event_name: &str) -> Option<EventKindName> {
    let name = event_name.strip_prefix("s3:").unwrap_or(event_name);
    if name.starts_with("ObjectCreated:") {
        Some(EventKindName::Created)
    } else if name.starts_with("ObjectRemoved:") || name.starts_with("LifecycleExpiration:") {
        Some(EventKindName::Removed)
    } else {
        None
    }
}

/// Decodes a key from an S3 notification: `+` is a space, then percent-decoding, as for
/// `application/x-www-form-urlencoded`.
pub fn decode_key(raw: &str) -> Result<String, String> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|key| key.into_owned())
        .map_err(|_| format!("key {raw:?} does not decode to UTF-8"))
}

/// Encodes a key the way S3 notifications do (the inverse of [`decode_key`]).
pub fn encode_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b' ' => encoded.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b'*' => {
                encoded.push(byte as char)
            }
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    encoded
}

#[derive(Debug, Deserialize)]
struct EventBridgeDetail {
    bucket: EventBridgeBucket,
    object: EventBridgeObject,
}

#[derive(Debug, Deserialize)]
struct EventBridgeBucket {
    name: String,
}

#[derive(Debug, Deserialize)]
struct EventBridgeObject {
    key: String,
    size: Option<u64>,
    etag: Option<String>,
    sequencer: Option<String>,
}

fn decode_eventbridge(value: Value) -> Result<Decoded, EventError> {
    let malformed = |reason: String| EventError::Malformed { envelope: "EventBridge", reason };
    let event: aws_lambda_events::event::eventbridge::EventBridgeEvent<Value> =
        serde_json::from_value(value).map_err(|error| malformed(error.to_string()))?;
    let created = match event.detail_type.as_str() {
        "Object Created" => true,
        "Object Deleted" => false,
        other => return Ok(Decoded { events: vec![], ignored: vec![format!("EventBridge {other}")] }),
    };
    if event.source != "aws.s3" {
        return Err(EventError::UnknownShape(format!("EventBridge source {:?}", event.source)));
    }
    let detail: EventBridgeDetail =
        serde_json::from_value(event.detail).map_err(|error| malformed(error.to_string()))?;
    let event_time = event.time.ok_or_else(|| malformed("event has no time".into()))?;
    let kind = if created {
        let size = detail
            .object
            .size
            .ok_or_else(|| malformed(format!("Object Created of {:?} has no size", detail.object.key)))?;
        ObjectEventKind::Created { size, etag: detail.object.etag }
    } else {
        ObjectEventKind::Removed
    };
    Ok(Decoded {
        events: vec![ObjectEvent {
            kind,
            bucket: detail.bucket.name,
            key: detail.object.key,
            sequencer: detail.object.sequencer.unwrap_or_default(),
            event_time,
            event_name: event.detail_type,
        }],
        ignored: vec![],
    })
}

fn is_test_event(value: &Value) -> bool {
    value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent")
}

fn describe(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let keys: Vec<&str> = map.keys().map(String::as_str).take(6).collect();
            format!("an object with fields {}", keys.join(", "))
        }
        Value::Array(_) => "a JSON array".into(),
        _ => "not a JSON object".into(),
    }
}

/// Builds an S3 notification for objects, as S3 would send it (keys URL-encoded). The demo
/// and tests drive ingest with these, through the same decoder as real events.
pub fn s3_notification(records: &[ObjectEvent]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|event| {
            let (name, object) = match &event.kind {
                ObjectEventKind::Created { size, etag } => (
                    event.event_name.clone(),
                    serde_json::json!({
                        "key": encode_key(&event.key),
                        "size": size,
                        "eTag": etag.clone().unwrap_or_default(),
                        "sequencer": event.sequencer,
                    }),
                ),
                ObjectEventKind::Removed => (
                    event.event_name.clone(),
                    serde_json::json!({ "key": encode_key(&event.key), "sequencer": event.sequencer }),
                ),
            };
            serde_json::json!({
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": event.event_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "eventName": name,
                "userIdentity": { "principalId": "s3-compactor" },
                "requestParameters": { "sourceIPAddress": "127.0.0.1" },
                "responseElements": {},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "s3-compactor",
                    "bucket": { "name": event.bucket, "arn": format!("arn:aws:s3:::{}", event.bucket) },
                    "object": object,
                }
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRECT: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
        "eventTime":"2024-01-14T10:00:00.000Z","eventName":"ObjectCreated:Put",
        "userIdentity":{"principalId":"AWS:X"},"requestParameters":{"sourceIPAddress":"1.2.3.4"},
        "responseElements":{"x-amz-request-id":"R"},
        "s3":{"s3SchemaVersion":"1.0","configurationId":"c","bucket":{"name":"logs","arn":"arn:aws:s3:::logs"},
        "object":{"key":"logs/2024/01/14/my+file%2Bx+%C3%A9.json","size":1024,"eTag":"abc","sequencer":"0055AED6DCD90281E5"}}}]}"#;

    #[test]
    fn direct_notifications_decode_keys() {
        let decoded = decode_json(DIRECT).unwrap();
        assert_eq!(decoded.events.len(), 1);
        let event = &decoded.events[0];
        assert_eq!(event.key, "logs/2024/01/14/my file+x é.json");
        assert_eq!(event.bucket, "logs");
        assert_eq!(event.kind, ObjectEventKind::Created { size: 1024, etag: Some("abc".into()) });
        assert_eq!(event.sequencer, "0055AED6DCD90281E5");
    }

    #[test]
    fn sqs_batches_unwrap_and_test_events_are_ignored() {
        let test_event =
            r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-01-14T10:00:00.000Z","Bucket":"logs"}"#;
        let sqs = serde_json::json!({"Records": [
            {"messageId": "1", "body": DIRECT, "eventSource": "aws:sqs", "attributes": {}, "messageAttributes": {}},
            {"messageId": "2", "body": test_event, "eventSource": "aws:sqs", "attributes": {}, "messageAttributes": {}},
        ]});
        let decoded = decode_value(sqs).unwrap();
        assert_eq!(decoded.events.len(), 1);
        assert_eq!(decoded.ignored, vec!["s3:TestEvent".to_string()]);
    }

    #[test]
    fn eventbridge_events_decode_without_url_decoding() {
        let event = serde_json::json!({
            "version": "0", "id": "x", "detail-type": "Object Deleted", "source": "aws.s3",
            "account": "1", "time": "2024-01-14T10:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"version": "0", "bucket": {"name": "logs"},
                "object": {"key": "a/2024/01/14/x+y.json", "sequencer": "0A"}, "reason": "DeleteObject"}
        });
        let decoded = decode_value(event).unwrap();
        assert_eq!(decoded.events[0].kind, ObjectEventKind::Removed);
        assert_eq!(decoded.events[0].key, "a/2024/01/14/x+y.json");
    }

    #[test]
    fn malformed_events_say_what_is_wrong() {
        assert!(matches!(decode_json("{"), Err(EventError::NotJson(_))));
        let unknown = decode_json(r#"{"hello": 1}"#).unwrap_err().to_string();
        assert!(unknown.contains("fields hello"), "{unknown}");
        let no_key = DIRECT.replace(r#""key":"logs/2024/01/14/my+file%2Bx+%C3%A9.json","#, "");
        let message = decode_json(&no_key).unwrap_err().to_string();
        assert!(message.contains("no object key"), "{message}");
        let bad_utf8 = DIRECT.replace("%C3%A9", "%C3%28");
        assert!(decode_json(&bad_utf8).unwrap_err().to_string().contains("UTF-8"));
    }

    #[test]
    fn our_notifications_round_trip_through_the_decoder() {
        let events = vec![ObjectEvent {
            kind: ObjectEventKind::Created { size: 5, etag: Some("e".into()) },
            bucket: "logs".into(),
            key: "a/2024/01/14/my file+x é%.json".into(),
            sequencer: "01".into(),
            event_time: "2024-01-14T10:00:00Z".parse().unwrap(),
            event_name: "ObjectCreated:Put".into(),
        }];
        let decoded = decode_value(s3_notification(&events)).unwrap();
        assert_eq!(decoded.events, events);
    }

    #[test]
    fn non_object_events_are_ignored_not_failed() {
        let tagging = DIRECT.replace("ObjectCreated:Put", "ObjectTagging:Put");
        let decoded = decode_json(&tagging).unwrap();
        assert!(decoded.events.is_empty());
        assert_eq!(decoded.ignored, vec!["ObjectTagging:Put".to_string()]);
    }
}
