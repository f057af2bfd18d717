//! The files `[store]` names for a secure etcd: the CA, the client certificate and its key,
//! and the password. `promd check-config` (and every load) reads them to report what is
//! wrong with them; promd reads them again, with the same functions, to connect.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::certs::{Standing, rfc3339, validities};

/// The environment variable in which systemd passes a service its credentials directory
/// (`LoadCredential=`, `SetCredential=`, `ImportCredential=`).
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// `password-file`: where the etcd password is. Serialized as written (into
/// `/run/promd/running.json`; the password itself never is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PasswordFile {
    /// An absolute path.
    Path(PathBuf),
    /// A bare name: the systemd credential of that name, `$CREDENTIALS_DIRECTORY/NAME`
    /// (given to promd.service with `LoadCredential=NAME:/path/to/file`).
    Credential(String),
}

impl PasswordFile {
    /// Reads the key's value: an absolute path, or a credential name (no `/`, not `.` or
    /// `..`). The error is the message for the key.
    pub fn parse(text: &str) -> Result<PasswordFile, String> {
        if text.starts_with('/') {
            return Ok(PasswordFile::Path(PathBuf::from(text)));
        }
        if text.is_empty() || text.contains('/') || text == "." || text == ".." {
            return Err(format!(
                "`password-file` = {text:?} is neither an absolute path nor the name of a systemd \
                 credential (a name without `/`, as in LoadCredential=NAME:PATH)"
            ));
        }
        Ok(PasswordFile::Credential(text.to_owned()))
    }

    /// The file to read: the path, or the credential in `credentials` (the value of
    /// `$CREDENTIALS_DIRECTORY`; `None` when it is not set).
    pub fn resolve(&self, credentials: Option<&Path>) -> Result<PathBuf, SecretError> {
        match (self, credentials) {
            (PasswordFile::Path(path), _) => Ok(path.clone()),
            (PasswordFile::Credential(name), Some(dir)) => Ok(dir.join(name)),
            (PasswordFile::Credential(name), None) => {
                Err(SecretError::NoCredentials { name: name.clone() })
            }
        }
    }
}

impl fmt::Display for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordFile::Path(path) => write!(f, "{}", path.display()),
            PasswordFile::Credential(name) => f.write_str(name),
        }
    }
}

impl From<PasswordFile> for String {
    fn from(file: PasswordFile) -> String {
        file.to_string()
    }
}

impl TryFrom<String> for PasswordFile {
    type Error = String;

    fn try_from(text: String) -> Result<PasswordFile, String> {
        PasswordFile::parse(&text)
    }
}

/// A password, kept out of every `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password itself, for the etcd client and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Why a file of `[store]` cannot be used. Each message names the key and the file.
#[derive(Debug, Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read `{key}` {}: {error}", path.display())]
    Read {
        /// The key that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Root can read the file only by `CAP_DAC_OVERRIDE`, which promd.service does not have
    /// (`CapabilityBoundingSet=`, `PrivateUsers=yes`): checked when running as root, so that
    /// `check-config` says what the service's start would.
    #[error(
        "`{key}` {} is owned by uid {uid} and not readable by others: promd.service runs \
         without CAP_DAC_OVERRIDE and cannot read it; {}",
        path.display(),
        read_fix(path, *uid)
    )]
    NotRootReadable {
        /// The key that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A directory above the file that root may search only by `CAP_DAC_OVERRIDE` or
    /// `CAP_DAC_READ_SEARCH`, which promd.service does not have: checked when running as
    /// root, as [`SecretError::NotRootReadable`] is.
    #[error(
        "`{key}` {} is in {}, which is owned by uid {uid} and not searchable by others \
         (mode {mode:04o}): promd.service runs without CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH \
         and cannot reach it; {}",
        path.display(),
        dir.display(),
        search_fix(dir, *uid)
    )]
    DirNotRootSearchable {
        /// The key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The first directory on its way that root cannot search.
        dir: PathBuf,
        /// The directory's owner.
        uid: u32,
        /// The directory's permission bits.
        mode: u32,
    },
    /// No `-----BEGIN CERTIFICATE-----` block.
    #[error("`{key}` {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The key that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A PEM block that does not decode.
    #[error("`{key}` {} is not valid PEM: {error}", path.display())]
    BadPem {
        /// The key that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        error: String,
    },
    /// The key is encrypted: promd cannot ask for a passphrase.
    #[error(
        "`key-file` {} is an encrypted private key, and promd cannot ask for its passphrase: \
         store it decrypted (e.g. `openssl pkey -in KEY -out KEY.plain`), readable only by root",
        path.display()
    )]
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// No private key block.
    #[error(
        "`key-file` {} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY \
         or EC PRIVATE KEY)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key cannot be used with the certificate.
    #[error("`key-file` {} does not fit `cert-file` {}: {why}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// rustls' reason.
        why: String,
    },
    /// `password-file` names a credential, but promd was not given any.
    #[error(
        "`password-file` = {name:?} names a systemd credential, but $CREDENTIALS_DIRECTORY is not \
         set: give promd.service LoadCredential={name}:/PATH/TO/FILE, or write an absolute path"
    )]
    NoCredentials {
        /// The credential's name.
        name: String,
    },
    /// The password file is empty (or holds only a line break).
    #[error("`password-file` {} is empty", path.display())]
    EmptyPassword {
        /// The file.
        path: PathBuf,
    },
    /// The password is not UTF-8 (etcd's API carries it as a string).
    #[error("`password-file` {} is not UTF-8 text", path.display())]
    PasswordNotText {
        /// The file.
        path: PathBuf,
    },
}

