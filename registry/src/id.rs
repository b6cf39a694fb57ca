//! X-Road identifiers: `INSTANCE/CLASS/MEMBER[/SUBSYSTEM]`, services, gateways and global groups.
//!
//! Every part follows the X-Road identifier rules (PR-GCONF and the X-Road 7 "identifier
//! characters" rule): it is 1 to [`MAX_PART_LEN`] bytes of printable UTF-8 and contains none of
//! `: ; / \ %`. We also refuse whitespace, because identifiers travel as URL path segments in the
//! REST protocol (`/r1/{INSTANCE}/{CLASS}/{MEMBER}/{SUBSYSTEM}/{SERVICE}`), and the path segments
//! `.` and `..`, which URL normalisation would remove.
//!
//! Each kind of identifier is its own type; the textual forms are:
//!
//! | type | text |
//! |---|---|
//! | [`InstanceId`] | `EE` |
//! | [`MemberClass`] | `GOV` |
//! | [`MemberId`] | `EE/GOV/70000001` |
//! | [`SubsystemId`] | `EE/GOV/70000001/ehr` |
//! | [`ClientId`] | a member or a subsystem id |
//! | [`ServiceId`] | `EE/GOV/70000001/ehr/getPatient` (`/v1` may follow: the service version) |
//! | [`GatewayId`] | `EE/GOV/70000001/gw1` (the owner member, then the server code) |
//! | [`GroupId`] | `EE/emergency-readers` |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Longest part of an identifier, in bytes (X-Road stores each part in a 255-character column).
pub const MAX_PART_LEN: usize = 255;

/// An X-Road instance: one national backbone, e.g. `EE` or `EE-TEST`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(String);

/// A member class code, e.g. `GOV`, `COM`, `NGO`, `NPO`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberClass(String);

/// A member (an agency or a company): instance, class and member code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    instance: InstanceId,
    class: MemberClass,
    code: String,
}

/// A subsystem of a member: the unit that calls and provides services.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubsystemId {
    member: MemberId,
    code: String,
}

/// Who calls a service or belongs to a group: a member, or one of its subsystems.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientId {
    /// A whole member (three parts).
    Member(MemberId),
    /// One subsystem (four parts).
    Subsystem(SubsystemId),
}

/// A service offered by a provider subsystem, with an optional version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    provider: SubsystemId,
    code: String,
    version: Option<String>,
}

/// A gateway (X-Road security server): its owner member and its server code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GatewayId {
    owner: MemberId,
    server_code: String,
}

/// A global group: instance and group code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId {
    instance: InstanceId,
    code: String,
}

/// Checks one identifier part against the X-Road character rules.
///
/// # Errors
///
/// [`Error::InvalidId`] naming the kind of identifier, the value and the rule broken.
pub fn check_part(kind: &'static str, part: &str) -> Result<(), Error> {
    let reason = if part.is_empty() {
        "must not be empty".to_owned()
    } else if part.len() > MAX_PART_LEN {
        format!(
            "is {} bytes long, over the limit of {MAX_PART_LEN}",
            part.len()
        )
    } else if let Some(c) = part.chars().find(|c| FORBIDDEN.contains(c)) {
        format!("must not contain {c:?} (X-Road forbids : ; / \\ %)")
    } else if part.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "must not contain whitespace or non-printable characters".to_owned()
    } else if part == "." || part == ".." {
        "must not be '.' or '..'".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::InvalidId {
        kind,
        value: printable(part),
        reason,
    })
}

/// Characters X-Road forbids in identifiers.
const FORBIDDEN: [char; 5] = [':', ';', '/', '\\', '%'];

/// The value as it may appear in an error message: escaped and cut to a readable length.
fn printable(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(80)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > 80 {
        out.push('…');
    }
    out
}

fn parts<'a>(kind: &'static str, text: &'a str, counts: &[usize]) -> Result<Vec<&'a str>, Error> {
    let parts: Vec<&str> = text.split('/').collect();
    if !counts.contains(&parts.len()) {
        let want = counts
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        return Err(Error::InvalidId {
            kind,
            value: printable(text),
            reason: format!("has {} '/'-separated parts, expected {want}", parts.len()),
        });
    }
    Ok(parts)
}

// === impl InstanceId ===

