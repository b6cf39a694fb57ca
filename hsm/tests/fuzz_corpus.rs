//! Replays the committed fuzz corpora (`fuzz/corpus/TARGET/*`) through the functions the fuzz
//! targets call (`backbone_hsm::fuzzing`): every seed, and every input a fuzzer found
//! interesting, must still be handled without a panic. `ops/fuzz.sh` grows the corpora
//! (docs/fuzzing.md); this runs them in the ordinary test suite.

#[path = "common/corpus.rs"]
mod corpus;

use backbone_hsm::fuzzing;

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    let dir = env!("CARGO_MANIFEST_DIR");
    corpus::replay(dir, "batch_signature", fuzzing::batch_signature);
    corpus::replay(dir, "csr", fuzzing::csr);
    corpus::replay(dir, "key_file", fuzzing::key_file);
    corpus::replay(dir, "public_key", fuzzing::public_key);
}
