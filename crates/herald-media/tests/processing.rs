//! Media processing against the real tools: ffmpeg/ffprobe for video, a private clamd for scanning.
//! Inputs are generated on the fly (lavfi test sources, the EICAR string), so no fixtures are committed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herald_media::scan::{Clamd, ClamdAddr, ScanError, ScanVerdict, Scanner};
use herald_media::testing::{CLAMD_EICAR_SIGNATURE, ClamdProcess, EICAR};
use herald_media::video::{Ffmpeg, VideoError};

const HEIGHTS: [u32; 3] = [360, 720, 1080];

fn ffmpeg(workers: usize, timeout: Duration) -> Ffmpeg {
    Ffmpeg::new("ffmpeg".into(), "ffprobe".into(), workers, timeout)
}

/// A 1-second lavfi test pattern with a sine tone (or without audio).
async fn make_video(dir: &Path, name: &str, size: &str, audio: bool) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size={size}:rate=25:duration=1"));
    if audio {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac"]);
    }
    let status = cmd
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest"])
        .arg(&out)
        .status()
        .await
        .expect("run ffmpeg to make a test video");
    assert!(status.success(), "ffmpeg could not generate {name}");
    out
}

#[tokio::test]
async fn video_renditions_and_poster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ff = ffmpeg(2, Duration::from_secs(120));
    assert!(ff.available(), "ffmpeg must be installed for these tests");
    let (hd, small) = tokio::join!(
        make_video(dir.path(), "hd.mp4", "1280x720", true),
        make_video(dir.path(), "small.mp4", "320x240", false),
    );

    let info = ff.probe(&hd).await.expect("probe hd");
    assert_eq!((info.width, info.height, info.has_audio), (1280, 720, true));
    assert!((900..=1100).contains(&info.duration_ms), "duration {}", info.duration_ms);

    let out = dir.path().join("hd-out");
    let renditions = ff.renditions(&hd, &info, &out, &HEIGHTS).await.expect("hd renditions");
    let got: Vec<_> = renditions.iter().map(|r| (r.label.as_str(), r.width, r.height)).collect();
    assert_eq!(got, vec![("360p", 640, 360), ("720p", 1280, 720)], "no 1080p upscale");
    for r in &renditions {
        assert!(r.bytes > 0 && r.path.starts_with(&out));
        let made = ff.probe(&r.path).await.expect("probe rendition");
        assert!(made.has_audio, "audio carried over");
        let head = std::fs::read(&r.path).expect("read rendition");
        // faststart: the moov atom comes before the media data.
        let moov = head.windows(4).position(|w| w == b"moov").expect("moov");
        let mdat = head.windows(4).position(|w| w == b"mdat").expect("mdat");
        assert!(moov < mdat, "moov must precede mdat for progressive playback");
    }

    let poster = dir.path().join("poster.png");
    ff.poster(&hd, &info, &poster).await.expect("poster");
    let img = image::open(&poster).expect("poster decodes");
    assert_eq!((img.width(), img.height()), (1280, 720));

    let info = ff.probe(&small).await.expect("probe small");
    assert_eq!((info.width, info.height, info.has_audio), (320, 240, false));
    let renditions = ff.renditions(&small, &info, &dir.path().join("small-out"), &HEIGHTS).await.expect("small");
    let got: Vec<_> = renditions.iter().map(|r| (r.label.as_str(), r.width, r.height)).collect();
    assert_eq!(got, vec![("240p", 320, 240)], "one rendition at the source height");
}

