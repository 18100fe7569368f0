//! The development PKI behind `slapenir pki init --dir DIR`: every certificate and key a
//! SLAPENIR deployment needs when step-ca is not running, minted with `rcgen`, in the file names
//! and PEM layout step-ca uses, so a config written for one works with the other.
//!
//! [`init`] writes this flat layout into `DIR` (configs say `certs/gateway.crt`):
//!
//! | file                          | what                                                           |
//! |-------------------------------|----------------------------------------------------------------|
//! | `root_ca.crt`                 | self-signed root CA, `pathlen:1`, 10 years                     |
//! | `secrets/root_ca_key`         | its key                                                        |
//! | `intermediate_ca.crt`         | CA signed by the root, `pathlen:0`, 5 years; signs the leaves  |
//! | `secrets/intermediate_ca_key` | its key                                                        |
//! | `gateway.crt`, `gateway.key`  | server leaf `proxy` (SANs `proxy`, `localhost`, `127.0.0.1`)   |
//! | `agent-1.crt`, `agent-1.key`  | client leaf `agent-1` (SANs `spiffe://slapenir/agent/agent-1`, `agent-1`) |
//! | `intercept_ca.crt`, `.key`    | interception CA for CONNECT, signed by the root, 5 years       |
//!
//! Leaf `.crt` files hold the leaf followed by the intermediate; CA `.crt` files hold one
//! certificate.
//!
//! What matches step-ca: the file names above; ECDSA P-256 keys with SHA-256 signatures; a root
//! with `pathlen:1` and an intermediate with `pathlen:0`; leaf files that hold the leaf followed by
//! the intermediate (the bundle `step ca certificate` writes); leaves whose subject is repeated in
//! the SANs; `notBefore` backdated by one minute against clock skew.
//!
//! What differs, on purpose, because this is a **development** PKI:
//! - Every private key is written **unencrypted**, as PKCS#8 PEM (`BEGIN PRIVATE KEY`), with mode
//!   `0600` (and `secrets/` with mode `0700`). step-ca encrypts its CA keys with a password.
//!   Anyone who can read `DIR` can mint certificates this deployment trusts.
//! - Leaves are valid 30 days by default ([`DEFAULT_LEAF_VALIDITY`]); step-ca's default is 24
//!   hours and relies on renewal, which nothing here does. Once they expire,
//!   [`InitOptions::keep_existing`] refuses the set and says so; mint a new one with `force`.
//! - step-ca writes leaf keys as SEC1 (`BEGIN EC PRIVATE KEY`). Both forms load with
//!   `rustls-pki-types`' PEM reader, and `keep_existing` accepts either for the leaves.
//!
//! The interception CA is not the intermediate: it is a second CA under the root, so agents that
//! trust the root trust the leaves the gateway mints for CONNECT targets. It has `pathlen:0` and
//! the extended key usage `serverAuth` **only**. Verifiers (OpenSSL, rustls-webpki) apply a CA's
//! extended key usages to everything beneath it, so a leaked interception key can mint server
//! certificates but no client certificate that an mTLS listener would accept.
//!
//! Existing files are never replaced silently: [`init`] refuses when any target exists (and names
//! them) unless [`InitOptions::force`] is set, and [`InitOptions::keep_existing`] accepts a
//! complete, consistent set untouched, so a start script can run it every time.
//!
//! No function here prints, logs or puts key material in an error or a report.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SigningKey, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use zeroize::Zeroizing;

mod existing;
mod issue;

use existing::*;
use issue::*;

/// The root CA certificate (trust anchor for agents and for the listener's `client_ca`).
pub const ROOT_CA_CERT: &str = "root_ca.crt";
/// The root CA key, unencrypted PKCS#8 PEM.
pub const ROOT_CA_KEY: &str = "secrets/root_ca_key";
/// The intermediate CA certificate, which signs the gateway and agent certificates.
pub const INTERMEDIATE_CA_CERT: &str = "intermediate_ca.crt";
/// The intermediate CA key, unencrypted PKCS#8 PEM; [`issue_client_cert`] signs with it.
pub const INTERMEDIATE_CA_KEY: &str = "secrets/intermediate_ca_key";
/// The gateway's server certificate followed by the intermediate.
pub const GATEWAY_CERT: &str = "gateway.crt";
/// The gateway's key.
pub const GATEWAY_KEY: &str = "gateway.key";
/// The interception CA certificate (this CA only, no chain).
pub const INTERCEPT_CA_CERT: &str = "intercept_ca.crt";
/// The interception CA key, read by the gateway to mint CONNECT leaves.
pub const INTERCEPT_CA_KEY: &str = "intercept_ca.key";
/// The directory of CA keys, mode `0700`.
pub const SECRETS_DIR: &str = "secrets";
/// The agent name [`InitOptions::default`] uses.
pub const DEFAULT_AGENT_NAME: &str = "agent-1";
/// The prefix of an agent certificate's URI SAN; the agent name follows it.
pub const AGENT_SPIFFE_PREFIX: &str = "spiffe://slapenir/agent/";
/// The gateway certificate's subject CN; its SANs are DNS `proxy`, DNS `localhost` and IP
/// `127.0.0.1` (the name on the agents' network, and the names for local tests).
pub const GATEWAY_CN: &str = "proxy";

