//! [`Message`]: a stored event as a publisher sees it.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{DbErr, FromQueryResult, QueryResult};
use uuid::Uuid;

use crate::wire::format::{Encoding, MessageFormat};
use crate::wire::{cloudevents, debezium, headers};

/// One event on its way to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Store order; for one key, commit order.
    pub seq: i64,
    /// The event id; consumers drop duplicates by it.
    pub id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The payload's schema version.
    pub event_version: String,
    /// The aggregate the event belongs to.
    pub aggregate_id: String,
    /// The destination topic.
    pub topic: String,
    /// The message key: the partition key, or the aggregate id.
    pub key: String,
    /// The payload: the JSON value stored, as the database writes it out (`jsonb` and
    /// MySQL's `JSON` drop whitespace and may reorder object keys; the value is kept).
    pub payload: String,
    /// Extra headers given at store time.
    pub extra_headers: Vec<(String, String)>,
    /// The trace the event belongs to.
    pub trace_id: Option<String>,
    /// The user on whose behalf the event happened.
    pub user_id: Option<String>,
    /// When the event was stored.
    pub created_at: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: i32,
    /// Whether it is a tombstone: published with a null value
    /// ([`value`](Self::value) is `None`; its `payload` is `null`).
    pub tombstone: bool,
    /// How it is written on the wire: the relay sets its configured format
    /// ([`RelayConfig::format`](crate::RelayConfig::format)).
    pub encoding: Encoding,
}

impl Message {
    /// Every header of the message in its [`encoding`](Self::encoding): the ones the
    /// format sets ([`headers`], [`headers::cloudevents`], [`headers::debezium`])
    /// followed by the extra ones given at store time. The W3C trace context is present
    /// when the trace id is a W3C trace id (32 hex digits, not all zero).
    pub fn headers(&self) -> Vec<(&str, String)> {
        let format = self.wire_format();
        let mut all = match format {
            MessageFormat::Native => self.native_headers(),
            MessageFormat::CloudEventsBinary => cloudevents::binary_headers(self),
            MessageFormat::CloudEventsStructured => cloudevents::structured_headers(),
            MessageFormat::Debezium => debezium::headers(self),
        };
        let cloudevents = matches!(
            format,
            MessageFormat::CloudEventsBinary | MessageFormat::CloudEventsStructured
        );
        all.extend(
            self.extra_headers
                .iter()
                .filter(|(k, _)| !(cloudevents && cloudevents::is_attribute(self, k)))
                .map(|(k, v)| (k.as_str(), v.clone())),
        );
        all
    }

