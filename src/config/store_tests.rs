//! Tests of `[store]` for a production etcd: endpoints as operators write them, TLS and
//! authentication keys, the files they name, and what a reload makes of them.

use std::path::Path;

use rcgen::{CertificateParams, KeyPair};

use super::*;

/// Every problem of `text` as `LINE:COLUMN: message`, with `credentials` as
/// `$CREDENTIALS_DIRECTORY`.
fn problems_in(text: &str, credentials: Option<&Path>) -> Vec<String> {
    match parse_in(
        text,
        "t.toml",
        || Ok("n1".to_owned()),
        credentials.map(Path::to_path_buf),
    ) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(err) => err
            .problems()
            .iter()
            .map(|p| {
                format!(
                    "{}:{}: {}",
                    p.line.unwrap_or(0),
                    p.column.unwrap_or(0),
                    p.message
                )
            })
            .collect(),
    }
}

fn problems(text: &str) -> Vec<String> {
    problems_in(text, None)
}

fn store_in(text: &str, credentials: Option<&Path>) -> StoreConfig {
    match parse_in(
        text,
        "t.toml",
        || Ok("n1".to_owned()),
        credentials.map(Path::to_path_buf),
    ) {
        Ok(config) => config.store,
        Err(e) => panic!("{text}\n{e}"),
    }
}

fn store(text: &str) -> StoreConfig {
    store_in(text, None)
}

/// `[store]` of kind etcd with `endpoints` on line 3 (the first one at column 14), then
/// `extra` from line 4 on.
fn etcd(endpoints: &str, extra: &str) -> String {
    format!("[store]\nkind = \"etcd\"\nendpoints = [{endpoints}]\n{extra}")
}

fn endpoints_of(store: &StoreConfig) -> Vec<String> {
    match store {
        StoreConfig::Etcd { endpoints, .. } => endpoints.clone(),
        other => panic!("not etcd: {other:?}"),
    }
}

fn tls_of(store: &StoreConfig) -> Option<TlsConfig> {
    match store {
        StoreConfig::Etcd { tls, .. } => tls.as_deref().cloned(),
        other => panic!("not etcd: {other:?}"),
    }
}

fn auth_of(store: &StoreConfig) -> Option<AuthConfig> {
    match store {
        StoreConfig::Etcd { auth, .. } => auth.as_deref().cloned(),
        other => panic!("not etcd: {other:?}"),
    }
}

