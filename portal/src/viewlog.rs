//! The portal's own log of what it showed about whom: each view of a person's history, an
//! access record, a proof or an export is appended as one JSON line and synced before the page
//! is sent. The person is recorded as a keyed hash (HMAC-SHA256 with a key kept beside the log),
//! so that the log can be archived without personal codes and still be searched for one person.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::hmac;
use ring::rand::SecureRandom;

use crate::Error;

/// The log file's name in the data folder.
pub const FILE: &str = "views.jsonl";
/// The key file's name in the data folder.
pub const KEY_FILE: &str = "views.key";

/// The view log.
#[derive(Debug)]
pub struct ViewLog {
    path: PathBuf,
    key: hmac::Key,
    file: Mutex<File>,
}

impl ViewLog {
    /// Opens (or starts) the log in `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the files cannot be opened, [`Error::Damaged`] for a bad key.
    pub fn open(dir: &Path) -> Result<ViewLog, Error> {
        backbone_hsm::private::create_dir(dir).map_err(Error::storage("create", dir))?;
        let key_path = dir.join(KEY_FILE);
        let key = match std::fs::read(&key_path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            Ok(bytes) => {
                return Err(Error::Damaged {
                    path: key_path,
                    reason: format!("{} bytes, expected 32", bytes.len()),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; 32];
                ring::rand::SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| Error::Unreachable("no randomness"))?;
                let mut file = backbone_hsm::private::create_file(&key_path)
                    .map_err(Error::storage("create", &key_path))?;
                file.write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(Error::storage("write", &key_path))?;
                bytes
            }
            Err(e) => {
                return Err(Error::Storage {
                    action: "read",
                    path: key_path,
                    source: e,
                });
            }
        };
        let path = dir.join(FILE);
        let file =
            backbone_hsm::private::append_file(&path).map_err(Error::storage("open", &path))?;
        Ok(ViewLog {
            path,
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            file: Mutex::new(file),
        })
    }

    /// The keyed hash the log records for `subject`.
    pub fn subject_hash(&self, subject: &str) -> String {
        backbone_gateway::usage::hex(hmac::sign(&self.key, subject.as_bytes()).as_ref())
    }

    /// Records that `what` (e.g. `history`, `entry`, `proof`, `export.csv`) about `subject` was
    /// shown, with the access's key if one; durable when it returns.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the line cannot be written and synced: the page is then not shown.
    pub fn record(
        &self,
        subject: &str,
        what: &str,
        entry: Option<&str>,
        now_ms: u64,
    ) -> Result<(), Error> {
        let line = serde_json::json!({"time": backbone_gateway::usage::rfc3339(now_ms), "subject": self.subject_hash(subject), "view": what, "entry": entry});
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writeln!(file, "{line}")
            .and_then(|()| file.sync_data())
            .map_err(Error::storage("append to", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_appended_with_a_keyed_hash_not_the_code() {
        let dir = tempfile::tempdir().unwrap();
        let log = ViewLog::open(dir.path()).unwrap();
        log.record("EE38001085718", "history", None, 0).unwrap();
        log.record("EE38001085718", "entry", Some("abc"), 1)
            .unwrap();
        let hash = log.subject_hash("EE38001085718");
        drop(log);
        let log = ViewLog::open(dir.path()).unwrap();
        assert_eq!(log.subject_hash("EE38001085718"), hash, "the key persists");
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(!text.contains("38001085718"));
        assert!(text.contains(&hash));
    }
}
