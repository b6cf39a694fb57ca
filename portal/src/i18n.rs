//! Estonian and English: every text the portal shows, the HL7 PurposeOfUse codes in plain
//! language, and the services' data in plain words.

/// A page language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    /// Estonian, the default.
    Et,
    /// English.
    En,
}

impl Lang {
    /// The BCP 47 code.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Et => "et",
            Lang::En => "en",
        }
    }

    /// The language a code names, if one of ours.
    pub fn parse(code: &str) -> Option<Lang> {
        match code {
            "et" => Some(Lang::Et),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The other language, for the switch.
    pub fn other(self) -> Lang {
        match self {
            Lang::Et => Lang::En,
            Lang::En => Lang::Et,
        }
    }

    /// The language an `Accept-Language` header prefers among ours; Estonian when it names
    /// neither first.
    pub fn from_accept_language(header: &str) -> Lang {
        for range in header.split(',') {
            let tag = range
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let primary = tag.split('-').next().unwrap_or_default();
            if let Some(lang) = Lang::parse(primary) {
                return lang;
            }
        }
        Lang::Et
    }
}

macro_rules! texts {
    ($($(#[$doc:meta])* $name:ident => $et:expr, $en:expr;)*) => {
        /// A text the portal shows; [`Lang::t`] gives it in a language.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum T {
            $($(#[$doc])* #[doc = $en] $name,)*
        }

        impl Lang {
            /// The text in this language.
            pub fn t(self, text: T) -> &'static str {
                match (self, text) {
                    $((Lang::Et, T::$name) => $et, (Lang::En, T::$name) => $en,)*
                }
            }
        }
    };
}

texts! {
    LanguageName => "Eesti keeles", "In English";
    PortalName => "Minu terviseandmete kasutus", "Who used my health data";
    SkipToContent => "Liigu sisu juurde", "Skip to content";
    Footer => "Andmed tulevad otse asutuste turvaserveritest. Iga kirje juures on tõend, mida saab kontrollida.", "The records come straight from each institution's gateway. Every record has a proof you can check.";
    SignedInAs => "Sisse logitud:", "Signed in as";
    SignOut => "Logi välja", "Sign out";
    MainMenu => "Peamenüü", "Main menu";
    NavHistory => "Kes vaatas minu andmeid", "Who viewed my data";
    NavReports => "Minu teated", "My reports";
    WelcomeTitle => "Vaata, kes on sinu terviseandmeid kasutanud", "See who has used your health data";
    WelcomeText => "Siin näed, milline asutus ja kes seal sinu terviseandmeid vaatas, millal ja mis põhjusel. Iga kirje juures on tõend, et kirjet pole muudetud. Kui mõni kasutus tundub kahtlane, saad sellest teatada.", "Here you can see which institution, and who there, looked at your health data, when and why. Every record comes with a proof that it has not been changed. If an access looks wrong, you can report it.";
    SignIn => "Logi sisse", "Sign in";
    SignInHint => "Sisselogimiseks suunatakse sind riiklikku autentimisteenusesse.", "To sign in you will be taken to the national sign-in service.";
    SignedOut => "Oled välja logitud.", "You have signed out.";
    SessionExpired => "Sinu seanss aegus. Palun logi uuesti sisse.", "Your session has expired. Please sign in again.";
    SignInFailed => "Sisselogimine ei õnnestunud. Palun proovi uuesti.", "Signing in did not work. Please try again.";
    HistoryTitle => "Kes on minu terviseandmeid kasutanud", "Who has used my health data";
    HistoryIntro => "Uuemad kirjed on eespool. Ajad on Eesti aja järgi.", "Newest first. Times are Estonian time.";
    Filters => "Otsi", "Search";
    DateFrom => "Alates (kuupäev)", "From (date)";
    DateTo => "Kuni (kuupäev)", "To (date)";
    Institution => "Asutus", "Institution";
    AnyInstitution => "Kõik asutused", "All institutions";
    Purpose => "Eesmärk", "Purpose";
    AnyPurpose => "Kõik eesmärgid", "All purposes";
    EmergencyOnly => "Ainult erakorralised juurdepääsud", "Emergency access only";
    IncludeMine => "Näita ka minu enda päringuid portaali kaudu", "Also show my own look-ups through this portal";
    ApplyFilters => "Otsi", "Search";
    ClearFilters => "Tühista otsing", "Clear search";
    When => "Aeg", "When";
    Who => "Kes", "Who";
    WhichData => "Milliseid andmeid", "Which data";
    Why => "Miks", "Why";
    Details => "Üksikasjad", "Details";
    Open => "Ava kirje", "Open record";
    Emergency => "Erakorraline juurdepääs", "Emergency access";
    Refused => "Keelduti, andmeid ei väljastatud", "Refused: no data was given out";
    Unanswered => "Vastust pole logitud: päring katkes või on pooleli", "No answer logged: the request was cut off or is still under way";
    NoEntries => "Selliseid kirjeid ei leitud.", "No records found.";
    Unavailable => "Need asutused ei vasta praegu. Nende kirjeid praegu ei näidata:", "These institutions are not available right now, so their records are not shown:";
    NotAvailableNow => "ei ole praegu kättesaadav", "not available right now";
    PersonNotStated => "isikut ei ole märgitud", "person not stated";
    YouThroughPortal => "Sina ise (selle portaali kaudu)", "You (through this portal)";
    Page => "Leht", "Page";
    Previous => "Eelmine leht", "Previous page";
    Next => "Järgmine leht", "Next page";
    Paging => "Lehed", "Pages";
    Found => "Leitud kirjeid:", "Records found:";
    Download => "Laadi alla", "Download";
    ExportCsv => "Tabelina (CSV)", "As a spreadsheet (CSV)";
    ExportFhir => "FHIR AuditEvent vormingus (JSON)", "As FHIR AuditEvent (JSON)";
    EntryTitle => "Andmete kasutamise kirje", "Access record";
    BackToHistory => "Tagasi nimekirja", "Back to the list";
    HeldBy => "Andmed asuvad", "Data held by";
    AccessedBy => "Kasutas", "Used by";
    Integrity => "Kirje terviklus", "Record integrity";
    Verified => "Kontrollitud: kirje on asutuse logis muutmata kujul ja ajatempel on kehtiv.", "Verified: the record is unchanged in the institution's log and its timestamp is valid.";
    VerifiedShort => "Kontrollitud", "Verified";
    NotStampedShort => "Ajatempel puudub veel", "Not timestamped yet";
    FailedShort => "Kontroll ebaõnnestus", "Check failed";
    NotStamped => "Kirjele pole veel ajatemplit antud. Proovi mõne sekundi pärast uuesti.", "The record has no timestamp yet. Try again in a few seconds.";
    VerifyFailed => "Kontroll ei õnnestunud. Sellest võib teatada.", "The check failed. You can report this.";
    LoggedBy => "Logis", "Logged by";
    Side => "Roll", "Role";
    SideClient => "pärija", "requester";
    SideProvider => "andmete hoidja", "data holder";
    ProofDownload => "Laadi tõend alla (.ksig)", "Download the proof (.ksig)";
    ProofJson => "Kogu tõend (JSON)", "The whole proof (JSON)";
    CalendarCertificate => "Laadi alla ajatempliteenuse sertifikaat (calendar.der)", "Download the timestamping service's certificate (calendar.der)";
    ProofHowTo => "Tõendit saab kontrollida ka ise, ilma portaalita:", "You can also check the proof yourself, without this portal:";
    MessageId => "Sõnumi tunnus", "Message id";
    ReportAccess => "Teata kahtlasest kasutusest", "Report a suspicious access";
    ReportTitle => "Teata kahtlasest kasutusest", "Report a suspicious access";
    ReportIntro => "Kirjelda lühidalt, miks see kasutus tundub vale. Teade saadetakse andmekaitse eest vastutajale.", "Say briefly why this access looks wrong. The report goes to the people responsible for data protection.";
    ReportReason => "Miks see tundub kahtlane?", "Why does it look suspicious?";
    ReportReasonHint => "Näiteks: ma ei ole selles asutuses käinud. Kuni 2000 märki.", "For example: I have never been to this institution. Up to 2000 characters.";
    ReportContact => "Kuidas sinuga ühendust võtta (vabatahtlik)", "How to contact you (optional)";
    ReportSend => "Saada teade", "Send the report";
    ReportEmpty => "Palun kirjuta, miks see kasutus tundub kahtlane.", "Please write why this access looks suspicious.";
    ReportTooLong => "Tekst on liiga pikk (kuni 2000 märki).", "The text is too long (up to 2000 characters).";
    ReportLimit => "Sul on juba 200 lahendamata teadet. Palun oota, kuni neid vaadatakse.", "You already have 200 open reports. Please wait until they are looked at.";
    ReportReceived => "Aitäh! Teade on kätte saadud.", "Thank you. Your report has been received.";
    ReportReference => "Teate number", "Report number";
    ReportsTitle => "Minu teated", "My reports";
    ReportsNone => "Sa ei ole veel ühestki kasutusest teatanud.", "You have not reported any access yet.";
    Status => "Olek", "Status";
    StatusReceived => "Kätte saadud, ootab läbivaatamist", "Received, waiting for review";
    StatusInReview => "Läbivaatamisel", "Being reviewed";
    StatusClosed => "Lõpetatud", "Closed";
    Sent => "Saadetud", "Sent";
    ErrorTitle => "Midagi läks valesti", "Something went wrong";
    NotFound => "Sellist lehte ei ole või see ei ole sinu jaoks.", "This page does not exist or is not yours.";
    BadForm => "Vormi ei saanud vastu võtta. Palun ava leht uuesti ja proovi veel.", "The form could not be accepted. Please open the page again and try once more.";
    Proof => "Tõend", "Proof";
    ProofsTitle => "Tõendid", "Proofs";
}

/// A HL7 v3 PurposeOfUse code in plain language; codes without a plain text fall back to a
/// general phrase with the code.
pub fn purpose(lang: Lang, code: &str) -> String {
    let plain = match code {
        "TREAT" => Some(("Sinu ravimiseks", "To treat you")),
        "ETREAT" => Some(("Erakorraliseks raviks", "For emergency treatment")),
        "BTG" => Some((
            "Erakorraline juurdepääs ilma tavapärase loata",
            "Emergency access without the usual permission",
        )),
        "CAREMGT" => Some(("Sinu ravi korraldamiseks", "To organise your care")),
        "COC" => Some(("Ravi järjepidevuse tagamiseks", "To continue your care")),
        "HPAYMT" => Some((
            "Ravi eest tasumiseks (nt Tervisekassa)",
            "To pay for your care (for example the Health Insurance Fund)",
        )),
        "COVERAGE" | "ELIGVER" | "ELIGDTRM" => Some((
            "Ravikindlustuse kontrolliks",
            "To check your health insurance",
        )),
        "CLMATTCH" => Some((
            "Arve või hüvitise taotluse kontrolliks",
            "To check a bill or claim",
        )),
        "PUBHLTH" | "POPHLTH" => Some((
            "Rahvatervise kaitseks (nt haiguste seire)",
            "For public health (for example disease monitoring)",
        )),
        "PATRQT" => Some(("Sinu enda soovil", "At your own request")),
        "FAMRQT" => Some(("Pereliikme soovil", "At a family member's request")),
        "PWATRNY" => Some((
            "Volitatud esindaja soovil",
            "At the request of someone with your power of attorney",
        )),
        "HRESCH" | "CLINTRCH" | "BIORCH" | "DSRCH" => {
            Some(("Terviseuuringuks", "For health research"))
        }
        "HOPERAT" => Some((
            "Tervishoiuasutuse töö korraldamiseks",
            "To run the health care institution",
        )),
        "HQUALIMP" | "PERFMSR" => Some((
            "Ravi kvaliteedi parandamiseks",
            "To improve the quality of care",
        )),
        "RECORDMGT" => Some(("Terviseandmete haldamiseks", "To manage health records")),
        "PATSFTY" => Some(("Patsiendi ohutuse tagamiseks", "For patient safety")),
        "HLEGAL" => Some((
            "Seadusest tuleneva kohustuse täitmiseks",
            "To meet a legal duty",
        )),
        "DISASTER" | "THREAT" => Some((
            "Hädaolukorra või ohu tõrjeks",
            "In a disaster or public threat",
        )),
        _ => None,
    };
    match (plain, lang) {
        (Some((et, _)), Lang::Et) => et.to_owned(),
        (Some((_, en)), Lang::En) => en.to_owned(),
        (None, Lang::Et) => format!("Muu eesmärk (kood {code})"),
        (None, Lang::En) => format!("Another purpose (code {code})"),
    }
}

/// The purposes the filter offers, in this order.
pub const FILTER_PURPOSES: [&str; 8] = [
    "TREAT", "ETREAT", "CAREMGT", "HPAYMT", "COVERAGE", "PUBHLTH", "HRESCH", "PATRQT",
];

/// Which data a service gives, in plain words: a table of well-known service codes, else the
/// catalogue's description of the service, else its code.
pub fn data(lang: Lang, service_code: &str, description: Option<&str>) -> String {
    let plain = match service_code {
        "findUsage" => Some((
            "Sinu andmete kasutamise ajalugu",
            "The history of who used your data",
        )),
        "patients" | "Patient" => {
            Some(("Patsiendi põhiandmed ja haiguslugu", "Your patient record"))
        }
        "referrals" => Some(("Saatekiri", "A referral")),
        "prescriptions" => Some(("Retseptid", "Prescriptions")),
        "dispensations" => Some(("Väljastatud ravimid", "Medicines dispensed to you")),
        "claims" | "reimbursements" => {
            Some(("Ravikulude hüvitamine", "Reimbursement of your care"))
        }
        "immunizations" => Some(("Vaktsineerimised", "Vaccinations")),
        "observations" | "labResults" => Some(("Analüüside tulemused", "Test results")),
        _ => None,
    };
    match (plain, lang, description) {
        (Some((et, _)), Lang::Et, _) => et.to_owned(),
        (Some((_, en)), Lang::En, _) => en.to_owned(),
        (None, _, Some(description)) if !description.trim().is_empty() => {
            capitalise(description.trim())
        }
        (None, _, _) => service_code.to_owned(),
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_ours_or_estonian() {
        assert_eq!(Lang::from_accept_language("en-GB,en;q=0.9"), Lang::En);
        assert_eq!(Lang::from_accept_language("ru,et;q=0.8"), Lang::Et);
        assert_eq!(Lang::from_accept_language("fi, en;q=0.5"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::Et);
    }

    #[test]
    fn purposes_and_data_read_plainly_in_both_languages() {
        assert_eq!(purpose(Lang::En, "ETREAT"), "For emergency treatment");
        assert_eq!(purpose(Lang::Et, "TREAT"), "Sinu ravimiseks");
        assert_eq!(purpose(Lang::En, "MILCDM"), "Another purpose (code MILCDM)");
        assert_eq!(
            data(Lang::En, "patients", Some("patient records")),
            "Your patient record"
        );
        assert_eq!(
            data(Lang::Et, "xrays", Some("radiology images")),
            "Radiology images"
        );
        assert_eq!(data(Lang::En, "xrays", None), "xrays");
        for code in FILTER_PURPOSES {
            assert!(!purpose(Lang::Et, code).contains("kood"), "{code}");
        }
    }
}