/// PEM files in a temporary directory: a CA, a client certificate and its key, a key of
/// another certificate, encrypted keys, and a file that holds no PEM.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let files = Files { dir };
        let ca_key = KeyPair::generate().unwrap();
        let ca = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&ca_key)
            .unwrap();
        files.write("ca.pem", &ca.pem());
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["promd".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        files.write("client.pem", &cert.pem());
        files.write("client-key.pem", &key.serialize_pem());
        files.write(
            "other-key.pem",
            &KeyPair::generate().unwrap().serialize_pem(),
        );
        files.write(
            "pkcs8-encrypted.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        files.write(
            "legacy-encrypted.pem",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123456789ABCDEF0123456789ABCDEF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        );
        files.write("notes.txt", "not a certificate\n");
        files.write("password", "s3cret\n");
        files.write("empty-password", "\n");
        files
    }

    /// Writes `name`, readable by its owner only, as keys and passwords should be.
    fn write(&self, name: &str, content: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(self.path(name), content).unwrap();
        std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

// --- endpoints -----------------------------------------------------------------------------

#[test]
fn endpoints_are_accepted_as_operators_write_them() {
    let cases: &[(&str, &str)] = &[
        (
            "http://etcd-1.example.com:2379",
            "http://etcd-1.example.com:2379",
        ),
        ("http://10.0.0.1:2379/", "http://10.0.0.1:2379"),
        ("http://[fd00::1]:2379", "http://[fd00::1]:2379"),
        ("http://[FD00:0:0::1]:2379", "http://[fd00::1]:2379"),
        ("etcd-1:2379", "http://etcd-1:2379"),
        ("10.0.0.1:2379/", "http://10.0.0.1:2379"),
        ("[::1]:65535", "http://[::1]:65535"),
        ("https://etcd.example:1", "https://etcd.example:1"),
        // Schemes are case-insensitive.
        ("HTTP://etcd-1:2379", "http://etcd-1:2379"),
        ("Https://etcd-1:2379", "https://etcd-1:2379"),
    ];
    for (written, url) in cases {
        let found = endpoints_of(&store(&etcd(&format!("{written:?}"), "")));
        assert_eq!(found, [url.to_string()], "{written}");
    }
}

#[test]
fn a_bare_endpoint_takes_https_from_the_tls_keys_or_its_neighbours() {
    let files = Files::new();
    let with_ca = etcd(
        "\"etcd-1:2379\", \"10.0.0.2:2379\"",
        &format!("ca-file = {:?}\n", files.path("ca.pem")),
    );
    assert_eq!(
        endpoints_of(&store(&with_ca)),
        ["https://etcd-1:2379", "https://10.0.0.2:2379"]
    );
    let beside_https = etcd("\"https://etcd-1:2379\", \"etcd-2:2379\"", "");
    let found = store(&beside_https);
    assert_eq!(
        endpoints_of(&found),
        ["https://etcd-1:2379", "https://etcd-2:2379"]
    );
    // https without TLS keys: the system's roots.
    assert_eq!(tls_of(&found), Some(TlsConfig::default()));
    assert_eq!(tls_of(&store(&etcd("\"etcd-1:2379\"", ""))), None);
}

#[test]
fn every_other_endpoint_form_says_which_part_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("10.0.0.1", "no port: write 10.0.0.1:2379"),
        ("http://etcd-1", "no port: write etcd-1:2379"),
        ("http://etcd-1:", "no port after the `:`: write etcd-1:2379"),
        ("http://a:0", "port 0 is not a port: use 1 to 65535"),
        (
            "http://a:65536",
            "port 65536 is out of range: use 1 to 65535",
        ),
        (
            "http://a:99999999999",
            "port 99999999999 is out of range: use 1 to 65535",
        ),
        ("http://a:+1", "port \"+1\" is not a number"),
        (
            "http://a:2379/v3",
            "\"/v3\" after the port: an endpoint is only [http(s)://]HOST:PORT",
        ),
        (
            "http://a:2379//",
            "\"/\" after the port: an endpoint is only [http(s)://]HOST:PORT",
        ),
        (
            "http://[fe80::1%eth0]:2379",
            "an IPv6 zone (%eth0) is not supported: use an address that needs no zone (not a \
             link-local fe80:: one)",
        ),
        (
            "fd00::1:2379",
            "an IPv6 address must be written in brackets: write [fd00::1]:2379",
        ),
        (
            "http://fd00::1",
            "an IPv6 address must be written in brackets: write [fd00::1]:2379",
        ),
        ("http://[fd00::1]", "no port: write [fd00::1]:2379"),
        ("http://[zz::1]:1", "[zz::1] is not an IPv6 address"),
        (
            "unix:///run/etcd.sock",
            "unknown scheme \"unix://\": etcd endpoints are http:// or https://",
        ),
        (
            "grpc://a:2379",
            "unknown scheme \"grpc://\": etcd endpoints are http:// or https://",
        ),
        ("http://:2379", "no host: write HOST:PORT"),
        ("", "no host: write HOST:PORT"),
        (
            "http://a b:1",
            "host \"a b\" is not a DNS name or an IP address",
        ),
        (
            "http://a_b:1",
            "host \"a_b\" is not a DNS name or an IP address",
        ),
        (
            "http://root@a:1",
            "user information (USER@) in an endpoint is not supported: set `user` and \
             `password-file` in [store]",
        ),
        // Meant as IPv4 addresses, and not ones (they would pass as DNS names, and fail at
        // run time with a transport error).
        (
            "10.0.0.256:2379",
            "host \"10.0.0.256\" is not an IPv4 address (four numbers of 0 to 255, like 10.0.0.1)",
        ),
        (
            "http://1.2.3:2379",
            "host \"1.2.3\" is not an IPv4 address (four numbers of 0 to 255, like 10.0.0.1)",
        ),
        // etcdctl's comma-separated list.
        (
            "http://a:2379,http://b:2379",
            "a `,` in an endpoint: write each endpoint as its own string, \
             [\"http://a:2379\", \"http://b:2379\"]",
        ),
    ];
    for (written, why) in cases {
        let found = problems(&etcd(&format!("{written:?}"), ""));
        assert_eq!(
            found,
            [format!("3:14: endpoint {written:?}: {why}")],
            "{written}"
        );
    }
}

#[test]
fn the_same_member_twice_is_refused_at_the_second() {
    let found = problems(&etcd("\"http://etcd-1:2379\", \"ETCD-1:2379\"", ""));
    assert_eq!(
        found,
        [
            "3:36: endpoint \"ETCD-1:2379\" is the same member as \"http://etcd-1:2379\" (line 3, \
          column 14): list each once"
        ]
    );
}

/// `a.` is `a` written fully qualified: the same host, so the same member.
#[test]
fn a_host_with_a_trailing_dot_is_the_same_member_as_without() {
    let found = problems(&etcd("\"a:2379\", \"A.:2379\"", ""));
    assert_eq!(
        found,
        [
            "3:24: endpoint \"A.:2379\" is the same member as \"a:2379\" (line 3, column 14): \
             list each once"
        ]
    );
    let found = problems(&etcd("\"etcd.example.:2379\", \"etcd.example:2379\"", ""));
    assert_eq!(found.len(), 1, "{found:#?}");
    // Only one dot is the root's; other ports are other members.
    assert!(tls_of(&store(&etcd("\"https://a:2379\", \"a.:2380\"", ""))).is_some());
}

#[test]
fn http_and_https_endpoints_do_not_mix() {
    let found = problems(&etcd("\"http://a:1\", \"https://b:2\", \"c:3\"", ""));
    assert_eq!(
        found,
        [
            "3:28: endpoint \"https://b:2\" is https, but \"http://a:1\" (line 3, column 14) is \
          http: every endpoint must use the same scheme"
        ]
    );
}

