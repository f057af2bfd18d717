//! A secure etcd: TLS (a CA, a client certificate, a server name) and a user, and what a
//! failure of either means in words an operator can act on. The client's own errors say
//! `transport error` for an unknown CA as for a refused connection; the rustls error (or the
//! gRPC status) inside says which, and [`explain`] turns it into a line such as
//! `TLS: etcd's certificate is not trusted by ca-file /etc/promd/ca.pem (UnknownIssuer)`.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConfig, InvalidMessage, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::certs::{Standing, Validity, now, rfc3339, validities};

/// A PEM file as read: where it came from (named in messages) and its content. `Debug` shows
/// the path only (the content may be a private key).
#[derive(Clone)]
pub struct PemFile {
    /// The file it was read from.
    pub path: PathBuf,
    /// The PEM text.
    pub pem: Vec<u8>,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PemFile({})", self.path.display())
    }
}

/// How to talk TLS to etcd (`https://` endpoints).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// The certificates that sign etcd's server certificates; `None`: the system's roots.
    pub ca: Option<PemFile>,
    /// A client certificate and its private key, for etcd's `--client-cert-auth`.
    pub client: Option<(PemFile, PemFile)>,
    /// The name checked against etcd's certificate instead of each endpoint's host.
    pub server_name: Option<String>,
}

impl EtcdTls {
    /// The client's TLS settings.
    pub(super) fn options(&self) -> TlsOptions {
        let mut options = TlsOptions::new();
        options = match &self.ca {
            Some(ca) => options.ca_certificate(Certificate::from_pem(&ca.pem)),
            None => options.with_native_roots(),
        };
        if let Some((cert, key)) = &self.client {
            options = options.identity(Identity::from_pem(&cert.pem, &key.pem));
        }
        if let Some(name) = &self.server_name {
            options = options.domain_name(name.clone());
        }
        options
    }
}

/// An etcd user and its password. `Debug` does not show the password.
#[derive(Clone)]
pub struct EtcdUser {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EtcdUser({})", self.name)
    }
}

/// What a message about a failure may name: the files and the user of the configuration,
/// and the validity of the client certificate (to tell an expired one from an untrusted one).
#[derive(Debug, Clone, Default)]
pub(super) struct Names {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) cert_validity: Option<Validity>,
    pub(super) user: Option<String>,
    /// The keys promd uses, as a prefix ending in `/` (`/promd/`).
    pub(super) prefix: Option<String>,
}

impl Names {
    pub(super) fn of(tls: Option<&EtcdTls>, user: Option<&EtcdUser>, prefix: &str) -> Names {
        Names {
            ca_file: tls.and_then(|t| t.ca.as_ref()).map(|ca| ca.path.clone()),
            cert_file: tls
                .and_then(|t| t.client.as_ref())
                .map(|(cert, _)| cert.path.clone()),
            cert_validity: tls
                .and_then(|t| t.client.as_ref())
                .and_then(|(cert, _)| validities(&cert.pem).into_iter().next()),
            user: user.map(|u| u.name.clone()),
            prefix: Some(format!("{}/", prefix.trim_end_matches('/'))),
        }
    }
}

/// An etcd client error with a readable text; the client's error stays its source.
#[derive(Debug)]
pub(super) struct Explained {
    text: String,
    inner: etcd_client::Error,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl StdError for Explained {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.inner)
    }
}

/// `e` in words, naming what `names` holds where it helps.
pub(super) fn explain(e: etcd_client::Error, names: &Names) -> Explained {
    explain_with(e, names, None)
}

/// [`explain`], with the TLS error a handshake of promd's own found ([`probe`]) if `e`
/// does not hold one.
pub(super) fn explain_with(
    e: etcd_client::Error,
    names: &Names,
    probed: Option<rustls::Error>,
) -> Explained {
    let text = match find_rustls(&e).or(probed.as_ref()) {
        Some(tls) => format!("TLS: {}", tls_text(tls, names)),
        None => text(&e, names),
    };
    Explained { text, inner: e }
}

