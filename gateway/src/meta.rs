//! Services the gateways answer themselves, as X-Road's security servers do (PR-MREST): the
//! client gateway's `GET /listClients`, and, on the provider gateway, `listMethods` and
//! `allowedMethods` of any of its member's subsystems, and `findUsage` — who accessed a person's
//! health data here (the semantics of Estonia's Data Tracker: offset, limit, newest first).
//!
//! `listMethods` and `allowedMethods` are open to every registered client. `findUsage` needs an
//! access right like any service (granted to the citizen portal) and the health context: the
//! data subject is the person asked about, so the request is signed, logged and indexed like any
//! other access to their data.

use serde::Serialize;

use backbone_registry::GlobalConf;
use backbone_registry::id::{ClientId, GroupId, ServiceId, SubsystemId};

use crate::access::AccessRights;

/// The service code of `listMethods`.
pub const LIST_METHODS: &str = "listMethods";
/// The service code of `allowedMethods`.
pub const ALLOWED_METHODS: &str = "allowedMethods";
/// The service code of `findUsage`.
pub const FIND_USAGE: &str = "findUsage";
/// Most entries one `findUsage` answer holds.
pub const MAX_USAGE_LIMIT: usize = 500;
/// Entries in one `findUsage` answer unless `limit` says otherwise.
pub const DEFAULT_USAGE_LIMIT: usize = 50;

/// A service the gateway answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meta {
    /// The services of a subsystem.
    ListMethods,
    /// The services of a subsystem the caller may call.
    AllowedMethods,
    /// Who accessed a person's data at this agency.
    FindUsage,
}

/// An X-Road identifier as the metaservices' JSON shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JsonId {
    /// `MEMBER`, `SUBSYSTEM` or `SERVICE`.
    pub object_type: &'static str,
    /// The instance.
    pub xroad_instance: String,
    /// The member class.
    pub member_class: String,
    /// The member code.
    pub member_code: String,
    /// The subsystem code, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsystem_code: Option<String>,
    /// The service code, for services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_code: Option<String>,
    /// The service version, for versioned services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_version: Option<String>,
    /// `REST` for services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_type: Option<&'static str>,
}

/// One client in `listClients`.
#[derive(Clone, Debug, Serialize)]
pub struct JsonClient {
    /// Its id.
    pub id: JsonId,
    /// Its member's name.
    pub name: String,
}

/// The `listClients` answer.
#[derive(Clone, Debug, Serialize)]
pub struct ClientList {
    /// Every member and subsystem of the instance.
    pub member: Vec<JsonClient>,
}

/// The `listMethods` and `allowedMethods` answer.
#[derive(Clone, Debug, Serialize)]
pub struct MethodList {
    /// The services.
    pub service: Vec<JsonId>,
}

// === impl Meta ===

impl Meta {
    /// The metaservice a service code names, if any.
    pub fn of(code: &str) -> Option<Meta> {
        match code {
            LIST_METHODS => Some(Meta::ListMethods),
            ALLOWED_METHODS => Some(Meta::AllowedMethods),
            FIND_USAGE => Some(Meta::FindUsage),
            _ => None,
        }
    }

    /// Whether calls carry personal health data (and so need the health context).
    pub fn personal_health_data(self) -> bool {
        self == Meta::FindUsage
    }

    /// Whether calls need an access right.
    pub fn needs_access_right(self) -> bool {
        self == Meta::FindUsage
    }
}

/// The JSON form of a subsystem.
pub fn subsystem_json(id: &SubsystemId) -> JsonId {
    let member = id.member();
    JsonId {
        object_type: "SUBSYSTEM",
        xroad_instance: member.instance().to_string(),
        member_class: member.class().to_string(),
        member_code: member.code().to_owned(),
        subsystem_code: Some(id.code().to_owned()),
        service_code: None,
        service_version: None,
        service_type: None,
    }
}