    /// The message's value in its [`encoding`](Self::encoding): the payload, or in
    /// `cloudevents-structured` the whole event as JSON; `None` (a null value) for a
    /// [`tombstone`](Self::tombstone).
    pub fn value(&self) -> Option<Cow<'_, str>> {
        if self.tombstone {
            return None;
        }
        Some(match self.wire_format() {
            MessageFormat::CloudEventsStructured => Cow::Owned(cloudevents::structured_value(self)),
            MessageFormat::Native | MessageFormat::CloudEventsBinary | MessageFormat::Debezium => {
                Cow::Borrowed(&self.payload)
            }
        })
    }

    /// The format the message is written in: its encoding's, except that a tombstone
    /// is written in CloudEvents' binary mode where structured mode is asked for (a
    /// structured event is the value, and a tombstone has none).
    pub fn wire_format(&self) -> MessageFormat {
        match self.encoding.format() {
            MessageFormat::CloudEventsStructured if self.tombstone => {
                MessageFormat::CloudEventsBinary
            }
            format => format,
        }
    }

    /// When the event was stored, as the headers write it.
    pub(crate) fn time(&self) -> String {
        self.created_at.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// The W3C `traceparent` of the event: the one stored as its trace id (as the
    /// `opentelemetry` feature stores it), or one continuing its trace id when that is a
    /// W3C trace id.
    pub(crate) fn traceparent(&self) -> Option<String> {
        let trace_id = self.trace_id.as_deref()?;
        match parse_traceparent(trace_id) {
            Some(_) => Some(trace_id.to_ascii_lowercase()),
            None => traceparent(trace_id, self.id),
        }
    }

    /// The extra header `name`, if given at store time.
    pub fn extra_header(&self, name: &str) -> Option<&str> {
        self.extra_headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The trace id: of a stored `traceparent`, its trace id part.
    pub(crate) fn trace_id_only(&self) -> Option<&str> {
        let trace_id = self.trace_id.as_deref()?;
        Some(parse_traceparent(trace_id).unwrap_or(trace_id))
    }

    fn native_headers(&self) -> Vec<(&str, String)> {
        let mut all = vec![
            (headers::EVENT_ID, self.id.to_string()),
            (headers::EVENT_TYPE, self.event_type.clone()),
            (headers::EVENT_VERSION, self.event_version.clone()),
            (headers::AGGREGATE_ID, self.aggregate_id.clone()),
            (headers::CREATED_AT, self.time()),
        ];
        if let Some(trace_id) = self.trace_id_only() {
            all.push((headers::TRACE_ID, trace_id.to_owned()));
            if let Some(traceparent) = self.traceparent() {
                all.push((headers::TRACEPARENT, traceparent));
            }
        }
        if let Some(user_id) = &self.user_id {
            all.push((headers::USER_ID, user_id.clone()));
        }
        all
    }
}

/// The trace id of `text` when it is a whole W3C `traceparent` (version `00`, a trace
/// id and a span id not all zero, flags), as a relay stores one from OpenTelemetry.
fn parse_traceparent(text: &str) -> Option<&str> {
    let mut parts = text.split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part.bytes().all(|b| b.is_ascii_hexdigit())
            && part.bytes().any(|b| b != b'0')
    };
    let valid = parts.next().is_none()
        && version == "00"
        && hex(trace_id, 32)
        && hex(span_id, 16)
        && flags.len() == 2
        && flags.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then_some(trace_id)
}

/// A W3C `traceparent` continuing `trace_id`, with a span id derived from the event id
/// (so a redelivery carries the same span), sampled.
fn traceparent(trace_id: &str, event: Uuid) -> Option<String> {
    let valid = trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id.bytes().any(|b| b != b'0');
    if !valid {
        return None;
    }
    let span = u64::from_be_bytes(event.as_bytes()[8..].try_into().ok()?) | 1;
    Some(format!(
        "00-{}-{span:016x}-01",
        trace_id.to_ascii_lowercase()
    ))
}

/// The columns of a claimed event, as the claim query returns them, in this order
/// (see [`FromQueryResult`] below).
#[derive(Debug)]
pub(crate) struct ClaimedRow {
    pub(crate) seq: i64,
    pub(crate) id: Uuid,
    pub(crate) event_type: String,
    pub(crate) event_version: String,
    pub(crate) aggregate_id: String,
    pub(crate) destination_topic: String,
    pub(crate) key: String,
    pub(crate) payload: String,
    pub(crate) headers: Option<String>,
    pub(crate) trace_id: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) attempts: i32,
    pub(crate) tombstone: bool,
    /// Whether it failed before: its key's later events may be parked behind it.
    pub(crate) retried: bool,
    /// Whether an earlier event of its key waits for a retry.
    pub(crate) waiting: bool,
    /// Whether an earlier event of its key failed and is pending.
    pub(crate) failing: bool,
    /// Whether an earlier event of its key is parked.
    pub(crate) after_parked: bool,
}

