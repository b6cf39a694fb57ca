//! Where the registry keeps its records: a narrow trait the registry owns, an in-memory store for
//! tests, and RocksDB for service.
//!
//! The registry reads and writes whole records by table and key, and appends to an audit log.
//! Every administrative change is one [`Change`]: its record writes and its audit entry commit
//! together or not at all.

pub mod memory;
pub mod rocks;

use serde::{Deserialize, Serialize};

/// The tables of the registry. Each is a column family in RocksDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Instance-wide values: the instance id, the CA certificate, counters.
    Meta,
    /// Member classes by code.
    MemberClasses,
    /// Members by id.
    Members,
    /// Subsystems by id.
    Subsystems,
    /// Gateways by id.
    Gateways,
    /// Member signing certificates by serial.
    SigningCertificates,
    /// Services by id.
    Services,
    /// Global groups by id.
    Groups,
    /// Timestamping services by name.
    Timestamping,
    /// Revocations by serial.
    Revocations,
    /// Registry administrators by the SHA-256 of their client certificate.
    Admins,
    /// Every published configuration envelope by zero-padded version, and its keyless signature
    /// under the same key with `.ksig` appended.
    Archive,
}

/// One administrative action, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1, assigned by the store.
    pub seq: u64,
    /// When, unix seconds.
    pub at: u64,
    /// Who: the administrator's certificate subject or the CLI user.
    pub actor: String,
    /// What, e.g. `add member EE/GOV/70000001`.
    pub action: String,
}

/// Record writes that commit together, with the audit entry that explains them (none for
/// housekeeping such as the configuration version counter).
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// `(table, key, value)` to write, replacing what was there.
    pub puts: Vec<(Table, String, Vec<u8>)>,
    /// `(table, key)` to remove.
    pub deletes: Vec<(Table, String)>,
    /// The audit entry; its `seq` is ignored and assigned by the store.
    pub audit: Option<AuditEntry>,
}

/// Storage failures, with the store's own words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The registry's storage.
///
/// Contract:
/// - [`Store::commit`] MUST apply all of a change or none of it, and MUST be durable when it
///   returns `Ok` (the write-ahead log synced): an acknowledged admin change survives `kill -9`.
/// - Audit entries MUST NOT be overwritten or removed; each commit that carries one MUST give it
///   the next sequence number.
/// - Reads SHOULD see every change whose commit returned.
/// - Implementations MUST be safe to call from many threads.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Commits one change and returns the audit sequence number it was given, if it had an entry.
    fn commit(&self, change: Change) -> Result<Option<u64>, StoreError>;

    /// The value under `key` in `table`.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every value in `table`, in key order.
    fn list(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Audit entries from sequence number `from` on, at most `limit` of them.
    fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
}

// === impl Table ===

impl Table {
    /// Every table.
    pub const ALL: [Table; 12] = [
        Table::Meta,
        Table::MemberClasses,
        Table::Members,
        Table::Subsystems,
        Table::Gateways,
        Table::SigningCertificates,
        Table::Services,
        Table::Groups,
        Table::Timestamping,
        Table::Revocations,
        Table::Admins,
        Table::Archive,
    ];

    /// Its name: the RocksDB column family.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::MemberClasses => "member_classes",
            Table::Members => "members",
            Table::Subsystems => "subsystems",
            Table::Gateways => "gateways",
            Table::SigningCertificates => "signing_certificates",
            Table::Services => "services",
            Table::Groups => "groups",
            Table::Timestamping => "timestamping",
            Table::Revocations => "revocations",
            Table::Admins => "admins",
            Table::Archive => "archive",
        }
    }
}
