//! Development secrets kept in files under the data folder.
//!
//! Used only when a secret is not configured and the environment is development. The
//! folder is created 0700 and each file 0600; a file is written once and read on every
//! later start, so tokens and encrypted data survive restarts.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

/// Reads the base64 secret at `path`, or generates `len` random bytes there. Returns
/// the bytes and whether they were generated now.
pub fn load_or_generate(path: &Path, len: usize) -> anyhow::Result<(Zeroizing<Vec<u8>>, bool)> {
    let engine = base64::engine::general_purpose::STANDARD;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = Zeroizing::new(
                engine
                    .decode(text.trim())
                    .map_err(|_| anyhow::anyhow!("{} is not base64", path.display()))?,
            );
            anyhow::ensure!(bytes.len() == len, "{} must hold {len} bytes", path.display());
            Ok((bytes, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            }
            let mut bytes = Zeroizing::new(vec![0u8; len]);
            super::random_bytes(&mut bytes)?;
            let encoded = Zeroizing::new(engine.encode(&*bytes));
            // create_new: two processes starting at once must not overwrite each other.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(mut file) => {
                    file.write_all(encoded.as_bytes())?;
                    file.sync_all()?;
                    Ok((bytes, true))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_generate(path, len),
                Err(e) => Err(anyhow::anyhow!("cannot write {}: {e}", path.display())),
            }
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_generated_secret_is_private_and_stable_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("kek");
        let (first, generated) = load_or_generate(&path, 32).unwrap();
        assert!(generated);
        let (second, generated_again) = load_or_generate(&path, 32).unwrap();
        assert!(!generated_again);
        assert_eq!(*first, *second);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
