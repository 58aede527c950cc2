//! S3 errors mapped to [`StoreError`] variants callers act on, with messages that say what to do.

use super::*;

/// S3 error codes that mean the request itself is wrong, not the service or the caller's rights.
const INVALID_REQUEST_CODES: &[&str] = &[
    "InvalidArgument",
    "InvalidRequest",
    "InvalidRange",
    "InvalidPart",
    "InvalidPartOrder",
    "InvalidTag",
    "EntityTooSmall",
    "EntityTooLarge",
    "KeyTooLongError",
    "MalformedXML",
    "TooManyParts",
];

/// The S3 request a port method made, for error messages: its name and the IAM action it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum S3Operation {
    HeadObject,
    GetObject,
    PutObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListObjectsV2,
    GetObjectTagging,
    PutObjectTagging,
    /// PutObjectTagging with a `versionId`: another IAM action.
    PutObjectVersionTagging,
    DeleteObjectTagging,
    DeleteObject,
    DeleteObjects,
}

impl S3Operation {
    pub(super) fn name(self) -> &'static str {
        match self {
            S3Operation::HeadObject => "HeadObject",
            S3Operation::GetObject => "GetObject",
            S3Operation::PutObject => "PutObject",
            S3Operation::CreateMultipartUpload => "CreateMultipartUpload",
            S3Operation::UploadPart => "UploadPart",
            S3Operation::UploadPartCopy => "UploadPartCopy",
            S3Operation::CompleteMultipartUpload => "CompleteMultipartUpload",
            S3Operation::AbortMultipartUpload => "AbortMultipartUpload",
            S3Operation::ListObjectsV2 => "ListObjectsV2",
            S3Operation::GetObjectTagging => "GetObjectTagging",
            S3Operation::PutObjectTagging | S3Operation::PutObjectVersionTagging => "PutObjectTagging",
            S3Operation::DeleteObjectTagging => "DeleteObjectTagging",
            S3Operation::DeleteObject => "DeleteObject",
            S3Operation::DeleteObjects => "DeleteObjects",
        }
    }

    /// The IAM action S3 checks for this request.
    pub(super) fn iam_action(self) -> &'static str {
        match self {
            S3Operation::HeadObject | S3Operation::GetObject => "s3:GetObject",
            S3Operation::PutObject
            | S3Operation::CreateMultipartUpload
            | S3Operation::UploadPart
            | S3Operation::UploadPartCopy
            | S3Operation::CompleteMultipartUpload => "s3:PutObject",
            S3Operation::AbortMultipartUpload => "s3:AbortMultipartUpload",
            S3Operation::ListObjectsV2 => "s3:ListBucket",
            S3Operation::GetObjectTagging => "s3:GetObjectTagging",
            S3Operation::PutObjectTagging => "s3:PutObjectTagging",
            S3Operation::PutObjectVersionTagging => "s3:PutObjectVersionTagging",
            S3Operation::DeleteObjectTagging => "s3:DeleteObjectTagging",
            S3Operation::DeleteObject | S3Operation::DeleteObjects => "s3:DeleteObject",
        }
    }

    /// Whether the request writes an output that SSE-KMS encrypts.
    pub(super) fn encrypts_with_kms(self) -> bool {
        matches!(
            self,
            S3Operation::PutObject
                | S3Operation::CreateMultipartUpload
                | S3Operation::UploadPart
                | S3Operation::UploadPartCopy
                | S3Operation::CompleteMultipartUpload
        )
    }
}

impl fmt::Display for S3Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// What a request was about, for the error it may turn into.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestTarget<'a> {
    pub(super) operation: S3Operation,
    pub(super) bucket: &'a str,
    pub(super) key: &'a str,
    pub(super) upload_id: Option<&'a str>,
}

impl<'a> RequestTarget<'a> {
    pub(super) fn new(operation: S3Operation, bucket: &'a str, key: &'a str) -> Self {
        RequestTarget { operation, bucket, key, upload_id: None }
    }

    pub(super) fn with_upload_id(mut self, upload_id: &'a str) -> Self {
        self.upload_id = Some(upload_id);
        self
    }

    pub(super) fn not_found(&self) -> StoreError {
        StoreError::NotFound { bucket: self.bucket.to_owned(), key: self.key.to_owned() }
    }

