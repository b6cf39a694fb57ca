//! Access rights on the provider gateway: deny by default; a grant names a service, a REST method
//! (or any), a path pattern, and who may call: one subsystem, or every member of a global group
//! (the groups come from the global configuration).
//!
//! Path patterns follow X-Road's REST endpoint patterns: segments separated by `/`, where `*`
//! matches exactly one segment and `**` matches any number of segments (including none), and any
//! other segment matches itself exactly. Paths are compared as sent (percent-encoded), after
//! `r1::parse_target` has refused `.` and `..` segments, so a pattern cannot be escaped.

use std::collections::BTreeSet;

use backbone_registry::id::{ClientId, GroupId, ServiceId};
use serde::{Deserialize, Serialize};

/// Longest path pattern.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Most `**` segments in one pattern: matching costs grow with the path length to this power, and
/// the path comes from callers.
pub const MAX_DOUBLE_STARS: usize = 3;

/// Who a grant is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grantee {
    /// One member or subsystem.
    Client(ClientId),
    /// Every member and subsystem of a global group.
    Group(GroupId),
}

/// One access right.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The service it opens.
    pub service: ServiceId,
    /// Who may call.
    pub grantee: Grantee,
    /// The HTTP method, upper case, or `*` for any.
    pub method: String,
    /// The path pattern, e.g. `/v1/prescriptions/*` or `/**`.
    pub path: String,
}

/// The grants of one provider gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRights {
    grants: BTreeSet<Grant>,
}

/// Why a grant is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The method is not an HTTP method token or `*`.
    #[error("method {0:?} is not an upper-case HTTP method or '*'")]
    Method(String),
    /// The pattern is not `/`-rooted, too long, has `.`/`..` segments or too many `**`.
    #[error(
        "path pattern {0:?} must start with '/', be at most {MAX_PATTERN_LEN} bytes, have no '.' or '..' segments and at most {MAX_DOUBLE_STARS} '**'"
    )]
    Pattern(String),
}

// === impl Grant ===

impl Grant {
    /// A grant, checked.
    ///
    /// # Errors
    ///
    /// [`GrantError`] for a bad method or pattern.
    pub fn new(
        service: ServiceId,
        grantee: Grantee,
        method: &str,
        path: &str,
    ) -> Result<Self, GrantError> {
        let method_ok = method == "*"
            || (!method.is_empty()
                && method.len() <= 32
                && method.bytes().all(|b| b.is_ascii_uppercase()));
        if !method_ok {
            return Err(GrantError::Method(method.to_owned()));
        }
        let pattern_ok = path.starts_with('/')
            && path.len() <= MAX_PATTERN_LEN
            && !path.split('/').any(|s| s == "." || s == "..")
            && path.split('/').filter(|s| *s == "**").count() <= MAX_DOUBLE_STARS
            && !path.chars().any(char::is_control);
        if !pattern_ok {
            return Err(GrantError::Pattern(path.to_owned()));
        }
        Ok(Grant {
            service,
            grantee,
            method: method.to_owned(),
            path: path.to_owned(),
        })
    }

    fn admits(
        &self,
        client: &ClientId,
        groups: &[GroupId],
        service: &ServiceId,
        method: &str,
        path: &str,
    ) -> bool {
        let who = match &self.grantee {
            Grantee::Client(c) => c == client,
            Grantee::Group(g) => groups.contains(g),
        };
        who && &self.service == service
            && (self.method == "*" || self.method == method)
            && path_matches(&self.path, path)
    }
}

// === impl AccessRights ===

impl AccessRights {
    /// No grants: everything is denied.
    pub fn new() -> Self {
        AccessRights::default()
    }

    /// Adds a grant; `false` if it was there already.
    pub fn grant(&mut self, grant: Grant) -> bool {
        self.grants.insert(grant)
    }

    /// Removes a grant; `false` if it was not there.
    pub fn revoke(&mut self, grant: &Grant) -> bool {
        self.grants.remove(grant)
    }

    /// Every grant, in a stable order.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter()
    }

    /// Whether `client` (a member of `groups`) may call `method path` on `service`. An empty path
    /// is the service's root, `/`.
    pub fn allows(
        &self,
        client: &ClientId,
        groups: &[GroupId],
        service: &ServiceId,
        method: &str,
        path: &str,
    ) -> bool {
        let path = if path.is_empty() { "/" } else { path };
        self.grants
            .iter()
            .any(|g| g.admits(client, groups, service, method, path))
    }

    /// The services `client` may call at all (for `allowedMethods`).
    pub fn services_for(&self, client: &ClientId, groups: &[GroupId]) -> BTreeSet<&ServiceId> {
        self.grants
            .iter()
            .filter(|g| match &g.grantee {
                Grantee::Client(c) => c == client,
                Grantee::Group(group) => groups.contains(group),
            })
            .map(|g| &g.service)
            .collect()
    }
}

