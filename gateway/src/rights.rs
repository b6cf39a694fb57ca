//! The provider gateway's access rights, kept in one JSON file beside its other state
//! ([`crate::store::JsonFile`]: written durably before a change takes effect, picked up from
//! another process within a second).

use std::path::PathBuf;
use std::sync::Arc;

use crate::access::{AccessRights, Grant};
use crate::store::{JsonFile, StoreError};

/// Why the rights cannot be read or written.
pub type RightsError = StoreError;

/// The stored access rights.
#[derive(Debug)]
pub struct RightsStore(JsonFile<AccessRights>);

// === impl RightsStore ===

impl RightsStore {
    /// Opens the rights at `path`; a missing file is no rights at all.
    ///
    /// # Errors
    ///
    /// [`RightsError`] when the file exists but cannot be read or parsed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, RightsError> {
        JsonFile::open("access rights", path).map(RightsStore)
    }

    /// Reads the file again if another process (`backbone gateway grant`) changed it since it was
    /// last read or written here; `true` if the rights in force changed.
    ///
    /// # Errors
    ///
    /// [`RightsError`] when the changed file cannot be read or parsed; the rights in force stay.
    pub fn reload_if_changed(&self) -> Result<bool, RightsError> {
        self.0.reload_if_changed()
    }

    /// The rights now in force.
    pub fn snapshot(&self) -> Arc<AccessRights> {
        self.0.snapshot()
    }

    /// Adds a grant durably; `false` if it was there already.
    ///
    /// # Errors
    ///
    /// [`RightsError::Io`] when it cannot be written; nothing changes then.
    pub fn grant(&self, grant: Grant) -> Result<bool, RightsError> {
        self.0.change(|rights| rights.grant(grant))
    }

    /// Removes a grant durably; `false` if it was not there.
    ///
    /// # Errors
    ///
    /// [`RightsError::Io`] when it cannot be written; nothing changes then.
    pub fn revoke(&self, grant: &Grant) -> Result<bool, RightsError> {
        self.0.change(|rights| rights.revoke(grant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Grantee;

    #[test]
    fn grants_survive_reopening_and_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access-rights.json");
        let store = RightsStore::open(&path).unwrap();
        let grant = Grant::new(
            "EE/GOV/70000001/hospital/patients".parse().unwrap(),
            Grantee::Client("EE/COM/10000001/pharmacy".parse().unwrap()),
            "GET",
            "/**",
        )
        .unwrap();
        assert!(store.grant(grant.clone()).unwrap());
        assert!(!store.grant(grant.clone()).unwrap());
        let reopened = RightsStore::open(&path).unwrap();
        assert_eq!(reopened.snapshot().grants().count(), 1);
        assert!(reopened.revoke(&grant).unwrap());
        assert_eq!(
            RightsStore::open(&path)
                .unwrap()
                .snapshot()
                .grants()
                .count(),
            0
        );

        // A change made by another process is picked up (the revocation above); an unchanged
        // file is not read again.
        assert!(store.reload_if_changed().unwrap());
        assert_eq!(store.snapshot().grants().count(), 0);
        assert!(!store.reload_if_changed().unwrap());
        let other = RightsStore::open(&path).unwrap();
        other.grant(grant.clone()).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert_eq!(store.snapshot().grants().count(), 1);

        std::fs::write(&path, b"{\"grants\": [").unwrap();
        assert!(
            store.reload_if_changed().is_err(),
            "a damaged file is refused"
        );
        assert_eq!(
            store.snapshot().grants().count(),
            1,
            "and the rights in force stay"
        );
        assert!(matches!(
            RightsStore::open(&path),
            Err(StoreError::Damaged { .. })
        ));
    }
}
