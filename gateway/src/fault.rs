//! Errors raised by a gateway, as the X-Road REST protocol r1 reports them (PR-REST §4.6): the
//! `X-Road-Error` header carrying the type, and a JSON body `{"type","message","detail"}`.
//!
//! The type says where the error arose: `Client.*` (the caller's request is wrong),
//! `Server.ClientProxy.*` (the caller's own gateway), `Server.ServerProxy.*` (the provider's
//! gateway). A response without `X-Road-Error` comes from the provider's service itself.

use http::{HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

/// The error header.
pub const X_ROAD_ERROR: &str = "x-road-error";

/// Where an error arose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The caller's request does not follow the protocol or names something that does not exist.
    Client,
    /// The caller's gateway (the consumer security server).
    ClientProxy,
    /// The provider's gateway (the provider security server).
    ServerProxy,
}

/// What went wrong. The names are X-Road's where X-Road has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The request does not follow the X-Road REST protocol r1.
    BadRequest,
    /// `X-Road-Client` is missing or not a valid member or subsystem id.
    InvalidClientIdentifier,
    /// The service id in the path is not valid.
    InvalidServiceIdentifier,
    /// A personal-health-data service was called without a data subject or a purpose of use, or
    /// with invalid ones.
    MissingHealthContext,
    /// The member or subsystem is not in the global configuration.
    UnknownMember,
    /// The service is not in the global configuration.
    UnknownService,
    /// No access right for this client, service, method and path.
    AccessDenied,
    /// The peer's TLS certificate is not the one registered for it; on the client port, the
    /// connection is not authenticated for the client the request names (`Client.*`).
    SslAuthenticationFailed,
    /// The global configuration has expired: the gateway fails closed.
    OutdatedGlobalConf,
    /// A message signature or its certificate does not check.
    InvalidSignatureValue,
    /// A message id seen before within the replay window.
    Replay,
    /// The body is over the size limit.
    RequestTooLarge,
    /// The peer gateway or the service did not answer in time.
    Timeout,
    /// The peer gateway or the service could not be reached.
    NetworkError,
    /// The provider's service failed to answer.
    ServiceFailed,
    /// The message log could not record the exchange durably.
    DatabaseError,
    /// Timestamping has failed for longer than allowed: new exchanges are refused.
    TimestampingFailed,
    /// Anything else inside the gateway.
    InternalError,
}

/// An error a gateway answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Where it arose.
    pub origin: Origin,
    /// What it is.
    pub code: Code,
    /// For a person; never secrets, never health data.
    pub message: String,
    /// The message id (`X-Road-Id`) the error belongs to, so that logs on both sides can be
    /// matched.
    pub detail: String,
}

/// The JSON body of an error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultBody {
    /// `Client.BadRequest`, `Server.ServerProxy.AccessDenied`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// The message id.
    pub detail: String,
}

// === impl Code ===

impl Code {
    /// The name after the origin prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "BadRequest",
            Code::InvalidClientIdentifier => "InvalidClientIdentifier",
            Code::InvalidServiceIdentifier => "InvalidServiceIdentifier",
            Code::MissingHealthContext => "MissingHealthContext",
            Code::UnknownMember => "UnknownMember",
            Code::UnknownService => "UnknownService",
            Code::AccessDenied => "AccessDenied",
            Code::SslAuthenticationFailed => "SslAuthenticationFailed",
            Code::OutdatedGlobalConf => "OutdatedGlobalConf",
            Code::InvalidSignatureValue => "InvalidSignatureValue",
            Code::Replay => "Replay",
            Code::RequestTooLarge => "RequestTooLarge",
            Code::Timeout => "Timeout",
            Code::NetworkError => "NetworkError",
            Code::ServiceFailed => "ServiceFailed",
            Code::DatabaseError => "DatabaseError",
            Code::TimestampingFailed => "TimestampingFailed",
            Code::InternalError => "InternalError",
        }
    }
}