#[tokio::test]
async fn video_bad_inputs_are_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ff = ffmpeg(1, Duration::from_secs(60));

    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>())
        .expect("write garbage");
    match ff.probe(&garbage).await {
        Err(VideoError::Failed { stderr, .. }) => assert!(!stderr.is_empty(), "stderr tail kept"),
        other => panic!("garbage probed as {other:?}"),
    }

    let audio = dir.path().join("tone.m4a");
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac"])
        .arg(&audio)
        .status()
        .await
        .expect("make audio");
    assert!(status.success());
    assert!(matches!(ff.probe(&audio).await, Err(VideoError::NotAVideo(_))));

    let missing = Ffmpeg::new("/nonexistent/ffmpeg".into(), "/nonexistent/ffprobe".into(), 1, Duration::from_secs(5));
    assert!(!missing.available());
    assert!(matches!(missing.probe(&audio).await, Err(VideoError::FfmpegMissing { .. })));

    // A timeout kills the child instead of waiting for it.
    let video = make_video(dir.path(), "v.mp4", "320x240", false).await;
    let info = ff.probe(&video).await.expect("probe");
    let hasty = ffmpeg(1, Duration::from_millis(1));
    let started = Instant::now();
    let err = hasty.renditions(&video, &info, &dir.path().join("out"), &HEIGHTS).await;
    assert!(matches!(err, Err(VideoError::Timeout { .. })), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write scan input");
    p
}

#[tokio::test]
async fn clamd_verdicts() {
    let clamd_process = ClamdProcess::start().await;
    let clamd = Clamd::new(clamd_process.addr.clone(), Duration::from_secs(30));
    clamd.ping().await.expect("ping");
    let dir = tempfile::tempdir().expect("temp dir");

    let clean = write(dir.path(), "clean.txt", b"just a harmless text file\n");
    assert_eq!(clamd.scan(&clean).await.expect("scan clean"), ScanVerdict::Clean);

    let eicar = write(dir.path(), "eicar.com", EICAR);
    match clamd.scan(&eicar).await.expect("scan eicar") {
        ScanVerdict::Infected(name) => assert!(name.starts_with(CLAMD_EICAR_SIGNATURE), "{name}"),
        ScanVerdict::Clean => panic!("EICAR not detected:\n{}", clamd_process.log_tail()),
    }

    // EICAR followed by 300 KB: several INSTREAM chunks, found by the body signature.
    let mut padded = EICAR.to_vec();
    padded.extend((0..300_000u32).map(|i| b"herald "[(i % 7) as usize]));
    let padded = write(dir.path(), "padded.bin", &padded);
    assert!(
        matches!(clamd.scan(&padded).await.expect("scan padded"), ScanVerdict::Infected(n) if n.starts_with(CLAMD_EICAR_SIGNATURE))
    );

    // A large clean file streams in many chunks and stays clean.
    let big = write(dir.path(), "big.bin", &vec![b'a'; 3 * 1024 * 1024 + 17]);
    assert_eq!(clamd.scan(&big).await.expect("scan big"), ScanVerdict::Clean);
}

#[tokio::test]
async fn clamd_stream_limit_is_too_large() {
    let clamd_process = ClamdProcess::start_with_stream_max("1M").await;
    let clamd = Clamd::new(clamd_process.addr.clone(), Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("temp dir");
    let big = write(dir.path(), "big.bin", &vec![0u8; 2 * 1024 * 1024]);
    let err = clamd.scan(&big).await;
    assert!(matches!(err, Err(ScanError::TooLarge)), "{err:?}");
    // Below the limit the same instance still answers.
    let small = write(dir.path(), "small.bin", &[0u8; 1000]);
    assert_eq!(clamd.scan(&small).await.expect("scan small"), ScanVerdict::Clean);
}

#[tokio::test]
async fn clamd_not_running_is_unavailable_quickly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "f.txt", b"hello");

    // A socket path that existed: clamd stopped.
    let addr = {
        let clamd_process = ClamdProcess::start().await;
        clamd_process.addr.clone()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addrs = [addr, ClamdAddr::parse(&format!("tcp://127.0.0.1:{port}")).expect("tcp address")];
    for addr in addrs {
        let clamd = Clamd::new(addr.clone(), Duration::from_secs(10));
        let started = Instant::now();
        let err = clamd.scan(&file).await;
        assert!(matches!(err, Err(ScanError::Unavailable(_))), "{addr}: {err:?}");
        assert!(matches!(clamd.ping().await, Err(ScanError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(1), "{addr}: took {:?}", started.elapsed());
    }
}