// --- TLS ---------------------------------------------------------------------------------------

#[test]
fn tls_keys_are_read() {
    let f = Files::new();
    let text = etcd(
        "\"https://10.0.0.1:2379\"",
        &format!(
            "ca-file = {:?}\ncert-file = {:?}\nkey-file = {:?}\nserver-name = \"etcd.example\"\n",
            f.path("ca.pem"),
            f.path("client.pem"),
            f.path("client-key.pem")
        ),
    );
    assert_eq!(
        tls_of(&store(&text)),
        Some(TlsConfig {
            ca_file: Some(f.path("ca.pem").into()),
            client: Some(ClientCert {
                cert_file: f.path("client.pem").into(),
                key_file: f.path("client-key.pem").into(),
            }),
            server_name: Some("etcd.example".to_owned()),
        })
    );
}

#[test]
fn tls_keys_with_an_http_endpoint_are_refused_at_the_endpoint() {
    let f = Files::new();
    let text = etcd(
        "\"http://a:1\", \"b:2\"",
        &format!("ca-file = {:?}\n", f.path("ca.pem")),
    );
    assert_eq!(
        problems(&text),
        [
            "3:14: endpoint \"http://a:1\" is plain http, but `ca-file` (line 4) is a TLS setting: \
          write \"https://a:1\", or remove the TLS keys"
        ]
    );
    let named = etcd("\"http://a:1\"", "server-name = \"etcd\"\n");
    assert_eq!(
        problems(&named),
        [
            "3:14: endpoint \"http://a:1\" is plain http, but `server-name` (line 4) is a TLS \
          setting: write \"https://a:1\", or remove the TLS keys"
        ]
    );
}

#[test]
fn a_client_certificate_needs_its_key_and_the_key_its_certificate() {
    let f = Files::new();
    let cert = etcd(
        "\"https://a:1\"",
        &format!("cert-file = {:?}\n", f.path("client.pem")),
    );
    assert_eq!(
        problems(&cert),
        ["4:1: `cert-file` needs `key-file` too: the client certificate's private key"]
    );
    let key = etcd(
        "\"https://a:1\"",
        &format!("key-file = {:?}\n", f.path("client-key.pem")),
    );
    assert_eq!(
        problems(&key),
        ["4:1: `key-file` needs `cert-file` too: the client certificate it is the key of"]
    );
}

#[test]
fn unusable_tls_files_are_named_with_the_reason() {
    let f = Files::new();
    let tls = |ca: &str, cert: &str, key: &str| {
        etcd(
            "\"https://a:1\"",
            &format!(
                "ca-file = {:?}\ncert-file = {:?}\nkey-file = {:?}\n",
                f.path(ca),
                f.path(cert),
                f.path(key)
            ),
        )
    };
    let missing = f.path("missing.pem");
    assert_eq!(
        problems(&tls("missing.pem", "client.pem", "client-key.pem")),
        [format!(
            "4:11: cannot read `ca-file` {missing}: No such file or directory (os error 2)"
        )]
    );
    assert_eq!(
        problems(&tls("notes.txt", "client.pem", "client-key.pem")),
        [format!(
            "4:11: `ca-file` {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            f.path("notes.txt")
        )]
    );
    assert_eq!(
        problems(&tls("ca.pem", "missing.pem", "client-key.pem")),
        [format!(
            "5:13: cannot read `cert-file` {missing}: No such file or directory (os error 2)"
        )]
    );
    assert_eq!(
        problems(&tls("ca.pem", "client-key.pem", "client-key.pem")),
        [format!(
            "5:13: `cert-file` {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            f.path("client-key.pem")
        )]
    );
    for encrypted in ["pkcs8-encrypted.pem", "legacy-encrypted.pem"] {
        assert_eq!(
            problems(&tls("ca.pem", "client.pem", encrypted)),
            [format!(
                "6:12: `key-file` {} is an encrypted private key, and promd cannot ask for its \
                 passphrase: store it decrypted (e.g. `openssl pkey -in KEY -out KEY.plain`), \
                 readable only by root",
                f.path(encrypted)
            )]
        );
    }
    assert_eq!(
        problems(&tls("ca.pem", "client.pem", "client.pem")),
        [format!(
            "6:12: `key-file` {} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA \
             PRIVATE KEY or EC PRIVATE KEY)",
            f.path("client.pem")
        )]
    );
    assert_eq!(
        problems(&tls("ca.pem", "client.pem", "other-key.pem")),
        [format!(
            "6:12: `key-file` {} does not fit `cert-file` {}: the key is not the certificate's \
             (their public keys differ)",
            f.path("other-key.pem"),
            f.path("client.pem")
        )]
    );
}

