//! Certificates for TLS tests, generated with rcgen into a temporary directory (removed on
//! drop): a CA; a server certificate for 127.0.0.1, 127.0.0.2, ::1 and `localhost`; a client
//! certificate; and the wrong ones: another CA with its own client certificate, an expired
//! server certificate, an expired client certificate.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// The names the server certificates hold.
pub const SERVER_NAMES: [&str; 4] = ["127.0.0.1", "127.0.0.2", "::1", "localhost"];

pub struct Pki {
    dir: tempfile::TempDir,
}

/// The PEM files, by name, in [`Pki::path`].
pub const CA: &str = "ca.pem";
pub const SERVER: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";
pub const CLIENT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";
pub const OTHER_CA: &str = "other-ca.pem";
pub const OTHER_CLIENT: &str = "other-client.pem";
pub const OTHER_CLIENT_KEY: &str = "other-client-key.pem";
pub const EXPIRED_SERVER: &str = "expired-server.pem";
pub const EXPIRED_SERVER_KEY: &str = "expired-server-key.pem";
pub const EXPIRED_CLIENT: &str = "expired-client.pem";
pub const EXPIRED_CLIENT_KEY: &str = "expired-client-key.pem";

struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> (Ca, String) {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        (Ca { params, key }, cert.pem())
    }

    /// A leaf certificate and its key, as PEM.
    fn sign(
        &self,
        cn: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }
}

impl Pki {
    pub fn new() -> Pki {
        Pki::with_server_names(&[])
    }

    /// Like [`Pki::new`], with more names (IP addresses or DNS names) in the server
    /// certificates besides [`SERVER_NAMES`]: the addresses and names the test's hosts use.
    pub fn with_server_names(extra: &[String]) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("promd-pki-")
            .tempdir()
            .expect("a temporary directory");
        let pki = Pki { dir };
        let (ca, ca_pem) = Ca::new("promd test CA");
        let (other, other_pem) = Ca::new("another CA");
        pki.write(CA, &ca_pem);
        pki.write(OTHER_CA, &other_pem);
        let mut names: Vec<&str> = SERVER_NAMES.to_vec();
        names.extend(extra.iter().map(String::as_str));
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        pki.pair(
            SERVER,
            SERVER_KEY,
            ca.sign("etcd", &names, server.clone(), false),
        );
        pki.pair(
            EXPIRED_SERVER,
            EXPIRED_SERVER_KEY,
            ca.sign("etcd", &names, server, true),
        );
        pki.pair(
            CLIENT,
            CLIENT_KEY,
            ca.sign("promd", &[], client.clone(), false),
        );
        pki.pair(
            EXPIRED_CLIENT,
            EXPIRED_CLIENT_KEY,
            ca.sign("promd", &[], client.clone(), true),
        );
        pki.pair(
            OTHER_CLIENT,
            OTHER_CLIENT_KEY,
            other.sign("promd", &[], client, false),
        );
        pki
    }

    fn write(&self, name: &str, pem: &str) {
        std::fs::write(self.path(name), pem).expect("write a PEM file");
    }

    fn pair(&self, cert: &str, key: &str, (cert_pem, key_pem): (String, String)) {
        self.write(cert, &cert_pem);
        self.write(key, &key_pem);
    }

    /// The file `name` (one of the constants above).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The files of TLS with client certificates, as `Options::mutual_tls` of the etcd test
    /// support takes them: `[server cert, server key, CA, client cert, client key]`.
    pub fn mutual_tls(&self) -> [PathBuf; 5] {
        [SERVER, SERVER_KEY, CA, CLIENT, CLIENT_KEY].map(|name| self.path(name))
    }

    /// The content of `name`.
    pub fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read a PEM file")
    }
}