const DAY: u64 = 24 * 60 * 60;
/// Lifetime of the root CA: 10 years.
pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(3650 * DAY);
/// Lifetime of the intermediate and interception CAs: 5 years.
pub const INTERMEDIATE_CA_VALIDITY: Duration = Duration::from_secs(1825 * DAY);
/// Default lifetime of the gateway and agent certificates: 30 days (step-ca's default is 24h).
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(30 * DAY);
/// `notBefore` lies this far in the past, as step-ca's `backdate`, so a peer whose clock is a
/// little behind does not reject a certificate minted a moment ago.
const BACKDATE: Duration = Duration::from_secs(60);

const ORGANIZATION: &str = "SLAPENIR Development";
const ROOT_CA_CN: &str = "SLAPENIR Development Root CA";
const INTERMEDIATE_CA_CN: &str = "SLAPENIR Development Intermediate CA";
const INTERCEPT_CA_CN: &str = "SLAPENIR Development Interception CA";

const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;
const SECRETS_DIR_MODE: u32 = 0o700;

/// How [`init`] treats an existing PKI, and what it mints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// Replace existing files. Without it, [`init`] refuses if any target file exists.
    pub force: bool,
    /// Accept a complete existing PKI untouched (every file present, parsing, chaining, keys
    /// matching, certificates currently valid); mint one if no file exists; refuse a partial or
    /// broken set. Cannot be combined with `force`.
    pub keep_existing: bool,
    /// Lifetime of the gateway and agent certificates; at most [`INTERMEDIATE_CA_VALIDITY`].
    pub leaf_validity: Duration,
    /// The agent certificate's name: its files (`NAME.crt`, `NAME.key`), subject CN, DNS SAN and
    /// SPIFFE ID. A DNS label: 1–63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
    pub agent_name: String,
}

impl Default for InitOptions {
    /// No overwrite, no keep, [`DEFAULT_LEAF_VALIDITY`], agent [`DEFAULT_AGENT_NAME`].
    fn default() -> Self {
        Self {
            force: false,
            keep_existing: false,
            leaf_validity: DEFAULT_LEAF_VALIDITY,
            agent_name: DEFAULT_AGENT_NAME.to_owned(),
        }
    }
}

/// Whether [`init`] minted a new PKI or kept the one it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every file was (re)written.
    Written,
    /// Every file already existed and was usable; nothing was touched.
    Kept,
}

/// One certificate file as a report shows it. Holds no key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// The certificate file (for a chain file, the summary is of its first certificate).
    pub path: PathBuf,
    /// Subject, RFC 4514 style (`CN=proxy`).
    pub subject: String,
    /// Issuer, RFC 4514 style.
    pub issuer: String,
    /// End of validity (`notAfter`).
    pub not_after: SystemTime,
}

/// What [`init`] did, for the command line to print (its `Display` is that text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    /// The PKI directory.
    pub dir: PathBuf,
    /// Written or kept.
    pub outcome: Outcome,
    /// Every file written or kept, certificates and keys, in layout order.
    pub files: Vec<PathBuf>,
    /// Each certificate file's subject, issuer and expiry, in layout order.
    pub certificates: Vec<CertSummary>,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.outcome {
            Outcome::Written => "wrote",
            Outcome::Kept => "kept existing",
        };
        writeln!(f, "{verb} development PKI in {}:", self.dir.display())?;
        for c in &self.certificates {
            writeln!(
                f,
                "  {}: {} (issued by {}), expires {}",
                c.path.display(),
                c.subject,
                c.issuer,
                humantime::format_rfc3339_seconds(c.not_after)
            )?;
        }
        let is_cert = |p: &PathBuf| self.certificates.iter().any(|c| &c.path == p);
        for path in self.files.iter().filter(|p| !is_cert(p)) {
            writeln!(f, "  {}: private key, mode 0600", path.display())?;
        }
        write!(
            f,
            "private keys are unencrypted PKCS#8 PEM: for development only \
             (step-ca encrypts its CA keys with a password)"
        )
    }
}

