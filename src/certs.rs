//! When the certificates in promd's PEM files are valid, so that messages can say "expired at"
//! instead of only naming a TLS alert: etcd (Go's TLS) answers a client certificate it refuses
//! for any reason with the same `bad_certificate` alert, and `check-config` warns before a
//! certificate runs out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// How long before its end a certificate is reported as expiring soon: 14 days.
pub const EXPIRES_SOON: Duration = Duration::from_secs(14 * 24 * 3600);

/// One certificate's validity: its subject (as `CN=...`, or the whole name) and the bounds of
/// its validity, in seconds since the Unix epoch (X.509 `notBefore` and `notAfter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// The subject's common name, or the whole subject when it has none.
    pub subject: String,
    /// `notBefore`, in seconds since the Unix epoch.
    pub not_before: i64,
    /// `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Where a certificate stands at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Valid for longer than [`EXPIRES_SOON`].
    Valid,
    /// Not valid before this time (seconds since the epoch).
    NotYetValid(i64),
    /// Valid, but ends within [`EXPIRES_SOON`]: at this time.
    ExpiresSoon(i64),
    /// Ended at this time.
    Expired(i64),
}

impl Validity {
    /// Where this certificate stands at `now` (seconds since the epoch).
    pub fn at(&self, now: i64) -> Standing {
        if now < self.not_before {
            Standing::NotYetValid(self.not_before)
        } else if now > self.not_after {
            Standing::Expired(self.not_after)
        } else if self.not_after - now < EXPIRES_SOON.as_secs() as i64 {
            Standing::ExpiresSoon(self.not_after)
        } else {
            Standing::Valid
        }
    }
}

/// The validity of every certificate in `pem`, in order. Blocks that are not certificates,
/// or that do not parse, are left out: whether the file is usable is checked where it is read.
pub fn validities(pem: &[u8]) -> Vec<Validity> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let subject = cert.subject();
            let subject = subject
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(|cn| format!("CN={cn}"))
                .unwrap_or_else(|| subject.to_string());
            Some(Validity {
                subject,
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
            })
        })
        .collect()
}

/// Now, in seconds since the Unix epoch (0 if the clock is before it).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `secs` since the epoch as RFC 3339 in UTC, to the second (`2001-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let at = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, date_time_ymd};

    fn cert(cn: &str, from: (i32, u8, u8), to: (i32, u8, u8)) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_before = date_time_ymd(from.0, from.1, from.2);
        params.not_after = date_time_ymd(to.0, to.1, to.2);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn every_certificate_of_a_file_is_read_in_order() {
        let pem = format!(
            "{}{}",
            cert("leaf", (2000, 1, 1), (2001, 1, 1)),
            cert("ca", (2020, 1, 1), (2040, 1, 1))
        );
        let v = validities(pem.as_bytes());
        assert_eq!(
            v.iter().map(|v| v.subject.as_str()).collect::<Vec<_>>(),
            ["CN=leaf", "CN=ca"]
        );
        assert_eq!(rfc3339(v[0].not_after), "2001-01-01T00:00:00Z");
        assert_eq!(rfc3339(v[1].not_before), "2020-01-01T00:00:00Z");
        assert!(validities(b"not a certificate").is_empty());
    }

    #[test]
    fn a_certificate_stands_by_its_bounds() {
        let v = Validity {
            subject: "CN=x".into(),
            not_before: 1_000,
            not_after: 1_000 + 30 * 24 * 3600,
        };
        assert_eq!(v.at(999), Standing::NotYetValid(1_000));
        assert_eq!(v.at(1_000), Standing::Valid);
        assert_eq!(v.at(v.not_after - 15 * 24 * 3600), Standing::Valid);
        assert_eq!(
            v.at(v.not_after - 13 * 24 * 3600),
            Standing::ExpiresSoon(v.not_after)
        );
        assert_eq!(v.at(v.not_after + 1), Standing::Expired(v.not_after));
    }
}
