//! `sam/template.yaml` read against the code it deploys: the environment it hands the functions
//! (every variable set, defaults equal to the code's), least privilege (no `*` resource for S3,
//! DynamoDB, SQS or KMS; every SDK operation the adapters make is granted), the fan-out and
//! retry rules, and monitoring (every alarm and dashboard metric is one the handlers print).
//!
//! The template is resolved under its parameters' defaults (plus a source bucket, the one
//! required parameter), as a deploy with no overrides would be.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::ManualClock;
use compactor::config::RawConfig;
use compactor::engine::Compactor;
use compactor::metrics::Emf;
use compactor::ports::PutOptions;
use serde_json::json;
use serde_yaml::Value;

const STACK: &str = "test-stack";
const SOURCE_BUCKET: &str = "my-logs";

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../sam/template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("sam/template.yaml")).expect("the template is YAML")
}

fn field<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |value, key| value.get(*key).unwrap_or_else(|| panic!("no {key} in {path:?}")))
}

/// An intrinsic function (`!Ref x` or `{Ref: x}`): its name without `Fn::`, and its argument.
fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((tagged.tag.to_string().trim_start_matches('!').to_string(), &tagged.value)),
        Value::Mapping(mapping) if mapping.len() == 1 => {
            let (key, argument) = mapping.iter().next()?;
            let name = key.as_str()?;
            (name == "Ref" || name.starts_with("Fn::") || name == "Condition")
                .then(|| (name.trim_start_matches("Fn::").to_string(), argument))
        }
        _ => None,
    }
}

/// The template under its parameters' defaults.
struct Resolved {
    template: Value,
    parameters: BTreeMap<String, String>,
}

impl Resolved {
    fn new() -> Resolved {
        let template = template();
        let mut parameters = BTreeMap::new();
        for (name, parameter) in field(&template, &["Parameters"]).as_mapping().unwrap() {
            let default = match parameter.get("Default") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Number(number)) => number.to_string(),
                _ => String::new(),
            };
            parameters.insert(name.as_str().unwrap().to_string(), default);
        }
        parameters.insert("SourceBucketName".into(), SOURCE_BUCKET.into());
        Resolved { template, parameters }
    }

    fn resource(&self, name: &str) -> &Value {
        field(&self.template, &["Resources", name])
    }

    fn condition(&self, name: &str) -> bool {
        self.truth(field(&self.template, &["Conditions", name]))
    }

    fn truth(&self, value: &Value) -> bool {
        let (name, argument) = intrinsic(value).unwrap_or_else(|| panic!("not a condition: {value:?}"));
        let items = || argument.as_sequence().unwrap();
        match name.as_str() {
            "Equals" => self.text(&items()[0]) == self.text(&items()[1]),
            "Not" => !self.truth(&items()[0]),
            "Or" => items().iter().any(|item| self.truth(item)),
            "And" => items().iter().all(|item| self.truth(item)),
            "Condition" => self.condition(argument.as_str().unwrap()),
            other => panic!("condition function {other} is not handled here"),
        }
    }

    /// A value with its intrinsic functions resolved; `None` for `AWS::NoValue`.
    fn resolve(&self, value: &Value) -> Option<Value> {
        if let Some((name, argument)) = intrinsic(value) {
            return match name.as_str() {
                "Ref" => {
                    let target = argument.as_str().unwrap();
                    match target {
                        "AWS::NoValue" => None,
                        "AWS::StackName" => Some(Value::String(STACK.into())),
                        _ => Some(Value::String(
                            self.parameters.get(target).cloned().unwrap_or_else(|| format!("ref-{target}")),
                        )),
                    }
                }
                "If" => {
                    let items = argument.as_sequence().unwrap();
                    let branch = if self.condition(items[0].as_str().unwrap()) { &items[1] } else { &items[2] };
                    self.resolve(branch)
                }
                "Sub" => Some(Value::String(self.substitute(argument))),
                "GetAtt" => Some(Value::String(format!("attribute:{}", self.text_of_getatt(argument)))),
                other => panic!("intrinsic {other} is not handled here"),
            };
        }
        Some(match value {
            Value::Sequence(items) => Value::Sequence(items.iter().filter_map(|item| self.resolve(item)).collect()),
            Value::Mapping(mapping) => Value::Mapping(
                mapping.iter().filter_map(|(key, item)| Some((key.clone(), self.resolve(item)?))).collect(),
            ),
            other => other.clone(),
        })
    }

    fn text_of_getatt(&self, argument: &Value) -> String {
        match argument {
            Value::String(text) => text.clone(),
            Value::Sequence(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("."),
            other => panic!("GetAtt of {other:?}"),
        }
    }

    /// `!Sub "text ${Name}"` or `!Sub [text, {Name: value}]`: names become their values.
    fn substitute(&self, argument: &Value) -> String {
        let (text, variables) = match argument {
            Value::String(text) => (text.clone(), BTreeMap::new()),
            Value::Sequence(items) => {
                let variables = items[1]
                    .as_mapping()
                    .unwrap()
                    .iter()
                    .map(|(key, value)| (key.as_str().unwrap().to_string(), self.text(value)))
                    .collect();
                (items[0].as_str().unwrap().to_string(), variables)
            }
            other => panic!("Sub of {other:?}"),
        };
        let mut result = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            result.push_str(&rest[..start]);
            let end = rest[start..].find('}').unwrap() + start;
            let name = &rest[start + 2..end];
            result.push_str(&match variables.get(name) {
                Some(value) => value.clone(),
                None if name == "AWS::StackName" => STACK.into(),
                None if name.starts_with("AWS::") => format!("<{name}>"),
                None => self.parameters.get(name).cloned().unwrap_or_else(|| format!("ref-{name}")),
            });
            rest = &rest[end + 1..];
        }
        result.push_str(rest);
        result
    }

    fn text(&self, value: &Value) -> String {
        match self.resolve(value) {
            Some(Value::String(text)) => text,
            Some(Value::Number(number)) => number.to_string(),
            Some(Value::Bool(flag)) => flag.to_string(),
            other => panic!("not text: {value:?} -> {other:?}"),
        }
    }

    /// The environment a function gets: the globals and its own variables.
    fn environment(&self, function: &str) -> BTreeMap<String, String> {
        let mut environment = BTreeMap::new();
        let globals = field(&self.template, &["Globals", "Function", "Environment", "Variables"]);
        let own = self
            .resource(function)
            .get("Properties")
            .and_then(|properties| properties.get("Environment").and_then(|environment| environment.get("Variables")));
        for variables in [Some(globals), own].into_iter().flatten() {
            for (name, value) in variables.as_mapping().unwrap() {
                environment.insert(name.as_str().unwrap().to_string(), self.text(value));
            }
        }
        environment
    }

    /// Every statement of a role's inline policies, conditions resolved.
    fn statements(&self, role: &str) -> Vec<Value> {
        let policies = self.resolve(field(self.resource(role), &["Properties", "Policies"])).unwrap();
        policies
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|policy| field(policy, &["PolicyDocument", "Statement"]).as_sequence().unwrap().clone())
            .collect()
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        other => panic!("not a string or list: {other:?}"),
    }
}