/// Whether `e` hides why a TLS connection ended: no TLS error in it, but a transport failure.
pub(super) fn unexplained_transport_error(e: &etcd_client::Error) -> bool {
    if find_rustls(e).is_some() {
        return false;
    }
    match e {
        // gRPC's `Cancelled`, `Unknown` and `Unavailable`: the channel could not carry the
        // request (tonic says which from the transport's error, not from etcd).
        etcd_client::Error::GRpcStatus(status) => matches!(i32::from(status.code()), 1 | 2 | 14),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Why etcd at `endpoint` ends TLS connections, found by a handshake of promd's own with
/// the same CA and client certificate; `None` if it does not (or when there is no CA file to
/// check against). With TLS 1.3 the client's handshake is done before the server checks the
/// client certificate; the server's alert then reaches only the etcd client's connection
/// task, and the request fails with a bare "connection closed".
pub(super) async fn probe(endpoint: &str, tls: &EtcdTls, limit: Duration) -> Option<rustls::Error> {
    let authority = endpoint.strip_prefix("https://")?;
    let (host, _) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = tls.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name).ok()?.to_owned();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&tls.ca.as_ref()?.pem) {
        roots.add(cert.ok()?).ok()?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots);
    let mut config = match &tls.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert.pem)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let key = PrivateKeyDer::from_pem_slice(&key.pem).ok()?;
            builder.with_client_auth_cert(chain, key).ok()?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = TcpStream::connect(authority).await.ok()?;
        let mut stream = match connector.connect(server_name, tcp).await {
            Ok(stream) => stream,
            Err(e) => return rustls_of(&e),
        };
        // HTTP/2's preface: the server answers it, or says why it will not.
        stream.write_all(H2_PREFACE).await.ok()?;
        let mut answer = [0u8; 64];
        match stream.read(&mut answer).await {
            Err(e) => rustls_of(&e),
            Ok(_) => None,
        }
    };
    timeout(limit, handshake).await.ok().flatten()
}

/// Whether etcd at an `http://` `endpoint` speaks TLS there, found by a TLS handshake of
/// promd's own that trusts nothing: a server that answers it with a certificate (or an alert)
/// speaks TLS, one that answers with anything else does not. The etcd client's own error for
/// plain HTTP/2 sent to a TLS port is only "broken pipe".
pub(super) async fn speaks_tls(endpoint: &str, limit: Duration) -> bool {
    let Some(authority) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let Some((host, _)) = authority.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(server_name) = ServerName::try_from(host.to_owned()) else {
        return false;
    };
    let Ok(builder) =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = TcpStream::connect(authority).await.ok()?;
        match connector.connect(server_name, tcp).await {
            Ok(_) => Some(true),
            Err(e) => Some(matches!(
                rustls_of(&e),
                Some(rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_))
            )),
        }
    };
    timeout(limit, handshake)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The words for an `http://` endpoint where etcd speaks TLS ([`speaks_tls`]).
pub(super) fn explain_speaks_tls(e: etcd_client::Error) -> Explained {
    Explained {
        text: "etcd speaks TLS at this endpoint: write `https://` (with `ca-file`, unless the \
               system's roots sign etcd's certificate)"
            .to_owned(),
        inner: e,
    }
}

/// HTTP/2's connection preface, and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Whether etcd at an `https://` `endpoint` answers HTTP/2 in plain text (its first frame a
/// SETTINGS frame: type 4, the fourth byte of the frame header), as the TLS error rustls gives
/// a plain-text answer to its ClientHello. A plain etcd closes the connection on a
/// ClientHello without a word, so the client's own error is only "tls handshake eof".
pub(super) async fn answers_in_plain_text(
    endpoint: &str,
    limit: Duration,
) -> Option<rustls::Error> {
    let authority = endpoint.strip_prefix("https://")?;
    let answer = async {
        let mut tcp = TcpStream::connect(authority).await.ok()?;
        tcp.write_all(H2_PREFACE).await.ok()?;
        let mut header = [0u8; 9];
        tcp.read_exact(&mut header).await.ok()?;
        (header[3] == 4).then_some(rustls::Error::InvalidMessage(
            InvalidMessage::InvalidContentType,
        ))
    };
    timeout(limit, answer).await.ok().flatten()
}

fn rustls_of(e: &std::io::Error) -> Option<rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>().cloned()
}

fn text(e: &etcd_client::Error, names: &Names) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message().trim_start_matches("etcdserver: ");
            if let Some(why) = auth_text(message, names) {
                return why;
            }
            // tonic's guess ("possible truncation by a proxy or load balancer") misleads when
            // the member simply stopped.
            if message.starts_with("protocol error: missing grpc-status trailer") {
                return "the connection closed without a status (the member stopped or \
                        restarted?)"
                    .to_owned();
            }
            // The transport's reason (a refused connection, a failed handshake) is in the
            // sources; the status only says "tcp connect error" or "transport error".
            let mut text = message.to_owned();
            push_sources(&mut text, StdError::source(status));
            if text.is_empty() {
                text = format!("{:?}", status.code());
            }
            text
        }
        other => {
            let mut text = other.to_string();
            push_sources(&mut text, other.source());
            text
        }
    }
}

