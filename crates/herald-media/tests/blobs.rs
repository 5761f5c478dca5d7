//! The blob store's conformance suite: one function, run against the local-disk backend and against the S3
//! backend talking to a real S3-protocol server (s3s-fs), so both tiers behave the same to the pipeline
//! and the HTTP layer. Then a blob is moved between the two.

use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream;
use herald_media::blobs::{BlobError, BlobKey, BlobStore, ObjectBlobs, PART_SIZE};
use herald_media::testing::S3Process;

const HASH_A: &str = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";
const HASH_B: &str = "cd0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";
/// Over [`PART_SIZE`], not a multiple of it: a multipart upload with a short last part.
const BIG: usize = 9 * 1024 * 1024 + 12_345;

/// Deterministic bytes that differ at every offset class, so a range read from the wrong place fails.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn key(hash: &str, variant: &str) -> BlobKey {
    BlobKey::new(hash, variant).expect("valid key")
}

async fn read(store: &dyn BlobStore, key: &BlobKey, range: Option<std::ops::Range<u64>>) -> Bytes {
    store.get(key, range).await.expect("get").bytes().await.expect("read the body")
}

/// Everything the pipeline and the HTTP layer rely on, for one backend. `scratch` is a local directory for
/// the files to upload.
async fn conformance(store: &dyn BlobStore, scratch: &Path) {
    let big = pattern(BIG, 7);
    let small = pattern(1000, 11);
    let big_path = scratch.join("big.bin");
    let small_path = scratch.join("small.bin");
    let empty_path = scratch.join("empty.bin");
    std::fs::write(&big_path, &big).expect("write big");
    std::fs::write(&small_path, &small).expect("write small");
    std::fs::write(&empty_path, b"").expect("write empty");

    let original = key(HASH_A, "original");
    let thumb = key(HASH_A, "thumb.webp");
    let other = key(HASH_B, "original");
    let empty = key(HASH_B, "empty");

    // put_file: the multipart path, the single-PUT path, and an empty file.
    assert_eq!(store.put_file(&original, &big_path).await.expect("put big"), BIG as u64);
    assert_eq!(store.put_file(&other, &small_path).await.expect("put small"), 1000);
    assert_eq!(store.put_file(&empty, &empty_path).await.expect("put empty"), 0);
    store.put_bytes(&thumb, Bytes::from_static(b"thumbnail")).await.expect("put_bytes");
    assert!(matches!(store.put_file(&key(HASH_B, "nope"), &scratch.join("missing")).await, Err(BlobError::Io(_))));

    // size
    assert_eq!(store.size(&original).await.expect("size"), Some(BIG as u64));
    assert_eq!(store.size(&other).await.expect("size"), Some(1000));
    assert_eq!(store.size(&empty).await.expect("size"), Some(0));
    assert_eq!(store.size(&key(HASH_B, "missing")).await.expect("size"), None);

    // get whole
    let whole = store.get(&original, None).await.expect("get big");
    assert_eq!((whole.size, whole.range.clone()), (BIG as u64, 0..BIG as u64));
    assert_eq!(whole.bytes().await.expect("body"), big.as_slice());
    assert_eq!(read(store, &other, None).await, small.as_slice());
    assert_eq!(read(store, &thumb, None).await, &b"thumbnail"[..]);
    assert!(read(store, &empty, None).await.is_empty());

    // get ranges: first byte, middle (across the first part boundary), last byte, to the end, suffix.
    let n = BIG as u64;
    let mid = PART_SIZE as u64 - 50_000..PART_SIZE as u64 + 50_000;
    for range in [0..1, mid, n - 1..n, n - 1000..u64::MAX, n - 1000..n + 5] {
        let got = store.get(&original, Some(range.clone())).await.expect("get range");
        let expected = range.start..range.end.min(n);
        assert_eq!(got.size, n, "{range:?}");
        assert_eq!(got.range, expected, "{range:?}");
        let body = got.bytes().await.expect("range body");
        assert_eq!(body, &big[expected.start as usize..expected.end as usize], "{range:?}");
    }
    // A suffix request (`bytes=-500`) as the HTTP layer makes it: size first, then the range.
    let size = store.size(&other).await.expect("size").expect("exists");
    assert_eq!(read(store, &other, Some(size - 500..size)).await, &small[500..]);

    // Unsatisfiable ranges carry the size for the 416.
    for range in [n..n + 1, n + 10..n + 20, 5..5] {
        assert!(
            matches!(
                store.get(&original, Some(range.clone())).await,
                Err(BlobError::RangeNotSatisfiable { size }) if size == n
            ),
            "{range:?}: {:?}",
            store.get(&original, Some(range.clone())).await.map(|s| (s.size, s.range))
        );
    }

    // NotFound, with and without a range.
    let missing = key(HASH_A, "missing");
    assert!(matches!(store.get(&missing, None).await, Err(BlobError::NotFound)));
    assert!(matches!(store.get(&missing, Some(0..10)).await, Err(BlobError::NotFound)));

    // Overwrite replaces the whole blob (a shorter one must not leave a tail behind).
    store.put_bytes(&thumb, Bytes::from_static(b"thumb")).await.expect("overwrite");
    assert_eq!(read(store, &thumb, None).await, &b"thumb"[..]);

    // list by prefix: whole segments, sorted here because backends list in their own order.
    let sorted = |mut keys: Vec<BlobKey>| {
        keys.sort();
        keys
    };
    let a_keys = sorted(vec![original.clone(), thumb.clone()]);
    assert_eq!(sorted(store.list("ab").await.expect("list")), a_keys);
    assert_eq!(sorted(store.list("ab/").await.expect("list")), a_keys);
    assert_eq!(sorted(store.list(&format!("ab/{HASH_A}")).await.expect("list")), a_keys);
    assert_eq!(
        sorted(store.list("").await.expect("list all")),
        sorted(vec![original.clone(), thumb.clone(), other.clone(), empty.clone()])
    );
    assert!(store.list("a").await.expect("list").is_empty(), "prefixes match whole segments");
    assert!(store.list("ef").await.expect("list").is_empty());
    assert!(matches!(store.list("../etc").await, Err(BlobError::InvalidKey(_))));

    // A stream that fails mid-way (past one part, so mid-multipart) publishes nothing.
    let failing = stream::iter(vec![
        Ok(Bytes::from(vec![1u8; PART_SIZE])),
        Ok(Bytes::from(vec![2u8; PART_SIZE])),
        Err(BlobError::Io("the source broke".to_owned())),
    ])
    .boxed();
    let broken = key(HASH_B, "broken");
    assert!(matches!(store.put_stream(&broken, failing).await, Err(BlobError::Io(_))));
    assert_eq!(store.size(&broken).await.expect("size"), None);

    // delete, twice: the second is not an error.
    store.delete(&thumb).await.expect("delete");
    assert_eq!(store.size(&thumb).await.expect("size"), None);
    store.delete(&thumb).await.expect("delete again");
    store.delete(&key(HASH_B, "never-existed")).await.expect("delete missing");
    assert_eq!(store.list("ab").await.expect("list"), vec![original.clone()]);
}

