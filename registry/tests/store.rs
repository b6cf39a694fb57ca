//! The RocksDB store keeps what it acknowledged across reopening, with the audit log in order.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use backbone_hsm::Signer;
use backbone_registry::Registry;
use backbone_registry::id::{InstanceId, MemberClass};
use backbone_registry::store::rocks::RocksStore;
use backbone_registry::store::{Change, Store, Table};

#[test]
fn registry_reopened_from_rocksdb_keeps_records_audit_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let ca: Arc<dyn Signer> = Arc::new(common::signer("ca"));
    let conf_key: Arc<dyn Signer> = Arc::new(common::signer("conf"));
    let v1 = {
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(&path).unwrap());
        let r = Registry::create(
            store,
            InstanceId::new("EE").unwrap(),
            ca.clone(),
            conf_key.clone(),
            "alice",
            common::now(),
        )
        .unwrap();
        r.add_member_class(
            "alice",
            common::now(),
            MemberClass::new("GOV").unwrap(),
            "government",
        )
        .unwrap();
        r.add_member("bob", common::now(), "EE/GOV/1".parse().unwrap(), "Agency")
            .unwrap();
        r.generate(common::now(), Duration::from_secs(600))
            .unwrap()
            .verify(conf_key.public_key(), r.instance())
            .unwrap()
    };
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&path).unwrap());
    let r = Registry::open(store.clone(), ca, conf_key.clone()).unwrap();
    let v2 = r
        .generate(common::now(), Duration::from_secs(600))
        .unwrap()
        .verify(conf_key.public_key(), r.instance())
        .unwrap();
    assert_eq!(v2.version, v1.version + 1);
    assert_eq!(v2.members, v1.members);
    r.add_member("carol", common::now(), "EE/GOV/2".parse().unwrap(), "Other")
        .unwrap();
    let log = r.audit_log(1, 10).unwrap();
    let who: Vec<(u64, &str)> = log.iter().map(|e| (e.seq, e.actor.as_str())).collect();
    assert_eq!(who, [(1, "alice"), (2, "alice"), (3, "bob"), (4, "carol")]);
    assert_eq!(r.audit_log(3, 1).unwrap()[0].action, "add member EE/GOV/1");
}

#[test]
fn commits_are_atomic_and_deletes_apply() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path()).unwrap();
    let change = Change {
        puts: vec![
            (Table::Members, "a".into(), b"1".to_vec()),
            (Table::Members, "b".into(), b"2".to_vec()),
        ],
        deletes: vec![],
        audit: None,
    };
    assert_eq!(store.commit(change).unwrap(), None);
    let change = Change {
        puts: vec![],
        deletes: vec![(Table::Members, "a".into())],
        audit: None,
    };
    store.commit(change).unwrap();
    assert_eq!(store.list(Table::Members).unwrap(), vec![b"2".to_vec()]);
    assert_eq!(store.get(Table::Members, "a").unwrap(), None);
    assert_eq!(store.list(Table::Gateways).unwrap(), Vec::<Vec<u8>>::new());
}
