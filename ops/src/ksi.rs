//! `backbone ksi sign|extend|verify`: get a KSI signature from a timestamping service, extend it
//! to a publication with the service's extender, and verify one offline with the policies of
//! `backbone-timestamping-verify`.
//!
//! ```text
//!  ksi sign FILE | --hash IMPRINT ─▶ POST /sign ─▶ FILE.ksig (or --out)
//!  ksi extend SIG [--to-publication latest|TIME | --to TIME|head] ─▶ extender PDU (POST /extend)
//!        ─▶ calendar chain checked against SIG (and the publication) ─▶ SIG-extended.ksig (or --out)
//!  ksi verify SIG [--document F | --hash I] [--policy P] [--cert F] [--publication-string S]
//!        [--publications-file F --trust-anchor CA] [--extender-response F]
//!        ─▶ Verdict ─▶ text or one JSON object; exit 0 only for OK
//!  ksi tsa-proof REPLY.tsr ─▶ GET /tsa/{serial}.ksig ─▶ REPLY.tsr.ksig (+ REPLY.tsr.token)
//!        the keyless signature of an RFC 3161 token, checked to cover SHA-256 of the token
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use backbone_timestamping::authority::certificate_id;
use backbone_timestamping::{client, http, tsa};
use backbone_timestamping_verify::Signature;
use backbone_timestamping_verify::imprint::{HashAlgorithm, Imprint};
use backbone_timestamping_verify::pdu::ExtenderResponse;
use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::publications_file::{
    CertificateRecord, PublicationsFile, TrustAnchors,
};
use backbone_timestamping_verify::signature::{Anchor, CalendarChain, PublicationRecord};
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy, Verdict};
use clap::{Args, Subcommand, ValueEnum};

use crate::Error;
use crate::timestamping::DEFAULT_LISTEN;

/// Largest signature, document or certificate file read whole: 64 MiB.
pub const MAX_FILE_LEN: u64 = 64 << 20;
/// The extender login id unless told otherwise: the service's default (`timestamping serve
/// --login-id`), whose HMAC key is the login id itself, as on KSI's public test accounts.
pub const DEFAULT_LOGIN_ID: &str = "anon";

/// `backbone ksi ...`
#[derive(Debug, Args)]
pub struct KsiArgs {
    /// The verb.
    #[command(subcommand)]
    pub command: KsiCommand,
}

/// The verbs of `backbone ksi`.
#[derive(Debug, Subcommand)]
pub enum KsiCommand {
    /// Sign a file or a hash with a timestamping service; writes the KSI signature.
    Sign(SignArgs),
    /// Extend a KSI signature to a publication (or a later second) with the service's extender;
    /// writes the extended signature with its publication record.
    Extend(ExtendArgs),
    /// Verify a KSI signature offline. Exit 0 only when the result is OK.
    Verify(VerifyArgs),
    /// Fetch the keyless signature that covers an RFC 3161 token (provable from the
    /// publications even if the TSA key is compromised); writes it and the token.
    TsaProof(TsaProofArgs),
}

/// Flags of `backbone ksi tsa-proof`.
#[derive(Debug, Args)]
pub struct TsaProofArgs {
    /// The RFC 3161 reply (`.tsr`) or the token alone.
    pub reply: PathBuf,
    /// The timestamping service's address.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub service: SocketAddr,
    /// Where to write the KSI signature. Default: REPLY.ksig.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Where to write the token, the document the signature covers. Default: REPLY.token when
    /// REPLY is a reply; not written when REPLY is the token.
    #[arg(long, value_name = "FILE")]
    pub token_out: Option<PathBuf>,
}

/// Flags of `backbone ksi extend`.
#[derive(Debug, Args)]
pub struct ExtendArgs {
    /// The KSI signature file.
    pub signature: PathBuf,
    /// The timestamping service's address (its extender answers at POST /extend).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub service: SocketAddr,
    /// Extend to the publication at this second, or `latest` (the default).
    #[arg(long, value_name = "latest|TIME", conflicts_with = "to")]
    pub to_publication: Option<String>,
    /// Extend to the calendar root at this second, or `head`, without a publication record:
    /// the result verifies under the calendar policy (with --save-response) only.
    #[arg(long, value_name = "TIME|head")]
    pub to: Option<String>,
    /// Where to write the extended signature. Default: SIGNATURE with `-extended` before `.ksig`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also write the extender's response PDU (for `ksi verify --extender-response`).
    #[arg(long, value_name = "FILE")]
    pub save_response: Option<PathBuf>,
    /// Login id in the extender request's header.
    #[arg(long, default_value = DEFAULT_LOGIN_ID)]
    pub login_id: String,
    /// File holding the extender's HMAC key. Default: the login id (the service's test default).
    #[arg(long, value_name = "FILE")]
    pub hmac_key_file: Option<PathBuf>,
}

