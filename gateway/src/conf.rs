//! What a gateway reads from the signed global configuration: who its peers are, which TLS
//! certificate each must present, which signing certificates speak for a member, which services
//! exist and carry health data, and which global groups a client belongs to.
//!
//! Every answer comes from the configuration current at the moment of the request; an expired
//! configuration makes [`Trust::current`] fail, and the gateway refuses every exchange
//! (`OutdatedGlobalConf`) until a fresh one arrives.

use std::sync::Arc;
use std::time::SystemTime;

use backbone_hsm::tls::Pins;
use backbone_registry::GlobalConf;
use backbone_registry::client::ConfClient;
use backbone_registry::id::{ClientId, GatewayId, GroupId, ServiceId};
use backbone_registry::model::{Gateway, Service};

/// The configuration as one gateway sees it.
#[derive(Clone, Debug)]
pub struct Trust {
    client: Arc<ConfClient>,
    own: GatewayId,
}

/// Pins the TLS certificates of every gateway registered in the current configuration: what a
/// provider gateway accepts from clients. A client gateway pins exactly its one peer instead.
#[derive(Clone, Debug)]
pub struct RegisteredGateways(Arc<ConfClient>);

// === impl Trust ===

impl Trust {
    /// The view of gateway `own`.
    pub fn new(client: Arc<ConfClient>, own: GatewayId) -> Self {
        Trust { client, own }
    }

    /// This gateway's id.
    pub fn own(&self) -> &GatewayId {
        &self.own
    }

    /// The configuration client.
    pub fn client(&self) -> &Arc<ConfClient> {
        &self.client
    }

    /// The current configuration.
    ///
    /// # Errors
    ///
    /// When there is none yet or it has expired: the caller fails closed.
    pub fn current(&self) -> Result<Arc<GlobalConf>, backbone_registry::Error> {
        self.client.current(SystemTime::now())
    }
}

/// The gateways that serve `service`: those owned by its provider's member, with a TLS
/// certificate, in id order.
pub fn provider_gateways<'c>(
    conf: &'c GlobalConf,
    service: &ServiceId,
) -> impl Iterator<Item = &'c Gateway> {
    let owner = service.provider().member().clone();
    conf.gateways
        .iter()
        .filter(move |g| g.id.owner() == &owner && g.tls_certificate.is_some())
}

/// The registered gateway whose TLS certificate is exactly `der`.
pub fn gateway_by_certificate<'c>(conf: &'c GlobalConf, der: &[u8]) -> Option<&'c Gateway> {
    conf.gateways
        .iter()
        .find(|g| g.tls_certificate.as_ref().is_some_and(|c| c.der() == der))
}

/// The catalogue entry of `service`.
pub fn service<'c>(conf: &'c GlobalConf, id: &ServiceId) -> Option<&'c Service> {
    conf.services.iter().find(|s| &s.id == id)
}

/// Whether `client` is a registered member or subsystem.
pub fn is_registered(conf: &GlobalConf, client: &ClientId) -> bool {
    match client {
        ClientId::Member(m) => conf.members.iter().any(|x| &x.id == m),
        ClientId::Subsystem(s) => conf.subsystems.iter().any(|x| &x.id == s),
    }
}

/// The global groups `client` belongs to, itself or through its member.
pub fn groups_of(conf: &GlobalConf, client: &ClientId) -> Vec<GroupId> {
    let member = ClientId::Member(client.member().clone());
    conf.global_groups
        .iter()
        .filter(|g| g.members.iter().any(|m| m == client || m == &member))
        .map(|g| g.id.clone())
        .collect()
}

/// Pins the TLS certificate registered for one gateway in the current configuration: what an
/// information system that reads the global configuration (the portal) accepts from its
/// gateway's client port, so that a renewed certificate is accepted once it is published.
#[derive(Clone, Debug)]
pub struct RegisteredGateway {
    client: Arc<ConfClient>,
    id: GatewayId,
}

impl RegisteredGateway {
    /// Gateway `id`'s certificate in `client`'s current configuration.
    pub fn new(client: Arc<ConfClient>, id: GatewayId) -> Self {
        RegisteredGateway { client, id }
    }
}

impl Pins for RegisteredGateway {
    fn is_pinned(&self, certificate: &[u8]) -> bool {
        self.client.current(SystemTime::now()).is_ok_and(|conf| {
            conf.gateway(&self.id)
                .and_then(|g| g.tls_certificate.as_ref())
                .is_some_and(|c| c.der() == certificate)
        })
    }
}

// === impl RegisteredGateways ===

impl RegisteredGateways {
    /// Pins read from `client`'s current configuration at each handshake.
    pub fn new(client: Arc<ConfClient>) -> Self {
        RegisteredGateways(client)
    }
}

impl Pins for RegisteredGateways {
    fn is_pinned(&self, certificate: &[u8]) -> bool {
        self.0
            .current(SystemTime::now())
            .is_ok_and(|conf| gateway_by_certificate(&conf, certificate).is_some())
    }
}
