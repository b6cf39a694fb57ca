//! Why a gateway refused or failed an exchange, and the one place where that becomes the X-Road
//! fault the caller sees ([`Error::fault`]).
//!
//! The variants are grouped by who has to act: the caller (an information system's request, or a
//! peer gateway's signed request: both untrusted), the operator (an expired configuration,
//! timestamping failing), the environment (a peer, the local service, the message log, the HSM),
//! and us.

use std::time::Duration;

use crate::fault::{Code, Fault, Origin};
use crate::log::Side;
use crate::r1::RequestError;

/// An exchange that did not complete. Messages are for the operator and the caller: they name
/// members, services and limits, never bodies, keys or personal codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- The caller's request ---
    /// The request does not follow the X-Road REST protocol r1.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The caller's body is over the limit.
    #[error("the body is over the limit of {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The caller's request is not what the protocol allows here (bad method, undecodable
    /// envelope or descriptor, unreadable body).
    #[error("{0}")]
    BadRequest(String),
    /// The connection is not authenticated for the client the request names (its connection
    /// type, its client certificate).
    #[error("{0}")]
    ClientAuthentication(String),
    /// The client is not a registered member or subsystem served by the gateway it called.
    #[error("client {0} is not a registered member or subsystem served by this gateway")]
    UnknownClient(String),
    /// The service is not in the global configuration, or not served here.
    #[error("service {service} {why}")]
    UnknownService {
        /// The service id.
        service: String,
        /// Where it is missing.
        why: &'static str,
    },
    /// A personal-health-data service without a valid data subject and purpose of use.
    #[error("{0}")]
    HealthContext(String),
    /// No access right for the client, service, method and path.
    #[error("{client} has no access right to {method} {path} of {service}")]
    AccessDenied {
        /// The client.
        client: String,
        /// The service.
        service: String,
        /// The HTTP method.
        method: String,
        /// The path.
        path: String,
    },
    /// A signature, a signed digest or the binding of a response to its request does not check.
    #[error("{0}")]
    Signature(String),
    /// The peer gateway is not who its TLS certificate says, or not the client's member's.
    #[error("{0}")]
    PeerIdentity(String),
    /// A message id seen before within the replay window.
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),

    // --- The operator ---
    /// The global configuration has expired: the gateway fails closed.
    #[error("the gateway fails closed: {0}")]
    OutdatedConf(String),
    /// The message log refuses new exchanges (timestamping has failed too long).
    #[error("new exchanges are refused: {0}")]
    NotAccepting(String),

    // --- The environment ---
    /// A peer gateway, the local service or the caller's body did not arrive in time.
    #[error("{what} did not arrive within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },
    /// The provider's gateway cannot be reached, or its answer cannot be read.
    #[error("{0}")]
    Network(String),
    /// The provider's answer is over the limit.
    #[error("the provider gateway's answer is over the limit")]
    AnswerTooLarge,
    /// The local service failed to answer usably.
    #[error("{0}")]
    Service(String),
    /// The message log could not record the exchange.
    #[error("the exchange could not be logged: {0}")]
    Log(String),
    /// The message log or its index could not be read.
    #[error("{0}")]
    LogRead(String),
    /// The HSM did not sign.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The provider's gateway refused the exchange; its fault is passed on as it is.
    #[error("{0}")]
    Remote(Fault),

    // --- Us ---
    /// A bug or an impossible state in this gateway.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The X-Road fault for this error, raised on `side` for message `message_id` (PR-REST §4.6):
    /// on the client side the caller's mistakes are `Client.*` and the gateway's own failures
    /// `Server.ClientProxy.*`; on the provider side everything is `Server.ServerProxy.*`; a
    /// provider's fault passed on keeps its type.
    pub fn fault(&self, side: Side, message_id: &str) -> Fault {
        if let Error::Remote(fault) = self {
            return Fault {
                detail: message_id.to_owned(),
                ..fault.clone()
            };
        }
        if let Error::Request(request) = self {
            let fault = request.fault(message_id);
            return match side {
                Side::Client => fault,
                Side::Provider => Fault {
                    origin: Origin::ServerProxy,
                    ..fault
                },
            };
        }
        let code = self.code();
        let origin = match side {
            Side::Provider => Origin::ServerProxy,
            Side::Client if self.is_callers() => Origin::Client,
            Side::Client => Origin::ClientProxy,
        };
        Fault {
            origin,
            code,
            message: self.to_string(),
            detail: message_id.to_owned(),
        }
    }

    fn code(&self) -> Code {
        match self {
            Error::Request(_) | Error::BadRequest(_) => Code::BadRequest,
            Error::TooLarge { .. } | Error::AnswerTooLarge => Code::RequestTooLarge,
            Error::UnknownClient(_) => Code::UnknownMember,
            Error::UnknownService { .. } => Code::UnknownService,
            Error::HealthContext(_) => Code::MissingHealthContext,
            Error::AccessDenied { .. } => Code::AccessDenied,
            Error::Signature(_) => Code::InvalidSignatureValue,
            Error::PeerIdentity(_) | Error::ClientAuthentication(_) => {
                Code::SslAuthenticationFailed
            }
            Error::Replay(_) => Code::Replay,
            Error::OutdatedConf(_) => Code::OutdatedGlobalConf,
            Error::NotAccepting(_) => Code::TimestampingFailed,
            Error::Timeout { .. } => Code::Timeout,
            Error::Network(_) => Code::NetworkError,
            Error::Service(_) => Code::ServiceFailed,
            Error::Log(_) | Error::LogRead(_) => Code::DatabaseError,
            Error::Signing(_) | Error::Internal(_) => Code::InternalError,
            Error::Remote(fault) => fault.code,
        }
    }

    /// Whether, on the client side, the information system's request is at fault.
    fn is_callers(&self) -> bool {
        match self {
            Error::Request(_)
            | Error::TooLarge { .. }
            | Error::BadRequest(_)
            | Error::ClientAuthentication(_)
            | Error::UnknownClient(_)
            | Error::UnknownService { .. }
            | Error::HealthContext(_) => true,
            // The caller's body that does not arrive in time is the caller's too.
            Error::Timeout { what, .. } => what == REQUEST_BODY,
            _ => false,
        }
    }
}

