//! Turning the SDK's errors into the repository's: which are transient,
//! which mean "not found" or "key taken", and one readable sentence each.

use crate::Error;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::path::Path;

/// Whether a put was refused because the key is taken (`If-None-Match`):
/// 412 Precondition Failed, or 409 when a concurrent conditional write won.
pub(super) fn key_taken<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = e.as_service_error().and_then(|s| s.code());
    let status = e.raw_response().map(|r| r.status().as_u16());
    matches!(
        code,
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    ) || status == Some(412)
}

/// An SDK error as ours: the operation, the key and the server's code and
/// message (never the credentials, which the SDK does not print).
pub(super) fn s3_err<E, R>(op: &'static str, key: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    // Retries happened inside the SDK already; a throttle, a timeout or a
    // dropped connection may still pass later, a refusal will not.
    let transient = match &e {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            matches!(
                code,
                "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" | ""
            )
        }
        _ => true,
    };
    let message = match e.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("no message")
        ),
        None => DisplayErrorContext(&e).to_string(),
    };
    Error::S3 {
        op,
        key: key.to_owned(),
        message,
        transient,
    }
}

/// A HEAD answer has no body, so no error code or message: the HTTP status
/// is all there is to say (403: the credentials or the signature).
pub(super) fn head_err<E>(
    key: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    match (e.as_service_error().and_then(|s| s.code()), status) {
        (None, Some(status)) => Error::S3 {
            op: "HeadObject",
            key: key.to_owned(),
            message: match status {
                401 | 403 => format!("HTTP {status}: access denied (wrong credentials or secret)"),
                _ => format!("HTTP {status}"),
            },
            transient: status >= 500 || status == 429,
        },
        _ => s3_err("HeadObject", key, e),
    }
}

/// A local file that could not be streamed up.
pub(super) fn read_err(local: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Io {
        op: "read",
        path: local.display().to_string(),
        source: std::io::Error::other(e),
    }
}

pub(super) fn body_err(key: &str, e: &dyn std::fmt::Display) -> Error {
    Error::S3 {
        op: "GetObject",
        key: key.to_owned(),
        message: format!("reading the body: {e}"),
        transient: true,
    }
}