/// Actions granted on each resource by a role.
fn grants(resolved: &Resolved, role: &str) -> Vec<(String, Vec<String>)> {
    resolved
        .statements(role)
        .iter()
        .flat_map(|statement| {
            assert_eq!(statement.get("Effect").and_then(Value::as_str), Some("Allow"));
            let resources = strings(field(statement, &["Resource"]));
            strings(field(statement, &["Action"])).into_iter().map(move |action| (action, resources.clone()))
        })
        .collect()
}

/// Runs `read` with a lookup into `environment` and returns the names it asked for.
fn names_read<T, E: std::fmt::Debug>(
    environment: &BTreeMap<String, String>,
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> Result<T, E>,
) -> (T, BTreeSet<String>) {
    let asked = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_string());
        environment.get(name).cloned()
    };
    let value = read(&lookup).expect("the template's defaults are a valid configuration");
    (value, asked.into_inner())
}

#[test]
fn every_variable_the_functions_read_is_set_and_equals_the_code_default() {
    let resolved = Resolved::new();
    let required = BTreeMap::from([
        ("COMPACTOR_SOURCE_BUCKET".to_string(), SOURCE_BUCKET.to_string()),
        ("COMPACTOR_TABLE".to_string(), "ref-ManifestTable".to_string()),
    ]);
    let ingest_environment = resolved.environment("IngestFunction");
    let seal_environment = resolved.environment("SealFunction");

    let (ingest, ingest_read) =
        names_read(&ingest_environment, |lookup| ingest_fn::FunctionConfig::from_lookup(lookup));
    let (seal, seal_read) = names_read(&seal_environment, |lookup| seal_fn::FunctionConfig::from_lookup(lookup));
    for (function, environment, read) in
        [("ingest-fn", &ingest_environment, &ingest_read), ("seal-fn", &seal_environment, &seal_read)]
    {
        let unset: Vec<&String> = read.iter().filter(|name| !environment.contains_key(*name)).collect();
        assert!(unset.is_empty(), "{function} reads {unset:?}, which the template does not set");
    }
    let all_read: BTreeSet<&String> = ingest_read.iter().chain(&seal_read).collect();
    let unread: Vec<&String> = seal_environment.keys().filter(|name| !all_read.contains(name)).collect();
    assert_eq!(unread, vec!["LOG_LEVEL"], "variables the template sets that no function reads (LOG_LEVEL: logging)");

    // Defaults equal the code's: the same configuration as from the required variables alone,
    // except what is per deployment by design (the metrics namespace, the queue).
    let ingest_defaults = ingest_fn::FunctionConfig::from_lookup(|name| required.get(name).cloned()).unwrap();
    let seal_defaults = seal_fn::FunctionConfig::from_lookup(|name| required.get(name).cloned()).unwrap();
    assert_eq!(ingest.engine, ingest_defaults.engine);
    assert_eq!(ingest.aws, ingest_defaults.aws);
    assert_eq!(seal.engine, seal_defaults.engine);
    assert_eq!(seal.aws, seal_defaults.aws);
    assert_eq!(
        (seal.seal.fan_out_threshold, seal.seal.deadline_margin),
        (seal_defaults.seal.fan_out_threshold, seal_defaults.seal.deadline_margin)
    );
    assert_eq!(seal.seal.queue_url.as_deref(), Some("ref-SealQueue"));
    let namespace = format!("S3Compactor/{STACK}");
    assert_eq!(
        (ingest.ingest.metrics_namespace.as_str(), seal.seal.metrics_namespace.as_str()),
        (&*namespace, &*namespace)
    );

    // The margin leaves a worker most of its time.
    let timeout = resolved.text(field(resolved.resource("SealFunction"), &["Properties", "Timeout"]));
    assert!(seal.seal.deadline_margin < Duration::seconds(timeout.parse::<i64>().unwrap() / 2));
}

