//! The JWT signing secret: from the configuration, or generated once and kept in the data directory.

use anyhow::Context;
use std::io::Write;
use std::path::Path;

const FILE: &str = "jwt-secret";

pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing.trim().len() >= 32 => return Ok(existing.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!("{} is shorter than 32 bytes; remove it to generate a new one", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(secret.into_bytes())
}