/// What etcd's authentication answers mean, if `message` is one of them.
fn auth_text(message: &str, names: &Names) -> Option<String> {
    let refused = match &names.user {
        Some(user) => format!("etcd refused user {user}"),
        None => "etcd refused the request".to_owned(),
    };
    if message.starts_with("authentication failed") {
        return Some(format!(
            "{refused}: authentication failed (wrong password, or no such user)"
        ));
    }
    if message == "authentication is not enabled" {
        return Some(format!(
            "{refused}: authentication is not enabled on this etcd (remove `user` and \
             `password-file` from [store])"
        ));
    }
    // Names from the configuration carry the prefix; a call's error has none to hand (and
    // its session may have connected without the user because etcd had auth off then).
    if message == "user name is empty" && names.user.is_none() {
        return Some(if names.prefix.is_some() {
            "etcd requires authentication: set `user` and `password-file` in [store]".to_owned()
        } else {
            "etcd requires authentication now (user name is empty): the next connection logs \
             in, if `user` and `password-file` are set in [store]"
                .to_owned()
        });
    }
    if message == "permission denied" {
        return Some(match &names.prefix {
            Some(prefix) => format!(
                "{refused}: permission denied (its roles must grant readwrite on the keys \
                 under {prefix}: etcdctl role grant-permission --prefix=true ROLE readwrite {prefix})"
            ),
            None => format!(
                "{refused}: permission denied (its roles must grant readwrite on promd's prefix)"
            ),
        });
    }
    if matches!(
        message,
        "invalid auth token" | "user name is empty" | "user name not found"
    ) {
        return Some(format!("{refused}: {message}"));
    }
    None
}

/// Appends each source's text that the text so far does not already hold.
fn push_sources(text: &mut String, mut source: Option<&(dyn StdError + 'static)>) {
    while let Some(e) = source {
        let part = e.to_string();
        if !part.is_empty() && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = next(e);
    }
}

/// The next error of a chain. `io::Error` hides the error it wraps from `source()` (it returns
/// that error's own source), so it is looked into.
fn next<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(io) = e.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
    {
        return Some(inner);
    }
    e.source()
}

/// The rustls error somewhere in `e`'s chain.
fn find_rustls(e: &etcd_client::Error) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    if let etcd_client::Error::GRpcStatus(status) = e {
        current = StdError::source(status);
    }
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = next(e);
    }
    None
}

fn tls_text(e: &rustls::Error, names: &Names) -> String {
    match e {
        rustls::Error::InvalidCertificate(cert) => {
            let detail = format!("{cert:?}");
            let detail = detail.split([' ', '{', '(']).next().unwrap_or_default();
            match cert {
                CertificateError::UnknownIssuer => match &names.ca_file {
                    Some(ca) => format!(
                        "etcd's certificate is not trusted by ca-file {} ({detail})",
                        ca.display()
                    ),
                    None => format!(
                        "etcd's certificate is not trusted by this system's roots: set \
                         `ca-file` to the CA that signs it ({detail})"
                    ),
                },
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => {
                    let names: Vec<&str> = presented.iter().map(|n| plain_name(n)).collect();
                    format!(
                        "etcd's certificate is not valid for {:?}, only for {} (connect by one \
                         of these names, or set `server-name` to one)",
                        expected.to_str(),
                        names.join(", ")
                    )
                }
                CertificateError::NotValidForName => {
                    "etcd's certificate is not valid for the name promd checks (connect by a \
                     name it holds, or set `server-name` to one)"
                        .to_owned()
                }
                CertificateError::ExpiredContext { not_after, .. } => {
                    format!("etcd's certificate expired at {}", time(not_after))
                }
                CertificateError::Expired => "etcd's certificate has expired".to_owned(),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    format!("etcd's certificate is not valid yet: {cert}")
                }
                _ => format!("etcd's certificate is refused: {cert}"),
            }
        }
        rustls::Error::AlertReceived(alert) => {
            let refused = matches!(
                alert,
                AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::CertificateRequired
                    | AlertDescription::AccessDenied
            );
            match (&names.cert_file, refused) {
                (Some(cert), true) => {
                    // Go's TLS sends `bad_certificate` whatever the reason: say the one promd
                    // can see for itself.
                    let why = match names.cert_validity.as_ref().map(|v| v.at(now())) {
                        Some(Standing::Expired(at)) => format!(": it expired at {}", rfc3339(at)),
                        Some(Standing::NotYetValid(at)) => {
                            format!(": it is not valid before {}", rfc3339(at))
                        }
                        _ => String::new(),
                    };
                    format!(
                        "etcd refused the client certificate of cert-file {}{why} ({alert:?})",
                        cert.display()
                    )
                }
                (None, true) => format!(
                    "etcd requires a client certificate: set `cert-file` and `key-file` \
                     ({alert:?})"
                ),
                _ => format!("etcd ended the handshake ({alert:?})"),
            }
        }
        // A plain-text answer to the ClientHello (HTTP/2's frames begin with a length whose
        // first byte is not a TLS content type).
        rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            "etcd does not speak TLS at this endpoint: write `http://` and leave out the TLS \
             keys, or check the port (etcd's client port, not its peer port)"
                .to_owned()
        }
        other => other.to_string(),
    }
}