/// Why the PKI could not be written, kept or used. Names files, never prints key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum PkiError {
    /// An option is out of range or conflicts with another.
    InvalidOption {
        /// The option (`agent_name`, `leaf_validity`, ...).
        option: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Target files exist and the caller did not ask to replace them.
    AlreadyExists {
        /// Every target that exists.
        existing: Vec<PathBuf>,
        /// What the caller can do about it.
        remedy: &'static str,
    },
    /// `keep_existing` found some of the files but not all.
    Incomplete {
        /// Targets that exist.
        existing: Vec<PathBuf>,
        /// Targets that do not.
        missing: Vec<PathBuf>,
    },
    /// Existing files cannot be used; one entry per problem found.
    Unusable {
        /// The file and what is wrong with it.
        problems: Vec<(PathBuf, String)>,
        /// What the caller can do about it.
        remedy: &'static str,
    },
    /// Reading or writing a file or directory failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`create directory`, `write`, ...).
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// `rcgen` failed to generate a key or certificate.
    Generate {
        /// Which key or certificate.
        what: String,
        /// rcgen's error (it carries no key material).
        source: rcgen::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PkiError::InvalidOption { option, reason } => write!(f, "invalid {option}: {reason}"),
            PkiError::AlreadyExists { existing, remedy } => {
                write!(f, "refusing to overwrite {}; {remedy}", list(existing))
            }
            PkiError::Incomplete { existing, missing } => write!(
                f,
                "cannot keep an incomplete PKI: missing {} (present: {}); \
                 restore the missing files or replace them all with --force",
                list(missing),
                list(existing)
            ),
            PkiError::Unusable { problems, remedy } => {
                write!(f, "PKI files are not usable:")?;
                for (path, reason) in problems {
                    write!(f, "\n  {}: {reason}", path.display())?;
                }
                write!(f, "\n{remedy}")
            }
            PkiError::Io {
                path,
                action,
                source,
            } => write!(f, "{}: {action}: {source}", path.display()),
            PkiError::Generate { what, source } => write!(f, "generating {what}: {source}"),
        }
    }
}

impl std::error::Error for PkiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PkiError::Io { source, .. } => Some(source),
            PkiError::Generate { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Writes a development PKI into `dir` (created if missing), or keeps the one there.
///
/// # Errors
///
/// - [`PkiError::InvalidOption`]: `force` with `keep_existing`, a bad `agent_name`, or a
///   `leaf_validity` that is zero or longer than the intermediate's.
/// - [`PkiError::AlreadyExists`]: a target file exists and neither `force` nor `keep_existing`
///   is set; nothing is written. The error lists every existing target.
/// - [`PkiError::Incomplete`], [`PkiError::Unusable`]: with `keep_existing`, the existing set is
///   partial, or a file does not parse, chain, match its key or is outside its validity.
/// - [`PkiError::Io`], [`PkiError::Generate`]: a file could not be written, or rcgen failed. Files
///   are written one by one (each atomically), so a failure can leave a partial set; run again
///   with `force`.
///
/// # Example
///
/// ```
/// use slapenir::pki::{init, InitOptions, Outcome};
///
/// let dir = tempfile::tempdir()?;
/// let report = init(dir.path(), InitOptions::default())?;
/// assert_eq!(report.outcome, Outcome::Written);
/// assert!(dir.path().join("gateway.crt").exists());
///
/// // Running again refuses to overwrite ...
/// assert!(init(dir.path(), InitOptions::default()).is_err());
/// // ... unless told to keep what is there.
/// let keep = InitOptions { keep_existing: true, ..InitOptions::default() };
/// assert_eq!(init(dir.path(), keep)?.outcome, Outcome::Kept);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn init(dir: &Path, opts: InitOptions) -> Result<InitReport, PkiError> {
    check_options(&opts)?;
    let entries = layout(&opts.agent_name);
    let targets = layout_files(&entries);
    let (existing, missing): (Vec<PathBuf>, Vec<PathBuf>) = targets
        .iter()
        .map(|rel| dir.join(rel))
        .partition(|p| exists(p));

    if opts.keep_existing && missing.is_empty() {
        let certificates = check_existing(dir, &entries, SystemTime::now())?;
        return Ok(InitReport {
            dir: dir.to_path_buf(),
            outcome: Outcome::Kept,
            files: existing,
            certificates,
        });
    }
    if opts.keep_existing && !existing.is_empty() {
        return Err(PkiError::Incomplete { existing, missing });
    }
    if !opts.force && !existing.is_empty() {
        return Err(PkiError::AlreadyExists {
            existing,
            remedy: "pass --force to replace the whole PKI, or --keep-existing to use it",
        });
    }

    let files = mint_all(&opts.agent_name, opts.leaf_validity)?;
    create_dirs(dir)?;
    for file in &files {
        write_atomically(&dir.join(&file.rel), file.contents.as_bytes(), file.mode)?;
    }
    // What was written must pass the check a later `keep_existing` applies; it also reads back
    // the subjects and expiry dates for the report.
    let certificates = check_existing(dir, &entries, SystemTime::now())?;
    Ok(InitReport {
        dir: dir.to_path_buf(),
        outcome: Outcome::Written,
        files: targets.iter().map(|rel| dir.join(rel)).collect(),
        certificates,
    })
}

