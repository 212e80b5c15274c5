//! Multipart uploads for objects past the single-PUT size: invisible until
//! completed, aborted on any error so no half object is left billed.

use super::{S3Repository, Stored, count, key_taken, read_err, s3_err};
use crate::{Error, Result};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::path::Path;

impl S3Repository {
    pub(super) async fn put_multipart(
        &self,
        key: &str,
        local: &Path,
        size: u64,
        exclusive: bool,
    ) -> Result<Stored> {
        let full = self.full_key(key);
        let (lock_mode, retain_until) = self.lock_for_write();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(retain_until)
            .set_checksum_algorithm(self.lock_checksum())
            .send()
            .await;
        count("CreateMultipartUpload", created.is_ok());
        let upload_id = created
            .map_err(|e| s3_err("CreateMultipartUpload", key, e))?
            .upload_id
            .ok_or_else(|| Error::S3 {
                op: "CreateMultipartUpload",
                key: key.to_owned(),
                message: "the server returned no upload id".into(),
                transient: true,
            })?;
        let uploaded = self.upload_parts(key, &full, &upload_id, local, size).await;
        let completed = match uploaded {
            Ok(parts) => {
                let result = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .set_if_none_match(exclusive.then(|| "*".to_owned()))
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                count("CompleteMultipartUpload", result.is_ok());
                match result {
                    Ok(_) => Ok(Stored::Yes),
                    Err(e) if key_taken(&e) => Ok(Stored::KeyTaken),
                    Err(e) => Err(s3_err("CompleteMultipartUpload", key, e)),
                }
            }
            Err(e) => Err(e),
        };
        if !matches!(completed, Ok(Stored::Yes)) {
            // Parts of an unfinished upload cost storage until aborted; the
            // object itself was never visible.
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
            count("AbortMultipartUpload", aborted.is_ok());
        }
        completed
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        local: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>> {
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let length = self.part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(local)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| read_err(local, e))?;
            let result = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(length as i64)
                .set_checksum_algorithm(self.lock_checksum())
                .body(body)
                .send()
                .await;
            count("UploadPart", result.is_ok());
            let part = result.map_err(|e| s3_err("UploadPart", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag)
                    .set_checksum_sha256(part.checksum_sha256)
                    .build(),
            );
            offset += length;
            number += 1;
        }
        Ok(parts)
    }
}
