//! Compressed outputs (`COMPACTOR_COMPRESS`, issue 13) on the embedded backend: each plain
//! source becomes a zstd frame (gzip member) of its own, its range in the output is exactly that
//! frame, the output decompresses to the sources' texts in order, restore gives every source
//! back byte for byte, verify passes with and without the originals, and sources compressed
//! already (by name or by content) go in as they are.

use std::io::Read;

use compactor::domain::format::compress::{decompress_frames, framed_compression};
use compactor::domain::format::Compression;
use compactor::engine::seal::SealOptions;

mod common;

use common::{gzip, Embedded, BUCKET};

impl Embedded {
    /// Every source restores byte for byte, and verify passes with and without the originals.
    async fn assert_restores_and_verifies(&self, sources: &[(String, Vec<u8>)]) {
        for (key, body) in sources {
            let (_, restored) = self.compactor.restore_bytes(key).await.unwrap();
            assert_eq!(&restored[..], &body[..], "{key} restores byte for byte");
        }
        let verify = self.compactor.verify(None, false, |_| {}).await.unwrap();
        assert!(verify.all_verified(), "{verify:?}");
        assert_eq!(verify.sources_checked, sources.len() as u64, "{verify:?}");
        let against_sources = self.compactor.verify(None, true, |_| {}).await.unwrap();
        assert!(against_sources.all_verified(), "{against_sources:?}");
        assert_eq!(against_sources.originals_ok, sources.len() as u64, "{against_sources:?}");
    }
}

fn decompress(compression: Compression, bytes: &[u8]) -> Vec<u8> {
    decompress_frames(compression, bytes, 1 << 30).unwrap()
}

/// Issue 13: under `--compress zstd` and `gzip`, plain JSON sources become one frame each in a
/// `-framed.json.zst` (`.gz`) output, each range exactly its frame; a source without a final
/// newline gets a newline frame after it, outside its range; an empty source is an empty range;
/// a gzip source under a `.json` name goes in as it is, and one named `.json.gz` goes to an
/// output of its own, as without compression.
#[tokio::test]
async fn each_plain_source_is_a_frame_of_its_own_and_restores_byte_for_byte() {
    for compression in [Compression::Zstd, Compression::Gzip] {
        let embedded = Embedded::new(|raw| raw.compress = Some(compression.to_string()));
        let key = |name: &str| format!("app/2024/01/14/{name}");
        let lines = |tag: &str, count: usize| -> Vec<u8> {
            (0..count).map(|n| format!("{{\"source\":\"{tag}\",\"n\":{n}}}\n")).collect::<String>().into_bytes()
        };
        let gzip_inside = gzip(b"{\"hidden\":1}\n");
        let sources = vec![
            (key("a.json"), lines("a", 200)),
            (key("b no final newline.json"), b"{\"b\":1}\n{\"b\":2}".to_vec()),
            (key("c empty.json"), Vec::new()),
            (key("d gzip inside.json"), gzip_inside.clone()),
            (key("e.json"), lines("e", 3)),
            (key("f named.json.gz"), gzip(b"{\"f\":1}\n")),
        ];
        embedded.add(&sources).await;
        let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
        assert_eq!(report.objects_compacted, 6, "{report:?}");

        let outputs = embedded.outputs("app/2024/01/14/").await;
        assert_eq!(outputs.len(), 2, "{compression}: framed outputs never hold gzip-named sources: {outputs:?}");
        let (framed_key, framed) = outputs.iter().find(|(key, _)| framed_compression(key).is_some()).unwrap();
        assert!(framed_key.ends_with(&format!("-framed.json{}", compression.suffix())), "{framed_key}");
        let (plain_key, _) = outputs.iter().find(|(key, _)| framed_compression(key).is_none()).unwrap();
        assert!(plain_key.ends_with("p00001.json.gz") || plain_key.ends_with("p00002.json.gz"), "{plain_key}");

        // The framed output, read as one stream, is the texts in order with the newline after b.
        let mut ranges = Vec::new();
        for (source_key, body) in sources.iter().filter(|(key, _)| !key.ends_with(".gz")) {
            let placement = embedded.manifest.object(BUCKET, source_key).await.unwrap().unwrap().placement.unwrap();
            assert_eq!(&placement.output_key, framed_key);
            let range = &framed[placement.offset as usize..(placement.offset + placement.length) as usize];
            if source_key.contains("gzip inside") {
                assert_eq!(range, &gzip_inside[..], "{compression}: compressed content is never compressed twice");
            } else if body.is_empty() {
                assert_eq!(placement.length, 0, "an empty source is no frame");
            } else {
                assert_ne!(placement.length, body.len() as u64, "a frame is never as long as its source");
                assert_eq!(
                    decompress(compression, range),
                    &body[..],
                    "{compression}: {source_key}'s range is its frame"
                );
            }
            let expected_separator = if source_key.contains("no final newline") { 10 } else { 0 };
            if compression == Compression::Zstd {
                assert_eq!(placement.separator_bytes, expected_separator, "{source_key}");
            }
            ranges.push((source_key.clone(), placement));
        }
        let big = &ranges[0].1;
        assert!(big.length * 5 < sources[0].1.len() as u64, "{compression}: 200 similar lines shrink: {big:?}");
        let text_before_gzip = decompress(compression, &framed[..ranges[3].1.offset as usize]);
        assert_eq!(
            String::from_utf8(text_before_gzip).unwrap(),
            format!("{}{{\"b\":1}}\n{{\"b\":2}}\n", String::from_utf8(sources[0].1.clone()).unwrap()),
            "{compression}: the frames read as one stream, a newline after the source that lacked one"
        );
        embedded.assert_restores_and_verifies(&sources).await;
    }
}

