//! A small document kept in one JSON file beside the gateway's other state: the access rights
//! ([`crate::rights`]) and the information systems ([`crate::systems`]).
//!
//! A change is written to a temporary file, synced, renamed over the old file and the directory
//! synced before it takes effect, so a change survives a crash exactly as acknowledged. Readers
//! take a snapshot (`Arc`) and never wait on a writer. A change made by another process (a
//! `backbone gateway` verb on the same data directory) is picked up by
//! [`JsonFile::reload_if_changed`], which a running gateway calls every second.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest file read: a million access rights fit in far less.
pub const MAX_FILE: u64 = 256 << 20;

/// One document in one file.
#[derive(Debug)]
pub struct JsonFile<T> {
    what: &'static str,
    path: PathBuf,
    current: RwLock<Arc<T>>,
    /// Serialises writers; holds the file's stamp as last read or written.
    writing: Mutex<Option<Stamp>>,
}

/// When the file last changed and its length: enough to notice a change made by another process.
type Stamp = (std::time::SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Why the file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be read or written.
    #[error("{what} file {path}: {source}")]
    Io {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not such a document.
    #[error("{what} file {path} is damaged: {why}")]
    Damaged {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

// === impl JsonFile ===

impl<T> JsonFile<T>
where
    T: Serialize + DeserializeOwned + Default + Clone + PartialEq,
{
    /// Opens the document at `path` (`what` names it in errors); a missing file is the empty
    /// document.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the file exists but cannot be read or parsed.
    pub fn open(what: &'static str, path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let stamp = stamp(&path);
        let document = read(what, &path)?;
        Ok(JsonFile {
            what,
            path,
            current: RwLock::new(Arc::new(document)),
            writing: Mutex::new(stamp),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again if another process changed it since it was last read or written
    /// here; `true` if the document in force changed.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the changed file cannot be read or parsed; the document in force
    /// stays.
    pub fn reload_if_changed(&self) -> Result<bool, StoreError> {
        let mut last = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamp(&self.path);
        if now == *last {
            return Ok(false);
        }
        let document = read(self.what, &self.path)?;
        *last = now;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = **current != document;
        *current = Arc::new(document);
        Ok(changed)
    }

    /// The document now in force.
    pub fn snapshot(&self) -> Arc<T> {
        self.current
            .read()
            .map_or_else(|p| Arc::clone(&p.into_inner()), |r| Arc::clone(&r))
    }

    /// Applies `apply` to a copy of the document and, if it says it changed something, writes
    /// the copy durably and puts it in force; `false` if nothing changed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when it cannot be written; nothing changes then.
    pub fn change(&self, apply: impl FnOnce(&mut T) -> bool) -> Result<bool, StoreError> {
        let mut last = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut document = (*self.snapshot()).clone();
        if !apply(&mut document) {
            return Ok(false);
        }
        write_atomically(&self.path, &document).map_err(|source| StoreError::Io {
            what: self.what,
            path: self.path.clone(),
            source,
        })?;
        *last = stamp(&self.path);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Arc::new(document);
        Ok(true)
    }
}

fn read<T: DeserializeOwned + Default>(what: &'static str, path: &Path) -> Result<T, StoreError> {
    let path = path.to_owned();
    Ok(match fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
        Err(source) => return Err(StoreError::Io { what, path, source }),
        Ok(meta) if meta.len() > MAX_FILE => {
            return Err(StoreError::Damaged {
                what,
                path,
                why: format!("{} bytes is over the limit of {MAX_FILE}", meta.len()),
            });
        }
        Ok(_) => {
            let bytes = fs::read(&path).map_err(|source| StoreError::Io {
                what,
                path: path.clone(),
                source,
            })?;
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Damaged {
                what,
                path: path.clone(),
                why: e.to_string(),
            })?
        }
    })
}

fn write_atomically(path: &Path, document: &impl Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(document).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = backbone_hsm::private::create_file(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
