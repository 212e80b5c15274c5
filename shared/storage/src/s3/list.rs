//! Listing keys under a prefix, a page of 1,000 at a time (ListObjectsV2).

use super::{S3Repository, count, s3_err};
use crate::Result;

impl S3Repository {
    /// Keys under `prefix` (relative to the repository's own prefix), in
    /// key order. With `dirs`, only the next level's "directories" (common
    /// prefixes, each ending in `/`). Each key comes with its size (0 for
    /// the directories).
    pub(crate) async fn list(&self, prefix: &str, dirs: bool) -> Result<Vec<(String, u64)>> {
        let full = self.full_key(prefix);
        let strip = full.len() - prefix.len();
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let result = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_delimiter(dirs.then(|| "/".to_owned()))
                .set_continuation_token(token.take())
                .send()
                .await;
            count("ListObjectsV2", result.is_ok());
            let page = result.map_err(|e| s3_err("ListObjectsV2", prefix, e))?;
            if dirs {
                keys.extend(
                    page.common_prefixes()
                        .iter()
                        .filter_map(|p| p.prefix())
                        .map(|k| (k[strip..].to_owned(), 0)),
                );
            } else {
                keys.extend(page.contents().iter().filter_map(|o| {
                    let size = o.size().and_then(|s| u64::try_from(s).ok())?;
                    Some((o.key()?[strip..].to_owned(), size))
                }));
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(keys)
    }
}