impl Code {
    /// The code named `name` (the part after the origin prefix), if it is one.
    pub fn from_name(name: &str) -> Option<Code> {
        ALL_CODES.iter().copied().find(|c| c.as_str() == name)
    }
}

/// Every code, for parsing.
const ALL_CODES: [Code; 18] = [
    Code::BadRequest,
    Code::InvalidClientIdentifier,
    Code::InvalidServiceIdentifier,
    Code::MissingHealthContext,
    Code::UnknownMember,
    Code::UnknownService,
    Code::AccessDenied,
    Code::SslAuthenticationFailed,
    Code::OutdatedGlobalConf,
    Code::InvalidSignatureValue,
    Code::Replay,
    Code::RequestTooLarge,
    Code::Timeout,
    Code::NetworkError,
    Code::ServiceFailed,
    Code::DatabaseError,
    Code::TimestampingFailed,
    Code::InternalError,
];

// === impl Fault ===

impl Fault {
    /// A fault of the caller's request.
    pub fn client(code: Code, message: impl Into<String>, detail: impl Into<String>) -> Self {
        Fault {
            origin: Origin::Client,
            code,
            message: message.into(),
            detail: detail.into(),
        }
    }

    /// A fault of the caller's gateway.
    pub fn client_proxy(code: Code, message: impl Into<String>, detail: impl Into<String>) -> Self {
        Fault {
            origin: Origin::ClientProxy,
            code,
            message: message.into(),
            detail: detail.into(),
        }
    }

    /// A fault of the provider's gateway.
    pub fn server_proxy(code: Code, message: impl Into<String>, detail: impl Into<String>) -> Self {
        Fault {
            origin: Origin::ServerProxy,
            code,
            message: message.into(),
            detail: detail.into(),
        }
    }

    /// The full type, e.g. `Server.ClientProxy.OutdatedGlobalConf`.
    pub fn kind(&self) -> String {
        let prefix = match self.origin {
            Origin::Client => "Client",
            Origin::ClientProxy => "Server.ClientProxy",
            Origin::ServerProxy => "Server.ServerProxy",
        };
        format!("{prefix}.{}", self.code.as_str())
    }

    /// The HTTP status: 400 for the caller's faults, 413 for an oversized body, 500 for the
    /// gateways' (PR-REST §4.6 categories 3 and 4).
    pub fn status(&self) -> StatusCode {
        match (self.origin, self.code) {
            (_, Code::RequestTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            (Origin::Client, _) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> FaultBody {
        FaultBody {
            kind: self.kind(),
            message: self.message.clone(),
            detail: self.detail.clone(),
        }
    }

    /// The whole response: status, `X-Road-Error`, `Content-Type`, JSON body.
    pub fn to_response(&self) -> Response<Vec<u8>> {
        let body = serde_json::to_vec(&self.body()).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = Response::new(body);
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=utf-8"),
        );
        if let Ok(value) = HeaderValue::from_str(&self.kind()) {
            headers.insert(X_ROAD_ERROR, value);
        }
        response
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message)
    }
}

impl std::error::Error for Fault {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_the_error_header_and_the_json_body_of_the_protocol() {
        let fault = Fault::client(
            Code::BadRequest,
            "Error parsing the client's REST request",
            "018cbcae",
        );
        let response = fault.to_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[X_ROAD_ERROR], "Client.BadRequest");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/json;charset=utf-8"
        );
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "Client.BadRequest", "message": "Error parsing the client's REST request", "detail": "018cbcae"})
        );

        let conf = Fault::client_proxy(Code::OutdatedGlobalConf, "expired", "x");
        assert_eq!(
            (conf.kind().as_str(), conf.status()),
            (
                "Server.ClientProxy.OutdatedGlobalConf",
                StatusCode::INTERNAL_SERVER_ERROR
            )
        );
        let denied = Fault::server_proxy(Code::AccessDenied, "no", "x");
        assert_eq!(denied.kind(), "Server.ServerProxy.AccessDenied");
    }
}
