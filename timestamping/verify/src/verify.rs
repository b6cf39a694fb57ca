//! Offline verification of KSI signatures: the KSI verification policies and their result codes.
//!
//! Spec: Guardtime, "KSI Signature Verification" rules and policies, as implemented by
//! guardtime/goksi `signature/verify_rules.go` and `signature/verify_policy.go` (and by
//! guardtime/libksi `src/ksi/policy.c`, `verification_rule.c`).
//!
//! ```text
//!  internal ── aggregation chains, calendar chain and records agree with each other
//!     ├─ calendar          + an extender's calendar chain for the same round      CAL-01..04
//!     ├─ key-based         + the calendar auth record's PKI signature            KEY-02, KEY-03
//!     ├─ publications file + a published root from a trusted publications file    PUB-01..03, 05
//!     └─ user publication  + a publication string the caller trusts               PUB-01..04
//!  default = internal, then publications file, falling back to key-based
//! ```
//!
//! Every policy ends in a [`Verdict`]: OK, NA (inconclusive: something is missing, reported with
//! GEN-02) or FAIL (the signature is wrong, with the code saying how). The verifier does no I/O:
//! the publications file, the user's publication and any extender answer are given in
//! [`Context`], and a rule that would need the live extender without an answer in the context
//! reports NA with GEN-02.
//!
//! ```
//! use backbone_timestamping_verify::Signature;
//! use backbone_timestamping_verify::publication::PublicationData;
//! use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
//!
//! let pack = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/ksi-test-pack");
//! let bytes = std::fs::read(format!("{pack}/valid-signatures/signature-extended.ksig"))?;
//! let signature = Signature::decode(&bytes)?;
//! let publication = PublicationData::from_publication_string(
//!     "AAAAAA-DF6NWU-2ANERL-ZQKP5E-WEEQEF-JT76EI-HLTKXG-FQKRZC-ZJJV4E-LAJNHZ-2WY22Z-C3V2JA",
//! )?;
//! let context = Context { user_publication: Some(&publication), ..Context::default() };
//! let verdict = verify::verify(&signature, Policy::UserPublication, &context);
//! assert_eq!(verdict.outcome, Outcome::Ok, "{verdict}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use crate::imprint::Imprint;
use crate::publication::PublicationData;
use crate::publications_file::{CertificateRecord, TrustedPublicationsFile};
use crate::signature::{CalendarChain, Signature};

mod external;
mod internal;

/// The three outcomes of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The signature is proven correct under the policy.
    Ok,
    /// Not enough information to decide.
    Na,
    /// The signature is proven wrong.
    Fail,
}

/// The KSI verification result codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // Each variant's text is in `Code::message`.
pub enum Code {
    Gen01,
    Gen02,
    Gen03,
    Gen04,
    Int01,
    Int02,
    Int03,
    Int04,
    Int05,
    Int06,
    Int07,
    Int08,
    Int09,
    Int10,
    Int11,
    Int12,
    Int13,
    Int14,
    Int15,
    Int16,
    Int17,
    Pub01,
    Pub02,
    Pub03,
    Pub04,
    Pub05,
    Key01,
    Key02,
    Key03,
    Cal01,
    Cal02,
    Cal03,
    Cal04,
}

/// The verification policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Internal consistency only.
    Internal,
    /// Internal, then against an extender's calendar chain.
    Calendar,
    /// Internal, then the calendar auth record against the publications file's certificates.
    KeyBased,
    /// Internal, then against the publications file's publications.
    PublicationsFile,
    /// Internal, then against a publication the caller supplies.
    UserPublication,
    /// Internal, then publications file, falling back to key-based.
    Default,
}

