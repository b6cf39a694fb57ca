//! The internal policy: the signature's parts agree with each other and with the document.
//!
//! Rules in goksi's order (`signature/verify_policy.go`, `InternalVerificationPolicy`): document
//! (GEN-04, GEN-01), input level (GEN-03), algorithms at signing time (INT-13, INT-14, INT-17),
//! chain indexes (INT-12), metadata (INT-11), aggregation algorithms (INT-15), chain hashes
//! (INT-01), times (INT-02), index shapes (INT-10), then the calendar chain (INT-03, INT-04,
//! INT-05, INT-16) and its record (INT-07, INT-09 or INT-06, INT-08).

use crate::chain;
use crate::imprint::{AlgorithmStatus, HashAlgorithm, Imprint};
use crate::signature::{AggregationChain, CalendarChain, Sibling, Side, Signature};
use crate::tlv::Flags;
use crate::verify::{Code, Context, Step, Verdict, fail, na};

pub(super) fn verify(signature: &Signature, context: &Context<'_>) -> Step {
    document(signature, context)?;
    algorithms(signature)?;
    chain_indexes(signature)?;
    metadata(signature)?;
    let output = aggregation_output(signature).map_err(|(rule, v)| match v {
        Some(code) => fail(rule, code),
        None => na(rule, "aggregation chains cannot be computed"),
    })?;
    times(signature)?;
    shapes(signature)?;
    let Some(calendar) = signature.calendar_chain() else {
        return Ok("CalendarHashChainPresenceRule");
    };
    calendar_chain(signature, calendar, &output)?;
    let root = chain::calendar_root(calendar)
        .map_err(|e| na("CalendarHashChainRootRule", e.to_string()))?;
    if let Some(record) = signature.publication_record() {
        check(
            record.publication.time == calendar.publication_time,
            "PublicationRecordPublicationTimeVerificationRule",
            Code::Int07,
        )?;
        check(
            record.publication.hash == root,
            "PublicationRecordPublicationHashVerificationRule",
            Code::Int09,
        )?;
        return Ok("PublicationRecordPublicationHashVerificationRule");
    }
    if let Some(record) = signature.calendar_auth_record() {
        check(
            record.publication.time == calendar.publication_time,
            "CalendarAuthenticationRecordAggregationTimeVerificationRule",
            Code::Int06,
        )?;
        check(
            record.publication.hash == root,
            "CalendarAuthenticationRecordAggregationHashVerificationRule",
            Code::Int08,
        )?;
        return Ok("CalendarAuthenticationRecordAggregationHashVerificationRule");
    }
    Ok("CalendarAuthRecordPresenceRule")
}

/// The hash the aggregation chains end in: the calendar chain's expected input.
///
/// # Errors
///
/// `(rule, Some(INT-01))` if a chain's input is not the previous output, `(rule, None)` if a
/// chain cannot be computed.
pub(super) fn aggregation_output(
    signature: &Signature,
) -> Result<Imprint, (&'static str, Option<Code>)> {
    const RULE: &str = "AggregationHashChainConsistencyVerificationRule";
    let mut previous: Option<Imprint> = None;
    let mut level = 0u8;
    for (i, chain) in signature.aggregation_chains().iter().enumerate() {
        if i == 0
            && let Some(record) = signature.rfc3161()
        {
            previous = Some(
                record
                    .output_hash(chain.input_hash.algorithm())
                    .map_err(|_| (RULE, None))?,
            );
        }
        if previous.as_ref().is_some_and(|p| *p != chain.input_hash) {
            return Err((RULE, Some(Code::Int01)));
        }
        let (hash, end) =
            chain::aggregate(chain, &chain.input_hash, level).map_err(|_| (RULE, None))?;
        previous = Some(hash);
        level = end;
    }
    previous.ok_or((RULE, None))
}

fn check(ok: bool, rule: &'static str, code: Code) -> Result<(), Verdict> {
    if ok { Ok(()) } else { Err(fail(rule, code)) }
}

fn trusted(algorithm: HashAlgorithm, at: u64) -> bool {
    algorithm.status_at(i64::try_from(at).unwrap_or(i64::MAX)) == AlgorithmStatus::Normal
}

fn document(signature: &Signature, context: &Context<'_>) -> Result<(), Verdict> {
    let first = signature
        .first_chain()
        .ok_or_else(|| na("InputHashLevelVerificationRule", "no aggregation chain"))?;
    if let (Some(expected), Some(signed)) = (context.document_hash, signature.document_hash()) {
        check(
            expected.algorithm() == signed.algorithm(),
            "DocumentHashAlgorithmVerificationRule",
            Code::Gen04,
        )?;
        check(
            expected.digest() == signed.digest(),
            "DocumentHashVerificationRule",
            Code::Gen01,
        )?;
    }
    let allowed = match (signature.rfc3161(), first.links.first()) {
        (Some(_), _) => 0,
        (None, Some(link)) => u8::try_from(link.level_correction).map_err(|_| {
            na(
                "InputHashLevelVerificationRule",
                "level correction above 255",
            )
        })?,
        (None, None) => 0,
    };
    check(
        context.input_level <= allowed,
        "InputHashLevelVerificationRule",
        Code::Gen03,
    )
}