/// An IPv6 address is bracketed in an endpoint but not in `server-name` (rustls takes it bare).
#[test]
fn a_bracketed_ipv6_server_name_is_told_to_drop_the_brackets() {
    assert_eq!(
        problems(&etcd("\"https://[::1]:2379\"", "server-name = \"[::1]\"\n")),
        [
            "4:15: `server-name` = \"[::1]\" is not a DNS name or an IP address: write an IPv6 \
             address without brackets, \"::1\""
        ]
    );
    assert_eq!(
        tls_of(&store(&etcd(
            "\"https://[::1]:2379\"",
            "server-name = \"::1\"\n"
        )))
        .and_then(|t| t.server_name),
        Some("::1".to_owned())
    );
}

#[test]
fn tls_key_values_are_checked() {
    assert_eq!(
        problems(&etcd("\"https://a:1\"", "ca-file = \"ca.pem\"\n")),
        ["4:11: `ca-file` = \"ca.pem\" must be an absolute path"]
    );
    assert_eq!(
        problems(&etcd("\"https://a:1\"", "server-name = \"etcd one\"\n")),
        ["4:15: `server-name` = \"etcd one\" is not a DNS name or an IP address"]
    );
    assert_eq!(
        problems("[store]\npath = \"/srv\"\nca-file = \"/ca.pem\"\nuser = \"u\"\n"),
        [
            "3:1: `ca-file` only applies to kind = \"etcd\"; this [store] is kind = \"dir\"",
            "4:1: `user` only applies to kind = \"etcd\"; this [store] is kind = \"dir\""
        ]
    );
}

// --- authentication --------------------------------------------------------------------------

#[test]
fn user_and_password_file_are_read() {
    let f = Files::new();
    let text = etcd(
        "\"http://a:1\"",
        &format!(
            "user = \"promd\"\npassword-file = {:?}\n",
            f.path("password")
        ),
    );
    let auth = auth_of(&store(&text)).unwrap();
    assert_eq!(auth.user, "promd");
    assert_eq!(
        auth.password_file,
        PasswordFile::Path(f.path("password").into())
    );
    let password = read_password(&auth.password_file, None).unwrap();
    assert_eq!(password.expose(), "s3cret", "without the line break");
    assert_eq!(format!("{password:?}"), "Password(..)");
}

/// A password over plain http:// is allowed (a private network may be what the operator
/// trusts), but said: `check-config` notes it and promd journals it at start.
#[test]
fn a_password_over_plain_http_is_warned_about() {
    let f = Files::new();
    let user = format!(
        "user = \"promd\"\npassword-file = {:?}\n",
        f.path("password")
    );
    let config = |endpoints: &str, extra: &str| {
        parse_in(
            &etcd(endpoints, &format!("{user}{extra}")),
            "t.toml",
            || Ok("n1".to_owned()),
            None,
        )
        .unwrap()
    };
    assert_eq!(
        notes_at(&config("\"a:1\"", ""), crate::certs::now(), &[]),
        [
            "etcd user \"promd\" logs in over plain http://: its password crosses the network in \
          the clear; use https:// endpoints (ca-file)"
        ]
    );
    let tls = format!("ca-file = {:?}\n", f.path("ca.pem"));
    assert!(
        notes_at(&config("\"a:1\"", &tls), crate::certs::now(), &[]).is_empty(),
        "https by the TLS key"
    );
    assert!(notes_at(&config("\"https://a:1\"", ""), crate::certs::now(), &[]).is_empty());
}

/// A certificate valid from `from` to `to` (midnight UTC of each day) and its key, as
/// `NAME.pem` and `NAME-key.pem`.
fn dated(f: &Files, name: &str, cn: &str, from: (i32, u8, u8), to: (i32, u8, u8)) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["promd".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    f.write(
        &format!("{name}.pem"),
        &params.self_signed(&key).unwrap().pem(),
    );
    f.write(&format!("{name}-key.pem"), &key.serialize_pem());
}

/// etcd refuses an expired client certificate with the alert it gives an untrusted one; so
/// `check-config` (and promd at start) says when `cert-file` has expired, is not valid yet or
/// runs out within 14 days, and when a `ca-file` certificate has expired.
#[test]
fn certificates_out_of_their_validity_are_warned_about() {
    let now = 1_800_000_000; // 2027-01-15T08:00:00Z
    let f = Files::new();
    dated(&f, "expired", "promd", (2026, 1, 1), (2027, 1, 14));
    dated(&f, "future", "promd", (2027, 1, 16), (2028, 1, 1));
    dated(&f, "soon", "promd", (2027, 1, 1), (2027, 1, 18));
    dated(&f, "fine", "promd", (2027, 1, 1), (2027, 4, 15));
    dated(&f, "old-ca", "old CA", (2026, 1, 1), (2027, 1, 13));
    let notes = |cert: &str, ca: &str| {
        let text = etcd(
            "\"https://a:1\"",
            &format!(
                "ca-file = {:?}\ncert-file = {:?}\nkey-file = {:?}\n",
                f.path(&format!("{ca}.pem")),
                f.path(&format!("{cert}.pem")),
                f.path(&format!("{cert}-key.pem"))
            ),
        );
        let config = parse_in(&text, "t.toml", || Ok("n1".to_owned()), None).unwrap();
        // Not the notes on the temporary directory (see
        // files_under_directories_promd_service_does_not_see_are_noted).
        notes_at(&config, now, &[])
    };
    assert_eq!(notes("fine", "fine"), Vec::<String>::new());
    assert_eq!(
        notes("expired", "fine"),
        [format!(
            "`cert-file` {} expired at 2027-01-14T00:00:00Z: etcd will refuse it; renew it in \
             place (promd reads it again at its next connection, no restart)",
            f.path("expired.pem")
        )]
    );
    assert_eq!(
        notes("future", "fine"),
        [format!(
            "`cert-file` {} is not valid before 2027-01-16T00:00:00Z: etcd will refuse it until \
             then (is this host's clock right?)",
            f.path("future.pem")
        )]
    );
    assert_eq!(
        notes("soon", "fine"),
        [format!(
            "`cert-file` {} expires at 2027-01-18T00:00:00Z, in 2 days: renew it in place \
             (promd reads it again at its next connection, no restart)",
            f.path("soon.pem")
        )]
    );
    assert_eq!(
        notes("fine", "old-ca"),
        [format!(
            "`ca-file` {}: CN=old CA expired at 2027-01-13T00:00:00Z: etcd's certificates it \
             signed will not be trusted",
            f.path("old-ca.pem")
        )]
    );
}

