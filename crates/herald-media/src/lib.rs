//! Herald's media pipeline (DESIGN.md, "Media pipeline"): what happens to an upload between its last byte
//! and the signed URL that serves it.
//!
//! # Layout
//! - [`sniff`]: the real content type, from the bytes (never the client's word).
//! - [`image`]: decoding under limits, EXIF stripping, WebP thumbnails, perceptual hashes.
//! - [`video`]: ffprobe/ffmpeg renditions and a poster frame, in a bounded worker pool.
//! - [`scan`]: the scanner seam and ClamAV's clamd (INSTREAM).
//! - [`moderation`]: the moderation webhook.
//! - [`blobs`]: the blob storage seam over `object_store` (local disk or S3-compatible).
//! - [`service`]: what the API calls (uploads, info with signed URLs, serving, takedowns, blocklist);
//!   [`pipeline`] runs each complete upload through the stages; [`sweeper`] collects garbage and moves
//!   idle content to the cold tier; [`signing`] makes and checks the URLs; [`uploads`] holds partial files.

pub mod blobs;
pub mod image;
mod locks;
pub mod moderation;
mod options;
mod pipeline;
pub mod scan;
mod service;
pub mod signing;
pub mod sniff;
mod sweeper;
#[cfg(feature = "testing")]
pub mod testing;
mod uploads;
pub mod video;

pub use options::{MediaBackends, MediaOptions};
pub use service::{Media, Servable};
pub use sweeper::SweepReport;
