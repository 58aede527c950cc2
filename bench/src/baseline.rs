//! The reference the compactor is compared with: a scheduled list-and-concatenate job, written
//! plainly as such jobs are. It lists the prefix (ListObjectsV2, 1,000 keys a page), GETs every
//! object, concatenates each day directory into one multipart upload of 8 MiB parts, and
//! deletes the sources with DeleteObjects. No manifest: the listing is its memory.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::BytesMut;
use compactor::ports::{GetOptions, ObjectStore};
use futures::StreamExt;
use test_data::DatasetSpec;

use crate::setup::{Deployment, Measured};

const PART_BYTES: usize = 8 << 20;

pub async fn list_and_concatenate(deployment: &Deployment, dataset: &DatasetSpec) -> anyhow::Result<Measured> {
    let counter_before = deployment.counter_snapshot();
    let started = Instant::now();
    let bucket = deployment.bucket.as_str();
    let store = deployment.compactor.store();
    let config = deployment.compactor.config();
    let concurrency = config.partition_concurrency * config.read_concurrency;

    // 1. List everything under the prefix, page by page.
    let mut keys = Vec::new();
    let mut pages = deployment.s3.list_objects_v2().bucket(bucket).prefix(&dataset.prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.context("listing the source prefix")?;
        keys.extend(page.contents().iter().filter_map(|object| Some((object.key()?.to_string(), object.size()?))));
    }

    // 2. One output per directory (day), in key order.
    let mut objects = 0u64;
    let mut bytes = 0u64;
    let mut start = 0;
    while start < keys.len() {
        let directory = directory_of(&keys[start].0);
        let end = start + keys[start..].iter().take_while(|(key, _)| directory_of(key) == directory).count();
        let day = &keys[start..end];
        let output_key = format!("list-and-concatenate/{directory}/part-0.data");
        bytes += concatenate(store, bucket, &output_key, day.iter().map(|(key, _)| key.as_str()), concurrency).await?;
        objects += day.len() as u64;
        start = end;
    }

    // 3. Delete the sources, 1,000 a request.
    for batch in keys.chunks(1000) {
        let identifiers =
            batch.iter().map(|(key, _)| ObjectIdentifier::builder().key(key).build()).collect::<Result<Vec<_>, _>>()?;
        deployment
            .s3
            .delete_objects()
            .bucket(bucket)
            .delete(Delete::builder().set_objects(Some(identifiers)).quiet(true).build()?)
            .send()
            .await
            .context("deleting the sources")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Run as the reference solutions run it: one function invocation, with the seal's memory.
    Ok(Measured {
        objects,
        bytes,
        seconds,
        requests: deployment.counter_snapshot().since(&counter_before),
        invocations: 1,
        handler_seconds: seconds,
        memory_mb: deployment.deployed.seal_memory_mb,
        sqs_requests: 0,
    })
}

fn directory_of(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(directory, _)| directory)
}

/// GETs `keys` (`concurrency` at once, in order) into one multipart upload; returns the bytes.
async fn concatenate<'a>(
    store: &Arc<dyn ObjectStore>,
    bucket: &str,
    output_key: &str,
    keys: impl Iterator<Item = &'a str>,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let upload_id = store.create_multipart(bucket, output_key).await?;
    let mut reads = futures::stream::iter(keys)
        .map(|key| async move { store.get(bucket, key, GetOptions::default()).await?.bytes().await })
        .buffered(concurrency);
    let mut buffer = BytesMut::with_capacity(PART_BYTES);
    let mut parts = Vec::new();
    let mut total = 0u64;
    while let Some(body) = reads.next().await {
        let body = body?;
        total += body.len() as u64;
        buffer.extend_from_slice(&body);
        if buffer.len() >= PART_BYTES {
            let part = buffer.split_to(PART_BYTES).freeze();
            let number = parts.len() as u32 + 1;
            parts.push(store.upload_part(bucket, output_key, &upload_id, number, part).await?);
        }
    }
    if !buffer.is_empty() || parts.is_empty() {
        let number = parts.len() as u32 + 1;
        parts.push(store.upload_part(bucket, output_key, &upload_id, number, buffer.freeze()).await?);
    }
    store.complete_multipart(bucket, output_key, &upload_id, &parts).await?;
    Ok(total)
}
