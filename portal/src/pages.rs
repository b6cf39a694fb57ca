//! The pages' main content, in the citizen's language. Every value from outside (names,
//! identifiers, descriptions, the person's own text) goes through [`escape`].

use crate::history::{Entry, Filter, History};
use crate::html::escape;
use crate::i18n::{self, FILTER_PURPOSES, Lang, T};
use crate::local_time;
use crate::proof::Integrity;
use crate::reports::{Report, Status};
use backbone_gateway::usage::OutcomeJson;

/// The stylesheet, served at `/static/portal.css` (and by the development provider).
pub const STYLESHEET: &str = include_str!("../static/portal.css");

/// Entries on one page of the history.
pub const PAGE_SIZE: usize = 20;

/// The page for people not signed in.
pub fn welcome(lang: Lang, notice: Option<T>) -> String {
    let notice = notice
        .map(|n| {
            format!(
                r#"<div class="notice" role="status"><p>{}</p></div>"#,
                lang.t(n)
            )
        })
        .unwrap_or_default();
    format!(
        r#"{notice}<p class="lead">{text}</p>
<p><a class="button" href="/login" id="sign-in">{sign_in}</a></p>
<p class="hint">{hint}</p>"#,
        text = lang.t(T::WelcomeText),
        sign_in = lang.t(T::SignIn),
        hint = lang.t(T::SignInHint),
    )
}

/// The access history with its filter form, paging and exports.
pub fn history(lang: Lang, all: &History, filter: &Filter, page: usize) -> String {
    let shown: Vec<&Entry> = all.entries.iter().filter(|e| filter.accepts(e)).collect();
    let pages = shown.len().div_ceil(PAGE_SIZE).max(1);
    let page = page.min(pages);
    let mut out = format!("<p>{}</p>\n", lang.t(T::HistoryIntro));
    if !all.unavailable.is_empty() {
        let names: Vec<String> = all
            .unavailable
            .iter()
            .map(|n| format!("<li>{} — {}</li>", escape(n), lang.t(T::NotAvailableNow)))
            .collect();
        out.push_str(&format!(
            r#"<div class="notice warn" role="status"><p>{}</p><ul>{}</ul></div>"#,
            lang.t(T::Unavailable),
            names.concat()
        ));
    }
    out.push_str(&filter_form(lang, all, filter));
    out.push_str(&format!(
        r#"<p id="count" role="status">{} <strong>{}</strong></p>"#,
        lang.t(T::Found),
        shown.len()
    ));
    if shown.is_empty() {
        out.push_str(&format!("<p>{}</p>", lang.t(T::NoEntries)));
    } else {
        out.push_str(r#"<ol class="entries">"#);
        for entry in shown.iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE) {
            out.push_str(&entry_card(lang, entry));
        }
        out.push_str("</ol>");
    }
    let query = filter.query();
    let link = |p: usize| {
        if query.is_empty() {
            format!("/history?page={p}")
        } else {
            format!("/history?{query}&page={p}")
        }
    };
    if pages > 1 {
        let mut items = Vec::new();
        if page > 1 {
            items.push(format!(
                r#"<li><a href="{}" rel="prev">{}</a></li>"#,
                escape(&link(page - 1)),
                lang.t(T::Previous)
            ));
        }
        items.push(format!(
            r#"<li aria-current="page">{} {page} / {pages}</li>"#,
            lang.t(T::Page)
        ));
        if page < pages {
            items.push(format!(
                r#"<li><a href="{}" rel="next">{}</a></li>"#,
                escape(&link(page + 1)),
                lang.t(T::Next)
            ));
        }
        out.push_str(&format!(
            r#"<nav class="paging" aria-label="{}"><ul>{}</ul></nav>"#,
            lang.t(T::Paging),
            items.concat()
        ));
    }
    let suffix = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    out.push_str(&format!(
        r#"<section class="exports" aria-labelledby="exports"><h2 id="exports">{download}</h2><ul><li><a href="/export.csv{s}" download>{csv}</a></li><li><a href="/export.fhir.json{s}" download>{fhir}</a></li></ul></section>"#,
        download = lang.t(T::Download),
        s = escape(&suffix),
        csv = lang.t(T::ExportCsv),
        fhir = lang.t(T::ExportFhir),
    ));
    out
}

