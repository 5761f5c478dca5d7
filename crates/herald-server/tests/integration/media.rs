//! The media pipeline end to end, against a real server: real files through sniffing, hashing, a real
//! clamd, the perceptual-hash blocklist, a real moderation webhook, thumbnails, ffmpeg renditions, local
//! and S3 (s3s-fs) storage; serving with signed URLs, ETag and Range; quotas, takedowns, garbage
//! collection and tiering; and that every failure leaves nothing behind.

use super::helpers::{TestApp, User, assert_error, spawn_app_with};
use super::media_support::*;
use herald_server::config::Config;
use image::ImageFormat;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "media_admin";

async fn app_with(tweak: impl FnOnce(&mut Config)) -> (TestApp, User) {
    let app = spawn_app_with(|c| {
        c.media.admins = vec![ADMIN.into()];
        tweak(c);
    })
    .await;
    let (status, body) = app
        .call(Method::POST, "/api/v1/accounts", None, Some(json!({"username": ADMIN, "password": "correct horse"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let admin = User { session: serde_json::from_value(body).expect("session") };
    (app, admin)
}

fn url(info: &Value, variant: &str) -> String {
    info["variants"][variant]["url"].as_str().unwrap_or_else(|| panic!("no {variant} url in {info}")).to_owned()
}

/// Nothing of an upload is left in the work area, and nothing is stored. The pipeline records an outcome
/// first and removes the partial file after (so a crash in between reruns the upload rather than losing it),
/// so a client can see the outcome a moment before the file is gone: give the clean-up a few seconds.
async fn assert_nothing_left(app: &TestApp) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (!app.media_files("uploads").is_empty() || !app.media_files("blobs").is_empty())
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.media_files("uploads"), Vec::<std::path::PathBuf>::new(), "partial files left behind");
    assert_eq!(app.media_files("blobs"), Vec::<std::path::PathBuf>::new(), "blobs left behind");
}

async fn usage(app: &TestApp, user: &User) -> u64 {
    let (status, body) = app.get("/api/v1/media/usage", user.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["used_bytes"].as_u64().expect("used_bytes")
}

#[tokio::test]
async fn a_jpeg_with_exif_is_oriented_stripped_thumbnailed_and_served_to_members_only() {
    let (app, _) = app_with(|_| {}).await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let jpeg = jpeg_with_exif();
    let (id, info) = app.ready_upload(&alice, &jpeg, "holiday.jpg", "image/jpeg").await;

    // Orientation 6 applied: the 200x100 picture stands upright.
    assert_eq!((info["width"].as_u64(), info["height"].as_u64()), (Some(100), Some(200)), "{info}");
    assert_eq!(info["content_type"], "image/jpeg");
    assert_eq!(info["content_hash"].as_str().map(str::len), Some(64));
    // The smallest box is made even for a small picture; larger boxes than the picture are not upscaled.
    let thumb = &info["variants"]["thumb_150"];
    assert_eq!(thumb["content_type"], "image/webp");
    assert_eq!((thumb["width"].as_u64(), thumb["height"].as_u64()), (Some(75), Some(150)), "{info}");
    assert!(info["variants"].get("thumb_600").is_none(), "no upscaled thumbnail: {info}");

    // The served original has no EXIF left: neither the secret nor the orientation.
    let original = app.fetch(&url(&info, "original"), &[]).await;
    assert_eq!(original.status(), StatusCode::OK);
    let bytes = original.bytes().await.expect("body");
    assert!(!bytes.windows(EXIF_SECRET.len()).any(|w| w == EXIF_SECRET), "EXIF survived");
    assert!(image::load_from_memory(&bytes).is_ok(), "still a JPEG");
    let webp = app.fetch(&url(&info, "thumb_150"), &[]).await.bytes().await.expect("thumb");
    assert_eq!(image::guess_format(&webp).expect("format"), ImageFormat::WebP);

    // Bob sees it once it is attached in a conversation he is in; Carol never does.
    let (status, _) = app.get(&format!("/api/v1/media/{id}"), bob.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let direct = app.direct(&alice, &bob).await;
    let (status, ack) = app
        .post(
            &format!("/api/v1/conversations/{direct}/messages"),
            alice.token(),
            json!({"client_msg_id": "photo", "body": "", "attachments": [id]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ack}");
    let history = app.all_messages(&bob, direct).await;
    let attachment = &history[0]["attachments"][0];
    assert_eq!(attachment["media_id"], id.to_string());
    assert_eq!(attachment["content_type"], "image/jpeg");
    assert_eq!(attachment["filename"], "holiday.jpg");
    let (status, seen) = app.get(&format!("/api/v1/media/{id}"), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(app.fetch(&url(&seen, "thumb_150"), &[]).await.status(), StatusCode::OK);
    // A URL signed for one variant does not open another.
    let swapped = url(&seen, "original").replacen("/original?", "/thumb_150?", 1);
    assert_eq!(app.fetch(&swapped, &[]).await.status(), StatusCode::FORBIDDEN);
    let (status, _) = app.get(&format!("/api/v1/media/{id}"), carol.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a non-member cannot see it");
    // Carol cannot attach it either (she cannot see it), nor can Bob attach an unknown id.
    let carol_bob = app.direct(&carol, &bob).await;
    let attempt = app
        .post(
            &format!("/api/v1/conversations/{carol_bob}/messages"),
            carol.token(),
            json!({"client_msg_id": "steal", "body": "", "attachments": [id]}),
        )
        .await;
    assert_error(&attempt, StatusCode::NOT_FOUND, "not_found");

    // A signed URL is the only credential: tampering with it is refused.
    let good = url(&info, "original");
    let tampered = good.replace("sig=", "sig=A");
    assert_eq!(app.fetch(&tampered, &[]).await.status(), StatusCode::FORBIDDEN);
    let unsigned = good.split('?').next().expect("path").to_owned();
    assert_eq!(app.fetch(&unsigned, &[]).await.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn range_etag_and_cache_headers_behave_as_http_says() {
    let (app, _) = app_with(|_| {}).await;
    let alice = app.register("alice").await;
    let png = encode(&picture(64, 48, 2), ImageFormat::Png);
    let (_, info) = app.ready_upload(&alice, &png, "a.png", "image/png").await;
    let link = url(&info, "original");
    let whole = app.fetch(&link, &[]).await;
    assert_eq!(whole.status(), StatusCode::OK);
    let headers = whole.headers().clone();
    let body = whole.bytes().await.expect("body");
    assert_eq!(body.as_ref(), png.as_slice(), "a PNG without metadata is served as uploaded");
    let len = body.len();
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "strong ETag: {etag}");
    let cache = headers["cache-control"].to_str().expect("cache-control");
    assert!(cache.contains("public") && cache.contains("immutable") && cache.contains("max-age="), "{cache}");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");

    let first = app.fetch(&link, &[("Range", "bytes=0-9")]).await;
    assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(first.headers()["content-range"], format!("bytes 0-9/{len}").as_str());
    assert_eq!(first.bytes().await.expect("body").as_ref(), &png[..10]);
    let suffix = app.fetch(&link, &[("Range", "bytes=-5")]).await;
    assert_eq!(suffix.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(suffix.bytes().await.expect("body").as_ref(), &png[len - 5..]);
    let open = app.fetch(&link, &[("Range", &format!("bytes={}-", len - 3))]).await;
    assert_eq!(open.headers()["content-range"], format!("bytes {}-{}/{len}", len - 3, len - 1).as_str());
    let beyond = app.fetch(&link, &[("Range", &format!("bytes={len}-"))]).await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers()["content-range"], format!("bytes */{len}").as_str());
    // Several ranges, or a range for other bytes (If-Range), get the whole: HTTP allows it.
    assert_eq!(app.fetch(&link, &[("Range", "bytes=0-1,4-5")]).await.status(), StatusCode::OK);
    let other = app.fetch(&link, &[("Range", "bytes=0-1"), ("If-Range", "\"other\"")]).await;
    assert_eq!(other.status(), StatusCode::OK);
    let same = app.fetch(&link, &[("Range", "bytes=0-1"), ("If-Range", &etag)]).await;
    assert_eq!(same.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(app.fetch(&link, &[("Range", "lines=1-2")]).await.status(), StatusCode::OK);

    let cached = app.fetch(&link, &[("If-None-Match", &etag)]).await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    assert!(cached.bytes().await.expect("body").is_empty());
    assert_eq!(app.fetch(&link, &[("If-None-Match", "\"nope\"")]).await.status(), StatusCode::OK);

    let head = app.http.head(format!("{}{link}", app.base)).send().await.expect("head");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], len.to_string().as_str());
}

#[tokio::test]
async fn uploads_resume_from_their_offset_and_refuse_wrong_offsets_and_extra_bytes() {
    let (app, _) = app_with(|_| {}).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let png = encode(&picture(300, 200, 3), ImageFormat::Png);
    let id = app.create_upload(&alice, png.len() as u64, "big.png", "image/png").await;
    let half = png.len() / 2;

    let (status, body) = app.patch_upload(&alice, id, 0, png[..half].to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "pending");
    // Where to continue, as a resuming client asks for it.
    let head = app.http.head(format!("{}/api/v1/uploads/{id}", app.base)).bearer_auth(alice.token()).send().await;
    let head = head.expect("head");
    assert_eq!(head.headers()["upload-offset"], half.to_string().as_str());
    assert_eq!(head.headers()["upload-length"], png.len().to_string().as_str());

    let wrong = app.patch_upload(&alice, id, 0, png[..10].to_vec()).await;
    assert_error(&wrong, StatusCode::CONFLICT, "conflict");
    let too_long = app.patch_upload(&alice, id, half as u64, [&png[half..], b"extra"].concat()).await;
    assert_error(&too_long, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let not_mine = app.patch_upload(&bob, id, half as u64, png[half..].to_vec()).await;
    assert_error(&not_mine, StatusCode::NOT_FOUND, "not_found");
    let missing_header = app
        .http
        .patch(format!("{}/api/v1/uploads/{id}", app.base))
        .bearer_auth(alice.token())
        .body(vec![1, 2, 3])
        .send()
        .await
        .expect("patch");
    assert_eq!(missing_header.status(), StatusCode::BAD_REQUEST);

    // A request cut off mid-body keeps what arrived.
    let chunk = png[half..half + 1000].to_vec();
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)),
        Err(std::io::Error::other("connection dropped")),
    ]);
    let cut = app
        .http
        .patch(format!("{}/api/v1/uploads/{id}", app.base))
        .bearer_auth(alice.token())
        .header("Upload-Offset", half.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert!(cut.is_err() || !cut.as_ref().is_ok_and(|r| r.status().is_success()), "the cut request fails");
    let (_, info) = app.get(&format!("/api/v1/uploads/{id}"), alice.token()).await;
    let offset = info["received"].as_u64().expect("received");
    assert!(offset >= half as u64 && offset <= half as u64 + 1000, "kept what arrived: {info}");

    let (status, body) = app.patch_upload(&alice, id, offset, png[offset as usize..].to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = app.wait_final(&alice, id).await;
    assert_eq!(done["state"], "ready", "{done}");
    let stored = app.fetch(&url(&done, "original"), &[]).await.bytes().await.expect("body");
    assert_eq!(stored.as_ref(), png.as_slice(), "the resumed upload is byte-identical");
    let late = app.patch_upload(&alice, id, 0, vec![0]).await;
    assert_error(&late, StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn the_real_type_decides_and_lies_are_refused_leaving_nothing() {
    let (app, _) = app_with(|_| {}).await;
    let alice = app.register("alice").await;
    // An executable that says it is a JPEG.
    let mut exe = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    exe.extend(std::iter::repeat_n(0u8, 2000));
    let id = app.upload(&alice, &exe, "cat.jpg", "image/jpeg").await;
    let info = app.wait_final(&alice, id).await;
    assert_eq!(info["state"], "rejected");
    assert_eq!(info["reason"], "type_not_allowed", "{info}");
    assert!(info["detail"].as_str().is_some_and(|d| d.contains("image/jpeg")), "{info}");
    assert_eq!(usage(&app, &alice).await, 0, "a rejection releases the quota");
    assert_nothing_left(&app).await;

    // A PNG that says it is a JPEG is stored as what it is.
    let png = encode(&picture(40, 40, 4), ImageFormat::Png);
    let (_, info) = app.ready_upload(&alice, &png, "photo.jpg", "image/jpeg").await;
    assert_eq!(info["content_type"], "image/png");

    // A file that claims to be a PNG but is cut short is corrupt, and refused.
    let id = app.upload(&alice, &png[..png.len() / 3], "broken.png", "image/png").await;
    let info = app.wait_final(&alice, id).await;
    assert_eq!(info["reason"], "corrupt", "{info}");

    // Bad announcements.
    let zero = app.post("/api/v1/uploads", alice.token(), json!({"size": 0})).await;
    assert_error(&zero, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let huge = app.post("/api/v1/uploads", alice.token(), json!({"size": 1u64 << 40})).await;
    assert_error(&huge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let unauthenticated = app.call(Method::POST, "/api/v1/uploads", None, Some(json!({"size": 1}))).await;
    assert_error(&unauthenticated, StatusCode::UNAUTHORIZED, "unauthorized");
    let unknown = app.post("/api/v1/uploads", alice.token(), json!({"size": 1, "colour": "red"})).await;
    assert_eq!(unknown.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_without_being_decoded() {
    // 4,000 x 4,000 pixels of one colour: a quarter of a megabyte on the wire, 48 MB decoded; the limit is
    // 1 Mpx. (The decoder's own allocation limit and header checks are unit-tested in herald-media.)
    let (app, _) = app_with(|c| c.media.max_image_pixels = 1_000_000).await;
    let alice = app.register("alice").await;
    let bomb = encode(&image::RgbImage::new(4000, 4000), ImageFormat::Png);
    assert!(bomb.len() < 300_000, "the bomb is small: {}", bomb.len());
    let id = app.upload(&alice, &bomb, "bomb.png", "image/png").await;
    let info = app.wait_final(&alice, id).await;
    assert_eq!(info["reason"], "too_large", "{info}");
    assert_nothing_left(&app).await;
}

#[tokio::test]
async fn eicar_is_rejected_by_a_real_clamd_and_clean_files_pass() {
    let clamd = herald_media::testing::ClamdProcess::start().await;
    let socket = match &clamd.addr {
        herald_media::scan::ClamdAddr::Unix(path) => format!("unix://{}", path.display()),
        herald_media::scan::ClamdAddr::Tcp(addr) => format!("tcp://{addr}"),
    };
    let (app, _) = app_with(move |c| c.media.clamd = socket).await;
    let alice = app.register("alice").await;
    let id = app.upload(&alice, &eicar(), "readme.txt", "text/plain").await;
    let info = app.wait_final(&alice, id).await;
    assert_eq!(info["state"], "rejected");
    assert_eq!(info["reason"], "malware", "{info}");
    assert!(info["detail"].as_str().is_some_and(|d| d.contains("EICAR")), "{info}");
    assert_eq!(usage(&app, &alice).await, 0);
    assert_nothing_left(&app).await;

    let (_, info) = app.ready_upload(&alice, b"just some notes\n", "notes.txt", "text/plain").await;
    assert_eq!(info["content_type"], "text/plain");
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.expect("metrics");
    let text = metrics.text().await.expect("text");
    assert!(text.contains("media_rejections_total{reason=\"malware\"} 1"), "rejections by reason");
    assert!(text.contains("media_stage_duration_ms") && text.contains("stage=\"scan\""), "stage durations");
}

#[tokio::test]
async fn when_the_scanner_is_down_uploads_are_refused_not_waved_through() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = format!("unix://{}", dir.path().join("absent.sock").display());
    let (app, _) = app_with(move |c| c.media.clamd = socket).await;
    let alice = app.register("alice").await;
    let id = app.upload(&alice, b"hello", "a.txt", "text/plain").await;
    let info = app.wait_final(&alice, id).await;
    assert_eq!(info["reason"], "scan_failed", "{info}");
    assert_nothing_left(&app).await;
}

#[tokio::test]
async fn near_duplicates_of_a_blocked_image_are_refused() {
    let (app, admin) = app_with(|_| {}).await;
    let alice = app.register("alice").await;
    let original = picture(320, 240, 5);
    let (blocked_id, _) = app.ready_upload(&admin, &encode(&original, ImageFormat::Png), "bad.png", "image/png").await;
    let not_admin = app.post("/api/v1/admin/media/blocklist", alice.token(), json!({"media_id": blocked_id})).await;
    assert_error(&not_admin, StatusCode::FORBIDDEN, "forbidden");
    let (status, entry) =
        app.post("/api/v1/admin/media/blocklist", admin.token(), json!({"media_id": blocked_id, "note": "test"})).await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");
    assert_eq!(entry["phash"].as_str().map(str::len), Some(16));

    let id = app.upload(&alice, &near_duplicate(&original), "copy.jpg", "image/jpeg").await;
    let info = app.wait_final(&alice, id).await;
    assert_eq!(info["reason"], "blocked", "{info}");
    // An unrelated picture passes.
    let other = encode(
        &image::RgbImage::from_fn(320, 240, |x, y| {
            image::Rgb([(y % 256) as u8, 255 - (x % 256) as u8, ((x * y) % 256) as u8])
        }),
        ImageFormat::Png,
    );
    app.ready_upload(&alice, &other, "fine.png", "image/png").await;
}

#[tokio::test]
async fn a_moderation_webhook_decides_and_its_failure_refuses() {
    use axum::routing::post;
    async fn moderate(body: bytes::Bytes) -> axum::Json<Value> {
        let forbidden = body.windows(9).any(|w| w == b"FORBIDDEN");
        axum::Json(json!({"approved": !forbidden, "reason": if forbidden { "forbidden words" } else { "" }}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook = format!("http://{}/moderate", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().route("/moderate", post(moderate))).await.expect("serve")
    });
    let (app, _) = app_with(move |c| c.media.moderation_webhook = hook).await;
    let alice = app.register("alice").await;
    app.ready_upload(&alice, b"a friendly note", "a.txt", "text/plain").await;
    let id = app.upload(&alice, b"FORBIDDEN words", "b.txt", "text/plain").await;
    let info = app.wait_final(&alice, id).await;
    assert_eq!(info["reason"], "blocked", "{info}");
    assert_eq!(info["detail"], "forbidden words");

    let (down, _) = app_with(|c| c.media.moderation_webhook = "http://127.0.0.1:9/moderate".into()).await;
    let bob = down.register("bob").await;
    let id = down.upload(&bob, b"anything", "c.txt", "text/plain").await;
    let info = down.wait_final(&bob, id).await;
    assert_eq!(info["reason"], "moderation_failed", "{info}");
}

#[tokio::test]
async fn a_video_gets_renditions_without_upscaling_and_a_poster() {
    let (app, _) = app_with(|_| {}).await;
    let alice = app.register("alice").await;
    let dir = tempfile::tempdir().expect("dir");
    let mp4 = video(dir.path(), 1280, 720);
    let (_, info) = app.ready_upload(&alice, &mp4, "clip.mp4", "video/mp4").await;
    assert_eq!(info["content_type"], "video/mp4", "{info}");
    assert_eq!((info["width"].as_u64(), info["height"].as_u64()), (Some(1280), Some(720)));
    assert!(info["duration_ms"].as_u64().is_some_and(|d| (900..=1200).contains(&d)), "{info}");
    let variants = info["variants"].as_object().expect("variants");
    assert!(variants.contains_key("360p") && variants.contains_key("720p"), "{info}");
    assert!(!variants.contains_key("1080p"), "never upscaled: {info}");
    assert_eq!(info["variants"]["360p"]["height"], 360);
    assert_eq!(info["variants"]["poster"]["content_type"], "image/webp");
    assert!(variants.contains_key("thumb_150"), "{info}");
    // Seeking: a range in the middle of a rendition.
    let link = url(&info, "720p");
    let part = app.fetch(&link, &[("Range", "bytes=100-199")]).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.expect("body").len(), 100);
    let poster = app.fetch(&url(&info, "poster"), &[]).await.bytes().await.expect("poster");
    let decoded = image::load_from_memory(&poster).expect("poster decodes");
    assert_eq!((decoded.width(), decoded.height()), (1280, 720));
}

#[tokio::test]
async fn identical_content_is_stored_once_and_collected_when_nothing_refers_to_it() {
    let (app, admin) = app_with(|c| c.media.retain_unattached_secs = 0).await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let png = encode(&picture(120, 90, 6), ImageFormat::Png);
    let (a, info_a) = app.ready_upload(&alice, &png, "a.png", "image/png").await;
    let (b, info_b) = app.ready_upload(&bob, &png, "b.png", "image/png").await;
    assert_eq!(info_a["content_hash"], info_b["content_hash"]);
    let blobs = app.media_files("blobs");
    let originals = blobs.iter().filter(|p| p.ends_with("original")).count();
    assert_eq!(originals, 1, "one stored copy: {blobs:?}");

    // Alice's is attached to a message; Bob's is not: the sweep takes only Bob's.
    let direct = app.direct(&alice, &bob).await;
    let (status, ack) = app
        .post(
            &format!("/api/v1/conversations/{direct}/messages"),
            alice.token(),
            json!({"client_msg_id": "m1", "body": "look", "attachments": [a]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ack}");
    let report = app.sweep(&admin).await;
    assert_eq!(report["uploads_removed"], 1, "{report}");
    assert_eq!(report["contents_removed"], 0, "{report}");
    assert_eq!(app.get(&format!("/api/v1/media/{b}"), bob.token()).await.0, StatusCode::NOT_FOUND);
    assert_eq!(usage(&app, &bob).await, 0);
    assert_eq!(app.fetch(&url(&info_a, "original"), &[]).await.status(), StatusCode::OK);
    assert_eq!(app.fetch(&url(&info_b, "original"), &[]).await.status(), StatusCode::GONE);

    // Deleting the message drops the last reference: the next sweep removes upload, content and blobs.
    let seq = ack["seq"].as_u64().expect("seq");
    let (status, _) = app
        .call(Method::DELETE, &format!("/api/v1/conversations/{direct}/messages/{seq}"), Some(alice.token()), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let report = app.sweep(&admin).await;
    assert_eq!(
        (report["uploads_removed"].as_u64(), report["contents_removed"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(usage(&app, &alice).await, 0);
    assert_eq!(app.fetch(&url(&info_a, "original"), &[]).await.status(), StatusCode::GONE);
    assert_nothing_left(&app).await;
}

#[tokio::test]
async fn quotas_count_pending_uploads_and_are_released_by_rejection_and_deletion() {
    let (app, _) = app_with(|c| c.media.quota_bytes = 1000).await;
    let alice = app.register("alice").await;
    let id = app.create_upload(&alice, 600, "a.txt", "text/plain").await;
    assert_eq!(usage(&app, &alice).await, 600);
    let over = app.post("/api/v1/uploads", alice.token(), json!({"size": 401})).await;
    assert_error(&over, StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded");
    let exact = app.post("/api/v1/uploads", alice.token(), json!({"size": 400})).await;
    assert_eq!(exact.0, StatusCode::CREATED, "{}", exact.1);
    // Deleting the pending one frees its share.
    let (status, _) = app.call(Method::DELETE, &format!("/api/v1/uploads/{id}"), Some(alice.token()), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(usage(&app, &alice).await, 400);
    assert_eq!(app.get(&format!("/api/v1/uploads/{id}"), alice.token()).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_takedown_removes_content_everywhere_and_blocks_it_from_coming_back() {
    let (app, admin) = app_with(|_| {}).await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let png = encode(&picture(100, 100, 7), ImageFormat::Png);
    let (a, info_a) = app.ready_upload(&alice, &png, "a.png", "image/png").await;
    let (b, _) = app.ready_upload(&bob, &png, "b.png", "image/png").await;
    let hash = info_a["content_hash"].as_str().expect("hash").to_owned();

    let refused = app.post("/api/v1/admin/media/takedowns", alice.token(), json!({"content_hash": hash})).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");
    let bad = app.post("/api/v1/admin/media/takedowns", admin.token(), json!({"content_hash": "xyz"})).await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (status, result) = app
        .post("/api/v1/admin/media/takedowns", admin.token(), json!({"content_hash": hash, "note": "report 1"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["uploads_affected"], 2);

    for (user, id) in [(&alice, a), (&bob, b)] {
        let (_, info) = app.get(&format!("/api/v1/media/{id}"), user.token()).await;
        assert_eq!((info["state"].as_str(), info["reason"].as_str()), (Some("rejected"), Some("taken_down")));
    }
    assert_eq!(app.fetch(&url(&info_a, "original"), &[]).await.status(), StatusCode::GONE);
    assert_eq!(usage(&app, &alice).await, 0);
    assert_nothing_left(&app).await;
    let again = app.upload(&bob, &png, "again.png", "image/png").await;
    let info = app.wait_final(&bob, again).await;
    assert_eq!(info["reason"], "taken_down", "{info}");
}

#[tokio::test]
async fn idle_content_moves_to_the_cold_tier_and_is_still_served() {
    let (app, admin) = app_with(|c| {
        c.media.cold.kind = "local".into();
        c.media.cold_after_days = 0.0;
    })
    .await;
    let alice = app.register("alice").await;
    let png = encode(&picture(80, 60, 8), ImageFormat::Png);
    let (_, info) = app.ready_upload(&alice, &png, "a.png", "image/png").await;
    assert!(!app.media_files("blobs").is_empty());
    let report = app.sweep(&admin).await;
    assert_eq!(report["moved_to_cold"], 1, "{report}");
    assert!(app.media_files("blobs").is_empty(), "hot copies removed");
    assert!(app.media_files("cold").iter().any(|p| p.ends_with("original")), "cold copies made");
    let part = app.fetch(&url(&info, "original"), &[("Range", "bytes=0-7")]).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.expect("body").as_ref(), &png[..8]);
}

#[tokio::test]
async fn media_can_live_on_a_real_s3_protocol_server() {
    let s3 = herald_media::testing::S3Process::start().await;
    let cfg = s3.config.clone();
    let (app, _) = app_with(move |c| {
        let storage = &mut c.media.storage;
        storage.kind = "s3".into();
        storage.endpoint = cfg.endpoint.clone().expect("endpoint");
        storage.bucket = cfg.bucket.clone();
        storage.region = cfg.region.clone();
        storage.access_key = cfg.access_key.clone();
        storage.secret_key = cfg.secret_key.clone();
        storage.allow_http = true;
        storage.path_style = true;
    })
    .await;
    let alice = app.register("alice").await;
    let jpeg = jpeg_quality(&picture(640, 480, 9), 85);
    let (_, info) = app.ready_upload(&alice, &jpeg, "s3.jpg", "image/jpeg").await;
    assert!(app.media_files("blobs").is_empty(), "nothing on the local disk");
    let whole = app.fetch(&url(&info, "original"), &[]).await.bytes().await.expect("body");
    assert_eq!(whole.len() as u64, info["variants"]["original"]["size"].as_u64().expect("size"));
    let part = app.fetch(&url(&info, "thumb_300"), &[("Range", "bytes=0-3")]).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.expect("body").as_ref(), b"RIFF");
}

#[tokio::test]
async fn a_partial_upload_survives_a_restart_and_completes() {
    let (app, _) = app_with(|_| {}).await;
    let alice = app.register("alice").await;
    let png = encode(&picture(200, 150, 10), ImageFormat::Png);
    let id = app.create_upload(&alice, png.len() as u64, "later.png", "image/png").await;
    let half = png.len() / 2;
    let (status, body) = app.patch_upload(&alice, id, 0, png[..half].to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let app = app.restart().await;
    let (status, info) = app.get(&format!("/api/v1/uploads/{id}"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!((info["state"].as_str(), info["received"].as_u64()), (Some("pending"), Some(half as u64)));
    let (status, body) = app.patch_upload(&alice, id, half as u64, png[half..].to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = app.wait_final(&alice, id).await;
    assert_eq!(done["state"], "ready", "{done}");
    assert_eq!(app.fetch(&url(&done, "original"), &[]).await.bytes().await.expect("body").as_ref(), png.as_slice());
}

#[tokio::test]
async fn the_sweep_removes_what_a_crash_could_leave_behind() {
    let (app, admin) = app_with(|_| {}).await;
    let alice = app.register("alice").await;
    let png = encode(&picture(60, 40, 11), ImageFormat::Png);
    let (_, info) = app.ready_upload(&alice, &png, "kept.png", "image/png").await;
    // Blobs of a content whose row was never written (a crash between the two), and the partial file of an
    // upload the store does not know.
    let stray_hash = "ab".repeat(32);
    let stray = app.dir.path().join("media/blobs").join(&stray_hash[..2]).join(&stray_hash);
    std::fs::create_dir_all(&stray).expect("mkdir");
    std::fs::write(stray.join("original"), b"orphan").expect("write");
    std::fs::write(stray.join("thumb_150"), b"orphan").expect("write");
    let partial = app.dir.path().join("media/uploads").join(format!("{}.part", herald_proto::MediaId::new()));
    std::fs::write(&partial, b"half an upload").expect("write");

    let report = app.sweep(&admin).await;
    assert_eq!(report["orphan_blobs_removed"], 2, "{report}");
    assert_eq!(report["leftover_files_removed"], 1, "{report}");
    assert!(!stray.join("original").exists() && !partial.exists());
    // What is referenced stays.
    assert_eq!(app.fetch(&url(&info, "original"), &[]).await.status(), StatusCode::OK);
    assert_eq!(report["uploads_removed"], 0, "{report}");
}
