//! HTML building: one escaping function for every value that is not markup of our own, and the
//! page frame every page shares (language, landmarks, skip link, sign-out form).
//!
//! Pages are plain strings built in Rust. Every dynamic value goes through [`escape`], which is
//! safe both in text and inside double- or single-quoted attribute values. No page carries a
//! script or an inline style: the Content Security Policy forbids both.

use crate::i18n::{Lang, T};

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references, so that it can stand in
/// element content or in a quoted attribute value without ending either.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Controls other than tab and newline have no place in a page.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a query-string value (application/x-www-form-urlencoded).
pub fn query_value(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)])
        .map(|q| q.trim_start_matches("v=").to_owned())
        .unwrap_or_default()
}

/// Who is signed in, for the page header.
#[derive(Clone, Debug)]
pub struct SignedIn {
    /// The person's full name.
    pub name: String,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: String,
}

/// One page to render.
#[derive(Clone, Debug)]
pub struct Page<'a> {
    /// The page language.
    pub lang: Lang,
    /// The `<title>` and `<h1>`.
    pub title: String,
    /// The request path and query, for the language switch to come back to.
    pub here: &'a str,
    /// The person signed in, if any.
    pub signed_in: Option<SignedIn>,
    /// The main content, markup.
    pub main: String,
}

impl Page<'_> {
    /// The whole document.
    pub fn render(&self) -> String {
        let lang = self.lang;
        let other = lang.other();
        let switch = format!(
            r#"<a class="lang" href="/lang?to={code}&amp;back={back}" lang="{code}" hreflang="{code}">{label}</a>"#,
            code = other.code(),
            back = escape(&query_value(self.here)),
            label = other.t(T::LanguageName),
        );
        let account = match &self.signed_in {
            Some(who) => format!(
                r#"<p class="who">{signed_in_as} <strong>{name}</strong></p>
<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="secondary">{sign_out}</button></form>"#,
                signed_in_as = lang.t(T::SignedInAs),
                name = escape(&who.name),
                csrf = escape(&who.csrf),
                sign_out = lang.t(T::SignOut),
            ),
            None => String::new(),
        };
        let current = |path: &str| {
            if self.here.split('?').next() == Some(path) {
                r#" aria-current="page""#
            } else {
                ""
            }
        };
        let nav = match &self.signed_in {
            Some(_) => format!(
                r#"<div class="bar"><nav aria-label="{label}"><ul><li><a href="/history"{on_history}>{history}</a></li><li><a href="/reports"{on_reports}>{reports}</a></li></ul></nav><div class="account">{account}</div></div>"#,
                label = lang.t(T::MainMenu),
                on_history = current("/history"),
                history = lang.t(T::NavHistory),
                on_reports = current("/reports"),
                reports = lang.t(T::NavReports),
            ),
            None => String::new(),
        };
        format!(
            r##"<!DOCTYPE html>
<html lang="{code}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {portal}</title>
<link rel="stylesheet" href="/static/portal.css">
</head>
<body>
<a class="skip" href="#main">{skip}</a>
<header>
<div class="bar">
<p class="brand"><a href="/">{portal}</a></p>
{switch}
</div>
{nav}
</header>
<main id="main" tabindex="-1">
<h1>{title}</h1>
{main}
</main>
<footer><p>{footer}</p></footer>
</body>
</html>
"##,
            code = lang.code(),
            title = escape(&self.title),
            portal = lang.t(T::PortalName),
            skip = lang.t(T::SkipToContent),
            footer = lang.t(T::Footer),
            main = self.main,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_text_and_both_attribute_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("Männik Õie-Liis"), "Männik Õie-Liis");
        assert_eq!(escape("a\u{0}b\u{1b}c\nd"), "a\u{FFFD}b\u{FFFD}c\nd");
        assert_eq!(escape(""), "");
        // Nothing that could open a tag, end an attribute or start a reference survives.
        for nasty in [
            "\"><script>alert(1)</script>",
            "' autofocus onfocus='x",
            "&#x3C;script&#x3E;",
        ] {
            let out = escape(nasty);
            assert!(!out.contains(['<', '>', '"', '\'']), "{out}");
            assert!(
                !out.replace("&amp;", "")
                    .replace("&lt;", "")
                    .replace("&gt;", "")
                    .replace("&quot;", "")
                    .replace("&#39;", "")
                    .contains('&'),
                "{out}"
            );
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            query_value("/history?from=2026-01-01&purpose=TREAT"),
            "%2Fhistory%3Ffrom%3D2026-01-01%26purpose%3DTREAT"
        );
        assert_eq!(query_value("ä b"), "%C3%A4+b");
    }

    #[test]
    fn the_frame_has_language_landmarks_and_escapes_the_name() {
        let page = Page {
            lang: Lang::En,
            title: "History".into(),
            here: "/history",
            signed_in: Some(SignedIn {
                name: "<b>Mari</b>".into(),
                csrf: "tok".into(),
            }),
            main: "<p>x</p>".into(),
        };
        let html = page.render();
        assert!(html.contains(r#"<html lang="en">"#));
        assert!(html.contains("&lt;b&gt;Mari&lt;/b&gt;"));
        assert!(html.contains(r#"name="csrf" value="tok""#));
        assert!(html.contains(r#"<main id="main""#));
        assert!(!html.contains("<script"));
        assert!(!html.contains("style="));
    }
}
