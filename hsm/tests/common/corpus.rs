//! The fuzz corpus replay the crates with a committed corpus share (`tests/fuzz_corpus.rs`).
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

/// Runs every file of `crate_dir/fuzz/corpus/target` through `run`, which must not panic; the
/// number of inputs, which must not be zero.
pub fn replay(crate_dir: &str, target: &str, run: fn(&[u8])) {
    let dir = Path::new(crate_dir).join("fuzz/corpus").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target} panics on {}", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus for {target} in {}", dir.display());
}
