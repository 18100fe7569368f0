//! Minting the development PKI in memory (keys, CA and leaf parameters, signatures) and
//! writing its files atomically with their modes.

use super::*;

/// A file to write: its path relative to the PKI directory, its PEM text and its mode.
pub(super) struct PkiFile {
    pub(super) rel: String,
    pub(super) contents: Zeroizing<String>,
    pub(super) mode: u32,
}

/// A freshly signed certificate and its key.
pub(super) struct Minted {
    pub(super) cert_pem: String,
    pub(super) key_pem: Zeroizing<String>,
}

/// Mints the whole PKI in memory; the files come back in [`layout`] order.
pub(super) fn mint_all(
    agent_name: &str,
    leaf_validity: Duration,
) -> Result<Vec<PkiFile>, PkiError> {
    let now = OffsetDateTime::now_utc();

    let root_key = new_key(Ca::Root)?;
    let root_key_pem = Zeroizing::new(root_key.serialize_pem());
    let root = CertifiedIssuer::self_signed(ca_params(Ca::Root, now)?, root_key)
        .map_err(generate_error(Ca::Root))?;

    let inter_key = new_key(Ca::Intermediate)?;
    let inter_key_pem = Zeroizing::new(inter_key.serialize_pem());
    let inter = CertifiedIssuer::signed_by(ca_params(Ca::Intermediate, now)?, inter_key, &*root)
        .map_err(generate_error(Ca::Intermediate))?;

    let intercept_key = new_key(Ca::Intercept)?;
    let intercept_key_pem = Zeroizing::new(intercept_key.serialize_pem());
    let intercept = ca_params(Ca::Intercept, now)?
        .signed_by(&intercept_key, &*root)
        .map_err(generate_error(Ca::Intercept))?;

    let gateway = mint_leaf(&Leaf::Gateway, &inter, now, leaf_validity)?;
    let agent = mint_leaf(
        &Leaf::Agent(agent_name.to_owned()),
        &inter,
        now,
        leaf_validity,
    )?;

    let chain = |leaf: &Minted| Zeroizing::new(format!("{}{}", leaf.cert_pem, inter.pem()));
    let contents = [
        (Zeroizing::new(root.pem()), root_key_pem),
        (Zeroizing::new(inter.pem()), inter_key_pem),
        (chain(&gateway), gateway.key_pem),
        (chain(&agent), agent.key_pem),
        (Zeroizing::new(intercept.pem()), intercept_key_pem),
    ];
    Ok(layout(agent_name)
        .into_iter()
        .zip(contents)
        .flat_map(|(entry, (cert, key))| {
            [
                PkiFile {
                    rel: entry.cert,
                    contents: cert,
                    mode: CERT_MODE,
                },
                PkiFile {
                    rel: entry.key,
                    contents: key,
                    mode: KEY_MODE,
                },
            ]
        })
        .collect())
}

pub(super) fn generate_error(what: impl Into<Role>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into().to_string();
    move |source| PkiError::Generate { what, source }
}

impl From<Ca> for Role {
    fn from(ca: Ca) -> Self {
        Role::Ca(ca)
    }
}

impl From<Leaf> for Role {
    fn from(leaf: Leaf) -> Self {
        Role::Leaf(leaf)
    }
}

pub(super) fn new_key(owner: impl Into<Role>) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Generate {
        what: format!("the key of {}", owner.into()),
        source,
    })
}

pub(super) fn add(now: OffsetDateTime, d: Duration) -> Result<OffsetDateTime, PkiError> {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d))
        .ok_or_else(|| PkiError::InvalidOption {
            option: "validity",
            reason: format!("{} is too long", humantime::format_duration(d)),
        })
}

/// Parameters shared by every certificate: subject CN and validity window. The serial number is
/// left to rcgen, which derives 159 bits from a hash of the (fresh, random) public key: unique
/// per certificate and unpredictable.
pub(super) fn base_params(
    cn: &str,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = now - BACKDATE;
    params.not_after = add(now, lifetime)?;
    Ok(params)
}

pub(super) fn ca_params(ca: Ca, now: OffsetDateTime) -> Result<CertificateParams, PkiError> {
    let (cn, lifetime, pathlen) = match ca {
        Ca::Root => (ROOT_CA_CN, ROOT_CA_VALIDITY, 1),
        Ca::Intermediate => (INTERMEDIATE_CA_CN, INTERMEDIATE_CA_VALIDITY, 0),
        Ca::Intercept => (INTERCEPT_CA_CN, INTERMEDIATE_CA_VALIDITY, 0),
    };
    let mut params = base_params(cn, now, lifetime)?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(pathlen));
    params.use_authority_key_identifier_extension = ca != Ca::Root;
    params.key_usages = match ca {
        Ca::Root => vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
        Ca::Intermediate => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ],
        Ca::Intercept => vec![KeyUsagePurpose::KeyCertSign],
    };
    if ca == Ca::Intercept {
        // The restriction that makes a leaked interception key useless against mTLS listeners.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    }
    Ok(params)
}

pub(super) fn mint_leaf(
    leaf: &Leaf,
    issuer: &Issuer<'_, impl SigningKey>,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<Minted, PkiError> {
    let ia5 = |s: &str| s.try_into().map_err(generate_error(leaf.clone()));
    let (cn, sans, eku) = match leaf {
        Leaf::Gateway => (
            GATEWAY_CN,
            vec![
                SanType::DnsName(ia5(GATEWAY_CN)?),
                SanType::DnsName(ia5("localhost")?),
                SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        Leaf::Agent(name) => (
            name.as_str(),
            vec![
                SanType::URI(ia5(&format!("{AGENT_SPIFFE_PREFIX}{name}"))?),
                SanType::DnsName(ia5(name)?),
            ],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    };
    let mut params = base_params(cn, now, lifetime)?;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    let key = new_key(leaf.clone())?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(generate_error(leaf.clone()))?;
    Ok(Minted {
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

// ---------------------------------------------------------------------------------------------
// Files

pub(super) fn exists(path: &Path) -> bool {
    // A dangling symlink counts: writing through it would create a file somewhere else.
    fs::symlink_metadata(path).is_ok()
}

pub(super) fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> PkiError {
    let path = path.to_path_buf();
    move |source| PkiError::Io {
        path,
        action,
        source,
    }
}

pub(super) fn create_dirs(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(io_error(dir, "create directory"))?;
    let secrets = dir.join(SECRETS_DIR);
    match fs::DirBuilder::new()
        .mode(SECRETS_DIR_MODE)
        .create(&secrets)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(&secrets, "create directory")(e)),
    }
    // `mode` above is filtered by the umask, and an existing directory keeps its old mode.
    fs::set_permissions(&secrets, fs::Permissions::from_mode(SECRETS_DIR_MODE))
        .map_err(io_error(&secrets, "set permissions"))
}

/// Writes `path` through a temporary file in the same directory and a rename, so a reader sees
/// the old file or the new one, never half of one. The temporary file is created with mode
/// `0600` and only then given `mode`, so a key is never readable by others, even briefly.
pub(super) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(KEY_MODE)
        .open(&tmp)
        .map_err(io_error(&tmp, "create"))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_error(&tmp, "set permissions"))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp, "write"))?;
    fs::rename(&tmp, path).map_err(io_error(path, "rename into place"))
}