fn filter_form(lang: Lang, all: &History, filter: &Filter) -> String {
    let mut institutions: Vec<(&str, &str)> = all
        .entries
        .iter()
        .filter(|e| !e.own)
        .map(|e| (e.member.as_str(), e.institution.as_str()))
        .collect();
    institutions.sort_by(|a, b| a.1.cmp(b.1));
    institutions.dedup();
    let selected = |yes: bool| if yes { " selected" } else { "" };
    let mut institution_options =
        format!(r#"<option value="">{}</option>"#, lang.t(T::AnyInstitution));
    for (id, name) in institutions {
        institution_options.push_str(&format!(
            r#"<option value="{}"{}>{}</option>"#,
            escape(id),
            selected(filter.institution == id),
            escape(name)
        ));
    }
    let mut purpose_options = format!(r#"<option value="">{}</option>"#, lang.t(T::AnyPurpose));
    for code in FILTER_PURPOSES {
        purpose_options.push_str(&format!(
            r#"<option value="{code}"{}>{}</option>"#,
            selected(filter.purpose == code),
            escape(&i18n::purpose(lang, code))
        ));
    }
    let checked = |v: &str| if v == "1" { " checked" } else { "" };
    let clear = if filter.is_set() {
        format!(r#"<a href="/history">{}</a>"#, lang.t(T::ClearFilters))
    } else {
        String::new()
    };
    format!(
        r#"<form class="filters" method="get" action="/history" role="search">
<fieldset><legend>{legend}</legend>
<div class="fields">
<div class="field"><label for="from">{from_label}</label><input type="date" id="from" name="from" value="{from}"></div>
<div class="field"><label for="to">{to_label}</label><input type="date" id="to" name="to" value="{to}"></div>
<div class="field"><label for="institution">{institution_label}</label><select id="institution" name="institution">{institution_options}</select></div>
<div class="field"><label for="purpose">{purpose_label}</label><select id="purpose" name="purpose">{purpose_options}</select></div>
</div>
<div class="check"><input type="checkbox" id="emergency" name="emergency" value="1"{emergency}><label for="emergency">{emergency_label}</label></div>
<div class="check"><input type="checkbox" id="mine" name="mine" value="1"{mine}><label for="mine">{mine_label}</label></div>
<div class="actions"><button type="submit" id="search">{apply}</button>{clear}</div>
</fieldset>
</form>"#,
        legend = lang.t(T::Filters),
        from_label = lang.t(T::DateFrom),
        to_label = lang.t(T::DateTo),
        from = escape(&filter.from),
        to = escape(&filter.to),
        institution_label = lang.t(T::Institution),
        purpose_label = lang.t(T::Purpose),
        emergency = checked(&filter.emergency),
        emergency_label = lang.t(T::EmergencyOnly),
        mine = checked(&filter.mine),
        mine_label = lang.t(T::IncludeMine),
        apply = lang.t(T::ApplyFilters),
    )
}

/// The accessor shown for an entry: the institution, or "you" for the portal's own questions.
fn accessor(lang: Lang, entry: &Entry) -> String {
    if entry.own {
        lang.t(T::YouThroughPortal).to_owned()
    } else {
        entry.institution.clone()
    }
}

fn who(lang: Lang, entry: &Entry) -> String {
    match &entry.user_id {
        Some(user) if entry.own => format!("{} ({})", lang.t(T::YouThroughPortal), escape(user)),
        Some(user) => escape(user),
        None => format!(
            r#"<span class="hint">{}</span>"#,
            lang.t(T::PersonNotStated)
        ),
    }
}

fn purpose(lang: Lang, entry: &Entry) -> String {
    entry
        .purpose
        .as_deref()
        .map(|p| i18n::purpose(lang, p))
        .unwrap_or_else(|| "—".into())
}

fn emergency_badge(lang: Lang) -> String {
    format!(
        r#"<p class="badge emergency"><span aria-hidden="true">⚠ </span>{}</p>"#,
        lang.t(T::Emergency)
    )
}

/// The emergency badge, and a badge for a request that did not end in an answer.
fn badges(lang: Lang, entry: &Entry) -> String {
    let mut out = if entry.emergency {
        emergency_badge(lang)
    } else {
        String::new()
    };
    match &entry.outcome {
        OutcomeJson::Answered(_) => {}
        OutcomeJson::Refused(fault) => out.push_str(&format!(
            r#"<p class="badge outcome">{} <code>{}</code></p>"#,
            lang.t(T::Refused),
            escape(fault)
        )),
        OutcomeJson::Unanswered => out.push_str(&format!(
            r#"<p class="badge outcome">{}</p>"#,
            lang.t(T::Unanswered)
        )),
    }
    out
}

fn time(lang: Lang, ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(0);
    format!(
        r#"<time datetime="{}">{}</time>"#,
        local_time::iso(ms),
        local_time::display(ms, lang)
    )
}

fn entry_card(lang: Lang, entry: &Entry) -> String {
    format!(
        r#"<li class="entry{own}"><h2><a href="/entries/{key}">{time}: {accessor}</a></h2>
{badge}<dl class="facts"><dt>{who_label}</dt><dd>{who}</dd><dt>{data_label}</dt><dd>{data}</dd><dt>{why_label}</dt><dd>{why}</dd></dl></li>
"#,
        own = if entry.own { " own" } else { "" },
        key = escape(&entry.key),
        time = time(lang, entry.time_ms),
        accessor = escape(&accessor(lang, entry)),
        badge = badges(lang, entry),
        who_label = lang.t(T::Who),
        who = who(lang, entry),
        data_label = lang.t(T::WhichData),
        data = escape(&i18n::data(
            lang,
            &entry.service_code,
            entry.description.as_deref()
        )),
        why_label = lang.t(T::Why),
        why = escape(&purpose(lang, entry)),
    )
}

/// One access with its integrity and proofs; `key_based` when the portal can hand out the
/// calendar certificate for `backbone ksi verify --cert`.
pub fn entry(lang: Lang, entry: &Entry, integrity: &[Integrity], key_based: bool) -> String {
    let overall = crate::proof::overall(integrity);
    let status = integrity_text(lang, &overall);
    let mut proofs = String::new();
    for (i, (logged, each)) in entry.records.iter().zip(integrity).enumerate() {
        let side = if logged.side == "client" {
            lang.t(T::SideClient)
        } else {
            lang.t(T::SideProvider)
        };
        let download = match &logged.proof {
            Some(proof) => format!(
                r#"<a href="/entries/{key}/proof/{i}.ksig" download id="proof-{i}">{label}</a><br><a href="/entries/{key}/proof/{i}.json" download>{json}</a><p>{howto}</p><pre>backbone ksi verify access.ksig --hash {imprint} {trust}</pre>{certificate}"#,
                key = escape(&entry.key),
                label = lang.t(T::ProofDownload),
                json = lang.t(T::ProofJson),
                howto = lang.t(T::ProofHowTo),
                imprint = escape(&crate::proof::imprint_hex(proof)),
                trust = if key_based {
                    "--cert calendar.der"
                } else {
                    "--policy internal"
                },
                certificate = if key_based {
                    format!(
                        r#"<a href="/calendar-certificate.der" download>{}</a>"#,
                        lang.t(T::CalendarCertificate)
                    )
                } else {
                    String::new()
                },
            ),
            None => String::new(),
        };
        proofs.push_str(&format!(
            "<tr><td>{}</td><td>{side}</td><td>{}</td><td>{download}</td></tr>",
            escape(&logged.agency_name),
            integrity_short(lang, each)
        ));
    }
    format!(
        r#"<p><a href="/history">← {back}</a></p>
{badge}<dl class="facts">
<dt>{when_label}</dt><dd>{time}</dd>
<dt>{by_label}</dt><dd>{accessor}</dd>
<dt>{who_label}</dt><dd>{who}</dd>
<dt>{data_label}</dt><dd>{data}</dd>
<dt>{held_label}</dt><dd>{held}</dd>
<dt>{why_label}</dt><dd>{why}</dd>
<dt>{id_label}</dt><dd><code>{message_id}</code></dd>
</dl>
<section aria-labelledby="integrity"><h2 id="integrity">{integrity_label}</h2>
<p id="integrity-status">{status}</p>
<table><caption class="hint">{proofs_label}</caption><thead><tr><th scope="col">{logged_by}</th><th scope="col">{side_label}</th><th scope="col">{integrity_label}</th><th scope="col">{proof_label}</th></tr></thead><tbody>{proofs}</tbody></table>
</section>
<p class="actions"><a class="button" href="/entries/{key}/report" id="report">{report}</a></p>"#,
        back = lang.t(T::BackToHistory),
        badge = badges(lang, entry),
        when_label = lang.t(T::When),
        time = time(lang, entry.time_ms),
        by_label = lang.t(T::AccessedBy),
        accessor = escape(&accessor(lang, entry)),
        who_label = lang.t(T::Who),
        who = who(lang, entry),
        data_label = lang.t(T::WhichData),
        data = escape(&i18n::data(
            lang,
            &entry.service_code,
            entry.description.as_deref()
        )),
        held_label = lang.t(T::HeldBy),
        held = escape(&entry.provider),
        why_label = lang.t(T::Why),
        why = escape(&purpose(lang, entry)),
        id_label = lang.t(T::MessageId),
        message_id = escape(&entry.message_id),
        integrity_label = lang.t(T::Integrity),
        proofs_label = lang.t(T::ProofsTitle),
        logged_by = lang.t(T::LoggedBy),
        side_label = lang.t(T::Side),
        proof_label = lang.t(T::Proof),
        key = escape(&entry.key),
        report = lang.t(T::ReportAccess),
    )
}

fn integrity_short(lang: Lang, integrity: &Integrity) -> String {
    match integrity {
        Integrity::Verified { .. } => format!(
            r#"<span class="status-ok"><span aria-hidden="true">✔ </span>{}</span>"#,
            lang.t(T::VerifiedShort)
        ),
        Integrity::NotStamped => format!(
            r#"<span class="status-wait"><span aria-hidden="true">⏳ </span>{}</span>"#,
            lang.t(T::NotStampedShort)
        ),
        Integrity::Failed(reason) => {
            format!(
                r#"<span class="status-bad"><span aria-hidden="true">✖ </span>{}</span> <span class="hint">({})</span>"#,
                lang.t(T::FailedShort),
                escape(reason)
            )
        }
    }
}

fn integrity_text(lang: Lang, integrity: &Integrity) -> String {
    match integrity {
        Integrity::Verified { .. } => format!(
            r#"<span class="status-ok"><span aria-hidden="true">✔ </span>{}</span>"#,
            lang.t(T::Verified)
        ),
        Integrity::NotStamped => format!(
            r#"<span class="status-wait"><span aria-hidden="true">⏳ </span>{}</span>"#,
            lang.t(T::NotStamped)
        ),
        Integrity::Failed(reason) => {
            format!(
                r#"<span class="status-bad"><span aria-hidden="true">✖ </span>{}</span> <span class="hint">({})</span>"#,
                lang.t(T::VerifyFailed),
                escape(reason)
            )
        }
    }
}

/// The form to report an access; `error` re-shows it with the problem and what was typed.
pub fn report_form(
    lang: Lang,
    entry: &Entry,
    csrf: &str,
    error: Option<T>,
    reason: &str,
    contact: &str,
) -> String {
    let (summary, invalid) = match error {
        Some(e) => (
            format!(
                r#"<div class="error-summary" role="alert"><p>{}</p></div>"#,
                lang.t(e)
            ),
            r#" aria-invalid="true""#,
        ),
        None => (String::new(), ""),
    };
    format!(
        r#"{summary}<p>{intro}</p>
<dl class="facts"><dt>{when_label}</dt><dd>{time}</dd><dt>{by_label}</dt><dd>{accessor}</dd><dt>{why_label}</dt><dd>{why}</dd></dl>
<form method="post" action="/entries/{key}/report">
<input type="hidden" name="csrf" value="{csrf}">
<div class="field"><label for="reason">{reason_label}</label><span class="hint" id="reason-hint">{hint}</span>
<textarea id="reason" name="reason" maxlength="{max}" aria-describedby="reason-hint" required{invalid}>{reason}</textarea></div>
<div class="field"><label for="contact">{contact_label}</label><input type="text" id="contact" name="contact" maxlength="{max_contact}" autocomplete="email" value="{contact}"></div>
<div class="actions"><button type="submit" id="send-report">{send}</button><a href="/entries/{key}">{back}</a></div>
</form>"#,
        intro = lang.t(T::ReportIntro),
        when_label = lang.t(T::When),
        time = time(lang, entry.time_ms),
        by_label = lang.t(T::AccessedBy),
        accessor = escape(&accessor(lang, entry)),
        why_label = lang.t(T::Why),
        why = escape(&purpose(lang, entry)),
        key = escape(&entry.key),
        csrf = escape(csrf),
        reason_label = lang.t(T::ReportReason),
        hint = lang.t(T::ReportReasonHint),
        max = crate::reports::MAX_REASON,
        max_contact = crate::reports::MAX_CONTACT,
        reason = escape(reason),
        contact_label = lang.t(T::ReportContact),
        contact = escape(contact),
        send = lang.t(T::ReportSend),
        back = lang.t(T::BackToHistory),
    )
}

/// The person's reports, with the acknowledgement of one just sent.
pub fn reports(lang: Lang, reports: &[Report], sent: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(id) = sent.filter(|id| reports.iter().any(|r| r.id == *id)) {
        out.push_str(&format!(
            r#"<div class="notice ok" role="status"><p><strong>{}</strong></p><p>{}: <strong id="report-id">{}</strong></p></div>"#,
            lang.t(T::ReportReceived),
            lang.t(T::ReportReference),
            escape(id)
        ));
    }
    if reports.is_empty() {
        out.push_str(&format!("<p>{}</p>", lang.t(T::ReportsNone)));
        return out;
    }
    out.push_str(&format!(
        r#"<table><thead><tr><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr></thead><tbody>"#,
        lang.t(T::ReportReference),
        lang.t(T::Sent),
        lang.t(T::AccessedBy),
        lang.t(T::ReportReason),
        lang.t(T::Status)
    ));
    for report in reports {
        let status = match report.status {
            Status::Received => lang.t(T::StatusReceived),
            Status::InReview => lang.t(T::StatusInReview),
            Status::Closed => lang.t(T::StatusClosed),
        };
        out.push_str(&format!(
            r#"<tr><td>{id}</td><td>{sent}</td><td><a href="/entries/{entry}">{institution}</a><br>{access}</td><td>{reason}</td><td>{status}</td></tr>"#,
            id = escape(&report.id),
            sent = time(lang, report.created_ms),
            entry = escape(&report.entry),
            institution = escape(&report.institution),
            access = time(lang, report.access_time_ms),
            reason = escape(&report.reason),
        ));
    }
    out.push_str("</tbody></table>");
    out
}

/// An error page's content.
pub fn problem(lang: Lang, text: T) -> String {
    format!(
        r#"<p>{}</p><p><a href="/">{}</a></p>"#,
        lang.t(text),
        lang.t(T::PortalName)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(outcome: OutcomeJson) -> Entry {
        Entry {
            key: "0123456789abcdef0123456789abcdef".into(),
            time_ms: 1_795_694_400_123,
            client: "EE/COM/10000001/dispensing".into(),
            member: "EE/COM/10000001".into(),
            institution: "Town Pharmacy".into(),
            user_id: None,
            service: "EE/GOV/70000001/ehr/patients".into(),
            service_code: "patients".into(),
            description: None,
            provider: "North Estonia Medical Centre".into(),
            purpose: Some("TREAT".into()),
            emergency: false,
            message_id: "m-1".into(),
            own: false,
            outcome,
            records: Vec::new(),
        }
    }

    #[test]
    fn a_refused_or_unanswered_access_says_so_and_an_answered_one_says_nothing() {
        let refused = badges(
            Lang::En,
            &entry(OutcomeJson::Refused(
                "Server.ServerProxy.<AccessDenied>".into(),
            )),
        );
        assert!(
            refused.contains("Refused: no data was given out"),
            "{refused}"
        );
        assert!(
            refused.contains("Server.ServerProxy.&lt;AccessDenied&gt;"),
            "the fault type is escaped: {refused}"
        );
        let unanswered = badges(Lang::Et, &entry(OutcomeJson::Unanswered));
        assert!(unanswered.contains("Vastust pole logitud"), "{unanswered}");
        assert_eq!(badges(Lang::En, &entry(OutcomeJson::Answered(200))), "");
    }
}