/// What [`Error::Timeout`] names when the caller's own body is late.
pub(crate) const REQUEST_BODY: &str = "the request body";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_error_is_the_callers_on_the_client_side_and_the_providers_gateways_on_the_other() {
        let unknown = Error::UnknownService {
            service: "EE/GOV/1/s/x".into(),
            why: "is not in the global configuration",
        };
        assert_eq!(
            unknown.fault(Side::Client, "id").kind(),
            "Client.UnknownService"
        );
        assert_eq!(
            unknown.fault(Side::Provider, "id").kind(),
            "Server.ServerProxy.UnknownService"
        );
        let expired = Error::OutdatedConf("expired".into());
        assert_eq!(
            expired.fault(Side::Client, "id").kind(),
            "Server.ClientProxy.OutdatedGlobalConf"
        );
        let late_body = Error::Timeout {
            what: REQUEST_BODY.into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(late_body.fault(Side::Client, "id").kind(), "Client.Timeout");
        let late_peer = Error::Timeout {
            what: "gateway EE/GOV/1/gw".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(
            late_peer.fault(Side::Client, "id").kind(),
            "Server.ClientProxy.Timeout"
        );
        let request = Error::Request(RequestError::MissingClient);
        assert_eq!(
            request.fault(Side::Client, "id").kind(),
            "Client.InvalidClientIdentifier"
        );
        let passed = Error::Remote(Fault::server_proxy(Code::AccessDenied, "no", "other"));
        let fault = passed.fault(Side::Client, "id");
        assert_eq!(
            (fault.kind().as_str(), fault.detail.as_str()),
            ("Server.ServerProxy.AccessDenied", "id")
        );
        assert_eq!(
            Error::TooLarge { limit: 10 }
                .fault(Side::Client, "id")
                .status(),
            http::StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
