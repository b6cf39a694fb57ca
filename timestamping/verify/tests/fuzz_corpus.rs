//! Replays the committed fuzz corpora (`fuzz/corpus/TARGET/*`) through the functions the fuzz
//! targets call: every input a fuzzer found interesting, and every seed, must still be handled
//! without a panic. `ops/fuzz.sh` grows the corpora (docs/fuzzing.md); this runs them in the
//! ordinary test suite, so that a regression shows without a fuzzer.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use backbone_timestamping_verify::fuzzing;

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
    let targets: [(&str, fn(&[u8])); 5] = [
        ("tlv", fuzzing::tlv),
        ("signature", fuzzing::signature),
        ("publications_file", fuzzing::publications_file),
        ("pdu", fuzzing::pdu),
        ("publication_string", fuzzing::publication_string),
    ];
    for (target, run) in targets {
        assert!(replay(target, run) > 0, "no corpus for {target}");
    }
}