/// Keys are built by Herald but become file paths: nothing may escape the root.
#[test]
fn invalid_keys_are_refused() {
    for bad in [
        "",
        "/etc/passwd",
        "../etc/passwd",
        "ab/../../x",
        "ab/..",
        "ab/./x",
        "ab//x",
        "ab/x/",
        "AB/x",
        "ab/x y",
        "ab/x#1",
        "ab\\x",
        "ab/ü",
        "ab/x%2e",
        &"a".repeat(BlobKey::MAX_LEN + 1),
    ] {
        assert!(matches!(BlobKey::parse(bad), Err(BlobError::InvalidKey(_))), "{bad:?}");
    }
    assert!(BlobKey::parse("a".repeat(BlobKey::MAX_LEN)).is_ok());
    for (hash, variant) in [
        ("", "original"),
        ("a", "original"),
        ("AB01", "original"),
        ("ab0g", "original"),
        ("../x", "original"),
        ("ab01", "x/y"),
        ("ab01", ".."),
        ("ab01", ""),
        ("ab01", "."),
    ] {
        assert!(BlobKey::new(hash, variant).is_err(), "{hash:?} {variant:?}");
    }
    assert_eq!(BlobKey::new("ab01ff", "thumb.webp").expect("valid").as_str(), "ab/ab01ff/thumb.webp");
}

#[tokio::test]
async fn local_disk() {
    let root = tempfile::tempdir().expect("tempdir");
    let scratch = tempfile::tempdir().expect("tempdir");
    let blobs_dir = root.path().join("blobs");
    let store = ObjectBlobs::local(&blobs_dir).expect("local store");
    conformance(&store, scratch.path()).await;

    // The key is the path under the root, and deletes remove the directories they empty.
    let original = key(HASH_A, "original");
    assert!(blobs_dir.join(original.as_str()).is_file());
    assert!(!blobs_dir.join(format!("ab/{HASH_A}/thumb.webp")).exists());
    assert!(!blobs_dir.join("cd").join(HASH_B).join("broken").exists());

    // What a crash mid-write leaves (a staging file) and files put there by hand are not listed.
    let dir = blobs_dir.join("ab").join(HASH_A);
    std::fs::write(dir.join("original#1"), b"torn").expect("write a staging file");
    std::fs::write(dir.join("README"), b"foreign").expect("write a foreign file");
    assert_eq!(store.list("ab").await.expect("list"), vec![original.clone()]);
    assert_eq!(read(&store, &original, Some(0..1)).await.len(), 1);
}

#[tokio::test]
async fn s3_and_moving_between_tiers() {
    let s3 = S3Process::start().await;
    let remote = ObjectBlobs::s3(&s3.config).expect("s3 store");
    let scratch = tempfile::tempdir().expect("tempdir");
    conformance(&remote, scratch.path()).await;

    // Local disk to S3 and back, streaming; the multipart path on both sides.
    let root = tempfile::tempdir().expect("tempdir");
    let local = ObjectBlobs::local(root.path()).expect("local store");
    let big = pattern(BIG, 99);
    let moved = key(HASH_B, "moved");
    local.put_bytes(&moved, Bytes::from(big.clone())).await.expect("put");
    assert_eq!(local.copy_to(&moved, &remote).await.expect("copy up"), BIG as u64);
    assert_eq!(read(&remote, &moved, None).await, big.as_slice());

    let original = key(HASH_A, "original");
    let expected = read(&remote, &original, None).await;
    assert_eq!(remote.copy_to(&original, &local).await.expect("copy down"), BIG as u64);
    assert_eq!(read(&local, &original, None).await, expected);

    assert!(matches!(local.copy_to(&key(HASH_A, "missing"), &remote).await, Err(BlobError::NotFound)));
    // The config's Debug never shows the secret (configs get logged at startup).
    let shown = format!("{:?}", s3.config);
    assert!(!shown.contains(&s3.config.secret_key), "{shown}");
}
