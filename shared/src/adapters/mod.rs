//! Adapters of the ports: the embedded backend (a local directory and SQLite) and, behind the
//! `aws` feature, Amazon S3 and DynamoDB.

#[cfg(feature = "aws")]
pub mod dynamodb;
#[cfg(feature = "local")]
pub mod local_dir;
#[cfg(feature = "aws")]
pub mod s3;
#[cfg(feature = "sqlite")]
pub mod sqlite;
