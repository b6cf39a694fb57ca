//! The provider gateway's access rights, kept in one JSON file beside its other state.
//!
//! A change is written to a temporary file, synced, renamed over the old file and the directory
//! synced before it takes effect, so a granted or revoked right survives a crash exactly as
//! acknowledged. Readers take a snapshot (`Arc`) and never wait on a writer.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::access::{AccessRights, Grant};

/// Largest rights file read: a million grants fit in far less.
pub const MAX_RIGHTS_FILE: u64 = 256 << 20;

/// The stored access rights.
#[derive(Debug)]
pub struct RightsStore {
    path: PathBuf,
    current: RwLock<Arc<AccessRights>>,
    /// Serialises writers; holds the file's stamp as last read or written.
    writing: Mutex<Option<Stamp>>,
}

/// When the file last changed and its length: enough to notice a change made by another process.
type Stamp = (std::time::SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Why the rights cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RightsError {
    /// The file cannot be read or written.
    #[error("access rights file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not an access rights document.
    #[error("access rights file {path} is damaged: {why}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

// === impl RightsStore ===

impl RightsStore {
    /// Opens the rights at `path`; a missing file is no rights at all.
    ///
    /// # Errors
    ///
    /// [`RightsError`] when the file exists but cannot be read or parsed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, RightsError> {
        let path = path.into();
        let stamp = stamp(&path);
        let rights = read(&path)?;
        Ok(RightsStore {
            path,
            current: RwLock::new(Arc::new(rights)),
            writing: Mutex::new(stamp),
        })
    }

    /// Reads the file again if another process (`backbone gateway grant`) changed it since it was
    /// last read or written here; `true` if the rights in force changed.
    ///
    /// # Errors
    ///
    /// [`RightsError`] when the changed file cannot be read or parsed; the rights in force stay.
    pub fn reload_if_changed(&self) -> Result<bool, RightsError> {
        let mut last = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamp(&self.path);
        if now == *last {
            return Ok(false);
        }
        let rights = read(&self.path)?;
        *last = now;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = **current != rights;
        *current = Arc::new(rights);
        Ok(changed)
    }

    /// The rights now in force.
    pub fn snapshot(&self) -> Arc<AccessRights> {
        self.current
            .read()
            .map_or_else(|p| Arc::clone(&p.into_inner()), |r| Arc::clone(&r))
    }

    /// Adds a grant durably; `false` if it was there already.
    ///
    /// # Errors
    ///
    /// [`RightsError::Io`] when it cannot be written; nothing changes then.
    pub fn grant(&self, grant: Grant) -> Result<bool, RightsError> {
        self.change(|rights| rights.grant(grant))
    }

    /// Removes a grant durably; `false` if it was not there.
    ///
    /// # Errors
    ///
    /// [`RightsError::Io`] when it cannot be written; nothing changes then.
    pub fn revoke(&self, grant: &Grant) -> Result<bool, RightsError> {
        self.change(|rights| rights.revoke(grant))
    }

    fn change(&self, apply: impl FnOnce(&mut AccessRights) -> bool) -> Result<bool, RightsError> {
        let mut last = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut rights = (*self.snapshot()).clone();
        if !apply(&mut rights) {
            return Ok(false);
        }
        write_atomically(&self.path, &rights).map_err(|source| RightsError::Io {
            path: self.path.clone(),
            source,
        })?;
        *last = stamp(&self.path);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Arc::new(rights);
        Ok(true)
    }
}

fn read(path: &Path) -> Result<AccessRights, RightsError> {
    let path = path.to_owned();
    Ok(match fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => AccessRights::new(),
        Err(source) => return Err(RightsError::Io { path, source }),
        Ok(meta) if meta.len() > MAX_RIGHTS_FILE => {
            return Err(RightsError::Damaged {
                path,
                why: format!(
                    "{} bytes is over the limit of {MAX_RIGHTS_FILE}",
                    meta.len()
                ),
            });
        }
        Ok(_) => {
            let bytes = fs::read(&path).map_err(|source| RightsError::Io {
                path: path.clone(),
                source,
            })?;
            serde_json::from_slice(&bytes).map_err(|e| RightsError::Damaged {
                path: path.clone(),
                why: e.to_string(),
            })?
        }
    })
}

fn write_atomically(path: &Path, rights: &AccessRights) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(rights).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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
            Err(RightsError::Damaged { .. })
        ));
    }
}
