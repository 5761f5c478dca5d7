//! Where the time of one photo goes in the image stage: decoding, the perceptual hash, thumbnails.
//! `cargo run --release -p herald-media --example image_profile [WIDTH HEIGHT]` (default 4000 x 3000, a
//! 12 Mpx phone photo), on a generated JPEG at quality 85.

use herald_media::image::{ImageLimits, perceptual_hash, process_image};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>());
    let width = args.next().transpose()?.unwrap_or(4000);
    let height = args.next().transpose()?.unwrap_or(3000);
    let photo = image::RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let ripple = ((fx * 40.0).sin() * (fy * 30.0).cos() * 60.0) as i32;
        image::Rgb([(fx * 200.0) as u8, ((fy * 180.0) as i32 + ripple).clamp(0, 255) as u8, ((x ^ y) % 200) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&photo)?;
    println!("{width} x {height} JPEG, {} KB", jpeg.len() / 1024);

    let limits = ImageLimits::default();
    let runs = 5;
    let mut decode_ms = 0.0;
    let mut hash_ms = 0.0;
    let mut total_ms = 0.0;
    for _ in 0..runs {
        let t = Instant::now();
        let decoded = image::load_from_memory(&jpeg)?;
        decode_ms += t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        std::hint::black_box(perceptual_hash(&decoded));
        hash_ms += t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        std::hint::black_box(process_image(&jpeg, &limits, &[150, 300, 600], 80.0)?);
        total_ms += t.elapsed().as_secs_f64() * 1e3;
    }
    let n = f64::from(runs);
    println!("decode          {:>7.1} ms", decode_ms / n);
    println!("perceptual hash {:>7.1} ms", hash_ms / n);
    println!("process_image   {:>7.1} ms  (decode + strip + hash + thumbnails 150/300/600 + WebP)", total_ms / n);
    println!("so thumbnails   {:>7.1} ms  (about)", (total_ms - decode_ms - hash_ms) / n);
    Ok(())
}
