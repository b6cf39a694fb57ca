//! `backbone hsm selftest`: what an operator runs to check a key store end to end. Every step is
//! printed with its timing; the first failure stops the test with exit code 1.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backbone_hsm::batch::{BatchConfig, BatchSignature, BatchSigner};
use backbone_hsm::{Error as HsmError, KeyStore, KeyType, PublicKey, SignatureAlgorithm, Signer};
use clap::Args;

use crate::Error;

/// Flags of `backbone hsm selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Test this existing key instead of the selftest keys. Default: one key per key type,
    /// labelled selftest-TYPE, generated on first use and reused afterwards.
    #[arg(long)]
    pub label: Option<String>,
    /// Key types to test, comma-separated. Default: all (ec-p256, ed25519, rsa2048, rsa3072);
    /// types the store cannot generate are reported as skipped.
    #[arg(long = "key-type", value_delimiter = ',', conflicts_with = "label")]
    pub key_types: Vec<KeyType>,
    /// Signatures timed per algorithm; more gives steadier figures.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub signatures: u32,
    /// Messages in the concurrent burst sent to the batch signer per key; larger bursts make
    /// larger batches.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub burst: u32,
}

/// Runs the selftest against an open store.
///
/// # Errors
///
/// [`Error::Check`] or [`Error::Hsm`] naming the step that failed.
pub fn run(store: Arc<dyn KeyStore>, args: &SelftestArgs) -> Result<(), Error> {
    println!("selftest of {}", store.describe());
    let mut test = Selftest {
        step: 0,
        algorithms: 0,
        skipped: Vec::new(),
    };
    let keys = test.keys(store.as_ref(), args)?;
    for (label, key_type) in &keys {
        for algorithm in SignatureAlgorithm::ALL
            .into_iter()
            .filter(|a| key_type.supports(*a))
        {
            test.algorithm(store.as_ref(), label, algorithm, args.signatures)?;
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Check(format!("cannot start the async runtime: {e}")))?;
    for (label, _) in &keys {
        let signer = store
            .signer(label, None)
            .map_err(Error::hsm(format!("cannot use key '{label}'")))?;
        runtime.block_on(test.burst(signer, args.burst))?;
    }
    for skipped in &test.skipped {
        println!("skipped: {skipped}");
    }
    if keys.is_empty() {
        return Err(Error::Check(
            "the store could not generate a key of any type asked for".to_owned(),
        ));
    }
    println!(
        "selftest passed: {} key(s), {} algorithm(s), {} skipped",
        keys.len(),
        test.algorithms,
        test.skipped.len()
    );
    Ok(())
}

struct Selftest {
    step: u32,
    algorithms: u32,
    skipped: Vec<String>,
}

/// The message every selftest signature covers; never personal data.
const MESSAGE: &[u8] = b"backbone hsm selftest: referral 0001 from hospital to family doctor";

impl Selftest {
    fn say(&mut self, what: impl std::fmt::Display) {
        self.step += 1;
        println!("[{}] {what}", self.step);
    }

    /// The keys to test: the given label, or one selftest key per type (generated if missing).
    fn keys(
        &mut self,
        store: &dyn KeyStore,
        args: &SelftestArgs,
    ) -> Result<Vec<(String, KeyType)>, Error> {
        if let Some(label) = &args.label {
            let (public_key, took) = timed(|| store.public_key(label));
            let public_key =
                public_key.map_err(Error::hsm(format!("cannot read key '{label}'")))?;
            self.say(format_args!(
                "key '{label}' ({}) found in {}, fingerprint {}",
                public_key.key_type(),
                ms(took),
                public_key.fingerprint()
            ));
            return Ok(vec![(label.clone(), public_key.key_type())]);
        }
        let types = if args.key_types.is_empty() {
            KeyType::ALL.to_vec()
        } else {
            args.key_types.clone()
        };
        let mut keys = Vec::new();
        for key_type in types {
            let label = format!("selftest-{key_type}");
            if let Ok(public_key) = store.public_key(&label) {
                self.say(format_args!(
                    "key '{label}' ({key_type}) reused, fingerprint {}",
                    public_key.fingerprint()
                ));
                keys.push((label, key_type));
                continue;
            }
            match timed(|| store.generate(&label, key_type)) {
                (Ok(public_key), took) => {
                    self.say(format_args!(
                        "key '{label}' ({key_type}) generated in {}, fingerprint {}",
                        ms(took),
                        public_key.fingerprint()
                    ));
                    keys.push((label, key_type));
                }
                (Err(HsmError::MechanismNotSupported { mechanism, .. }), _) => {
                    self.skipped.push(format!(
                        "{key_type} keys: the store does not support {mechanism}"
                    ));
                }
                (Err(e), _) => {
                    return Err(Error::hsm(format!(
                        "cannot generate {key_type} key '{label}'"
                    ))(e));
                }
            }
        }
        Ok(keys)
    }

    /// One algorithm on one key: sign, verify, refuse an altered message, then time signatures.
    fn algorithm(
        &mut self,
        store: &dyn KeyStore,
        label: &str,
        algorithm: SignatureAlgorithm,
        count: u32,
    ) -> Result<(), Error> {
        let signer = match store.signer(label, Some(algorithm)) {
            Ok(signer) => signer,
            Err(HsmError::MechanismNotSupported { mechanism, .. }) => {
                self.skipped.push(format!(
                    "{algorithm} with '{label}': the store does not support {mechanism}"
                ));
                return Ok(());
            }
            Err(e) => {
                return Err(Error::hsm(format!(
                    "cannot use key '{label}' with {algorithm}"
                ))(e));
            }
        };
        let public_key = signer.public_key().clone();
        let (signature, sign_took) = timed(|| signer.sign(MESSAGE));
        let signature = signature.map_err(Error::hsm(format!(
            "signing with '{label}' ({algorithm}) failed"
        )))?;
        let (verified, verify_took) = timed(|| public_key.verify(algorithm, MESSAGE, &signature));
        verified.map_err(Error::hsm(format!(
            "the signature of '{label}' ({algorithm}) does not verify"
        )))?;
        if public_key
            .verify(algorithm, b"backbone hsm selftest: altered", &signature)
            .is_ok()
        {
            return Err(Error::Check(format!(
                "a signature of '{label}' ({algorithm}) verified over an altered message"
            )));
        }
        self.say(format_args!(
            "{algorithm} with '{label}': signed in {}, verified in {}, altered message refused",
            ms(sign_took),
            ms(verify_took)
        ));
        let started = Instant::now();
        for _ in 0..count {
            signer.sign(MESSAGE).map_err(Error::hsm(format!(
                "signing with '{label}' ({algorithm}) failed"
            )))?;
        }
        let took = started.elapsed();
        self.say(format_args!(
            "{algorithm} with '{label}': {count} signatures in {} ({:.0} per second, {} each)",
            ms(took),
            f64::from(count) / took.as_secs_f64().max(1e-9),
            ms(took / count)
        ));
        self.algorithms += 1;
        Ok(())
    }

    /// A concurrent burst through a batch signer; every proof must verify, and no other message.
    async fn burst(&mut self, signer: Arc<dyn Signer>, count: u32) -> Result<(), Error> {
        let label = signer.label().to_owned();
        let public_key: PublicKey = signer.public_key().clone();
        let batch = BatchSigner::new(signer, BatchConfig::default()).map_err(Error::hsm(
            format!("cannot start a batch signer for '{label}'"),
        ))?;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..count {
            let batch = batch.clone();
            tasks.spawn(async move { (i, batch.sign(&burst_message(i)).await) });
        }
        let mut proofs: Vec<(u32, BatchSignature)> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, proof) =
                joined.map_err(|e| Error::Check(format!("a batch signing task failed: {e}")))?;
            proofs.push((
                i,
                proof.map_err(Error::hsm(format!("batch signing with '{label}' failed")))?,
            ));
        }
        let signed = started.elapsed();
        batch.shutdown();
        let roots: BTreeSet<_> = proofs.iter().map(|(_, p)| *p.root()).collect();
        let largest = proofs.iter().map(|(_, p)| p.tree_size()).max().unwrap_or(0);
        let started = Instant::now();
        for (i, proof) in &proofs {
            let decoded = BatchSignature::from_bytes(&proof.to_bytes()).map_err(Error::hsm(
                format!("batch proof {i} of '{label}' does not decode"),
            ))?;
            decoded
                .verify(&burst_message(*i), &public_key)
                .map_err(Error::hsm(format!(
                    "batch proof {i} of '{label}' does not verify"
                )))?;
            if decoded
                .verify(&burst_message(i.wrapping_add(count)), &public_key)
                .is_ok()
            {
                return Err(Error::Check(format!(
                    "batch proof {i} of '{label}' verified another message"
                )));
            }
        }
        let verified = started.elapsed();
        self.say(format_args!(
            "batch signing with '{label}': {count} concurrent messages signed in {} as {} batch(es) (largest {largest}); \
             {count} proofs encoded, decoded and verified in {}",
            ms(signed),
            roots.len(),
            ms(verified)
        ));
        Ok(())
    }
}

fn burst_message(i: u32) -> Vec<u8> {
    format!("backbone hsm selftest: burst message {i}").into_bytes()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

/// A duration in milliseconds with three decimals, as every selftest line prints it.
fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}