/// Read by position, in the claim's column order (`claim.sql`, `claim_mysql.sql`): the
/// relay decodes every event it publishes, and read by name each column cost a lookup
/// of its name and some string formatting; decoding claims took about a tenth of the
/// benchmark process's CPU samples at full rate, and limit b rose 7-10% without it.
impl FromQueryResult for ClaimedRow {
    fn from_query_result(row: &QueryResult, _prefix: &str) -> Result<Self, DbErr> {
        Ok(ClaimedRow {
            seq: row.try_get_by_index(0)?,
            id: row.try_get_by_index(1)?,
            event_type: row.try_get_by_index(2)?,
            event_version: row.try_get_by_index(3)?,
            aggregate_id: row.try_get_by_index(4)?,
            destination_topic: row.try_get_by_index(5)?,
            key: row.try_get_by_index(6)?,
            payload: row.try_get_by_index(7)?,
            headers: row.try_get_by_index(8)?,
            trace_id: row.try_get_by_index(9)?,
            user_id: row.try_get_by_index(10)?,
            created_at: row.try_get_by_index(11)?,
            attempts: row.try_get_by_index(12)?,
            tombstone: row.try_get_by_index(13)?,
            retried: row.try_get_by_index(14)?,
            waiting: row.try_get_by_index(15)?,
            failing: row.try_get_by_index(16)?,
            after_parked: row.try_get_by_index(17)?,
        })
    }
}

impl ClaimedRow {
    /// Whether it must wait for an earlier event of its key.
    pub(crate) fn behind(&self) -> bool {
        self.waiting || self.after_parked
    }
}

impl From<ClaimedRow> for Message {
    fn from(row: ClaimedRow) -> Self {
        // Written by the library as a JSON object of strings; anything else is ignored.
        let extra_headers = row
            .headers
            .and_then(|text| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text).ok()
            })
            .map(|map| {
                map.into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Message {
            seq: row.seq,
            id: row.id,
            event_type: row.event_type,
            event_version: row.event_version,
            aggregate_id: row.aggregate_id,
            topic: row.destination_topic,
            key: row.key,
            payload: row.payload,
            extra_headers,
            trace_id: row.trace_id,
            user_id: row.user_id,
            created_at: row.created_at,
            attempts: row.attempts,
            tombstone: row.tombstone,
            encoding: Encoding::native(),
        }
    }
}

/// An order event of the tests, in `format`: key `customer-4`, aggregate `order-17`,
/// a W3C trace id, user `u-1`, stored 2026-12-05 10:00 UTC, one extra header.
#[cfg(test)]
pub(crate) fn sample(format: MessageFormat) -> Message {
    use chrono::TimeZone;
    Message {
        seq: 1,
        id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        event_type: "order.created".into(),
        event_version: "v2".into(),
        aggregate_id: "order-17".into(),
        topic: "orders".into(),
        key: "customer-4".into(),
        payload: r#"{"amount":4200}"#.into(),
        extra_headers: vec![("source-system".into(), "shop".into())],
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        user_id: Some("u-1".into()),
        created_at: Utc
            .with_ymd_and_hms(2026, 12, 5, 10, 0, 0)
            .single()
            .expect("a time"),
        attempts: 0,
        tombstone: false,
        encoding: Encoding::new(format, "/shop"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_only_for_w3c_trace_ids() {
        let event = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(
            traceparent("4BF92F3577B34DA6A3CE929D0E0E4736", event).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0011223344556677-01")
        );
        assert_eq!(traceparent("00000000000000000000000000000000", event), None);
        assert_eq!(traceparent("req-42", event), None);
    }

    #[test]
    fn a_stored_traceparent_is_published_as_it_is_and_its_trace_id_alone() {
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut message = sample(MessageFormat::Native);
        message.trace_id = Some(stored.to_owned());
        let headers: std::collections::BTreeMap<&str, String> =
            message.headers().into_iter().collect();
        assert_eq!(headers["traceparent"], stored, "parent span and flags kept");
        assert_eq!(headers["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        for not_one in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(parse_traceparent(not_one), None, "{not_one}");
        }
    }
}
