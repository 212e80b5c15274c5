//! Streaming an object into a local file, hashing it on the way (the
//! copier reads the primary this way: memory stays at one body chunk).

use super::{S3Repository, body_err};
use crate::Result;
use sha2::Digest;
use std::path::Path;
use tokio::io::AsyncWriteExt;

impl S3Repository {
    pub(crate) async fn download(&self, key: &str, dest: &Path) -> Result<([u8; 32], u64)> {
        let mut body = self.get_object(key, None).await?.body;
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(crate::io_err("create", dest))?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        while let Some(bytes) = body.try_next().await.map_err(|e| body_err(key, &e))? {
            hasher.update(&bytes);
            size += bytes.len() as u64;
            file.write_all(&bytes)
                .await
                .map_err(crate::io_err("write", dest))?;
        }
        file.flush().await.map_err(crate::io_err("write", dest))?;
        Ok((hasher.finalize().into(), size))
    }
}
