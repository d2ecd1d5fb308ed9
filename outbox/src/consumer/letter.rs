//! A dead letter's values, made storable: NUL characters escaped, texts bounded, and
//! the minimal letter written when the database refuses the whole one.

use rdkafka::message::{Message as _, OwnedMessage};
use uuid::Uuid;

use super::failure::GiveUp;
use crate::wire::{Said, utf8_headers};

/// The longest error text a dead letter keeps, in bytes.
pub(super) const MAX_ERROR_LEN: usize = 16 * 1024;

/// The longest headers (as JSON) a dead letter keeps, in bytes.
const MAX_HEADERS_LEN: usize = 1024 * 1024;

/// The longest key a minimal dead letter keeps, in bytes.
const MAX_MINIMAL_KEY_LEN: usize = 4 * 1024;

/// A dead letter's values, made storable: NUL characters escaped, texts bounded.
pub(super) struct Letter<'a> {
    pub(super) event_id: Option<Uuid>,
    pub(super) event_type: Option<String>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: Option<&'a [u8]>,
    pub(super) headers: String,
    pub(super) error: String,
    pub(super) attempts: i32,
}

impl<'a> Letter<'a> {
    /// The message as it came: key, payload and UTF-8 headers.
    pub(super) fn whole(message: &'a OwnedMessage, give_up: &GiveUp) -> Self {
        let headers = utf8_headers(message);
        let said = Said::read(&headers, message.payload());
        // serde_json escapes NUL and other control characters in JSON strings.
        let mut headers_json = serde_json::to_string(&headers).unwrap_or_else(|_| "{}".to_owned());
        if headers_json.len() > MAX_HEADERS_LEN {
            headers_json = serde_json::json!({
                "outbox.headers_not_kept": format!("{} bytes of headers, over the {MAX_HEADERS_LEN}-byte limit", headers_json.len())
            })
            .to_string();
        }
        Letter {
            event_id: said
                .event_id
                .as_deref()
                .and_then(|id| Uuid::parse_str(id).ok()),
            event_type: said
                .event_type
                .as_deref()
                .map(|t| storable(t, crate::envelope::MAX_NAME_LEN)),
            key: message.key(),
            payload: message.payload(),
            headers: headers_json,
            error: storable(&give_up.error, MAX_ERROR_LEN),
            attempts: give_up.attempts,
        }
    }

    /// What is left when the database refused the whole letter: where the message
    /// is (topic, partition, offset: it can be read there until the topic's retention
    /// deletes it), its key when short, its event id and type, and the errors.
    pub(super) fn minimal(message: &'a OwnedMessage, give_up: &GiveUp, refusal: &str) -> Self {
        let whole = Letter::whole(message, give_up);
        let key = message.key().filter(|key| key.len() <= MAX_MINIMAL_KEY_LEN);
        let error = format!(
            "{}; the database refused to store this dead letter whole ({refusal}): its payload and headers{} are not kept; read the message from the topic at this offset",
            give_up.error,
            if key.is_none() && message.key().is_some() {
                " and key"
            } else {
                ""
            }
        );
        Letter {
            key,
            payload: None,
            headers: "{}".to_owned(),
            error: storable(&error, MAX_ERROR_LEN),
            ..whole
        }
    }
}

/// `text` with NUL characters written `\0` (PostgreSQL stores none in text) and cut
/// to at most `max` characters.
pub(super) fn storable(text: &str, max: usize) -> String {
    let escaped = if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\\0"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    truncate(&escaped, max).to_owned()
}

/// At most `max` characters of `text`.
fn truncate(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(at, _)| &text[..at])
}