/// Flags of `backbone ksi sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The file to sign (hashed with SHA-256 here; only the hash is sent).
    #[arg(required_unless_present = "hash", conflicts_with = "hash")]
    pub file: Option<PathBuf>,
    /// Sign this imprint (hex: algorithm id byte, then digest) instead of a file.
    #[arg(long)]
    pub hash: Option<String>,
    /// The timestamping service's address.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub service: SocketAddr,
    /// Where to write the signature. Default: FILE.ksig for a file; standard output (base64)
    /// for --hash.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Flags of `backbone ksi verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The KSI signature file.
    pub signature: PathBuf,
    /// The signed document: its hash must be the signature's input. Default: not checked.
    #[arg(long, conflicts_with = "hash")]
    pub document: Option<PathBuf>,
    /// The signed hash, as a hex imprint. Default: not checked.
    #[arg(long)]
    pub hash: Option<String>,
    /// Level of the hash in the client's own aggregation tree.
    #[arg(long, default_value_t = 0)]
    pub input_level: u8,
    /// The verification policy.
    #[arg(long, value_enum, default_value_t = PolicyArg::Default)]
    pub policy: PolicyArg,
    /// A publications file (needs --trust-anchor to be trusted).
    #[arg(long, value_name = "FILE", requires = "trust_anchor")]
    pub publications_file: Option<PathBuf>,
    /// PEM certificates trusted to sign the publications file.
    #[arg(long, value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,
    /// E-mail address the publications file's signer must carry. Default: KSI's.
    #[arg(long)]
    pub signer_email: Option<String>,
    /// A publication string the caller trusts (user-publication policy).
    #[arg(long)]
    pub publication_string: Option<String>,
    /// A calendar signing certificate (DER or PEM) trusted for the key-based policy.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// An extender response PDU (`ksi extend --save-response`) with the signature's calendar
    /// chain extended: to the head for the calendar policy, to the publication for the
    /// publication policies.
    #[arg(long, value_name = "FILE")]
    pub extender_response: Option<PathBuf>,
    /// File holding the HMAC key that seals --extender-response. Default: `anon`.
    #[arg(long, value_name = "FILE", requires = "extender_response")]
    pub extender_key_file: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The policies on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Internal consistency only.
    Internal,
    /// Against an extender's calendar chain.
    Calendar,
    /// The calendar authentication record against a trusted certificate.
    Key,
    /// Against a trusted publications file.
    PublicationsFile,
    /// Against --publication-string.
    UserPublication,
    /// Publications file, falling back to key-based.
    Default,
}

/// Runs one `backbone ksi` verb.
///
/// # Errors
///
/// Usage, I/O and service errors; [`Error::Check`] when verification is not OK.
pub fn run(args: KsiArgs) -> Result<(), Error> {
    match args.command {
        KsiCommand::Sign(sign) => run_sign(&sign),
        KsiCommand::Extend(extend) => run_extend(&extend),
        KsiCommand::Verify(verify) => run_verify(&verify),
        KsiCommand::TsaProof(proof) => run_tsa_proof(&proof),
    }
}

