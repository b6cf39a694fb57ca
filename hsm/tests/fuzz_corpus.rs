//! Replays the committed fuzz corpora (`fuzz/corpus/TARGET/*`) through the functions the fuzz
//! targets call (`backbone_hsm::fuzzing`): every seed, and every input a fuzzer found
//! interesting, must still be handled without a panic. `ops/fuzz.sh` grows the corpora
//! (docs/fuzzing.md); this runs them in the ordinary test suite.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use backbone_hsm::fuzzing;

/// Runs `target`'s corpus through `run`; the number of inputs.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target} panics on {}", path.display());
        inputs += 1;
    }
    inputs
}

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    let targets: [(&str, fn(&[u8])); 4] = [
        ("batch_signature", fuzzing::batch_signature),
        ("csr", fuzzing::csr),
        ("key_file", fuzzing::key_file),
        ("public_key", fuzzing::public_key),
    ];
    for (target, run) in targets {
        assert!(replay(target, run) > 0, "no corpus for {target}");
    }
}