/// What the verifier may use besides the signature.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The hash of the document the signature should cover.
    pub document_hash: Option<&'a Imprint>,
    /// The level of the document hash in the client's own aggregation tree (0 for a document).
    pub input_level: u8,
    /// A publications file whose signature was checked.
    pub publications_file: Option<&'a TrustedPublicationsFile>,
    /// Certificates the caller trusts directly for the key-based policy (for example the
    /// certificate of a calendar run by the caller's own organisation), looked up by id after the
    /// publications file's.
    pub trusted_certificates: &'a [CertificateRecord],
    /// A publication the caller trusts (from a newspaper, a publication string).
    pub user_publication: Option<&'a PublicationData>,
    /// Whether the verifier may use an extender's answer.
    pub extending_permitted: bool,
    /// The extender's calendar chain for the signature's round, to the publication the policy
    /// extends to: the head (calendar policy, no calendar chain), the signature's own
    /// publication time (calendar policy), or the chosen publication (publication policies).
    pub extended_calendar: Option<&'a CalendarChain>,
}

/// The result of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// OK, NA or FAIL.
    pub outcome: Outcome,
    /// The KSI code; `None` only for OK.
    pub code: Option<Code>,
    /// The policy that produced the verdict (the fallback's, for the default policy).
    pub policy: Policy,
    /// The rule that decided.
    pub rule: &'static str,
    /// More detail, for inconclusive results.
    pub detail: Option<String>,
}

/// Verifies `signature` under `policy` with what `context` provides.
pub fn verify(signature: &Signature, policy: Policy, context: &Context<'_>) -> Verdict {
    let run = |p: Policy, f: fn(&Signature, &Context<'_>) -> Step| match f(signature, context) {
        Ok(rule) => Verdict {
            outcome: Outcome::Ok,
            code: None,
            policy: p,
            rule,
            detail: None,
        },
        Err(mut verdict) => {
            verdict.policy = p;
            verdict
        }
    };
    let internal = run(Policy::Internal, internal::verify);
    if internal.outcome != Outcome::Ok {
        return Verdict { policy, ..internal };
    }
    match policy {
        Policy::Internal => internal,
        Policy::Calendar => run(policy, external::calendar),
        Policy::KeyBased => run(policy, external::key_based),
        Policy::PublicationsFile => run(policy, external::publications_file),
        Policy::UserPublication => run(policy, external::user_publication),
        Policy::Default => {
            let by_file = run(Policy::PublicationsFile, external::publications_file);
            if by_file.outcome == Outcome::Ok {
                return by_file;
            }
            run(Policy::KeyBased, external::key_based)
        }
    }
}

/// A policy run: `Ok(last rule)` or the first non-OK verdict.
pub(crate) type Step = Result<&'static str, Verdict>;

pub(crate) fn fail(rule: &'static str, code: Code) -> Verdict {
    Verdict {
        outcome: Outcome::Fail,
        code: Some(code),
        policy: Policy::Internal,
        rule,
        detail: None,
    }
}

pub(crate) fn na(rule: &'static str, detail: impl Into<String>) -> Verdict {
    Verdict {
        outcome: Outcome::Na,
        code: Some(Code::Gen02),
        policy: Policy::Internal,
        rule,
        detail: Some(detail.into()),
    }
}

// === impl Code ===