impl InstanceId {
    /// Checks and wraps an instance code.
    pub fn new(code: impl Into<String>) -> Result<Self, Error> {
        let code = code.into();
        check_part("instance id", &code)?;
        Ok(InstanceId(code))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// === impl MemberClass ===

impl MemberClass {
    /// Checks and wraps a member class code.
    pub fn new(code: impl Into<String>) -> Result<Self, Error> {
        let code = code.into();
        check_part("member class", &code)?;
        Ok(MemberClass(code))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// === impl MemberId ===

impl MemberId {
    /// Builds a member id from its parts, checking the member code.
    pub fn new(
        instance: InstanceId,
        class: MemberClass,
        code: impl Into<String>,
    ) -> Result<Self, Error> {
        let code = code.into();
        check_part("member code", &code)?;
        Ok(MemberId {
            instance,
            class,
            code,
        })
    }

    /// The instance.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The member class.
    pub fn class(&self) -> &MemberClass {
        &self.class
    }

    /// The member code (for example a registry code).
    pub fn code(&self) -> &str {
        &self.code
    }

    fn from_parts(p: &[&str]) -> Result<Self, Error> {
        match p {
            [instance, class, code, ..] => MemberId::new(
                InstanceId::new(*instance)?,
                MemberClass::new(*class)?,
                *code,
            ),
            _ => Err(Error::Unreachable("member id parts counted before")),
        }
    }
}

// === impl SubsystemId ===

impl SubsystemId {
    /// Builds a subsystem id, checking the subsystem code.
    pub fn new(member: MemberId, code: impl Into<String>) -> Result<Self, Error> {
        let code = code.into();
        check_part("subsystem code", &code)?;
        Ok(SubsystemId { member, code })
    }

    /// The member that owns the subsystem.
    pub fn member(&self) -> &MemberId {
        &self.member
    }

    /// The subsystem code.
    pub fn code(&self) -> &str {
        &self.code
    }
}

// === impl ClientId ===

impl ClientId {
    /// The member, or the subsystem's member.
    pub fn member(&self) -> &MemberId {
        match self {
            ClientId::Member(m) => m,
            ClientId::Subsystem(s) => s.member(),
        }
    }
}

// === impl ServiceId ===

impl ServiceId {
    /// Builds a service id, checking the service code and version.
    pub fn new(
        provider: SubsystemId,
        code: impl Into<String>,
        version: Option<String>,
    ) -> Result<Self, Error> {
        let code = code.into();
        check_part("service code", &code)?;
        if let Some(v) = &version {
            check_part("service version", v)?;
        }
        Ok(ServiceId {
            provider,
            code,
            version,
        })
    }

    /// The subsystem that provides the service.
    pub fn provider(&self) -> &SubsystemId {
        &self.provider
    }

    /// The service code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The service version, if any.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

// === impl GatewayId ===

impl GatewayId {
    /// Builds a gateway id, checking the server code.
    pub fn new(owner: MemberId, server_code: impl Into<String>) -> Result<Self, Error> {
        let server_code = server_code.into();
        check_part("gateway server code", &server_code)?;
        Ok(GatewayId { owner, server_code })
    }

    /// The member that owns the gateway.
    pub fn owner(&self) -> &MemberId {
        &self.owner
    }

    /// The server code, unique within the owner.
    pub fn server_code(&self) -> &str {
        &self.server_code
    }
}

// === impl GroupId ===

impl GroupId {
    /// Builds a global group id, checking the group code.
    pub fn new(instance: InstanceId, code: impl Into<String>) -> Result<Self, Error> {
        let code = code.into();
        check_part("global group code", &code)?;
        Ok(GroupId { instance, code })
    }

    /// The instance.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The group code.
    pub fn code(&self) -> &str {
        &self.code
    }
}

// --- Text forms ---

impl FromStr for InstanceId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        InstanceId::new(s)
    }
}

impl FromStr for MemberClass {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        MemberClass::new(s)
    }
}

impl FromStr for MemberId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        MemberId::from_parts(&parts("member id", s, &[3])?)
    }
}

impl FromStr for SubsystemId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let p = parts("subsystem id", s, &[4])?;
        SubsystemId::new(
            MemberId::from_parts(&p)?,
            *p.get(3).ok_or(Error::Unreachable("four parts"))?,
        )
    }
}

impl FromStr for ClientId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let p = parts("client id", s, &[3, 4])?;
        let member = MemberId::from_parts(&p)?;
        Ok(match p.get(3) {
            Some(code) => ClientId::Subsystem(SubsystemId::new(member, *code)?),
            None => ClientId::Member(member),
        })
    }
}