/// `DnsName("localhost")` as `localhost`, `IpAddress(10.0.0.1)` as `10.0.0.1`.
fn plain_name(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(name)
}

fn time(t: &UnixTime) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.as_secs())).to_string()
}

/// `e` in words for a call made without the configuration at hand.
pub(super) fn explain_plain(e: etcd_client::Error) -> Explained {
    explain(e, &Names::default())
}

/// Reads the TLS files and the password afresh: the TLS settings and the user, or why they
/// cannot be used, in words (the file and what is wrong with it). Given by `main` from the
/// configuration, so that the store need not know how `[store]` names its files.
pub type ReadSecrets =
    Arc<dyn Fn() -> Result<(Option<EtcdTls>, Option<EtcdUser>), String> + Send + Sync>;

/// The TLS settings, the user and what messages may name, as one connection round uses them.
#[derive(Debug, Clone)]
pub(super) struct Current {
    pub(super) tls: Option<EtcdTls>,
    pub(super) user: Option<EtcdUser>,
    pub(super) names: Names,
}

/// The secrets of a store: read again before every round of connection attempts when a
/// reader is given, so that a renewed certificate or a changed password file is used at the
/// next connection without a restart (the connection up meanwhile goes on with the old
/// ones); a reading that fails keeps the last good one, and is said once per new reason.
pub(super) struct Secrets {
    reader: Option<ReadSecrets>,
    prefix: String,
    last: std::sync::Mutex<(Current, Option<String>)>,
}

/// A digest of the TLS settings and the user, to tell a new reading from the last.
fn fingerprint(tls: Option<&EtcdTls>, user: Option<&EtcdUser>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(tls) = tls {
        tls.ca.as_ref().map(|ca| &ca.pem).hash(&mut h);
        tls.client
            .as_ref()
            .map(|(cert, key)| (&cert.pem, &key.pem))
            .hash(&mut h);
        tls.server_name.hash(&mut h);
    }
    user.map(|u| (&u.name, &u.password)).hash(&mut h);
    h.finish()
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("rereading", &self.reader.is_some())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    pub(super) fn new(
        tls: Option<EtcdTls>,
        user: Option<EtcdUser>,
        prefix: &str,
        reader: Option<ReadSecrets>,
    ) -> Secrets {
        let names = Names::of(tls.as_ref(), user.as_ref(), prefix);
        Secrets {
            reader,
            prefix: prefix.to_owned(),
            last: std::sync::Mutex::new((Current { tls, user, names }, None)),
        }
    }

    /// Whether the files now read differently from what the last round used (a password
    /// file just fixed): a refused round's backoff then ends at once. Does not keep the new
    /// reading; the next round's [`Secrets::current`] does.
    pub(super) fn renewed(&self) -> bool {
        let Some(read) = &self.reader else {
            return false;
        };
        let Ok((tls, user)) = read() else {
            return false;
        };
        let last = crate::sync::lock(&self.last);
        fingerprint(tls.as_ref(), user.as_ref())
            != fingerprint(last.0.tls.as_ref(), last.0.user.as_ref())
    }

    /// What the next round of connection attempts uses.
    pub(super) fn current(&self) -> Current {
        let mut last = crate::sync::lock(&self.last);
        if let Some(read) = &self.reader {
            match read() {
                Ok((tls, user)) => {
                    let names = Names::of(tls.as_ref(), user.as_ref(), &self.prefix);
                    *last = (Current { tls, user, names }, None);
                }
                Err(why) => {
                    if last.1.as_deref() != Some(why.as_str()) {
                        tracing::warn!("etcd: {why}; connecting with the files as last read");
                        last.1 = Some(why);
                    }
                }
            }
        }
        last.0.clone()
    }
}