/// How to let root read a file without override (see [`SecretError::NotRootReadable`]).
fn read_fix(path: &Path, uid: u32) -> String {
    let path = path.display();
    if uid == 0 {
        format!("let its owner read it (chmod u+r {path})")
    } else {
        "make root its owner (chown root)".to_owned()
    }
}

/// A PEM parser's error in words: the end line it missed as text, not as bytes.
fn pem_error(e: pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "no `-----END {}-----` line (the file is cut short?)",
            String::from_utf8_lossy(&end_marker)
        ),
        other => other.to_string(),
    }
}

/// How to open a directory that blocks root's way to a file (see
/// [`SecretError::DirNotRootSearchable`]).
fn search_fix(dir: &Path, uid: u32) -> String {
    let dir = dir.display();
    if uid == 0 {
        format!("let its owner search it (chmod u+x {dir})")
    } else {
        format!(
            "make root the directory's owner (chown root {dir}) or let others search it (chmod o+x {dir})"
        )
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, SecretError> {
    use std::os::unix::fs::MetadataExt;
    let bytes = std::fs::read(path).map_err(|error| SecretError::Read {
        key,
        path: path.to_path_buf(),
        error,
    })?;
    if !nix::unistd::geteuid().is_root() {
        return Ok(bytes);
    }
    if let Some((dir, meta)) = blocking_directory(path) {
        return Err(SecretError::DirNotRootSearchable {
            key,
            path: path.to_path_buf(),
            dir,
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
        });
    }
    if let Ok(meta) = std::fs::metadata(path)
        && !readable_without_override(&meta)
    {
        return Err(SecretError::NotRootReadable {
            key,
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    Ok(bytes)
}

/// The first directory on the way to `path`, from `/` down, that root without
/// `CAP_DAC_OVERRIDE` may not search: the directories above the path as written (a link among
/// them counts as the directory it leads to), then those above where it leads.
fn blocking_directory(path: &Path) -> Option<(PathBuf, std::fs::Metadata)> {
    let above = |path: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect();
        dirs.reverse();
        dirs
    };
    let mut dirs = above(path);
    if let Ok(real) = std::fs::canonicalize(path) {
        dirs.extend(above(&real));
    }
    dirs.into_iter().find_map(|dir| {
        let meta = std::fs::metadata(&dir).ok()?;
        (!searchable_without_override(&meta)).then_some((dir, meta))
    })
}

/// Whether root without `CAP_DAC_OVERRIDE` or `CAP_DAC_READ_SEARCH`, in a user namespace that
/// maps only root, may search a directory: as its owner or group if those are root's, else by
/// the bits for others.
fn searchable_without_override(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    (meta.uid() == 0 && mode & 0o100 != 0)
        || (meta.gid() == 0 && mode & 0o010 != 0)
        || mode & 0o001 != 0
}

/// Whether root without `CAP_DAC_OVERRIDE`, in a user namespace that maps only root
/// (`PrivateUsers=yes`), may read a file: as its owner or group if those are root's, else by
/// the bits for others.
fn readable_without_override(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    (meta.uid() == 0 && mode & 0o400 != 0)
        || (meta.gid() == 0 && mode & 0o040 != 0)
        || mode & 0o004 != 0
}

/// The certificates in a PEM file.
fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, SecretError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| SecretError::BadPem {
            key,
            path: path.to_path_buf(),
            error: pem_error(e),
        })?;
    if certs.is_empty() {
        return Err(SecretError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A PEM file of one or more certificates (`ca-file`, `cert-file`), as read.
pub fn read_certificates(key: &'static str, path: &Path) -> Result<Vec<u8>, SecretError> {
    let pem = read(key, path)?;
    certificates(key, path, &pem)?;
    Ok(pem)
}

fn encrypted(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, SecretError> {
    if encrypted(pem) {
        return Err(SecretError::EncryptedKey {
            path: path.to_path_buf(),
        });
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => SecretError::NoKey {
            path: path.to_path_buf(),
        },
        other => SecretError::BadPem {
            key: "key-file",
            path: path.to_path_buf(),
            error: pem_error(other),
        },
    })
}

/// A client certificate (`cert-file`) and its private key (`key-file`), as read, checked
/// to belong together.
pub fn read_identity(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), SecretError> {
    let cert_pem = read("cert-file", cert)?;
    let key_pem = read("key-file", key)?;
    let chain = certificates("cert-file", cert, &cert_pem)?;
    let der = private_key(key, &key_pem)?;
    check_pair(cert, key, chain, der)?;
    Ok((cert_pem, key_pem))
}

/// The private key in `key` (`key-file`), as read.
pub(super) fn read_private_key(key: &Path) -> Result<Vec<u8>, SecretError> {
    let pem = read("key-file", key)?;
    private_key(key, &pem)?;
    Ok(pem)
}

fn check_pair(
    cert: &Path,
    key: &Path,
    chain: Vec<CertificateDer<'static>>,
    der: PrivateKeyDer<'static>,
) -> Result<(), SecretError> {
    CertifiedKey::from_der(chain, der, &default_provider())
        .map(|_| ())
        .map_err(|e| SecretError::KeyMismatch {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
            why: match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key is not the certificate's (their public keys differ)".to_owned()
                }
                other => other.to_string(),
            },
        })
}

/// The password in `file`: its content less the line breaks it ends with.
pub fn read_password(
    file: &PasswordFile,
    credentials: Option<&Path>,
) -> Result<Password, SecretError> {
    let path = file.resolve(credentials)?;
    let bytes = read("password-file", &path)?;
    let mut text = String::from_utf8(bytes)
        .map_err(|_| SecretError::PasswordNotText { path: path.clone() })?;
    // Editors and `echo` add line breaks; a password never ends with one.
    text.truncate(text.trim_end_matches(['\n', '\r']).len());
    if text.is_empty() {
        return Err(SecretError::EmptyPassword { path });
    }
    Ok(Password(text))
}

/// `$CREDENTIALS_DIRECTORY`, if systemd set it.
pub fn credentials_directory() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_DIRECTORY)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// The directories promd.service does not see, each with the setting of the unit that hides
/// it: a file there passes `check-config` run from a shell, and is missing when the service
/// starts.
pub(super) const UNSEEN: &[(&str, &str)] = &[
    ("/tmp", "PrivateTmp=yes gives it an empty /tmp of its own"),
    (
        "/var/tmp",
        "PrivateTmp=yes gives it an empty /var/tmp of its own",
    ),
    ("/home", "ProtectHome=yes hides it"),
    ("/root", "ProtectHome=yes hides it"),
    ("/run/user", "ProtectHome=yes hides it"),
];

/// The files `[store]` names by path, with their keys (a `password-file` credential is no
/// path: systemd puts it where the service sees it).
pub(super) fn named_files(store: &super::StoreConfig) -> Vec<(&'static str, &Path)> {
    let mut files = Vec::new();
    if let super::StoreConfig::Etcd { tls, auth, .. } = store {
        if let Some(tls) = tls {
            if let Some(ca) = &tls.ca_file {
                files.push(("ca-file", ca.as_path()));
            }
            if let Some(client) = &tls.client {
                files.push(("cert-file", client.cert_file.as_path()));
                files.push(("key-file", client.key_file.as_path()));
            }
        }
        if let Some(auth) = auth
            && let PasswordFile::Path(path) = &auth.password_file
        {
            files.push(("password-file", path.as_path()));
        }
    }
    files
}

/// Notes on the files of `files` that are, as written or once links are followed, under a
/// directory of `unseen` (see [`UNSEEN`]).
pub(super) fn unseen_notes(
    files: &[(&'static str, &Path)],
    unseen: &[(&str, &str)],
) -> Vec<String> {
    let mut notes = Vec::new();
    for &(key, path) in files {
        let real = std::fs::canonicalize(path).ok();
        let places = std::iter::once(path).chain(real.as_deref().filter(|r| *r != path));
        let Some((place, dir, why)) = places
            .flat_map(|place| unseen.iter().map(move |(dir, why)| (place, *dir, *why)))
            .find(|(place, dir, _)| place.starts_with(dir))
        else {
            continue;
        };
        let written = path.display();
        let under = if place == path {
            format!("is under {dir}")
        } else {
            format!("leads to {}, under {dir}", place.display())
        };
        let credential = if key == "password-file" {
            format!(
                ", or give it to promd.service with LoadCredential=NAME:{written} and write \
                 password-file = \"NAME\""
            )
        } else {
            String::new()
        };
        notes.push(format!(
            "`{key}` {written} {under}, which promd.service does not see ({why}): keep the file \
             under /etc/promd{credential}"
        ));
    }
    notes
}

/// Notes on a `key-file` or `password-file` of `files` that users other than root may read:
/// by the bits for others, or for a group other than root's. (Certificates are public; a
/// credential is no path here, and systemd makes it readable by the service only.) A file
/// that cannot be read is left to the checks that read it.
pub(super) fn exposure_notes(files: &[(&'static str, &Path)]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut notes = Vec::new();
    for &(key, path) in files {
        if key != "key-file" && key != "password-file" {
            continue;
        }
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        let who = if mode & 0o004 != 0 {
            "every user".to_owned()
        } else if mode & 0o040 != 0 && meta.gid() != 0 {
            let gid = nix::unistd::Gid::from_raw(meta.gid());
            match nix::unistd::Group::from_gid(gid) {
                Ok(Some(group)) => format!("group {} (gid {gid})", group.name),
                _ => format!("group {gid}"),
            }
        } else {
            continue;
        };
        let file = path.display();
        notes.push(format!(
            "`{key}` {file} is readable by {who} (mode {mode:04o}), not by root only: \
             chmod 600 {file}"
        ));
    }
    notes
}

/// Notes on the validity of the certificates `tls` names, at `now` (seconds since the epoch):
/// a client certificate (`cert-file`'s first) that is not valid yet, has expired, or expires
/// within [`crate::certs::EXPIRES_SOON`]; a `ca-file` certificate that has expired or is not valid yet. A
/// file that cannot be read is left to the checks that read it.
pub(super) fn certificate_notes(tls: &super::TlsConfig, now: i64) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(client) = &tls.client
        && let Ok(pem) = std::fs::read(&client.cert_file)
        && let Some(leaf) = validities(&pem).first()
    {
        let file = client.cert_file.display();
        match leaf.at(now) {
            Standing::Valid => {}
            Standing::Expired(at) => notes.push(format!(
                "`cert-file` {file} expired at {}: etcd will refuse it; renew it in place (promd \
                 reads it again at its next connection, no restart)",
                rfc3339(at)
            )),
            Standing::NotYetValid(at) => notes.push(format!(
                "`cert-file` {file} is not valid before {}: etcd will refuse it until then \
                 (is this host's clock right?)",
                rfc3339(at)
            )),
            Standing::ExpiresSoon(at) => notes.push(format!(
                "`cert-file` {file} expires at {}, in {} days: renew it in place (promd reads it \
                 again at its next connection, no restart)",
                rfc3339(at),
                (at - now) / 86_400
            )),
        }
    }
    if let Some(ca) = &tls.ca_file
        && let Ok(pem) = std::fs::read(ca)
    {
        for cert in validities(&pem) {
            let file = ca.display();
            let subject = &cert.subject;
            match cert.at(now) {
                Standing::Expired(at) => notes.push(format!(
                    "`ca-file` {file}: {subject} expired at {}: etcd's certificates it signed \
                     will not be trusted",
                    rfc3339(at)
                )),
                Standing::NotYetValid(at) => notes.push(format!(
                    "`ca-file` {file}: {subject} is not valid before {} (is this host's clock \
                     right?)",
                    rfc3339(at)
                )),
                Standing::Valid | Standing::ExpiresSoon(_) => {}
            }
        }
    }
    notes
}