fn run_tsa_proof(args: &TsaProofArgs) -> Result<(), Error> {
    let bytes = read(&args.reply)?;
    let shown = args.reply.display();
    let token = tsa::token_of_reply(&bytes).map_err(|e| Error::Check(format!("{shown}: {e}")))?;
    let serial = tsa::serial_of_token(&token).map_err(|e| Error::Check(format!("{shown}: {e}")))?;
    let ksig = client::call(args.service, "GET", &format!("/tsa/{serial}.ksig"), &[])
        .map_err(|e| Error::Check(e.to_string()))?;
    let signature = Signature::decode(&ksig)
        .map_err(|e| Error::Check(format!("the service's signature does not decode: {e}")))?;
    let token_hash = HashAlgorithm::Sha256
        .hash(&[&token])
        .map_err(|e| Error::Check(e.to_string()))?;
    let context = Context {
        document_hash: Some(&token_hash),
        ..Context::default()
    };
    let verdict = verify::verify(&signature, Policy::Internal, &context);
    if verdict.outcome != Outcome::Ok {
        return Err(Error::Check(format!(
            "the keyless signature of token 0x{serial} does not cover it: {verdict}"
        )));
    }
    let with_suffix = |suffix: &str| {
        let mut name = args.reply.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    let out = args.out.clone().unwrap_or_else(|| with_suffix(".ksig"));
    std::fs::write(&out, &ksig).map_err(Error::io("write", &out))?;
    let token_out = args
        .token_out
        .clone()
        .or_else(|| (token != bytes).then(|| with_suffix(".token")));
    if let Some(path) = &token_out {
        std::fs::write(path, &token).map_err(Error::io("write", path))?;
    }
    let document = token_out.as_deref().unwrap_or(&args.reply).display();
    println!(
        "token 0x{serial}: keyless signature from second {} written to {}\nverify: backbone ksi verify {} --document {document}",
        signature.signing_time(),
        out.display(),
        out.display()
    );
    Ok(())
}

fn run_sign(args: &SignArgs) -> Result<(), Error> {
    let imprint = match (&args.file, &args.hash) {
        (Some(file), _) => {
            let bytes = read(file)?;
            HashAlgorithm::Sha256
                .hash(&[&bytes])
                .map_err(|e| Error::Check(format!("cannot hash {}: {e}", file.display())))?
        }
        (None, Some(hash)) => parse_imprint(hash)?,
        (None, None) => return Err(Error::Usage("give a FILE or --hash".to_owned())),
    };
    let signature = client::sign(args.service, imprint.as_bytes(), 0)
        .map_err(|e| Error::Check(e.to_string()))?;
    let out = args.out.clone().or_else(|| {
        args.file.as_ref().map(|f| {
            let mut name = f.clone().into_os_string();
            name.push(".ksig");
            PathBuf::from(name)
        })
    });
    match out {
        Some(path) => {
            std::fs::write(&path, &signature).map_err(Error::io("write", &path))?;
            eprintln!("signature written to {}", path.display());
        }
        None => println!("{}", openssl::base64::encode_block(&signature)),
    }
    Ok(())
}

fn run_extend(args: &ExtendArgs) -> Result<(), Error> {
    let shown = args.signature.display();
    let signature = Signature::decode(&read(&args.signature)?)
        .map_err(|e| Error::Check(format!("{shown}: the signature does not decode: {e}")))?;
    let verdict = verify::verify(&signature, Policy::Internal, &Context::default());
    if verdict.outcome != Outcome::Ok {
        return Err(Error::Check(format!(
            "{shown} is not internally consistent: {verdict}"
        )));
    }
    let signed = signature.signing_time();
    let key = match &args.hmac_key_file {
        Some(path) => read(path)?,
        None => args.login_id.clone().into_bytes(),
    };
    let publication = match &args.to {
        Some(_) => None,
        None => Some(target_publication(
            args.service,
            args.to_publication.as_deref().unwrap_or("latest"),
            signed,
        )?),
    };
    let to = match (&args.to, &publication) {
        (_, Some(p)) => Some(p.time),
        (Some(to), None) if to == "head" => None,
        (Some(to), None) => Some(to.parse().map_err(|_| {
            Error::Usage(format!("--to {to:?}: expected seconds since 1970 or head"))
        })?),
        (None, None) => None,
    };
    let (chain, response) = client::extend_pdu(args.service, &args.login_id, &key, signed, to)
        .map_err(|e| Error::Check(e.to_string()))?;
    check_extended(&signature, &chain)?;
    let anchor = publication.clone().map_or(Anchor::None, |p| {
        Anchor::Publication(PublicationRecord::new(p))
    });
    let publication_time = chain.publication_time;
    let extended = Signature::new(
        signature.rfc3161().cloned(),
        signature.aggregation_chains().to_vec(),
        Some((chain, anchor)),
    )
    .map_err(|e| Error::Check(e.to_string()))?;
    let context = Context {
        user_publication: publication.as_ref(),
        ..Context::default()
    };
    let policy = if publication.is_some() {
        Policy::UserPublication
    } else {
        Policy::Internal
    };
    let verdict = verify::verify(&extended, policy, &context);
    if verdict.outcome != Outcome::Ok {
        return Err(Error::Check(format!(
            "the extended signature does not verify: {verdict}"
        )));
    }
    let bytes = extended.encode().map_err(|e| Error::Check(e.to_string()))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| extended_name(&args.signature));
    std::fs::write(&out, &bytes).map_err(Error::io("write", &out))?;
    if let Some(path) = &args.save_response {
        std::fs::write(path, &response).map_err(Error::io("write", path))?;
    }
    match &publication {
        Some(p) => println!(
            "signature of second {signed} extended to publication {} ({}), written to {}",
            p.time,
            p.to_publication_string(),
            out.display()
        ),
        None => println!(
            "signature of second {signed} extended to the calendar root at {publication_time}, written to {}",
            out.display()
        ),
    }
    Ok(())
}