    pub(super) fn no_such_bucket(&self) -> StoreError {
        StoreError::NoSuchBucket { bucket: self.bucket.to_owned() }
    }

    pub(super) fn no_such_upload(&self) -> StoreError {
        StoreError::NoSuchUpload {
            bucket: self.bucket.to_owned(),
            key: self.key.to_owned(),
            upload_id: self.upload_id.unwrap_or_default().to_owned(),
        }
    }

    pub(super) fn invalid_request(&self, message: impl Into<String>) -> StoreError {
        StoreError::InvalidRequest { bucket: self.bucket.to_owned(), key: self.key.to_owned(), message: message.into() }
    }

    pub(super) fn backend(&self, message: impl Into<String>) -> StoreError {
        StoreError::backend(self.bucket, self.key, S3RequestFailed::without_source(self.operation, message.into()))
    }
}

/// A failed S3 request that no [`StoreError`] variant names: the `source` of
/// [`StoreError::Backend`]. Its message carries S3's code and message and what to do next; its
/// own source is the SDK error, for the full context.
#[derive(Debug)]
pub struct S3RequestFailed {
    pub(super) operation: &'static str,
    pub(super) message: String,
    pub(super) source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl S3RequestFailed {
    pub(super) fn without_source(operation: S3Operation, message: String) -> Self {
        S3RequestFailed { operation: operation.name(), message, source: None }
    }
}

impl fmt::Display for S3RequestFailed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "S3 {} failed: {}", self.operation, self.message)
    }
}

impl StdError for S3RequestFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|source| source as &(dyn StdError + 'static))
    }
}

/// The parts of an SDK error the mapping looks at.
pub(super) struct ErrorFacts {
    pub(super) http_status: Option<u16>,
    pub(super) code: Option<String>,
    pub(super) message: Option<String>,
}

pub(super) fn error_facts<E: ProvideErrorMetadata>(error: &SdkError<E>) -> ErrorFacts {
    let http_status = error.raw_response().map(|response| response.status().as_u16());
    match error {
        SdkError::ServiceError(service_error) => ErrorFacts {
            http_status,
            code: service_error.err().code().map(str::to_owned),
            message: service_error.err().message().map(str::to_owned),
        },
        _ => ErrorFacts { http_status, code: None, message: None },
    }
}

impl AmazonS3 {
    /// Maps an SDK error no typed variant of the operation covered, by S3 error code first and
    /// HTTP status second (HEAD responses and some S3-compatible servers carry no code).
    pub(super) fn store_error<E>(&self, error: SdkError<E>, target: RequestTarget<'_>) -> StoreError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let facts = error_facts(&error);
        let code = facts.code.as_deref().unwrap_or_default();
        let s3_message = facts.message.as_deref().unwrap_or("no message");
        match (code, facts.http_status) {
            ("NoSuchBucket", _) => return target.no_such_bucket(),
            ("NoSuchUpload", _) => return target.no_such_upload(),
            ("NoSuchKey" | "NotFound" | "NoSuchVersion", _) => return target.not_found(),
            ("PreconditionFailed", _) | (_, Some(412)) => {
                return StoreError::PreconditionFailed { bucket: target.bucket.to_owned(), key: target.key.to_owned() }
            }
            ("AccessDenied" | "AllAccessDisabled" | "Forbidden", _) | (_, Some(403)) => {
                return StoreError::AccessDenied {
                    bucket: target.bucket.to_owned(),
                    key: target.key.to_owned(),
                    message: self.access_denied_message(target, code, s3_message),
                }
            }
            (_, Some(416)) => {
                return target.invalid_request(format!(
                    "the range starts at or past the end of the object ({code} from {}): {s3_message}",
                    target.operation
                ))
            }
            (invalid_request_code, _) if INVALID_REQUEST_CODES.contains(&invalid_request_code) => {
                return target
                    .invalid_request(format!("{invalid_request_code} from {}: {s3_message}", target.operation))
            }
            // A 404 without a code we know: HEAD responses have no body to carry one.
            (_, Some(404)) => return target.not_found(),
            _ => {}
        }
        let what_to_do = match (&error, code, facts.http_status) {
            (_, "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded", _) | (_, _, Some(503)) => {
                format!(
                    "S3 is throttling this prefix and {MAX_ATTEMPTS_PER_REQUEST} attempts did not get through: \
                     lower the seal concurrency, or retry later (S3 scales a prefix up within minutes)"
                )
            }
            (_, _, Some(500..=599)) => "S3 had an internal error that outlasted the retries: retry later".to_owned(),
            (SdkError::TimeoutError(_), _, _) => {
                "the request timed out: check the network path to the S3 endpoint, then retry".to_owned()
            }
            (SdkError::DispatchFailure(_), _, _) => {
                "the request could not be sent: check the endpoint URL, DNS and network, then retry".to_owned()
            }
            (SdkError::ConstructionFailure(_), _, _) => {
                "the request could not be built: check the region, credentials and endpoint configuration".to_owned()
            }
            _ => "see the S3 error code and message".to_owned(),
        };
        let status = facts.http_status.map_or_else(|| "no response".to_owned(), |status| format!("HTTP {status}"));
        let code_or_unknown = if code.is_empty() { "no error code" } else { code };
        let message = format!("{code_or_unknown} ({status}): {s3_message}; {what_to_do}");
        StoreError::backend(
            target.bucket,
            target.key,
            S3RequestFailed { operation: target.operation.name(), message, source: Some(Box::new(error)) },
        )
    }

