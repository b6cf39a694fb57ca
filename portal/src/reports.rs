//! Reports of suspicious accesses: stored one file each, written to a temporary file, synced,
//! renamed into place and the folder synced, so that an acknowledged report survives a crash
//! and a restart. A report is never overwritten; its status changes by rewriting it whole.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest reason accepted, in characters.
pub const MAX_REASON: usize = 2000;
/// Longest contact accepted, in characters.
pub const MAX_CONTACT: usize = 200;
/// Most reports one person may have open at once (a bound on storage, not a judgement).
pub const MAX_PER_PERSON: usize = 200;

/// Where a report stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Stored, not yet looked at.
    Received,
    /// Someone is looking into it.
    InReview,
    /// Answered and closed.
    Closed,
}

/// One report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Its reference, e.g. `R-7K2M9QXA`.
    pub id: String,
    /// The person who reported (their own data subject id).
    pub subject: String,
    /// The access's key.
    pub entry: String,
    /// The access's X-Road message id.
    pub message_id: String,
    /// The institution that accessed.
    pub institution: String,
    /// When the access happened, unix milliseconds.
    pub access_time_ms: u64,
    /// Why the person finds it suspicious.
    pub reason: String,
    /// How to reach them, if they said.
    pub contact: String,
    /// When the report was made, unix milliseconds.
    pub created_ms: u64,
    /// Where it stands.
    pub status: Status,
}

/// The stored reports.
#[derive(Debug)]
pub struct ReportStore {
    dir: PathBuf,
}

// === impl ReportStore ===

impl ReportStore {
    /// The store in `dir`, created if missing.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the folder cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<ReportStore, Error> {
        let dir = dir.into();
        backbone_hsm::private::create_dir(&dir).map_err(Error::storage("create", &dir))?;
        Ok(ReportStore { dir })
    }

    /// A fresh reference.
    pub fn new_id() -> String {
        const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
        let mut bytes = [0u8; 8];
        let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
        let id: String = bytes
            .iter()
            .map(|b| char::from(ALPHABET.get(usize::from(b % 32)).copied().unwrap_or(b'X')))
            .collect();
        format!("R-{id}")
    }

    /// Stores `report` durably; when this returns `Ok` the report survives a crash.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when it cannot be written or synced.
    pub fn put(&self, report: &Report) -> Result<(), Error> {
        let path = self.path(&report.id)?;
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(report)
            .map_err(|_| Error::Unreachable("report does not encode"))?;
        let mut file =
            backbone_hsm::private::create_file(&tmp).map_err(Error::storage("create", &tmp))?;
        file.write_all(&json)
            .map_err(Error::storage("write", &tmp))?;
        file.sync_all().map_err(Error::storage("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(Error::storage("rename into place", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::storage("sync", &self.dir))?;
        Ok(())
    }

    /// The report with `id`, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] or [`Error::Damaged`] when it cannot be read.
    pub fn get(&self, id: &str) -> Result<Option<Report>, Error> {
        let Ok(path) = self.path(id) else {
            return Ok(None);
        };
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Damaged {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Storage {
                action: "read",
                path,
                source: e,
            }),
        }
    }

    /// `subject`'s reports, newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] or [`Error::Damaged`] when the folder or a report cannot be read.
    pub fn for_subject(&self, subject: &str) -> Result<Vec<Report>, Error> {
        let mut reports = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(Error::storage("list", &self.dir))? {
            let item = item.map_err(Error::storage("list", &self.dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if let Some(report) = self.get(id)?.filter(|r| r.subject == subject) {
                reports.push(report);
            }
        }
        reports.sort_by(|a, b| {
            b.created_ms
                .cmp(&a.created_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(reports)
    }

    /// How many of `subject`'s reports are open (not closed), to hold them to
    /// [`MAX_PER_PERSON`].
    ///
    /// # Errors
    ///
    /// As [`ReportStore::for_subject`].
    pub fn open_for_subject(&self, subject: &str) -> Result<usize, Error> {
        Ok(self
            .for_subject(subject)?
            .iter()
            .filter(|r| r.status != Status::Closed)
            .count())
    }

    fn path(&self, id: &str) -> Result<PathBuf, Error> {
        let ok = id.len() == 10
            && id.starts_with("R-")
            && id.bytes().skip(2).all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(Error::Unreachable("report id checked before use"));
        }
        Ok(Path::new(&self.dir).join(format!("{id}.json")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, subject: &str, created_ms: u64) -> Report {
        Report {
            id: id.into(),
            subject: subject.into(),
            entry: "k".into(),
            message_id: "m".into(),
            institution: "Town Pharmacy".into(),
            access_time_ms: 1,
            reason: "I was never there".into(),
            contact: String::new(),
            created_ms,
            status: Status::Received,
        }
    }

    #[test]
    fn reports_survive_reopening_and_are_per_person() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportStore::open(dir.path()).unwrap();
        let a = ReportStore::new_id();
        assert_eq!(a.len(), 10);
        store.put(&report(&a, "EE38001085718", 1)).unwrap();
        store
            .put(&report("R-BBBBBBBB", "EE38001085718", 2))
            .unwrap();
        store
            .put(&report("R-CCCCCCCC", "EE49002124277", 3))
            .unwrap();
        let store = ReportStore::open(dir.path()).unwrap();
        let mine = store.for_subject("EE38001085718").unwrap();
        assert_eq!(
            mine.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec!["R-BBBBBBBB", a.as_str()]
        );
        assert_eq!(store.get("../../etc/passwd").unwrap(), None);
        assert_eq!(store.open_for_subject("EE38001085718").unwrap(), 2);
        store
            .put(&Report {
                status: Status::Closed,
                ..report("R-DDDDDDDD", "EE38001085718", 4)
            })
            .unwrap();
        assert_eq!(
            store.open_for_subject("EE38001085718").unwrap(),
            2,
            "closed reports do not count"
        );
        assert_eq!(store.get("R-ZZZZZZZZ").unwrap(), None);
    }
}
