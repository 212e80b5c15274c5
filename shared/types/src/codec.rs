//! Payload codec: MessagePack inside the pipeline, JSON where a person publishes.

use serde::{Serialize, de::DeserializeOwned};

/// Content type of internal events.
pub const CONTENT_TYPE_MSGPACK: &str = "application/msgpack";
/// Content type a person's `nats pub` gets when it sends JSON.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// A payload could not be decoded; the message is poison and goes to the dead-letter subject.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload was not valid for its content type.
    #[error("cannot decode {content_type} payload: {reason}")]
    Invalid {
        /// The content type that was tried.
        content_type: &'static str,
        /// The decoder's own words.
        reason: String,
    },
    /// The content type is not one we speak.
    #[error("unsupported content type {0:?} (expected application/msgpack or application/json)")]
    UnsupportedContentType(String),
    /// The subject does not match the payload or is not one this stage consumes.
    #[error("{0}")]
    Subject(String),
}

/// Encodes an internal event as MessagePack with field names, so a newer reader
/// can skip fields it does not know.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data structs into a Vec cannot fail.
    rmp_serde::to_vec_named(value).expect("events serialise to MessagePack")
}

/// Decodes a payload by its content type. Without one, JSON is tried when the
/// payload looks like JSON (a person with the NATS CLI), MessagePack otherwise.
/// An empty payload is read as `{}`.
///
/// # Errors
/// When the payload does not decode as `T`.
pub fn decode<T: DeserializeOwned>(
    content_type: Option<&str>,
    payload: &[u8],
) -> Result<T, DecodeError> {
    let json = |payload: &[u8]| {
        let payload: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            payload
        };
        serde_json::from_slice(payload).map_err(|e| DecodeError::Invalid {
            content_type: CONTENT_TYPE_JSON,
            reason: e.to_string(),
        })
    };
    let msgpack = |payload: &[u8]| {
        rmp_serde::from_slice(payload).map_err(|e| DecodeError::Invalid {
            content_type: CONTENT_TYPE_MSGPACK,
            reason: e.to_string(),
        })
    };
    match content_type.map(|ct| ct.split(';').next().unwrap_or("").trim()) {
        Some(CONTENT_TYPE_MSGPACK) => msgpack(payload),
        Some(CONTENT_TYPE_JSON) | Some("text/json") => json(payload),
        Some(other) => Err(DecodeError::UnsupportedContentType(other.to_owned())),
        None => {
            let first = payload.iter().find(|b| !b.is_ascii_whitespace());
            if matches!(first, None | Some(b'{')) {
                json(payload)
            } else {
                msgpack(payload)
            }
        }
    }
}
