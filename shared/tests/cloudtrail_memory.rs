//! Issue 13: a CloudTrail file is rewritten to NDJSON one record at a time. A 20 MB document
//! (uncompressed) must not be held whole, nor its records array: the peak of live heap bytes
//! while it is rewritten stays far below its text's size. Its own test binary, so that the
//! counting allocator sees this test's allocations only.

use std::io::Write;
use std::sync::atomic::Ordering;

use compactor::domain::format::cloudtrail;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{LIVE, PEAK};

#[test]
fn a_20_mb_cloudtrail_file_is_rewritten_with_bounded_memory() {
    // Records that compress poorly (hex noise), so the compressed file is not tiny either.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(b"{\"Records\":[").unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let (mut text_bytes, mut records) = (0usize, 0u64);
    while text_bytes < 20_000_000 {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let record = format!(
            r#"{}{{"eventName":"GetObject","eventID":"{state:016x}","requestParameters":{{"key":"k{records}"}}}}"#,
            if records == 0 { "" } else { "," }
        );
        encoder.write_all(record.as_bytes()).unwrap();
        text_bytes += record.len();
        records += 1;
    }
    encoder.write_all(b"]}").unwrap();
    let source = encoder.finish().unwrap();

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let member = cloudtrail::to_ndjson_member(&source).unwrap();
    let peak_above_source = PEAK.load(Ordering::Relaxed) - before;
    assert_eq!(member.records, records);
    eprintln!(
        "rewrote {records} records, {text_bytes} bytes of text ({} compressed, {} as NDJSON gzip): peak {peak_above_source} \
         heap bytes above the source",
        source.len(),
        member.bytes.len()
    );
    // What is held: the member being built (about the source's compressed size, with the
    // growth slack of its Vec), one record, the inflater's and the reader's buffers.
    let bound = 2 * source.len() + 4 * 1024 * 1024;
    assert!(
        peak_above_source < bound && peak_above_source < text_bytes / 2,
        "peak {peak_above_source} bytes while rewriting {text_bytes} bytes of text ({} compressed)",
        source.len()
    );
    let member_text = cloudtrail::inflate(&member.bytes).unwrap();
    assert_eq!(member_text.iter().filter(|byte| **byte == b'\n').count() as u64, records);
}