impl Code {
    /// The code as KSI writes it, e.g. `INT-05`.
    pub fn as_str(self) -> &'static str {
        self.parts().0
    }

    /// The code's standard message.
    pub fn message(self) -> &'static str {
        self.parts().1
    }

    /// The code for a KSI code string.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    const ALL: [Code; 33] = [
        Code::Gen01,
        Code::Gen02,
        Code::Gen03,
        Code::Gen04,
        Code::Int01,
        Code::Int02,
        Code::Int03,
        Code::Int04,
        Code::Int05,
        Code::Int06,
        Code::Int07,
        Code::Int08,
        Code::Int09,
        Code::Int10,
        Code::Int11,
        Code::Int12,
        Code::Int13,
        Code::Int14,
        Code::Int15,
        Code::Int16,
        Code::Int17,
        Code::Pub01,
        Code::Pub02,
        Code::Pub03,
        Code::Pub04,
        Code::Pub05,
        Code::Key01,
        Code::Key02,
        Code::Key03,
        Code::Cal01,
        Code::Cal02,
        Code::Cal03,
        Code::Cal04,
    ];

    fn parts(self) -> (&'static str, &'static str) {
        match self {
            Code::Gen01 => ("GEN-01", "Wrong document"),
            Code::Gen02 => ("GEN-02", "Verification inconclusive"),
            Code::Gen03 => ("GEN-03", "Input hash level too large"),
            Code::Gen04 => ("GEN-04", "Wrong input hash algorithm"),
            Code::Int01 => ("INT-01", "Inconsistent aggregation hash chains"),
            Code::Int02 => (
                "INT-02",
                "Inconsistent aggregation hash chain aggregation times",
            ),
            Code::Int03 => ("INT-03", "Calendar hash chain input hash mismatch"),
            Code::Int04 => ("INT-04", "Calendar hash chain aggregation time mismatch"),
            Code::Int05 => (
                "INT-05",
                "Calendar hash chain shape inconsistent with aggregation time",
            ),
            Code::Int06 => (
                "INT-06",
                "Calendar hash chain time inconsistent with calendar authentication record time",
            ),
            Code::Int07 => (
                "INT-07",
                "Calendar hash chain time inconsistent with publication time",
            ),
            Code::Int08 => (
                "INT-08",
                "Calendar hash chain root hash is inconsistent with calendar authentication record input hash",
            ),
            Code::Int09 => (
                "INT-09",
                "Calendar hash chain root hash is inconsistent with published hash value",
            ),
            Code::Int10 => ("INT-10", "Aggregation hash chain chain index mismatch"),
            Code::Int11 => (
                "INT-11",
                "The metadata record in the aggregation hash chain may not be trusted",
            ),
            Code::Int12 => ("INT-12", "Inconsistent chain indexes"),
            Code::Int13 => (
                "INT-13",
                "Document hash algorithm deprecated at the time of signing",
            ),
            Code::Int14 => (
                "INT-14",
                "RFC3161 compatibility record composed of hash algorithms that where deprecated at the time of signing",
            ),
            Code::Int15 => (
                "INT-15",
                "Aggregation hash chain uses hash algorithm that was deprecated at the time of signing",
            ),
            Code::Int16 => (
                "INT-16",
                "Calendar hash chain hash algorithm was obsolete at publication time",
            ),
            Code::Int17 => (
                "INT-17",
                "The RFC3161 compatibility record output hash algorithm was deprecated at the time of signing",
            ),
            Code::Pub01 => ("PUB-01", "Extender response calendar root hash mismatch"),
            Code::Pub02 => ("PUB-02", "Extender response inconsistent"),
            Code::Pub03 => ("PUB-03", "Extender response input hash mismatch"),
            Code::Pub04 => (
                "PUB-04",
                "Publication record hash and user provided publication hash mismatch",
            ),
            Code::Pub05 => (
                "PUB-05",
                "Publication record hash and publications file publication hash mismatch",
            ),
            Code::Key01 => ("KEY-01", "Certificate not found"),
            Code::Key02 => ("KEY-02", "PKI signature not verified with certificate"),
            Code::Key03 => (
                "KEY-03",
                "Signing certificate not valid at aggregation time",
            ),
            Code::Cal01 => (
                "CAL-01",
                "Calendar root hash mismatch between signature and calendar database chain",
            ),
            Code::Cal02 => (
                "CAL-02",
                "Aggregation hash chain root hash and calendar database hash chain input hash mismatch",
            ),
            Code::Cal03 => ("CAL-03", "Aggregation time mismatch"),
            Code::Cal04 => ("CAL-04", "Calendar hash chain right links are inconsistent"),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.message())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self.outcome {
            Outcome::Ok => "OK",
            Outcome::Na => "NA",
            Outcome::Fail => "FAIL",
        };
        write!(f, "{outcome}")?;
        if let Some(code) = self.code {
            write!(f, " {code}")?;
        }
        write!(f, " [{:?}: {}]", self.policy, self.rule)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}