fn algorithms(signature: &Signature) -> Result<(), Verdict> {
    if let Some(document) = signature.document_hash() {
        check(
            trusted(document.algorithm(), signature.signing_time()),
            "InputHashAlgorithmVerificationRule",
            Code::Int13,
        )?;
    }
    if let (Some(record), Some(first)) = (signature.rfc3161(), signature.first_chain()) {
        let at = record.aggregation_time;
        let rule = "Rfc3161RecordHashAlgorithmVerificationRule";
        check(trusted(record.tst_info_algorithm, at), rule, Code::Int14)?;
        check(
            trusted(record.signed_attributes_algorithm, at),
            rule,
            Code::Int14,
        )?;
        check(
            trusted(first.input_hash.algorithm(), at),
            "Rfc3161RecordOutputHashAlgorithmVerificationRule",
            Code::Int17,
        )?;
    }
    Ok(())
}

fn chain_indexes(signature: &Signature) -> Result<(), Verdict> {
    const RULE: &str = "AggregationHashChainIndexContinuationVerificationRule";
    let chains = signature.aggregation_chains();
    if let (Some(record), Some(first)) = (signature.rfc3161(), chains.first()) {
        check(record.chain_index == first.chain_index, RULE, Code::Int12)?;
    }
    for pair in chains.windows(2) {
        if let [lower, upper] = pair {
            let continues = lower.chain_index.len() == upper.chain_index.len() + 1
                && lower.chain_index.starts_with(&upper.chain_index);
            check(continues, RULE, Code::Int12)?;
        }
    }
    Ok(())
}

fn metadata(signature: &Signature) -> Result<(), Verdict> {
    const RULE: &str = "AggregationChainMetaDataVerificationRule";
    let links = signature.aggregation_chains().iter().flat_map(|c| &c.links);
    for metadata in links.filter_map(|l| match &l.sibling {
        Sibling::Metadata(m) => Some(m),
        _ => None,
    }) {
        match metadata.padding.as_slice() {
            [] => check(
                !Imprint::looks_like_imprint(metadata.raw()),
                RULE,
                Code::Int11,
            )?,
            [(value, flags, tlv16)] => {
                let value_ok = matches!(value.as_slice(), [0x01] | [0x01, 0x01]);
                let ok = !tlv16
                    && *flags == Flags::NON_CRITICAL_FORWARD
                    && value_ok
                    && metadata.raw().len() % 2 == 0;
                check(ok, RULE, Code::Int11)?;
            }
            _ => return Err(fail(RULE, Code::Int11)),
        }
    }
    for chain in signature.aggregation_chains() {
        check(
            trusted(chain.algorithm, chain.aggregation_time),
            "AggregationChainHashAlgorithmVerificationRule",
            Code::Int15,
        )?;
    }
    Ok(())
}

fn times(signature: &Signature) -> Result<(), Verdict> {
    const RULE: &str = "AggregationHashChainTimeConsistencyVerificationRule";
    let chains = signature.aggregation_chains();
    if let (Some(record), Some(first)) = (signature.rfc3161(), chains.first()) {
        check(
            record.aggregation_time == first.aggregation_time,
            RULE,
            Code::Int02,
        )?;
    }
    let same = chains
        .windows(2)
        .all(|p| matches!(p, [a, b] if a.aggregation_time == b.aggregation_time));
    check(same, RULE, Code::Int02)
}

fn shapes(signature: &Signature) -> Result<(), Verdict> {
    for chain in signature.aggregation_chains() {
        let matches = chain::aggregation_shape(chain)
            .is_some_and(|shape| chain.chain_index.last() == Some(&shape));
        check(
            matches,
            "AggregationHashChainIndexConsistencyVerificationRule",
            Code::Int10,
        )?;
    }
    Ok(())
}

fn calendar_chain(
    signature: &Signature,
    calendar: &CalendarChain,
    output: &Imprint,
) -> Result<(), Verdict> {
    check(
        calendar.input_hash == *output,
        "CalendarHashChainInputHashVerificationRule",
        Code::Int03,
    )?;
    let last = signature
        .aggregation_chains()
        .last()
        .map(|c: &AggregationChain| c.aggregation_time);
    check(
        Some(calendar.aggregation_time()) == last,
        "CalendarHashChainAggregationTimeVerificationRule",
        Code::Int04,
    )?;
    let computed = chain::calendar_aggregation_time(calendar.publication_time, &calendar.links);
    check(
        computed == Some(calendar.aggregation_time()),
        "CalendarHashChainRegistrationTimeVerificationRule",
        Code::Int05,
    )?;
    let at = i64::try_from(calendar.publication_time).unwrap_or(i64::MAX);
    let obsolete = calendar.links.iter().any(|l| {
        l.side == Side::Left && l.sibling.algorithm().status_at(at) == AlgorithmStatus::Obsolete
    });
    check(
        !obsolete,
        "CalendarChainHashAlgorithmObsoleteAtPubTimeVerificationRule",
        Code::Int16,
    )
}