impl FromStr for ServiceId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let p = parts("service id", s, &[5, 6])?;
        let member = MemberId::from_parts(&p)?;
        match (p.get(3), p.get(4)) {
            (Some(subsystem), Some(code)) => ServiceId::new(
                SubsystemId::new(member, *subsystem)?,
                *code,
                p.get(5).map(|v| (*v).to_owned()),
            ),
            _ => Err(Error::Unreachable("service id parts counted before")),
        }
    }
}

impl FromStr for GatewayId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let p = parts("gateway id", s, &[4])?;
        GatewayId::new(
            MemberId::from_parts(&p)?,
            *p.get(3).ok_or(Error::Unreachable("four parts"))?,
        )
    }
}

impl FromStr for GroupId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let p = parts("global group id", s, &[2])?;
        match p.as_slice() {
            [instance, code] => GroupId::new(InstanceId::new(*instance)?, *code),
            _ => Err(Error::Unreachable("group id parts counted before")),
        }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for MemberClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.instance, self.class, self.code)
    }
}

impl fmt::Display for SubsystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.member, self.code)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Member(m) => m.fmt(f),
            ClientId::Subsystem(s) => s.fmt(f),
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.code)?;
        match &self.version {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.server_code)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.instance, self.code)
    }
}

/// Serde as the text form, checked on the way in.
macro_rules! serde_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_text!(
    InstanceId,
    MemberClass,
    MemberId,
    SubsystemId,
    ClientId,
    ServiceId,
    GatewayId,
    GroupId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for text in ["EE/GOV/70000001", "EE-TEST/COM/12345678-9", "EE/NGO/ä.ö_x"] {
            assert_eq!(text.parse::<MemberId>().unwrap().to_string(), text);
        }
        let s: SubsystemId = "EE/GOV/70000001/ehr".parse().unwrap();
        assert_eq!(s.member().code(), "70000001");
        assert_eq!(s.code(), "ehr");
        let svc: ServiceId = "EE/GOV/70000001/ehr/getPatient/v1".parse().unwrap();
        assert_eq!(svc.version(), Some("v1"));
        assert_eq!(svc.to_string(), "EE/GOV/70000001/ehr/getPatient/v1");
        let svc: ServiceId = "EE/GOV/70000001/ehr/getPatient".parse().unwrap();
        assert_eq!(svc.version(), None);
        assert!(matches!(
            "EE/GOV/1".parse::<ClientId>().unwrap(),
            ClientId::Member(_)
        ));
        assert!(matches!(
            "EE/GOV/1/s".parse::<ClientId>().unwrap(),
            ClientId::Subsystem(_)
        ));
        assert_eq!(
            "EE/GOV/1/gw1".parse::<GatewayId>().unwrap().server_code(),
            "gw1"
        );
        assert_eq!("EE/readers".parse::<GroupId>().unwrap().code(), "readers");
    }

    #[test]
    fn invalid_ids_are_refused_with_a_reason() {
        let cases = [
            ("EE/GOV", "expected 3"),
            ("EE/GOV/1/x", "expected 3"),
            ("EE//1", "must not be empty"),
            ("EE/GOV/a:b", "must not contain ':'"),
            ("EE/GOV/a;b", "must not contain ';'"),
            ("EE/GOV/a%2f", "must not contain '%'"),
            ("EE/GOV/a\\b", "must not contain '\\\\'"),
            ("EE/GOV/a b", "whitespace"),
            ("EE/GOV/a\u{7}", "non-printable"),
            ("EE/GOV/..", "'..'"),
        ];
        for (text, want) in cases {
            let err = text.parse::<MemberId>().unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let long = format!("EE/GOV/{}", "x".repeat(MAX_PART_LEN + 1));
        assert!(
            long.parse::<MemberId>()
                .unwrap_err()
                .to_string()
                .contains("over the limit of 255")
        );
        assert!(
            format!("EE/GOV/{}", "x".repeat(MAX_PART_LEN))
                .parse::<MemberId>()
                .is_ok()
        );
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let m: MemberId = serde_json::from_str("\"EE/GOV/1\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"EE/GOV/1\"");
        assert!(serde_json::from_str::<MemberId>("\"EE/GOV/a:b\"").is_err());
    }
}