/// Issue 13: a compressed CSV output starts with the header as a frame of its own, in no
/// source's range; each source's rows are a frame; it decompresses to one header and every
/// row, and every source restores with its header, byte for byte.
#[tokio::test]
async fn a_compressed_csv_output_has_its_header_as_a_frame_of_its_own() {
    let embedded = Embedded::new(|raw| raw.formats = Some("tables/=csv:zstd".into()));
    let key = |name: &str| format!("tables/2024/01/14/{name}.csv");
    let sources = vec![
        (key("a"), b"id,name\n1,x\n2,y\n".to_vec()),
        (key("b no final newline"), b"id,name\n3,z".to_vec()),
        (key("c header only"), b"id,name\n".to_vec()),
        (key("d"), b"id,name\n4,w\n".to_vec()),
    ];
    embedded.add(&sources).await;
    let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!(report.objects_compacted, 4, "{report:?}");
    let outputs = embedded.outputs("tables/2024/01/14/").await;
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let (output_key, output) = &outputs[0];
    assert!(output_key.ends_with("-framed.csv.zst"), "{output_key}");
    assert_eq!(decompress(Compression::Zstd, output), b"id,name\n1,x\n2,y\n3,z\n4,w\n", "one header, every row");
    let first = embedded.manifest.object(BUCKET, &key("a")).await.unwrap().unwrap().placement.unwrap();
    assert_eq!(decompress(Compression::Zstd, &output[..first.offset as usize]), b"id,name\n", "the header frame");
    embedded.assert_restores_and_verifies(&sources).await;
}

/// Issue 13: under `ndjson` with gzip, the kept lines of each source are a member of their
/// own, the lines that are not JSON go to the side file as without compression, and restore
/// puts them back byte for byte.
#[tokio::test]
async fn compressed_ndjson_sets_invalid_lines_aside_and_restores_byte_for_byte() {
    let embedded = Embedded::new(|raw| {
        raw.formats = Some("events/=ndjson".into());
        raw.compress = Some("gzip".into());
    });
    let key = |name: &str| format!("events/2024/01/14/{name}.ndjson");
    let sources = vec![
        (key("a valid"), b"{\"n\":1}\n{\"n\":2}\n".to_vec()),
        (key("b one bad line"), b"{\"n\":3}\n{\"n\":4,\n{\"n\":5}".to_vec()),
        (key("c all bad"), b"oops\n".to_vec()),
    ];
    embedded.add(&sources).await;
    let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!((report.objects_compacted, report.invalid_lines), (3, 2), "{report:?}");
    let outputs = embedded.outputs("events/2024/01/14/").await;
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let (output_key, output) = &outputs[0];
    assert!(output_key.ends_with("-framed.ndjson.gz"), "{output_key}");
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&output[..]).read_to_string(&mut text).unwrap();
    assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":5}\n", "JSON lines only");
    embedded.assert_restores_and_verifies(&sources).await;
}

/// Lines of text that compress poorly, so that an output of them needs several parts.
fn noisy_lines(tag: &str, lines: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut text = String::new();
    for line in 0..lines {
        let mut next = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            state
        };
        let (first, second) = (next(), next());
        text.push_str(&format!("{{\"source\":\"{tag}\",\"line\":{line},\"noise\":\"{first:016x}{second:016x}\"}}\n"));
    }
    text.into_bytes()
}

/// Issue 13: sources large enough to be compressed off the async threads, in an output of
/// several parts, restore and verify as small ones do; a frame is never copied server-side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sources_in_a_multipart_compressed_output_restore_and_verify() {
    let embedded = Embedded::new(|raw| {
        raw.compress = Some("zstd".into());
        raw.part_bytes = Some("5MiB".into());
    });
    let sources: Vec<(String, Vec<u8>)> =
        (0..8).map(|n| (format!("app/2024/01/14/big-{n}.json"), noisy_lines(&format!("s{n}"), 40_000))).collect();
    embedded.add(&sources).await;
    let report = embedded.compactor.seal_closed(&SealOptions::default()).await.unwrap();
    assert_eq!((report.objects_compacted, report.copied_sources), (8, 0), "{report:?}");
    let outputs = embedded.outputs("app/2024/01/14/").await;
    assert_eq!(outputs.len(), 1);
    assert!(outputs[0].1.len() > 5 << 20, "more than one part: {}", outputs[0].1.len());
    embedded.assert_restores_and_verifies(&sources).await;
}