/// The JSON form of a service.
pub fn service_json(id: &ServiceId) -> JsonId {
    JsonId {
        object_type: "SERVICE",
        service_code: Some(id.code().to_owned()),
        service_version: id.version().map(str::to_owned),
        service_type: Some("REST"),
        ..subsystem_json(id.provider())
    }
}

/// `listClients`: every member and subsystem of the configuration.
pub fn list_clients(conf: &GlobalConf) -> ClientList {
    let name = |member: &backbone_registry::id::MemberId| {
        conf.members
            .iter()
            .find(|m| &m.id == member)
            .map(|m| m.name.clone())
            .unwrap_or_default()
    };
    let mut member: Vec<JsonClient> = conf
        .members
        .iter()
        .map(|m| JsonClient {
            id: JsonId {
                object_type: "MEMBER",
                xroad_instance: m.id.instance().to_string(),
                member_class: m.id.class().to_string(),
                member_code: m.id.code().to_owned(),
                subsystem_code: None,
                service_code: None,
                service_version: None,
                service_type: None,
            },
            name: m.name.clone(),
        })
        .collect();
    member.extend(conf.subsystems.iter().map(|s| JsonClient {
        id: subsystem_json(&s.id),
        name: name(s.id.member()),
    }));
    ClientList { member }
}

/// `listMethods` of `subsystem`: its services in the catalogue.
pub fn list_methods(conf: &GlobalConf, subsystem: &SubsystemId) -> MethodList {
    MethodList {
        service: conf
            .services
            .iter()
            .filter(|s| s.id.provider() == subsystem)
            .map(|s| service_json(&s.id))
            .collect(),
    }
}

/// `allowedMethods` of `subsystem` for `client`: the catalogued services it holds a right to.
pub fn allowed_methods(
    conf: &GlobalConf,
    rights: &AccessRights,
    subsystem: &SubsystemId,
    client: &ClientId,
    groups: &[GroupId],
) -> MethodList {
    let granted = rights.services_for(client, groups);
    MethodList {
        service: conf
            .services
            .iter()
            .filter(|s| s.id.provider() == subsystem && granted.contains(&s.id))
            .map(|s| service_json(&s.id))
            .collect(),
    }
}

/// `offset` and `limit` from a `findUsage` query (`offset=0&limit=50`), bounded.
///
/// # Errors
///
/// A message when a parameter is not a number or is unknown.
pub fn usage_paging(query: Option<&str>) -> Result<(usize, usize), String> {
    let (mut offset, mut limit) = (0, DEFAULT_USAGE_LIMIT);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{name}={value:?} is not a whole number"))
        };
        match name {
            "offset" => offset = number()?,
            "limit" => limit = number()?.clamp(1, MAX_USAGE_LIMIT),
            _ => {
                return Err(format!(
                    "unknown parameter {:?}; findUsage takes offset and limit",
                    name.chars().take(40).collect::<String>()
                ));
            }
        }
    }
    Ok((offset, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_is_bounded_and_unknown_parameters_are_refused() {
        assert_eq!(usage_paging(None), Ok((0, DEFAULT_USAGE_LIMIT)));
        assert_eq!(usage_paging(Some("offset=20&limit=10")), Ok((20, 10)));
        assert_eq!(usage_paging(Some("limit=100000")), Ok((0, MAX_USAGE_LIMIT)));
        assert_eq!(usage_paging(Some("limit=0")), Ok((0, 1)));
        assert!(usage_paging(Some("offset=-1")).is_err());
        assert!(usage_paging(Some("subject=EE38001085718")).is_err());
    }

    #[test]
    fn service_ids_in_the_protocol_json_shape() {
        let id: ServiceId = "EE/GOV/70000001/ehr/patients".parse().unwrap();
        let json = serde_json::to_value(service_json(&id)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"object_type": "SERVICE", "xroad_instance": "EE", "member_class": "GOV", "member_code": "70000001",
                "subsystem_code": "ehr", "service_code": "patients", "service_type": "REST"})
        );
        assert_eq!(Meta::of("findUsage"), Some(Meta::FindUsage));
        assert_eq!(Meta::of("patients"), None);
    }
}
