use backbone_timestamping_verify::chain;
use backbone_timestamping_verify::imprint::HashAlgorithm;

use super::rocks::RocksStore;
use super::*;

/// 2025-11-26T00:00:00Z, a plausible first round.
const T0: u64 = 1_764_115_200;

fn round_root(i: u64) -> Imprint {
    HashAlgorithm::Sha256
        .hash(&[b"round", &i.to_be_bytes()])
        .unwrap()
}

/// Rounds at T0, T0+1, T0+2, then a gap, then T0+10 and T0+11.
const ROUNDS: [u64; 5] = [T0, T0 + 1, T0 + 2, T0 + 10, T0 + 11];

fn check_chains<S: CalendarStore>(calendar: &Calendar<S>) {
    let head = calendar.head().unwrap();
    for &t in &ROUNDS {
        for p in [t, head] {
            let chain = calendar.chain(t, p).unwrap();
            assert_eq!(chain.input_hash, round_root(t));
            assert_eq!(
                chain::calendar_root(&chain).unwrap(),
                calendar.root_at(p).unwrap(),
                "t {t} p {p}"
            );
            assert_eq!(chain::calendar_aggregation_time(p, &chain.links), Some(t));
        }
    }
}

#[test]
fn chains_hash_to_the_root_at_every_publication_time() {
    let mut calendar = Calendar::open(MemoryStore::new()).unwrap();
    for &t in &ROUNDS {
        let root = calendar.append(t, Some(&round_root(t))).unwrap();
        assert_eq!(root, calendar.root_at(t).unwrap());
    }
    assert_eq!(calendar.size(), T0 + 12);
    check_chains(&calendar);
    // A second without a round is in the tree too: its chain starts from the empty leaf.
    let empty = calendar.chain(T0 + 5, T0 + 11).unwrap();
    assert_eq!(
        empty.input_hash,
        HashAlgorithm::Sha256
            .hash(&[tree::EMPTY_LEAF_PREIMAGE])
            .unwrap()
    );
    assert_eq!(
        chain::calendar_root(&empty).unwrap(),
        calendar.root_at(T0 + 11).unwrap()
    );
}

#[test]
fn older_or_same_second_is_refused() {
    let mut calendar = Calendar::open(MemoryStore::new()).unwrap();
    calendar.append(T0, Some(&round_root(0))).unwrap();
    let before = calendar.root_at(T0).unwrap();
    for t in [T0, T0 - 1, 0] {
        assert!(
            matches!(calendar.append(t, None), Err(Error::History { .. })),
            "{t}"
        );
    }
    assert_eq!(calendar.root_at(T0).unwrap(), before);
    assert!(matches!(
        calendar.chain(T0, T0 + 1),
        Err(Error::NotInCalendar { .. })
    ));
}

#[test]
fn the_store_refuses_a_rewrite_even_without_the_calendar() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path()).unwrap();
    store
        .append_leaf(&LeafCommit {
            time: 10,
            nodes: vec![],
        })
        .unwrap();
    let again = store.append_leaf(&LeafCommit {
        time: 9,
        nodes: vec![],
    });
    assert!(matches!(
        again,
        Err(StoreError::Rewrite { time: 9, size: 11 })
    ));
}

#[test]
fn rocksdb_calendar_survives_reopen_without_gap_or_fork() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Calendar::open(MemoryStore::new()).unwrap();
    let (first, second) = ROUNDS.split_at(3);
    {
        let mut calendar = Calendar::open(RocksStore::open(dir.path()).unwrap()).unwrap();
        for &t in first {
            calendar.append(t, Some(&round_root(t))).unwrap();
            reference.append(t, Some(&round_root(t))).unwrap();
        }
        calendar.publish(T0 + 2).unwrap();
    }
    let mut calendar = Calendar::open(RocksStore::open(dir.path()).unwrap()).unwrap();
    assert_eq!(calendar.size(), T0 + 3);
    assert_eq!(
        calendar.root_at(T0 + 2).unwrap(),
        reference.root_at(T0 + 2).unwrap()
    );
    assert!(matches!(
        calendar.append(T0 + 2, None),
        Err(Error::History { .. })
    ));
    for &t in second {
        let root = calendar.append(t, Some(&round_root(t))).unwrap();
        assert_eq!(root, reference.append(t, Some(&round_root(t))).unwrap());
    }
    check_chains(&calendar);
    let published = calendar.publications().unwrap();
    assert_eq!(
        published,
        vec![PublicationData::new(
            T0 + 2,
            reference.root_at(T0 + 2).unwrap()
        )]
    );
    // Publishing the same second again with the same root is fine; the record never changes.
    calendar.publish(T0 + 2).unwrap();
    let other = round_root(99);
    assert!(matches!(
        calendar.store().put_publication(T0 + 2, &other),
        Err(StoreError::PublicationConflict { .. })
    ));
}
