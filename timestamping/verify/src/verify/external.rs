//! The policies that go beyond the signature: calendar, key-based, publications file and user
//! publication. Each runs after the internal policy succeeded.
//!
//! Rules as in goksi `signature/verify_policy.go` (`CalendarBasedVerificationPolicy`,
//! `KeyBasedVerificationPolicy`, `PublicationsFileBasedVerificationPolicy`,
//! `UserProvidedPublicationBasedVerificationPolicy`). Where goksi would call the extender, the
//! chain comes from [`Context::extended_calendar`]; without it the result is NA (GEN-02).

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::x509::X509;

use crate::chain;
use crate::imprint::{AlgorithmStatus, Imprint};
use crate::publication::PublicationData;
use crate::signature::{CalendarAuthRecord, CalendarChain, Side, Signature};
use crate::verify::internal::aggregation_output;
use crate::verify::{Code, Context, Step, Verdict, fail, na};

pub(super) fn calendar(signature: &Signature, context: &Context<'_>) -> Step {
    const EXTEND: &str = "ExtendSignatureCalendarChainInputHashToSamePubTime";
    let extended = context
        .extended_calendar
        .ok_or_else(|| na(EXTEND, "needs the extender: no calendar chain given"))?;
    if let Some(own) = signature.calendar_chain() {
        if signature.publication_record().is_some() {
            let own_root = root(own)?;
            check(
                own_root == root(extended)?,
                "ExtendedSignatureCalendarChainRootHashVerificationRule",
                Code::Cal01,
            )?;
        } else {
            check(
                chain::right_links_match(own, extended),
                "ExtendedSignatureCalendarHashChainRightLinksMatchesVerificationRule",
                Code::Cal04,
            )?;
        }
    }
    check(
        extended.input_hash == output(signature)?,
        "ExtendedSignatureCalendarChainInputHashVerificationRule",
        Code::Cal02,
    )?;
    let first = signature.first_chain().map(|c| c.aggregation_time);
    check(
        Some(extended.aggregation_time()) == first,
        "ExtendedSignatureCalendarChainAggregationTimeVerificationRule",
        Code::Cal03,
    )?;
    Ok("ExtendedSignatureCalendarChainAggregationTimeVerificationRule")
}

pub(super) fn key_based(signature: &Signature, context: &Context<'_>) -> Step {
    let calendar = signature
        .calendar_chain()
        .ok_or_else(|| na("CalendarHashChainExistenceRule", "no calendar chain"))?;
    not_deprecated(calendar, "CalendarHashChainAlgorithmDeprecatedRule")?;
    let record = signature.calendar_auth_record().ok_or_else(|| {
        na(
            "CalendarAuthenticationRecordExistenceRule",
            "no calendar authentication record",
        )
    })?;
    let id = &record.signature.certificate_id;
    let from_file = context
        .publications_file
        .and_then(|file| file.certificate(id));
    let given = context.trusted_certificates.iter().find(|c| c.id == *id);
    let certificate = match (from_file.or(given), context.publications_file) {
        (Some(certificate), _) => certificate,
        (None, None) if context.trusted_certificates.is_empty() => {
            return Err(na("CertificateExistenceRule", "no publications file"));
        }
        (None, _) => {
            return Err(na(
                "CertificateExistenceRule",
                "certificate id not in the publications file or the trusted certificates",
            ));
        }
    };
    let certificate = X509::from_der(&certificate.certificate).map_err(|e| {
        na(
            "CertificateValidityRule",
            format!("certificate does not parse: {e}"),
        )
    })?;
    let valid = valid_at(&certificate, calendar.aggregation_time())?;
    check(valid, "CertificateValidityRule", Code::Key03)?;
    check(
        signature_verifies(record, &certificate),
        "CalendarAuthenticationRecordSignatureVerificationRule",
        Code::Key02,
    )?;
    Ok("CalendarAuthenticationRecordSignatureVerificationRule")
}

pub(super) fn publications_file(signature: &Signature, context: &Context<'_>) -> Step {
    let file = context.publications_file.ok_or_else(|| {
        na(
            "PublicationsFileContainsSignaturePublicationVerificationRule",
            "no publications file",
        )
    })?;
    if let (Some(record), Some(calendar)) =
        (signature.publication_record(), signature.calendar_chain())
        && let Some(published) = file.publication_at(record.publication.time)
    {
        let same = published.publication.time == record.publication.time
            && published.publication.hash == record.publication.hash;
        check(
            same,
            "PublicationsFileSignaturePublicationHashVerificationRule",
            Code::Pub05,
        )?;
        not_deprecated(
            calendar,
            "SignatureCalendarHashAlgorithmDeprecatedAtPubTimeVerificationRule",
        )?;
        return Ok("SignatureCalendarHashAlgorithmDeprecatedAtPubTimeVerificationRule");
    }
    let suitable = file
        .publication_after(signature.signing_time())
        .ok_or_else(|| {
            na(
                "PublicationsFileContainsSuitablePublicationVerificationRule",
                "no publication after the signing time",
            )
        })?;
    extended_against(signature, context, &suitable.publication, false)
}

