//! What both sides log about an exchange, and when: the request record is durable before the
//! request is acted on (sent to the provider's gateway, or passed to the local service), and every
//! request record later gets exactly one outcome record — the signed response, or the fault that
//! ended the exchange and who raised it.
//!
//! ```text
//!  checked and allowed ─▶ request record (durable) ─▶ act ─┬─▶ response record (the signed answer)
//!                                                          └─▶ fault record (this gateway's
//!                                                              signed note of the fault)
//! ```
//!
//! A fault record is a response record whose descriptor this gateway signs with its own member's
//! key: the request's message id and hash, the fault's HTTP status, one `x-road-error` header
//! with the fault type, and the fault's JSON body. Services' answers never carry that header (the
//! header rule strips it), so it marks a fault. The log format is unchanged; the log's index links
//! each request record to its outcome (`findUsage` reports it). If the gateway stops between the
//! two, the request stays unanswered in the log: it was not acted on, or its outcome is unknown.

use backbone_registry::GlobalConf;

use crate::client::own_signing_certificate;
use crate::error::Error;
use crate::fault::{Fault, FaultBody, X_ROAD_ERROR};
use crate::log::{Kind, NewRecord, Side};
use crate::service::{Inner, now_ms};
use crate::signed::{RequestDescriptor, ResponseDescriptor, sha512};

/// The exchange as both of its records name it.
pub(crate) struct Exchange<'a> {
    /// Which side logs.
    pub(crate) side: Side,
    /// The signed request.
    pub(crate) request: &'a RequestDescriptor,
    /// Whether an emergency access was declared.
    pub(crate) emergency: bool,
}

/// A signed descriptor with its signature, signer and body, as a record holds it.
pub(crate) struct Signed<'a> {
    pub(crate) descriptor: &'a [u8],
    pub(crate) signature: &'a [u8],
    pub(crate) signer_certificate: Vec<u8>,
    pub(crate) body: &'a [u8],
}

impl Exchange<'_> {
    fn record(&self, kind: Kind, signed: Signed<'_>, answers: Option<u64>) -> NewRecord {
        let request = self.request;
        NewRecord {
            side: self.side,
            kind,
            message_id: request.message_id.clone(),
            client: request.client.clone(),
            service: request.service.clone(),
            user_id: request.user_id.clone(),
            data_subject: request.data_subject.clone(),
            purpose_of_use: request.purpose_of_use.clone(),
            emergency: self.emergency,
            descriptor: signed.descriptor.to_vec(),
            signature: signed.signature.to_vec(),
            signer_certificate: signed.signer_certificate,
            body: signed.body.to_vec(),
            logged_at_ms: now_ms(),
            answers,
        }
    }

    /// Logs the request durably, before anything acts on it; its sequence number.
    ///
    /// # Errors
    ///
    /// [`Error::Log`]: the exchange must not go on.
    pub(crate) async fn log_request(
        &self,
        inner: &Inner,
        signed: Signed<'_>,
    ) -> Result<u64, Error> {
        let seqs = inner
            .log
            .append(vec![self.record(Kind::Request, signed, None)])
            .await
            .map_err(|e| Error::Log(e.to_string()))?;
        seqs.first()
            .copied()
            .ok_or_else(|| Error::Internal("the log returned no sequence number".into()))
    }

    /// Logs the signed response as the outcome of request record `request_seq`.
    ///
    /// # Errors
    ///
    /// [`Error::Log`]: the request stays unanswered in the log.
    pub(crate) async fn log_response(
        &self,
        inner: &Inner,
        request_seq: u64,
        signed: Signed<'_>,
    ) -> Result<(), Error> {
        inner
            .log
            .append(vec![self.record(Kind::Response, signed, Some(request_seq))])
            .await
            .map_err(|e| Error::Log(e.to_string()))?;
        Ok(())
    }

    /// Logs `fault` as the outcome of request record `request_seq`, signed by this gateway's
    /// member. Best effort: the fault is answered whatever happens here; when the note cannot be
    /// signed or logged, the request stays unanswered in the log and the operator is told.
    pub(crate) async fn log_fault(
        &self,
        inner: &Inner,
        conf: &GlobalConf,
        request_seq: u64,
        fault: &Fault,
    ) {
        if let Err(error) = self.try_log_fault(inner, conf, request_seq, fault).await {
            tracing::error!(message_id = %self.request.message_id, fault = %fault.kind(), %error, "the fault that ended a logged request could not be logged; the request stays unanswered in the log");
        }
    }

    async fn try_log_fault(
        &self,
        inner: &Inner,
        conf: &GlobalConf,
        request_seq: u64,
        fault: &Fault,
    ) -> Result<(), Error> {
        let body = serde_json::to_vec(&FaultBody {
            kind: fault.kind(),
            message: fault.message.clone(),
            detail: fault.detail.clone(),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        let request_hash = self
            .request
            .request_hash()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let descriptor = ResponseDescriptor {
            message_id: self.request.message_id.clone(),
            request_hash,
            status: fault.status().as_u16(),
            created_at_ms: now_ms(),
            body_digest: sha512(&body),
            headers: vec![(X_ROAD_ERROR.to_owned(), fault.kind())],
        };
        let encoded = descriptor
            .encode()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let signature = inner
            .keys
            .signing
            .sign(&encoded)
            .await
            .map_err(|e| Error::Signing(e.to_string()))?
            .to_bytes();
        self.log_response(
            inner,
            request_seq,
            Signed {
                descriptor: &encoded,
                signature: &signature,
                signer_certificate: own_signing_certificate(inner, conf),
                body: &body,
            },
        )
        .await
    }
}