#[test]
fn no_statement_grants_s3_dynamodb_sqs_or_kms_on_every_resource() {
    let resolved = Resolved::new();
    for role in ["IngestRole", "SealRole"] {
        for (action, resources) in grants(&resolved, role) {
            let service = action.split(':').next().unwrap();
            if ["s3", "dynamodb", "sqs", "kms"].contains(&service) {
                assert!(
                    resources.iter().all(|resource| resource != "*" && !resource.ends_with(":*")),
                    "{role}: {action} on {resources:?}"
                );
            }
            assert!(!action.contains('*'), "{role}: wildcard action {action}");
        }
    }
    // The functions take only their explicit roles: SAM's Policies would attach
    // AWSLambdaSQSQueueExecutionRole (SQS actions on `*`).
    for function in ["IngestFunction", "SealFunction"] {
        let properties = field(resolved.resource(function), &["Properties"]);
        assert!(properties.get("Policies").is_none(), "{function} has SAM Policies");
        assert!(properties.get("Role").is_some(), "{function} has no explicit role");
    }
}

#[test]
fn each_role_grants_only_its_own_queue_prefixes_table_and_key() {
    let mut resolved = Resolved::new();
    resolved.parameters.insert("SourcePrefix".into(), "AWSLogs/".into());
    resolved.parameters.insert("ExpiryMode".into(), "delete".into());
    resolved.parameters.insert("KmsKeyArn".into(), "arn:aws:kms:us-east-1:123456789012:key/abcd".into());
    let ingest: BTreeMap<String, Vec<String>> = grants(&resolved, "IngestRole").into_iter().collect();
    let seal: BTreeMap<String, Vec<String>> = grants(&resolved, "SealRole").into_iter().collect();

    assert_eq!(ingest["sqs:ReceiveMessage"], vec!["attribute:IngestQueue.Arn"]);
    assert!(!ingest.contains_key("sqs:SendMessage"));
    assert_eq!(ingest["dynamodb:PutItem"], vec!["attribute:ManifestTable.Arn"], "no index");
    assert!(!ingest.contains_key("dynamodb:Query"), "ingest reads no index");
    assert!(!ingest.keys().any(|action| action.starts_with("s3:")), "ingest never touches objects");

    assert_eq!(seal["sqs:SendMessage"], vec!["attribute:SealQueue.Arn"]);
    let sources = format!("arn:<AWS::Partition>:s3:::{SOURCE_BUCKET}/AWSLogs/*");
    let outputs = format!("arn:<AWS::Partition>:s3:::{SOURCE_BUCKET}/compacted/*");
    assert_eq!(seal["s3:GetObjectTagging"], vec![sources.clone()]);
    assert_eq!(seal["s3:PutObjectTagging"], vec![sources.clone()]);
    // The tag step tags the version its GET read in a versioned bucket, and takes the tag off
    // a source found changed.
    assert_eq!(seal["s3:PutObjectVersionTagging"], vec![sources.clone()]);
    assert_eq!(seal["s3:DeleteObjectTagging"], vec![sources.clone()]);
    assert_eq!(seal["s3:AbortMultipartUpload"], vec![outputs.clone()]);
    assert_eq!(seal["kms:GenerateDataKey"], vec!["arn:aws:kms:us-east-1:123456789012:key/abcd"]);
    // Statements for one action in two places (GetObject: sources and outputs) fold into the
    // last here; check them all.
    let by_action = |action: &str| -> BTreeSet<String> {
        grants(&resolved, "SealRole").into_iter().filter(|(name, _)| name == action).flat_map(|(_, r)| r).collect()
    };
    assert_eq!(by_action("s3:GetObject"), BTreeSet::from([sources.clone(), outputs.clone()]));
    assert_eq!(by_action("s3:DeleteObject"), BTreeSet::from([sources, outputs]), "delete mode");

    resolved.parameters.insert("ExpiryMode".into(), "tag".into());
    resolved.parameters.insert("KmsKeyArn".into(), String::new());
    let tag_mode: BTreeMap<String, Vec<String>> = grants(&resolved, "SealRole").into_iter().collect();
    assert!(!tag_mode.keys().any(|action| action.starts_with("kms:")), "no key, no KMS actions");
    let deletable: BTreeSet<String> = grants(&resolved, "SealRole")
        .into_iter()
        .filter(|(name, _)| name == "s3:DeleteObject")
        .flat_map(|(_, resources)| resources)
        .collect();
    assert!(deletable.iter().all(|resource| resource.contains("/compacted/")), "tag mode deletes no source");
}