pub(super) fn user_publication(signature: &Signature, context: &Context<'_>) -> Step {
    let publication = context.user_publication.ok_or_else(|| {
        na(
            "UserProvidedPublicationExistenceRule",
            "no user publication",
        )
    })?;
    if let (Some(record), Some(calendar)) =
        (signature.publication_record(), signature.calendar_chain())
        && record.publication.time == publication.time
    {
        check(
            record.publication.hash == publication.hash,
            "UserProvidedPublicationHashVerificationRule",
            Code::Pub04,
        )?;
        not_deprecated(
            calendar,
            "SignatureCalendarHashAlgorithmDeprecatedAtPubTimeVerificationRule",
        )?;
        return Ok("SignatureCalendarHashAlgorithmDeprecatedAtPubTimeVerificationRule");
    }
    if signature.signing_time() > publication.time {
        return Err(na(
            "UserProvidedPublicationCreationTimeVerificationRule",
            "signature is newer than the publication",
        ));
    }
    extended_against(signature, context, publication, true)
}

/// Extends to `publication` with the context's calendar chain and checks the chain against it
/// (PUB-01, PUB-02, PUB-03).
fn extended_against(
    signature: &Signature,
    context: &Context<'_>,
    publication: &PublicationData,
    check_shape: bool,
) -> Step {
    if !context.extending_permitted {
        return Err(na("ExtendingPermittedRule", "extending not permitted"));
    }
    let extended = context.extended_calendar.ok_or_else(|| {
        na(
            "ExtendToPublication",
            "needs the extender: no calendar chain given",
        )
    })?;
    not_deprecated(
        extended,
        "ExtendedCalendarHashAlgorithmDeprecatedAtPubTimeVerificationRule",
    )?;
    check(
        root(extended)? == publication.hash,
        "PublicationHashMatchesExtenderResponseVerificationRule",
        Code::Pub01,
    )?;
    const TIME: &str = "PublicationTimeMatchesExtenderResponseVerificationRule";
    check(
        extended.publication_time == publication.time,
        TIME,
        Code::Pub02,
    )?;
    if check_shape {
        let computed = chain::calendar_aggregation_time(extended.publication_time, &extended.links);
        let first = signature.first_chain().map(|c| c.aggregation_time);
        check(computed.is_some() && computed == first, TIME, Code::Pub02)?;
    }
    check(
        extended.input_hash == output(signature)?,
        "ExtendedSignatureInputHashVerificationRule",
        Code::Pub03,
    )?;
    Ok("ExtendedSignatureInputHashVerificationRule")
}

fn check(ok: bool, rule: &'static str, code: Code) -> Result<(), Verdict> {
    if ok { Ok(()) } else { Err(fail(rule, code)) }
}

fn root(calendar: &CalendarChain) -> Result<Imprint, Verdict> {
    chain::calendar_root(calendar).map_err(|e| na("CalendarHashChainRootRule", e.to_string()))
}

fn output(signature: &Signature) -> Result<Imprint, Verdict> {
    aggregation_output(signature)
        .map_err(|(rule, _)| na(rule, "aggregation chains cannot be computed"))
}

/// NA (GEN-02) if a left link's hash function was deprecated at the chain's publication time:
/// the publication may then postdate collisions and proves nothing.
fn not_deprecated(calendar: &CalendarChain, rule: &'static str) -> Result<(), Verdict> {
    let at = i64::try_from(calendar.publication_time).unwrap_or(i64::MAX);
    let deprecated = calendar.links.iter().any(|l| {
        l.side == Side::Left && l.sibling.algorithm().status_at(at) != AlgorithmStatus::Normal
    });
    if deprecated {
        return Err(na(
            rule,
            "calendar chain uses a hash function deprecated at its publication time",
        ));
    }
    Ok(())
}

/// Whether `certificate` was valid at `at`, strictly inside its validity period.
fn valid_at(certificate: &X509, at: u64) -> Result<bool, Verdict> {
    let rule = "CertificateValidityRule";
    #[allow(clippy::useless_conversion)] // time_t is i64 on most targets, not all.
    let at = i64::try_from(at)
        .ok()
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| na(rule, "time out of range"))?;
    let at = Asn1Time::from_unix(at).map_err(|e| na(rule, e.to_string()))?;
    Ok(certificate.not_before() < at && at < certificate.not_after())
}

/// Whether the record's PKI signature verifies with the certificate's key under the record's
/// signature type. Unknown types do not verify.
fn signature_verifies(record: &CalendarAuthRecord, certificate: &X509) -> bool {
    let digest = match record.signature.signature_type.as_bytes() {
        b"1.2.840.113549.1.1.5" | b"1.2.840.10045.4.1" => MessageDigest::sha1(),
        b"1.2.840.113549.1.1.14" | b"1.2.840.10045.4.3.1" => MessageDigest::sha224(),
        b"1.2.840.113549.1.1.11" | b"1.2.840.10045.4.3.2" => MessageDigest::sha256(),
        b"1.2.840.113549.1.1.12" | b"1.2.840.10045.4.3.3" => MessageDigest::sha384(),
        b"1.2.840.113549.1.1.13" | b"1.2.840.10045.4.3.4" => MessageDigest::sha512(),
        _ => return false,
    };
    let Ok(key) = certificate.public_key() else {
        return false;
    };
    let Ok(mut verifier) = Verifier::new(digest, &key) else {
        return false;
    };
    verifier
        .verify_oneshot(&record.signature.signature_value, record.signed_bytes())
        .unwrap_or(false)
}