/// The publication `which` (`latest` or a time) from the service, checked to be at or after the
/// signing time.
fn target_publication(
    service: SocketAddr,
    which: &str,
    signed: u64,
) -> Result<PublicationData, Error> {
    let found = if which == "latest" {
        client::latest_publication(service).map_err(|e| Error::Check(e.to_string()))?
    } else {
        let time: u64 = which.parse().map_err(|_| {
            Error::Usage(format!(
                "--to-publication {which:?}: expected latest or seconds since 1970"
            ))
        })?;
        client::publications(service)
            .map_err(|e| Error::Check(e.to_string()))?
            .into_iter()
            .find(|p| p.time == time)
    };
    let found = found.ok_or_else(|| {
        Error::Check(format!(
            "the service at {service} has no publication {which}"
        ))
    })?;
    let publication =
        PublicationData::from_publication_string(&found.publication_string).map_err(|e| {
            Error::Check(format!(
                "the service's publication string does not decode: {e}"
            ))
        })?;
    if publication.time != found.time {
        return Err(Error::Check(format!(
            "the service's publication string is for {}, not {}",
            publication.time, found.time
        )));
    }
    if publication.time < signed {
        return Err(Error::Check(format!(
            "publication {} is before the signature's second {signed}; extend after the next publication",
            publication.time
        )));
    }
    Ok(publication)
}

/// The extender's chain must continue the signature's own: same leaf, same aggregation time, and
/// (unless the signature is already published) the same right siblings, else the calendar forked.
fn check_extended(signature: &Signature, chain: &CalendarChain) -> Result<(), Error> {
    if signature.publication_record().is_some() {
        return Ok(());
    }
    let context = Context {
        extending_permitted: true,
        extended_calendar: Some(chain),
        ..Context::default()
    };
    let verdict = verify::verify(signature, Policy::Calendar, &context);
    if verdict.outcome != Outcome::Ok {
        return Err(Error::Check(format!(
            "the extender's calendar chain does not continue the signature's: {verdict}"
        )));
    }
    Ok(())
}

/// `a.ksig` → `a-extended.ksig`; other names get `-extended.ksig` appended.
fn extended_name(path: &std::path::Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".ksig").unwrap_or(&name);
    path.with_file_name(format!("{stem}-extended.ksig"))
}

/// The calendar chain in an extender response PDU, its MAC checked with `key`.
fn extender_chain(path: &std::path::Path, key: &[u8]) -> Result<CalendarChain, Error> {
    let shown = path.display();
    let response = ExtenderResponse::decode(&read(path)?)
        .map_err(|e| Error::Check(format!("{shown}: {e}")))?;
    response
        .check_mac(key, HashAlgorithm::Sha256)
        .map_err(|e| Error::Check(format!("{shown}: {e}")))?;
    let payload = response
        .payloads
        .iter()
        .find(|p| p.status == 0)
        .or(response.payloads.first())
        .ok_or_else(|| Error::Check(format!("{shown}: no extend response in the PDU")))?;
    payload
        .chain()
        .cloned()
        .map_err(|e| Error::Check(format!("{shown}: {e}")))
}