#[test]
fn a_bare_password_file_is_a_systemd_credential() {
    let f = Files::new();
    let text = etcd(
        "\"http://a:1\"",
        "user = \"promd\"\npassword-file = \"password\"\n",
    );
    let credentials = f.dir.path();
    let auth = auth_of(&store_in(&text, Some(credentials))).unwrap();
    assert_eq!(
        auth.password_file,
        PasswordFile::Credential("password".to_owned())
    );
    let password = read_password(&auth.password_file, Some(credentials)).unwrap();
    assert_eq!(password.expose(), "s3cret");
    // Outside promd.service (check-config by hand) it cannot be read, and is not an error.
    assert_eq!(auth_of(&store(&text)), Some(auth.clone()));
    assert_eq!(
        read_password(&auth.password_file, None)
            .unwrap_err()
            .to_string(),
        "`password-file` = \"password\" names a systemd credential, but $CREDENTIALS_DIRECTORY \
         is not set: give promd.service LoadCredential=password:/PATH/TO/FILE, or write an \
         absolute path"
    );
    let missing = etcd(
        "\"http://a:1\"",
        "user = \"promd\"\npassword-file = \"etcd-password\"\n",
    );
    assert_eq!(
        problems_in(&missing, Some(credentials)),
        [format!(
            "5:17: cannot read `password-file` {}: No such file or directory (os error 2)",
            f.path("etcd-password")
        )]
    );
}

#[test]
fn authentication_errors() {
    let f = Files::new();
    let auth = |extra: &str| problems(&etcd("\"http://a:1\"", extra));
    assert_eq!(
        auth("user = \"promd\"\n"),
        ["4:1: `user` needs `password-file` too: the file that holds the user's password"]
    );
    assert_eq!(
        auth(&format!("password-file = {:?}\n", f.path("password"))),
        ["4:1: `password-file` needs `user` too: the etcd user whose password it holds"]
    );
    assert_eq!(
        auth("user = \"promd\"\npassword-file = \"etc/promd/password\"\n"),
        [
            "5:17: `password-file` = \"etc/promd/password\" is neither an absolute path nor the \
          name of a systemd credential (a name without `/`, as in LoadCredential=NAME:PATH)"
        ]
    );
    assert_eq!(
        auth(&format!(
            "user = \"promd\"\npassword-file = {:?}\n",
            f.path("missing")
        )),
        [format!(
            "5:17: cannot read `password-file` {}: No such file or directory (os error 2)",
            f.path("missing")
        )]
    );
    assert_eq!(
        auth(&format!(
            "user = \"promd\"\npassword-file = {:?}\n",
            f.path("empty-password")
        )),
        [format!(
            "5:17: `password-file` {} is empty",
            f.path("empty-password")
        )]
    );
    assert_eq!(
        auth(&format!(
            "user = \"\"\npassword-file = {:?}\n",
            f.path("password")
        )),
        [
            "4:8: `user` = \"\" is not an etcd user name: it must not be empty or hold control \
          characters"
        ]
    );
}

// --- what a running promd records ------------------------------------------------------------

#[test]
fn the_record_holds_the_password_file_never_the_password() {
    let f = Files::new();
    let text = format!(
        "node = \"a\"\n{}",
        etcd(
            "\"https://a:1\"",
            &format!(
                "ca-file = {:?}\nuser = \"promd\"\npassword-file = {:?}\n",
                f.path("ca.pem"),
                f.path("password")
            ),
        )
    );
    let config = parse_in(&text, "t.toml", || Ok("a".to_owned()), None).unwrap();
    let fixed = Fixed::of(&config);
    let json = serde_json::to_string(&fixed).unwrap();
    assert!(!json.contains("s3cret"), "{json}");
    assert!(
        json.contains(&format!("\"password_file\":{:?}", f.path("password"))),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Fixed>(&json).unwrap(), fixed);
}

