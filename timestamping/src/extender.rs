//! The extender: answers KSI extender requests (PDU v2) with the calendar chain from a round's
//! second to a later publication, or to the calendar head.
//!
//! Spec: Guardtime, "KSI Data Formats", "Extender PDU"; status codes as libksi's
//! `KSI_SERVICE_EXTENDER_*` values for PDU v2.
//!
//! ```text
//!  ExtendRequest { aggregation_time: T, publication_time: P? }
//!     P absent ─▶ P = calendar head
//!     T or P > head    ─▶ 0x106 too new (0x107 if past the clock: in the future)
//!     T > P            ─▶ 0x104 invalid time range
//!     else             ─▶ status 0, calendar chain leaf T ─▶ root P, calendar last = head
//! ```
//!
//! No request is "too old" (0x105): the calendar has a leaf for every second since 1970. A
//! configuration request (payload 0x04) is answered with [`config`]: the requests a PDU may
//! carry, the calendar's first second (0) and its head.
//! Nothing here is stored; the calendar is only read.

use backbone_timestamping_verify::pdu::{ExtendRequest, ExtendResponse};
use backbone_timestamping_verify::signature::CalendarChain;
use backbone_timestamping_verify::tlv::{self, Encoder, KsiString, Tlv};

use crate::error::Error;
use crate::service::Handle;

/// KSI extender status: the publication time is before the aggregation time.
pub const STATUS_INVALID_TIME_RANGE: u64 = 0x104;
/// KSI extender status: the second asked for is older than the calendar (never sent here).
pub const STATUS_REQUEST_TIME_TOO_OLD: u64 = 0x105;
/// KSI extender status: the second asked for is not in the calendar yet.
pub const STATUS_REQUEST_TIME_TOO_NEW: u64 = 0x106;
/// KSI extender status: the second asked for is past the service's clock.
pub const STATUS_REQUEST_TIME_IN_FUTURE: u64 = 0x107;
/// KSI service status: the service failed (a calendar read).
pub const STATUS_INTERNAL_ERROR: u64 = 0x200;
/// KSI extender status: the calendar is empty.
pub const STATUS_DATABASE_MISSING: u64 = 0x201;

/// The extender configuration payload's elements: maximum requests (0x04), calendar first
/// time (0x11), calendar last time (0x12, when the calendar is not empty).
///
/// # Errors
///
/// [`Error::Ksi`] or [`Error::Unreachable`] if an element cannot be encoded (it always can).
pub fn config(head: Option<u64>) -> Result<Vec<Tlv>, Error> {
    let max_requests = u64::try_from(crate::http::MAX_REQUESTS_PER_PDU).unwrap_or(u64::MAX);
    let elements = [(0x04, Some(max_requests)), (0x11, Some(0)), (0x12, head)];
    elements
        .into_iter()
        .filter_map(|(tag, value)| value.map(|v| (tag, v)))
        .map(|(tag, value)| {
            let mut out = Encoder::new();
            out.u64(tag, value)?;
            let bytes = out.finish();
            let element = tlv::decode(&bytes)
                .map_err(|_| Error::Unreachable("an encoded integer element does not decode"))?;
            Ok(element.to_owned_tlv())
        })
        .collect()
}

/// Answers one extend request from the calendar behind `handle`; `now` is the service's clock.
/// Every failure is a status in the response, never an error: the other payloads of the PDU
/// are still answered.
pub fn answer(handle: &Handle, request: &ExtendRequest, now: u64) -> ExtendResponse {
    let head = handle.head();
    let outcome = match head {
        None => Err((STATUS_DATABASE_MISSING, "the calendar is empty".to_owned())),
        Some(head) => chain(handle, request, head, now),
    };
    let (status, error_message, calendar_chain) = match outcome {
        Ok(chain) => (0, None, Some(chain)),
        Err((status, message)) => {
            tracing::debug!(request_id = request.request_id, status, %message, "extend request refused");
            (status, Some(KsiString::from(message.as_str())), None)
        }
    };
    ExtendResponse {
        request_id: request.request_id,
        status,
        error_message,
        calendar_last: head,
        calendar_chain,
    }
}

fn chain(
    handle: &Handle,
    request: &ExtendRequest,
    head: u64,
    now: u64,
) -> Result<CalendarChain, (u64, String)> {
    let to = request.publication_time.unwrap_or(head);
    let from = request.aggregation_time;
    let latest = from.max(to);
    if latest > head {
        let status = if latest > now {
            STATUS_REQUEST_TIME_IN_FUTURE
        } else {
            STATUS_REQUEST_TIME_TOO_NEW
        };
        return Err((
            status,
            format!("second {latest} is not in the calendar yet (head {head})"),
        ));
    }
    if from > to {
        return Err((
            STATUS_INVALID_TIME_RANGE,
            format!("aggregation time {from} is after publication time {to}"),
        ));
    }
    handle.extend(from, Some(to)).map_err(|e| match e {
        Error::NotInCalendar { time, .. } => (
            STATUS_REQUEST_TIME_TOO_NEW,
            format!("second {time} is not in the calendar yet (head {head})"),
        ),
        e => {
            tracing::error!(error = %e, from, to, "cannot read a calendar chain");
            (
                STATUS_INTERNAL_ERROR,
                "the calendar cannot be read".to_owned(),
            )
        }
    })
}
