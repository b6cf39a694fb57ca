//! Replays the committed fuzz corpora (`fuzz/corpus/TARGET/*`) through the functions the fuzz
//! targets call (`backbone_timestamping_verify::fuzzing`): every seed, and every input a fuzzer
//! found interesting, must still be handled without a panic. `ops/fuzz.sh` grows the corpora
//! (docs/fuzzing.md); this runs them in the ordinary test suite.

#[path = "../../../hsm/tests/common/corpus.rs"]
mod corpus;

use backbone_timestamping_verify::fuzzing;

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    let dir = env!("CARGO_MANIFEST_DIR");
    corpus::replay(dir, "tlv", fuzzing::tlv);
    corpus::replay(dir, "signature", fuzzing::signature);
    corpus::replay(dir, "publications_file", fuzzing::publications_file);
    corpus::replay(dir, "pdu", fuzzing::pdu);
    corpus::replay(dir, "publication_string", fuzzing::publication_string);
}