#[test]
fn a_record_of_the_previous_version_reads_as_plain_etcd() {
    let old = r#"{"node":"a","store":{"kind":"etcd","endpoints":["http://a:1"],
        "connect_timeout":{"secs":2,"nanos":0},"prefix":"/promd"}}"#;
    let fixed: Fixed = serde_json::from_str(old).unwrap();
    assert_eq!(
        fixed.store,
        StoreConfig::Etcd {
            endpoints: vec!["http://a:1".to_owned()],
            connect_timeout: Duration::from_secs(2),
            prefix: "/promd".to_owned(),
            tls: None,
            auth: None,
        }
    );
}

#[test]
fn a_reload_that_changes_tls_or_the_user_needs_a_restart() {
    let f = Files::new();
    let before = format!("node = \"a\"\n{}", etcd("\"http://a:1\"", ""));
    let after = format!(
        "node = \"a\"\n{}",
        etcd(
            "\"a:1\"",
            &format!(
                "ca-file = {:?}\nuser = \"promd\"\npassword-file = {:?}\n",
                f.path("ca.pem"),
                f.path("password")
            ),
        )
    );
    let hostname = || Ok("a".to_owned());
    let running = Fixed::of(&parse_in(&before, "old.toml", hostname, None).unwrap());
    let new = parse_in(&after, "new.toml", hostname, None).unwrap();
    let err = restart_needed(&running, &new, &after, "new.toml").unwrap();
    let lines: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
    let hint = RESTART_HINT;
    assert_eq!(
        lines,
        [
            format!(
                "new.toml:4:13: [store] endpoints = [\"https://a:1\"] but the running promd has \
                 [\"http://a:1\"]: {hint}"
            ),
            format!(
                "new.toml:5:11: [store] ca-file = {:?} but the running promd has none: {hint}",
                f.path("ca.pem")
            ),
            format!(
                "new.toml:6:8: [store] user = \"promd\" but the running promd has none: {hint}"
            ),
            format!(
                "new.toml:7:17: [store] password-file = {:?} but the running promd has none: \
                 {hint}",
                f.path("password")
            ),
        ]
    );
    let back = restart_needed(
        &Fixed::of(&new),
        &running_config(&before),
        &before,
        "old.toml",
    )
    .unwrap()
    .to_string();
    assert!(
        back.contains("[store] ca-file is not set but the running promd has"),
        "{back}"
    );
}

fn running_config(text: &str) -> Config {
    parse_in(text, "old.toml", || Ok("a".to_owned()), None).unwrap()
}

/// The README's production example parses as written, given its files.
#[test]
fn the_readme_tls_and_rbac_example_is_valid() {
    let readme = include_str!("../../README.md");
    let block = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.contains("ca-file"))
        .expect("a TOML example with ca-file in the README");
    let f = Files::new();
    let ca = f.path("ca.pem");
    let cert = f.path("client.pem");
    let key = f.path("client-key.pem");
    let text = block
        .replace("/etc/promd/etcd-ca.pem", &ca)
        .replace("/etc/promd/etcd-client.pem", &cert)
        .replace("/etc/promd/etcd-client.key", &key);
    f.write("etcd-password", "s3cret\n");
    let store = store_in(&text, Some(f.dir.path()));
    assert_eq!(endpoints_of(&store).len(), 3);
    assert!(tls_of(&store).is_some_and(|t| t.client.is_some()));
    let auth = auth_of(&store).unwrap();
    assert_eq!(
        read_password(&auth.password_file, Some(f.dir.path()))
            .unwrap()
            .expose(),
        "s3cret"
    );
}

#[test]
fn a_broken_certificate_and_a_broken_key_are_both_reported() {
    let f = Files::new();
    let text = etcd(
        "\"https://a:1\"",
        &format!(
            "ca-file = {:?}\ncert-file = {:?}\nkey-file = {:?}\n",
            f.path("ca.pem"),
            f.path("notes.txt"),
            f.path("pkcs8-encrypted.pem")
        ),
    );
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("5:13: `cert-file` "), "{found:#?}");
    assert!(found[1].starts_with("6:12: `key-file` "), "{found:#?}");
    assert!(
        found[1].contains("is an encrypted private key"),
        "{found:#?}"
    );
}

/// promd.service runs as root without CAP_DAC_OVERRIDE (and with PrivateUsers=yes): a key
/// owned by another user, mode 0600 (as etcd's own client keys often are), cannot be read by
/// the service, so `check-config`, run as root, says so instead of "ok". (Run as another
/// user, check-config cannot tell, and reads what that user may read.)
#[test]
fn a_key_root_may_read_only_by_override_is_refused_when_checked_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let f = Files::new();
    let key = f.path("client-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = etcd(
        "\"https://a:1\"",
        &format!(
            "cert-file = {:?}\nkey-file = {:?}\n",
            f.path("client.pem"),
            key
        ),
    );
    // Root's own 0600 key is fine.
    assert!(tls_of(&store(&text)).is_some());
    if !nix::unistd::geteuid().is_root() {
        return; // chown needs root; the check only applies to root anyway
    }
    std::os::unix::fs::chown(&key, Some(1000), None).unwrap();
    assert_eq!(
        problems(&text),
        [format!(
            "5:12: `key-file` {} is owned by uid 1000 and not readable by others: promd.service \
             runs without CAP_DAC_OVERRIDE and cannot read it; make root its owner (chown root)",
            key
        )]
    );
    // Root's, but with no read bit for its owner: the fix is the mode, not the owner.
    std::os::unix::fs::chown(&key, Some(0), None).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).unwrap();
    assert_eq!(
        problems(&text),
        [format!(
            "5:12: `key-file` {key} is owned by uid 0 and not readable by others: promd.service \
             runs without CAP_DAC_OVERRIDE and cannot read it; let its owner read it (chmod u+r \
             {key})"
        )]
    );
}