/// Every S3 and DynamoDB operation the adapters call, and the IAM action it needs. An adapter
/// that starts calling a new operation fails this test until the template grants it.
#[test]
fn seal_fn_is_granted_every_operation_the_adapters_call() {
    let adapters = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/src/adapters");
    let needed: BTreeMap<&str, Option<&str>> = BTreeMap::from([
        // S3
        ("get_object", Some("s3:GetObject")),
        ("head_object", Some("s3:GetObject")),
        ("put_object", Some("s3:PutObject")),
        ("create_multipart_upload", Some("s3:PutObject")),
        ("upload_part", Some("s3:PutObject")),
        ("upload_part_copy", Some("s3:PutObject")),
        ("complete_multipart_upload", Some("s3:PutObject")),
        ("abort_multipart_upload", Some("s3:AbortMultipartUpload")),
        ("delete_object", Some("s3:DeleteObject")),
        ("delete_objects", Some("s3:DeleteObject")),
        ("get_object_tagging", Some("s3:GetObjectTagging")),
        ("put_object_tagging", Some("s3:PutObjectTagging")),
        ("delete_object_tagging", Some("s3:DeleteObjectTagging")),
        // Only the CLI's `ingest --scan` lists.
        ("list_objects_v2", None),
        // DynamoDB; a transaction needs the actions of its parts.
        ("get_item", Some("dynamodb:GetItem")),
        ("put_item", Some("dynamodb:PutItem")),
        ("update_item", Some("dynamodb:UpdateItem")),
        ("query", Some("dynamodb:Query")),
        ("transact_write_items", Some("dynamodb:ConditionCheckItem")),
        ("batch_get_item", Some("dynamodb:BatchGetItem")),
        // The adapter's only PartiQL statements are UPDATEs.
        ("batch_execute_statement", Some("dynamodb:PartiQLUpdate")),
        // Table administration: the template creates the table, `s3-compactor init` otherwise.
        ("create_table", None),
        ("describe_table", None),
        ("describe_time_to_live", None),
        ("update_time_to_live", None),
    ]);
    let mut called = BTreeSet::new();
    for entry in walk(std::path::Path::new(adapters)) {
        // The AWS adapters are module folders (`s3/`, `dynamodb/`): every file under them counts.
        let path = entry.to_string_lossy().to_string();
        if !(path.contains("/s3") || path.contains("dynamodb")) {
            continue;
        }
        let source = std::fs::read_to_string(&entry).unwrap();
        // SDK calls are written `client.operation()`, the call often on the next line.
        for (index, _) in source.match_indices("client") {
            let rest = source[index + "client".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('.') else { continue };
            let operation: String =
                rest.chars().take_while(|character| character.is_ascii_lowercase() || *character == '_').collect();
            // SDK operations are builders: `client.operation()` then `.field(…)` or `.send()`.
            let after = &rest[operation.len()..];
            if !operation.is_empty() && after.starts_with("()") && after[2..].trim_start().starts_with('.') {
                called.insert(operation);
            }
        }
    }
    assert!(called.contains("get_object") && called.contains("query"), "the scan found the SDK calls: {called:?}");
    let seal: BTreeSet<String> = grants(&Resolved::new(), "SealRole").into_iter().map(|(action, _)| action).collect();
    for operation in &called {
        let action = needed.get(operation.as_str()).unwrap_or_else(|| {
            panic!("the adapters call {operation}: add it to this test with the IAM action it needs, and grant that in sam/template.yaml")
        });
        if let Some(action) = action {
            assert!(
                seal.contains(*action),
                "the adapters call {operation}, which needs {action}: grant it to SealRole"
            );
        }
    }
}

fn walk(directory: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn fan_out_is_bounded_and_the_schedule_never_retries() {
    let resolved = Resolved::new();
    let seal = field(resolved.resource("SealFunction"), &["Properties"]);
    let workers = field(seal, &["Events", "Workers", "Properties"]);
    let maximum_concurrency: u32 =
        resolved.text(field(workers, &["ScalingConfig", "MaximumConcurrency"])).parse().unwrap();
    assert_eq!(maximum_concurrency, 10);
    let reserved: u32 = resolved.text(field(seal, &["ReservedConcurrentExecutions"])).parse().unwrap();
    assert!(reserved > maximum_concurrency, "the schedule needs room besides the workers: {reserved}");
    assert_eq!(resolved.text(field(seal, &["EventInvokeConfig", "MaximumRetryAttempts"])), "0");
    // SQS's guidance: a visibility timeout of six times the function's timeout.
    for (queue, function) in [("SealQueue", "SealFunction"), ("IngestQueue", "IngestFunction")] {
        let visibility: u32 =
            resolved.text(field(resolved.resource(queue), &["Properties", "VisibilityTimeout"])).parse().unwrap();
        let timeout: u32 =
            resolved.text(field(resolved.resource(function), &["Properties", "Timeout"])).parse().unwrap();
        assert!(visibility >= 6 * timeout, "{queue}: {visibility} s for a {timeout} s function");
    }
    // Outputs in the source bucket never reach the queue: the rule leaves out the destination.
    let pattern =
        resolved.resolve(field(resolved.resource("ObjectEventsRule"), &["Properties", "EventPattern"])).unwrap();
    let key_filter = serde_json::to_value(field(&pattern, &["detail", "object", "key"])).unwrap();
    assert_eq!(key_filter, json!([{ "anything-but": { "prefix": "compacted/" } }]));
}

/// Issue 12: deletions never cost an SQS message. Nearly all are the compactor's own (the
/// seal's deletes, the lifecycle rule's expirations of tagged sources), and the rule cannot
/// tell them from a user's; creations still reach ingest.
#[test]
fn the_rule_sends_only_creations_to_ingest() {
    let resolved = Resolved::new();
    let pattern =
        resolved.resolve(field(resolved.resource("ObjectEventsRule"), &["Properties", "EventPattern"])).unwrap();
    let detail_types = serde_json::to_value(field(&pattern, &["detail-type"])).unwrap();
    assert_eq!(detail_types, json!(["Object Created"]));
    let source = serde_json::to_value(field(&pattern, &["source"])).unwrap();
    assert_eq!(source, json!(["aws.s3"]));
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// The metric names the handlers print, from an ingest batch, a scheduled seal and a worker.
async fn published_metric_names() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = RawConfig { source_bucket: Some("fixture-logs".into()), ..Default::default() }.validate().unwrap();
    let store = LocalDir::open(dir.path().join("buckets")).unwrap();
    store.create_bucket("fixture-logs").unwrap();
    let manifest = SqliteManifest::open(dir.path().join("manifest.sqlite")).unwrap();
    let clock = ManualClock::new(at("2024-01-20T00:05:00Z"));
    let compactor = Compactor::new(config, Arc::new(store), Arc::new(manifest), Arc::new(clock));
    let (metrics, lines) = Emf::capture("S3Compactor/test");

    let ingest = ingest_fn::IngestFunction { compactor: compactor.clone(), metrics: metrics.clone() };
    let key = "app/2024/01/14/a.json";
    let meta =
        compactor.store().put("fixture-logs", key, Bytes::from_static(b"{}\n"), PutOptions::default()).await.unwrap();
    let notification = compactor::event::s3_notification(&[compactor::event::ObjectEvent {
        kind: compactor::event::ObjectEventKind::Created { size: meta.size, etag: meta.etag },
        bucket: "fixture-logs".into(),
        key: key.into(),
        sequencer: "01".into(),
        event_time: at("2024-01-14T10:00:00Z"),
        event_name: "ObjectCreated:Put".into(),
    }]);
    let batch =
        json!({ "Records": [{ "messageId": "1", "body": notification.to_string(), "eventSource": "aws:sqs" }] });
    ingest.handle(batch).await.unwrap();

    let seal = seal_fn::SealFunction {
        compactor,
        fan_out: None,
        fan_out_threshold: 8,
        deadline_margin: Duration::seconds(60),
        metrics,
    };
    let deadline = at("2024-01-20T00:20:00Z");
    seal.handle(json!({ "detail-type": "Scheduled Event" }), deadline).await.unwrap();
    let message = seal_fn::SealMessage { partitions: vec![] };
    let worker = json!({ "Records": [{ "messageId": "2", "body": serde_json::to_string(&message).unwrap(), "eventSource": "aws:sqs" }] });
    seal.handle(worker, deadline).await.unwrap();

    let records = lines.records();
    assert_eq!(records.len(), 3, "one line per invocation");
    let mut names = BTreeSet::new();
    for record in &records {
        for definition in record["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
            let name = definition["Name"].as_str().unwrap().to_string();
            assert!(record.get(&name).is_some_and(serde_json::Value::is_number), "{name} declared without a value");
            names.insert(name);
        }
    }
    names
}

#[tokio::test]
async fn every_alarm_and_dashboard_metric_is_one_the_handlers_print() {
    let resolved = Resolved::new();
    let published = published_metric_names().await;
    let namespace = format!("S3Compactor/{STACK}");
    let mut ours = 0;
    for (name, resource) in field(&resolved.template, &["Resources"]).as_mapping().unwrap() {
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        let properties = resolved.resolve(field(resource, &["Properties"])).unwrap();
        let alarm_namespace = field(&properties, &["Namespace"]).as_str().unwrap().to_string();
        let metric = field(&properties, &["MetricName"]).as_str().unwrap().to_string();
        match alarm_namespace.as_str() {
            "AWS/Lambda" | "AWS/SQS" => {
                let dimension = &field(&properties, &["Dimensions"])[0];
                let value = field(dimension, &["Value"]).as_str().unwrap();
                assert!(value.starts_with("ref-") || value.starts_with("attribute:"), "{name:?}: {value}");
            }
            _ => {
                assert_eq!(alarm_namespace, namespace, "{name:?}");
                assert!(
                    published.contains(&metric),
                    "{name:?} watches {metric}, which no handler prints: {published:?}"
                );
                ours += 1;
            }
        }
    }
    assert_eq!(ours, 2, "the seal lag and no-ingest alarms");
    assert!(published.contains(seal_fn::metric::SEAL_LAG) && published.contains(ingest_fn::metric::EVENTS));

    // The dashboard's own metrics: `["${Namespace}", "Name"]` and `[".", "Name"]`.
    let body = resolved.text(field(resolved.resource("Dashboard"), &["Properties", "DashboardBody"]));
    let dashboard: serde_json::Value = serde_json::from_str(&body).expect("the dashboard body is JSON");
    let mut shown = 0;
    for widget in dashboard["widgets"].as_array().unwrap() {
        let mut current_namespace = String::new();
        for line in widget["properties"]["metrics"].as_array().unwrap() {
            let line = line.as_array().unwrap();
            match line[0].as_str().unwrap() {
                "." => {}
                "..." => continue,
                other => current_namespace = other.to_string(),
            }
            if current_namespace == namespace {
                let metric = line[1].as_str().unwrap();
                assert!(published.contains(metric), "the dashboard shows {metric}, which no handler prints");
                shown += 1;
            }
        }
    }
    assert!(shown >= 10, "{shown} metrics of ours on the dashboard");
}