/// Signs a client certificate for agent `name` with the intermediate CA in `dir` and writes
/// `NAME.crt` (leaf then intermediate) and `NAME.key` (mode `0600`) there. The certificate is
/// shaped like the one [`init`] writes: CN `NAME`, SANs `spiffe://slapenir/agent/NAME` and DNS
/// `NAME`, extended key usage `clientAuth` only.
///
/// Returns the certificate and key paths.
///
/// # Errors
///
/// - [`PkiError::InvalidOption`]: `name` is not a DNS label (see [`InitOptions::agent_name`]) or
///   is `gateway`; `validity` is zero or outlasts the intermediate.
/// - [`PkiError::AlreadyExists`]: `NAME.crt` or `NAME.key` exists (nothing is replaced).
/// - [`PkiError::Unusable`]: the intermediate certificate or key is missing, unreadable, not an
///   unencrypted PKCS#8 P-256 key, or they do not belong together.
/// - [`PkiError::Io`], [`PkiError::Generate`]: writing or signing failed.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use slapenir::pki::{init, issue_client_cert, InitOptions};
///
/// let dir = tempfile::tempdir()?;
/// init(dir.path(), InitOptions::default())?;
/// let (cert, key) = issue_client_cert(dir.path(), "agent-2", Duration::from_secs(3600))?;
/// assert!(cert.ends_with("agent-2.crt") && key.ends_with("agent-2.key"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn issue_client_cert(
    dir: &Path,
    name: &str,
    validity: Duration,
) -> Result<(PathBuf, PathBuf), PkiError> {
    check_agent_name(name)?;
    check_validity("validity", validity)?;
    let entry = Entry::agent(name);
    let (cert_path, key_path) = (dir.join(&entry.cert), dir.join(&entry.key));
    let existing: Vec<PathBuf> = [&cert_path, &key_path]
        .into_iter()
        .filter(|p| exists(p))
        .cloned()
        .collect();
    if !existing.is_empty() {
        return Err(PkiError::AlreadyExists {
            existing,
            remedy: "remove them first, or choose another name",
        });
    }

    let ca_cert_path = dir.join(INTERMEDIATE_CA_CERT);
    let ca_key_path = dir.join(INTERMEDIATE_CA_KEY);
    let unusable = |path: &Path, reason: String| PkiError::Unusable {
        problems: vec![(path.to_path_buf(), reason)],
        remedy: "use a directory written by `slapenir pki init` \
                 (step-ca's password-protected CA keys cannot be used here)",
    };
    let ca_pem = fs::read_to_string(&ca_cert_path)
        .map_err(|e| unusable(&ca_cert_path, format!("cannot read: {e}")))?;
    let ca_certs = certs_in(ca_pem.as_bytes()).map_err(|r| unusable(&ca_cert_path, r))?;
    let [ca_der] = ca_certs.as_slice() else {
        return Err(unusable(
            &ca_cert_path,
            format!("holds {} certificates, expected 1", ca_certs.len()),
        ));
    };
    let ca_key = read_rcgen_key(&ca_key_path).map_err(|r| unusable(&ca_key_path, r))?;
    let ca = parse(ca_der).map_err(|r| unusable(&ca_cert_path, r))?;
    if ca.public_key().raw != ca_key.subject_public_key_info().as_slice() {
        return Err(unusable(
            &ca_key_path,
            format!("is not the key of {INTERMEDIATE_CA_CERT}"),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let not_after = add(now, validity)?;
    if not_after.unix_timestamp() > ca.validity().not_after.timestamp() {
        return Err(PkiError::InvalidOption {
            option: "validity",
            reason: format!(
                "the certificate would outlive {INTERMEDIATE_CA_CERT} (expires {})",
                ca.validity().not_after
            ),
        });
    }
    let issuer = Issuer::from_ca_cert_der(ca_der, ca_key).map_err(|source| PkiError::Generate {
        what: format!("an issuer from {}", ca_cert_path.display()),
        source,
    })?;
    let minted = mint_leaf(&Leaf::Agent(name.to_owned()), &issuer, now, validity)?;
    // The intermediate goes into the chain as it is in its file, which holds just that
    // certificate (checked above).
    let chain = format!("{}{}\n", minted.cert_pem, ca_pem.trim_end());
    create_dirs(dir)?;
    write_atomically(&cert_path, chain.as_bytes(), CERT_MODE)?;
    write_atomically(&key_path, minted.key_pem.as_bytes(), KEY_MODE)?;
    Ok((cert_path, key_path))
}

// ---------------------------------------------------------------------------------------------
// Options

fn check_options(opts: &InitOptions) -> Result<(), PkiError> {
    if opts.force && opts.keep_existing {
        return Err(PkiError::InvalidOption {
            option: "force",
            reason: "cannot be combined with keep_existing (replace everything, or keep it?)"
                .to_owned(),
        });
    }
    check_agent_name(&opts.agent_name)?;
    check_validity("leaf_validity", opts.leaf_validity)
}

/// An agent name becomes a file name, a DNS SAN and a SPIFFE path segment: a lowercase DNS label
/// is valid as all three and cannot climb out of the PKI directory.
fn check_agent_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason: &str| {
        Err(PkiError::InvalidOption {
            option: "agent_name",
            reason: format!("{name:?} {reason}"),
        })
    };
    if name.is_empty() || name.len() > 63 {
        return bad("must be 1 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("may contain only a-z, 0-9 and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("must not start or end with '-'");
    }
    if name == "gateway" {
        return bad("is the gateway's file name");
    }
    Ok(())
}

fn check_validity(option: &'static str, validity: Duration) -> Result<(), PkiError> {
    if validity.is_zero() || validity > INTERMEDIATE_CA_VALIDITY {
        return Err(PkiError::InvalidOption {
            option,
            reason: format!(
                "{} is not between 1 second and the intermediate's {} days",
                humantime::format_duration(validity),
                INTERMEDIATE_CA_VALIDITY.as_secs() / DAY
            ),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Layout

/// The certificate authorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ca {
    Root,
    Intermediate,
    Intercept,
}

/// The end-entity certificates; the intermediate signs them.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Leaf {
    Gateway,
    Agent(String),
}

/// What a certificate is for; decides its extensions, its issuer and its file's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Ca(Ca),
    Leaf(Leaf),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Ca(Ca::Root) => f.write_str("the root CA"),
            Role::Ca(Ca::Intermediate) => f.write_str("the intermediate CA"),
            Role::Ca(Ca::Intercept) => f.write_str("the interception CA"),
            Role::Leaf(Leaf::Gateway) => f.write_str("the gateway certificate"),
            Role::Leaf(Leaf::Agent(name)) => write!(f, "the certificate of agent {name}"),
        }
    }
}

/// One certificate of the layout and where it and its key go (relative to the PKI directory).
struct Entry {
    role: Role,
    cert: String,
    key: String,
}

impl Entry {
    fn new(role: Role, cert: &str, key: &str) -> Self {
        Self {
            role,
            cert: cert.to_owned(),
            key: key.to_owned(),
        }
    }

    fn agent(name: &str) -> Self {
        Self::new(
            Role::Leaf(Leaf::Agent(name.to_owned())),
            &format!("{name}.crt"),
            &format!("{name}.key"),
        )
    }
}

/// The PKI for `agent_name`, each issuer before what it signs (the minting and report order).
fn layout(agent_name: &str) -> [Entry; 5] {
    [
        Entry::new(Role::Ca(Ca::Root), ROOT_CA_CERT, ROOT_CA_KEY),
        Entry::new(
            Role::Ca(Ca::Intermediate),
            INTERMEDIATE_CA_CERT,
            INTERMEDIATE_CA_KEY,
        ),
        Entry::new(Role::Leaf(Leaf::Gateway), GATEWAY_CERT, GATEWAY_KEY),
        Entry::agent(agent_name),
        Entry::new(Role::Ca(Ca::Intercept), INTERCEPT_CA_CERT, INTERCEPT_CA_KEY),
    ]
}

/// Every file of `entries`, certificate then key, relative to the PKI directory.
fn layout_files(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .flat_map(|e| [e.cert.clone(), e.key.clone()])
        .collect()
}

#[cfg(test)]
#[path = "dev_tests.rs"]
mod tests;