/// A PEM file caught half written says which end line is missing, in words.
#[test]
fn a_pem_file_cut_short_names_the_missing_end_line() {
    let f = Files::new();
    f.write(
        "cut.pem",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n",
    );
    let text = etcd(
        "\"https://a:1\"",
        &format!("ca-file = {:?}\n", f.path("cut.pem")),
    );
    assert_eq!(
        problems(&text),
        [format!(
            "4:11: `ca-file` {} is not valid PEM: no `-----END CERTIFICATE-----` line (the file \
             is cut short?)",
            f.path("cut.pem")
        )]
    );
}

// --- files promd.service cannot use ---------------------------------------------------------

/// A configuration of kind etcd naming these files (which need not exist: the notes on
/// where a file is do not read it).
fn naming(ca: &str, cert: &str, key: &str, password: &str) -> Config {
    Config {
        node: "n1".to_owned(),
        store: StoreConfig::Etcd {
            endpoints: vec!["https://a:2379".to_owned()],
            connect_timeout: Duration::from_secs(2),
            prefix: "/promd".to_owned(),
            tls: Some(Box::new(TlsConfig {
                ca_file: Some(ca.into()),
                client: Some(ClientCert {
                    cert_file: cert.into(),
                    key_file: key.into(),
                }),
                server_name: None,
            })),
            auth: Some(Box::new(AuthConfig {
                user: "promd".to_owned(),
                password_file: PasswordFile::parse(password).unwrap(),
            })),
        },
        groups: Vec::new(),
        http: HttpConfig::default(),
    }
}

/// PrivateTmp=yes gives promd.service empty /tmp and /var/tmp of its own, and ProtectHome=yes
/// hides /home, /root and /run/user: a file there passes `check-config` (run from a shell)
/// and is missing when the service starts. A note, not an error: tests keep their files in
/// temporary directories, and a drop-in may lift the settings.
#[test]
fn files_under_directories_promd_service_does_not_see_are_noted() {
    let now = 1_800_000_000;
    let config = naming(
        "/tmp/promd-absent/ca.pem",
        "/var/tmp/promd-absent/client.pem",
        "/home/promd-absent/client.key",
        "/root/promd-absent/password",
    );
    assert_eq!(
        warnings_at(&config, now),
        [
            "`ca-file` /tmp/promd-absent/ca.pem is under /tmp, which promd.service does not \
             see (PrivateTmp=yes gives it an empty /tmp of its own): keep the file under \
             /etc/promd",
            "`cert-file` /var/tmp/promd-absent/client.pem is under /var/tmp, which \
             promd.service does not see (PrivateTmp=yes gives it an empty /var/tmp of its \
             own): keep the file under /etc/promd",
            "`key-file` /home/promd-absent/client.key is under /home, which promd.service does \
             not see (ProtectHome=yes hides it): keep the file under /etc/promd",
            "`password-file` /root/promd-absent/password is under /root, which promd.service \
             does not see (ProtectHome=yes hides it): keep the file under /etc/promd, or give \
             it to promd.service with LoadCredential=NAME:/root/promd-absent/password and \
             write password-file = \"NAME\"",
        ]
    );
    let config = naming(
        "/etc/promd/ca.pem",
        "/tmpfiles/client.pem",
        "/run/user/0/client.key",
        "etcd-password",
    );
    assert_eq!(
        warnings_at(&config, now),
        [
            "`key-file` /run/user/0/client.key is under /run/user, which promd.service does \
             not see (ProtectHome=yes hides it): keep the file under /etc/promd"
        ],
        "a credential name is no path, and /tmpfiles is not /tmp"
    );
}

/// A link is followed as promd would: a file that is a link into a hidden directory is
/// hidden too.
#[test]
fn a_link_into_a_directory_promd_service_does_not_see_is_noted() {
    let f = Files::new();
    let hidden = f.dir.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    let hidden = std::fs::canonicalize(&hidden).unwrap();
    std::fs::rename(f.path("ca.pem"), hidden.join("ca.pem")).unwrap();
    std::os::unix::fs::symlink(hidden.join("ca.pem"), f.path("ca.pem")).unwrap();
    let text = etcd(
        "\"https://a:1\"",
        &format!("ca-file = {:?}\n", f.path("ca.pem")),
    );
    let config = parse_in(&text, "t.toml", || Ok("n1".to_owned()), None).unwrap();
    let hidden_dir = hidden.display().to_string();
    assert_eq!(
        notes_at(
            &config,
            crate::certs::now(),
            &[(&hidden_dir, "Setting=yes hides it")]
        ),
        [format!(
            "`ca-file` {} leads to {}, under {hidden_dir}, which promd.service does not see \
             (Setting=yes hides it): keep the file under /etc/promd",
            f.path("ca.pem"),
            hidden.join("ca.pem").display()
        )]
    );
}