/// Whether `path` matches `pattern` (`*` one segment, `**` any number).
///
/// Dynamic programming over (pattern suffix, path suffix): time and memory are the product of
/// the segment counts, whatever the pattern, so a long path from a caller cannot make a
/// backtracking matcher explode.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').skip(1).collect();
    let path: Vec<&str> = path.split('/').skip(1).collect();
    let width = path.len() + 1;
    // next[j]: does pattern[i+1..] match path[j..]; built from the last pattern segment back.
    let mut next = vec![false; width];
    if let Some(last) = next.last_mut() {
        *last = true;
    }
    for segment in pattern.iter().rev() {
        let mut current = vec![false; width];
        for j in (0..width).rev() {
            let matched = match *segment {
                "**" => {
                    next.get(j).copied().unwrap_or(false)
                        || current.get(j + 1).copied().unwrap_or(false)
                }
                one => {
                    path.get(j).is_some_and(|p| one == "*" || one == *p)
                        && next.get(j + 1).copied().unwrap_or(false)
                }
            };
            if let Some(cell) = current.get_mut(j) {
                *cell = matched;
            }
        }
        next = current;
    }
    next.first().copied().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str) -> ServiceId {
        format!("EE/COM/10000001/pharmacy/{code}").parse().unwrap()
    }

    fn client(id: &str) -> ClientId {
        id.parse().unwrap()
    }

    #[test]
    fn deny_by_default_then_exactly_what_is_granted() {
        let hospital = client("EE/GOV/70000001/ehr");
        let other = client("EE/GOV/70000002/ehr");
        let prescriptions = service("prescriptions");
        let mut rights = AccessRights::new();
        assert!(!rights.allows(&hospital, &[], &prescriptions, "GET", "/v1/prescriptions"));

        rights.grant(
            Grant::new(
                prescriptions.clone(),
                Grantee::Client(hospital.clone()),
                "GET",
                "/v1/prescriptions/*",
            )
            .unwrap(),
        );
        assert!(rights.allows(
            &hospital,
            &[],
            &prescriptions,
            "GET",
            "/v1/prescriptions/42"
        ));
        assert!(
            !rights.allows(
                &hospital,
                &[],
                &prescriptions,
                "GET",
                "/v1/prescriptions/42/items"
            ),
            "* is one segment"
        );
        assert!(
            !rights.allows(
                &hospital,
                &[],
                &prescriptions,
                "DELETE",
                "/v1/prescriptions/42"
            ),
            "another method"
        );
        assert!(
            !rights.allows(&other, &[], &prescriptions, "GET", "/v1/prescriptions/42"),
            "another client"
        );
        assert!(
            !rights.allows(
                &hospital,
                &[],
                &service("dispensations"),
                "GET",
                "/v1/prescriptions/42"
            ),
            "another service"
        );
        // A member-level client is not its subsystems.
        assert!(!rights.allows(
            &client("EE/GOV/70000001"),
            &[],
            &prescriptions,
            "GET",
            "/v1/prescriptions/42"
        ));
    }

    #[test]
    fn groups_any_method_and_double_star() {
        let emergency: GroupId = "EE/emergency-readers".parse().unwrap();
        let ambulance = client("EE/GOV/70000009/ambulance");
        let summary = service("summary");
        let mut rights = AccessRights::new();
        rights.grant(
            Grant::new(
                summary.clone(),
                Grantee::Group(emergency.clone()),
                "*",
                "/**",
            )
            .unwrap(),
        );
        assert!(rights.allows(&ambulance, &[emergency.clone()], &summary, "GET", ""));
        assert!(rights.allows(&ambulance, &[emergency.clone()], &summary, "POST", "/a/b/c"));
        assert!(
            !rights.allows(&ambulance, &[], &summary, "GET", "/a"),
            "not in the group"
        );
        assert_eq!(rights.services_for(&ambulance, &[emergency]).len(), 1);
    }

    #[test]
    fn patterns() {
        for (pattern, path, expected) in [
            ("/", "/", true),
            ("/", "/x", false),
            ("/v1/**", "/v1", true),
            ("/v1/**", "/v1/a/b", true),
            ("/v1/**/items", "/v1/a/b/items", true),
            ("/v1/**/items", "/v1/a/b/other", false),
            ("/v1/*/items", "/v1/a/items", true),
            ("/v1/*/items", "/v1/items", false),
            ("/v1/pets", "/v1/pets/", false),
        ] {
            assert_eq!(path_matches(pattern, path), expected, "{pattern} vs {path}");
        }
        let s = service("x");
        let c = Grantee::Client(client("EE/GOV/1/a"));
        assert!(matches!(
            Grant::new(s.clone(), c.clone(), "get", "/"),
            Err(GrantError::Method(_))
        ));
        assert!(matches!(
            Grant::new(s.clone(), c.clone(), "GET", "v1"),
            Err(GrantError::Pattern(_))
        ));
        assert!(matches!(
            Grant::new(s.clone(), c.clone(), "GET", "/v1/../admin"),
            Err(GrantError::Pattern(_))
        ));
        assert!(matches!(
            Grant::new(s, c, "GET", "/**/**/**/**"),
            Err(GrantError::Pattern(_))
        ));
        // The worst a caller can do against an allowed pattern: a long path, still quick.
        let long = "/a".repeat(2000);
        assert!(!path_matches("/**/b/**/c/**/d", &long));
        assert!(!path_matches("/**/*/**/*/**/*/x", &long));
        assert!(path_matches("/**/*/**/*/**/*/a", &long));
    }
}
