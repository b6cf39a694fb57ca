//! Every decoder of untrusted input, fed seeds and thousands of near misses (truncations, bit
//! flips, pseudo-random rewrites) in every test run: no panic, and descriptors stay canonical.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use backbone_gateway::fuzzing;
use backbone_gateway::signed::{RequestDescriptor, ResponseDescriptor, sha512};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn near_misses(seed: &[u8], rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..seed.len()).map(|n| seed[..n].to_vec()).collect();
    for bit in 0..seed.len() * 8 {
        let mut v = seed.to_vec();
        v[bit / 8] ^= 1 << (bit % 8);
        out.push(v);
    }
    for _ in 0..1000 {
        let mut v = seed.to_vec();
        let at = (rng.next() as usize) % v.len().max(1);
        match rng.next() % 3 {
            0 if !v.is_empty() => v[at] = rng.next() as u8,
            1 => v.insert(at.min(v.len()), rng.next() as u8),
            _ if !v.is_empty() => {
                v.remove(at);
            }
            _ => {}
        }
        out.push(v);
    }
    out
}

#[test]
fn r1_requests() {
    let seeds: [&[u8]; 3] = [
        b"/r1/INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE/v1/bar/zyggy?quu=1\nX-Road-Client: INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1\nX-Road-Id: fa2e18a5",
        b"/r1/EE/GOV/70000001/ehr/referrals/v1/%2e%2e\nX-Road-Client: EE/GOV/70000001/ehr\nX-Backbone-Data-Subject: EE38001085718\nX-Backbone-Purpose-Of-Use: ETREAT\nConnection: close, x-a",
        b"/r1/EE/GOV/7000%2D0001/ehr/x?a=%FF\nX-Road-Client: EE/GOV/1\nX-Road-Client: EE/GOV/2",
    ];
    let mut rng = Rng(0x5eed);
    for seed in seeds {
        for input in near_misses(seed, &mut rng) {
            fuzzing::r1_request(&input);
        }
    }
}

#[test]
fn signed_messages() {
    let request = RequestDescriptor {
        message_id: "id-1".into(),
        client: "EE/GOV/70000001/ehr".into(),
        service: "EE/COM/10000001/pharmacy/prescriptions".into(),
        method: "POST".into(),
        path: "/v1/dispense".into(),
        query: None,
        user_id: Some("EE38001085718".into()),
        issue: Some("MT324223MSD".into()),
        represented_party: None,
        data_subject: Some("EE49002124277".into()),
        purpose_of_use: Some("TREAT".into()),
        created_at_ms: 1,
        body_digest: sha512(b"{}"),
        headers: vec![
            ("content-type".into(), "application/fhir+json".into()),
            ("traceparent".into(), "00-ab-cd-01".into()),
        ],
    };
    let response = ResponseDescriptor {
        message_id: "id-1".into(),
        request_hash: request.request_hash().unwrap(),
        status: 201,
        created_at_ms: 2,
        body_digest: sha512(b"ok"),
        headers: vec![],
    };
    let mut rng = Rng(0xfeed);
    for seed in [request.encode().unwrap(), response.encode().unwrap()] {
        for input in near_misses(&seed, &mut rng) {
            fuzzing::signed_message(&input);
        }
    }
    // The same descriptors in exchange envelopes, with a signature and a body.
    for seed in [
        backbone_gateway::wire::encode(&request.encode().unwrap(), &[1; 300], b"{}").unwrap(),
        backbone_gateway::wire::encode(&response.encode().unwrap(), b"", b"ok").unwrap(),
        b"offset=10&limit=20".to_vec(),
    ] {
        for input in near_misses(&seed, &mut rng) {
            fuzzing::envelope(&input);
        }
    }
}

#[test]
fn audit_archives() {
    use backbone_gateway::log::archive::Archive;
    use backbone_gateway::log::batch::{Batch, RecordProof};
    use backbone_gateway::log::record::{Kind, Record, Side, SignerCertificate, record_hash};
    use backbone_gateway::log::verify::AuditRecord;
    use sha2::{Digest, Sha256};

    const CERTIFICATE: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x00];

    let request = Record {
        seq: 7,
        prev_hash: [3; 32],
        side: Side::Client,
        kind: Kind::Request,
        emergency: false,
        logged_at_ms: 1_795_687_200_000,
        message_id: "id-1".into(),
        client: "EE/COM/10000001/dispensing".into(),
        service: "EE/GOV/70000001/ehr/patients".into(),
        user_id: None,
        data_subject: Some("EE38001085718".into()),
        purpose_of_use: Some("TREAT".into()),
        descriptor: b"BBRQ\x01".to_vec(),
        signature: vec![1; 40],
        signer_certificate: SignerCertificate::Sha256(Sha256::digest(CERTIFICATE).into()),
        body_len: 0,
        body_sha256: [0; 32],
    };
    let first = request.encode().unwrap();
    let response = Record {
        seq: 8,
        prev_hash: record_hash(&first),
        kind: Kind::Response,
        descriptor: b"BBRS\x01".to_vec(),
        ..request.clone()
    };
    let second = response.encode().unwrap();
    let proof = |leaf_index| {
        Some(RecordProof {
            batch: 6,
            leaf_index,
            batch_count: 3,
            path: vec![[9; 32]; 2],
        })
    };
    let archive = Archive {
        gateway: "EE/COM/10000001/gw1".into(),
        from_ms: 1_795_687_200_000,
        to_ms: 1_795_687_260_000,
        first_seq: 7,
        end_seq: 9,
        prev_hash: [3; 32],
        last_hash: record_hash(&second),
        exported_at_ms: 1_795_687_300_000,
        certificates: vec![CERTIFICATE.to_vec()],
        batches: vec![Batch {
            first_seq: 6,
            count: 3,
            root: [5; 32],
            stamped_at_ms: 1,
            ksi_signature: vec![0x08, 0x00, 0x00],
        }],
        records: vec![
            AuditRecord {
                encoded: first,
                proof: proof(1),
            },
            AuditRecord {
                encoded: second,
                proof: proof(2),
            },
        ],
    };
    let mut rng = Rng(0xa4c1);
    for seed in [
        archive.encode().unwrap(),
        Archive::default().encode().unwrap(),
    ] {
        for input in near_misses(&seed, &mut rng) {
            fuzzing::audit_archive(&input);
        }
    }
}