fn run_verify(args: &VerifyArgs) -> Result<(), Error> {
    let bytes = read(&args.signature)?;
    let signature = match Signature::decode(&bytes) {
        Ok(s) => s,
        Err(e) => return report(args, None, &format!("the signature does not decode: {e}")),
    };
    let document_hash = match (&args.document, &args.hash) {
        (Some(path), _) => {
            let algorithm = signature
                .document_hash()
                .map_or(HashAlgorithm::Sha256, Imprint::algorithm);
            let document = read(path)?;
            Some(
                algorithm
                    .hash(&[&document])
                    .map_err(|e| Error::Check(format!("cannot hash {}: {e}", path.display())))?,
            )
        }
        (None, Some(hash)) => Some(parse_imprint(hash)?),
        (None, None) => None,
    };
    let certificates = match &args.cert {
        Some(path) => vec![
            certificate_record(&read(path)?)
                .map_err(|why| Error::Usage(format!("--cert {}: {why}", path.display())))?,
        ],
        None => Vec::new(),
    };
    let publications_file = match (&args.publications_file, &args.trust_anchor) {
        (Some(file), Some(anchor)) => {
            let mut anchors = TrustAnchors::from_pem(&read(anchor)?)
                .map_err(|e| Error::Usage(format!("--trust-anchor: {e}")))?;
            if let Some(email) = &args.signer_email {
                anchors = anchors.with_signer_email(email);
            }
            let now = i64::try_from(backbone_timestamping::service::now()).unwrap_or(i64::MAX);
            let parsed = PublicationsFile::parse_unverified(&read(file)?)
                .map_err(|e| Error::Check(e.to_string()))?;
            Some(
                parsed
                    .verify(&anchors, now)
                    .map_err(|e| Error::Check(e.to_string()))?,
            )
        }
        _ => None,
    };
    let user_publication = match &args.publication_string {
        Some(text) => Some(
            PublicationData::from_publication_string(text)
                .map_err(|e| Error::Usage(format!("--publication-string: {e}")))?,
        ),
        None => None,
    };
    let extended_calendar = match &args.extender_response {
        Some(path) => {
            let key = match &args.extender_key_file {
                Some(key) => read(key)?,
                None => DEFAULT_LOGIN_ID.as_bytes().to_vec(),
            };
            Some(extender_chain(path, &key)?)
        }
        None => None,
    };
    let context = Context {
        document_hash: document_hash.as_ref(),
        input_level: args.input_level,
        publications_file: publications_file.as_ref(),
        user_publication: user_publication.as_ref(),
        extending_permitted: extended_calendar.is_some(),
        extended_calendar: extended_calendar.as_ref(),
        trusted_certificates: &certificates,
    };
    let policy = match args.policy {
        PolicyArg::Internal => Policy::Internal,
        PolicyArg::Calendar => Policy::Calendar,
        PolicyArg::Key => Policy::KeyBased,
        PolicyArg::PublicationsFile => Policy::PublicationsFile,
        PolicyArg::UserPublication => Policy::UserPublication,
        PolicyArg::Default => Policy::Default,
    };
    let verdict = verify::verify(&signature, policy, &context);
    report(args, Some((&signature, &verdict)), &verdict.to_string())
}

/// Prints the result and turns anything but OK into an error (exit 1).
fn report(
    args: &VerifyArgs,
    result: Option<(&Signature, &Verdict)>,
    message: &str,
) -> Result<(), Error> {
    let outcome = result.map_or(Outcome::Fail, |(_, v)| v.outcome);
    let name = match outcome {
        Outcome::Ok => "OK",
        Outcome::Na => "NA",
        Outcome::Fail => "FAIL",
    };
    if args.json {
        let code = result.and_then(|(_, v)| v.code).map(|c| c.as_str());
        let object = serde_json::json!({
            "result": name,
            "code": code,
            "message": result.and_then(|(_, v)| v.code).map_or_else(|| message.to_owned(), |c| c.message().to_owned()),
            "rule": result.map(|(_, v)| v.rule),
            "aggregation_time": result.map(|(s, _)| s.signing_time()),
            "publication_time": result.and_then(|(s, _)| s.calendar_chain()).map(|c| c.publication_time),
        });
        println!("{object}");
    } else {
        println!("{message}");
    }
    match outcome {
        Outcome::Ok => Ok(()),
        _ => Err(Error::Check(format!("signature verification: {name}"))),
    }
}

/// A calendar signing certificate (DER or PEM) as a record the key-based policy trusts.
pub(crate) fn certificate_record(bytes: &[u8]) -> Result<CertificateRecord, String> {
    let der = match openssl::x509::X509::from_der(bytes) {
        Ok(_) => bytes.to_vec(),
        Err(_) => openssl::x509::X509::from_pem(bytes)
            .and_then(|c| c.to_der())
            .map_err(|e| format!("neither DER nor PEM X.509: {e}"))?,
    };
    let id = certificate_id(&der).map_err(|e| e.to_string())?;
    Ok(CertificateRecord {
        id,
        certificate: der,
    })
}

fn parse_imprint(text: &str) -> Result<Imprint, Error> {
    let bytes =
        http::hex_decode(text).map_err(|why| Error::Usage(format!("--hash {text:?}: {why}")))?;
    Imprint::from_bytes(&bytes).map_err(|e| Error::Usage(format!("--hash {text:?}: {e}")))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    let len = std::fs::metadata(path)
        .map_err(Error::io("read", path))?
        .len();
    if len > MAX_FILE_LEN {
        return Err(Error::Usage(format!(
            "{} is {len} bytes, more than the limit of {MAX_FILE_LEN}",
            path.display()
        )));
    }
    std::fs::read(path).map_err(Error::io("read", path))
}