    pub(super) fn access_denied_message(&self, target: RequestTarget<'_>, code: &str, s3_message: &str) -> String {
        let mut message = format!(
            "{} was refused ({}): the caller likely lacks {} on arn:aws:s3:::{}{}",
            target.operation,
            if code.is_empty() { "403" } else { code },
            target.operation.iam_action(),
            target.bucket,
            match target.operation {
                S3Operation::ListObjectsV2 => String::new(),
                // A batch names many keys: the permission is needed on each of them.
                S3Operation::DeleteObjects => "/*".to_owned(),
                _ => format!("/{}", target.key),
            },
        );
        if target.operation == S3Operation::UploadPartCopy {
            message.push_str(", or s3:GetObject on the copy source");
        }
        if matches!(target.operation, S3Operation::HeadObject | S3Operation::GetObject) {
            message.push_str("; without s3:ListBucket on the bucket S3 also answers 403 for a key that does not exist");
        }
        if let (true, Some(kms_key_id)) = (target.operation.encrypts_with_kms(), &self.options.sse_kms_key_id) {
            message.push_str(&format!("; or kms:GenerateDataKey on KMS key {kms_key_id}"));
        }
        if let Some(owner) = &self.options.expected_bucket_owner {
            message.push_str(&format!("; or the bucket is not owned by the expected account {owner}"));
        }
        message.push_str(&format!(" (S3 said: {s3_message})"));
        message
    }
}

/// One key's error in a DeleteObjects answer, as the outcome of that key: `Ok` when the key is
/// gone anyway, the [`StoreError`] a request with that code and message would map to otherwise.
pub(super) fn delete_objects_key_outcome(
    store: &AmazonS3,
    bucket: &str,
    key: &str,
    code: &str,
    message: &str,
) -> Result<(), StoreError> {
    let target = RequestTarget::new(S3Operation::DeleteObjects, bucket, key);
    match code {
        "NoSuchKey" | "NotFound" => Ok(()),
        "PreconditionFailed" => Err(StoreError::PreconditionFailed { bucket: bucket.to_owned(), key: key.to_owned() }),
        "AccessDenied" | "AllAccessDisabled" | "Forbidden" => Err(StoreError::AccessDenied {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            message: store.access_denied_message(
                RequestTarget::new(S3Operation::DeleteObject, bucket, key),
                code,
                message,
            ),
        }),
        invalid_request_code if INVALID_REQUEST_CODES.contains(&invalid_request_code) => {
            Err(target.invalid_request(format!("{invalid_request_code} from DeleteObjects: {message}")))
        }
        _ => {
            let code_or_unknown = if code.is_empty() { "no error code" } else { code };
            Err(target.backend(format!(
                "{code_or_unknown} for this key: {message}; the other keys of the batch are unaffected, retry this one"
            )))
        }
    }
}
