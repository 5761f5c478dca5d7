//! An uploaded image through the whole image stage. The limits are small, so a file that declares more
//! pixels than they allow (a decompression bomb) must be refused from its header, before decoding.
#![no_main]
use herald_media::image::{ImageLimits, process_image};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ImageLimits { max_width: 512, max_height: 512, max_pixels: 65_536, max_alloc_bytes: 8 << 20 };
    let _ = process_image(data, &limits, &[64], 80.0);
});