/// promd.toml(5) says to keep the key and the password readable by root only: one that other
/// users may read (by the bits for others, or for a group other than root's) is noted, with
/// the command that fixes it. Certificates are public; a credential is systemd's to protect.
#[test]
fn a_key_or_password_other_users_may_read_is_noted() {
    use std::os::unix::fs::PermissionsExt;
    let f = Files::new();
    let chmod = |name: &str, mode: u32| {
        std::fs::set_permissions(f.path(name), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let text = etcd(
        "\"https://a:1\"",
        &format!(
            "cert-file = {:?}\nkey-file = {:?}\nuser = \"promd\"\npassword-file = {:?}\n",
            f.path("client.pem"),
            f.path("client-key.pem"),
            f.path("password")
        ),
    );
    let notes = || {
        let config = parse_in(&text, "t.toml", || Ok("n1".to_owned()), None).unwrap();
        notes_at(&config, crate::certs::now(), &[])
    };
    chmod("client.pem", 0o644);
    assert_eq!(
        notes(),
        Vec::<String>::new(),
        "0600 keys, a 0644 certificate"
    );
    chmod("client-key.pem", 0o644);
    chmod("password", 0o666);
    assert_eq!(
        notes(),
        [
            format!(
                "`key-file` {0} is readable by every user (mode 0644), not by root only: \
                 chmod 600 {0}",
                f.path("client-key.pem")
            ),
            format!(
                "`password-file` {0} is readable by every user (mode 0666), not by root only: \
                 chmod 600 {0}",
                f.path("password")
            ),
        ]
    );
    chmod("client-key.pem", 0o600);
    chmod("password", 0o600);
    // A credential: systemd makes it readable by the service only, whatever the source's mode.
    f.write("etcd-password", "s3cret\n");
    chmod("etcd-password", 0o644);
    let credential = etcd(
        "\"https://a:1\"",
        "user = \"promd\"\npassword-file = \"etcd-password\"\n",
    );
    let config = parse_in(
        &credential,
        "t.toml",
        || Ok("n1".to_owned()),
        Some(f.dir.path().to_path_buf()),
    )
    .unwrap();
    assert_eq!(notes_at(&config, 0, &[]), Vec::<String>::new());
    if !nix::unistd::geteuid().is_root() {
        return; // chown needs root
    }
    chmod("client-key.pem", 0o640);
    assert_eq!(notes(), Vec::<String>::new(), "group root is root's");
    std::os::unix::fs::chown(f.path("client-key.pem"), None, Some(4242)).unwrap();
    assert_eq!(
        notes(),
        [format!(
            "`key-file` {0} is readable by group 4242 (mode 0640), not by root only: \
             chmod 600 {0}",
            f.path("client-key.pem")
        )]
    );
}

/// Reaching a file takes search permission on every directory above it, which root without
/// CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH has only as the directory's owner or group, or by
/// the bits for others: a root-owned 0600 key in another user's 0700 directory is out of
/// promd.service's reach, and `check-config`, run as root, names the directory.
#[test]
fn a_key_in_a_directory_root_may_search_only_by_override_is_refused_when_checked_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let f = Files::new();
    let dir = f.dir.path().join("etcd");
    std::fs::create_dir(&dir).unwrap();
    let key = dir.join("client-key.pem").display().to_string();
    std::fs::rename(f.path("client-key.pem"), &key).unwrap();
    let text = etcd(
        "\"https://a:1\"",
        &format!(
            "cert-file = {:?}\nkey-file = {key:?}\n",
            f.path("client.pem")
        ),
    );
    let chmod =
        |mode: u32| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    chmod(0o700);
    // Root's own 0700 directory is fine.
    assert!(tls_of(&store(&text)).is_some());
    if !nix::unistd::geteuid().is_root() {
        return; // chown needs root; the check only applies to root anyway
    }
    std::os::unix::fs::chown(&dir, Some(1000), Some(1000)).unwrap();
    assert_eq!(
        problems(&text),
        [format!(
            "5:12: `key-file` {key} is in {0}, which is owned by uid 1000 and not searchable by \
             others (mode 0700): promd.service runs without CAP_DAC_OVERRIDE or \
             CAP_DAC_READ_SEARCH and cannot reach it; make root the directory's owner (chown \
             root {0}) or let others search it (chmod o+x {0})",
            dir.display()
        )]
    );
    // Others may search it; or its group is root's and may.
    chmod(0o701);
    assert!(tls_of(&store(&text)).is_some());
    std::os::unix::fs::chown(&dir, None, Some(0)).unwrap();
    chmod(0o710);
    assert!(tls_of(&store(&text)).is_some());
}
