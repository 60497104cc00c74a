//! The shared cache over TLS (feature `redis-tls`), on a real
//! `redis-server` listening with TLS on certificates the test makes
//! (rcgen): replicas sharing hits and invalidations through `rediss://`
//! with a private CA; a wrong CA, a missing client certificate under
//! mutual TLS, and a handshake that never completes all fail open.

use std::{path::PathBuf, time::Duration};

use axum::http::StatusCode;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tower_etag::cache::RedisStore;

use crate::{
    harness::{add, Suite, REDIS_SERVER},
    redis::*,
    redis_server::RedisServer,
};

/// The tests of this module, for the harness.
pub(crate) fn add_to(suite: &mut Suite) {
    add!(suite, Some(&REDIS_SERVER), async [
        replicas_share_hits_and_invalidations_over_tls,
        mutual_tls_shares_hits_and_a_replica_without_a_certificate_fails_open,
        a_server_certificate_from_another_ca_fails_open,
    ]);
    add!(suite, None, async [a_handshake_that_never_completes_costs_at_most_the_timeout]);
    add!(
        suite,
        None,
        [a_rediss_url_with_certificates_is_accepted_and_a_redis_url_with_them_refused]
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM strings and files.
struct Pki {
    dir: PathBuf,
    ca: String,
    client_certificate: String,
    client_key: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-etag-pki-{}-{name}-{}",
            std::process::id(),
            Self::unique()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("tower-etag test CA {name}"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let certificate = params.signed_by(&key, &ca).unwrap();
            (certificate.pem(), key.serialize_pem())
        };
        let (server_certificate, server_key) = leaf(
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_certificate, client_key) = leaf(
            vec!["replica".to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let pki = Self {
            dir,
            ca: ca.pem(),
            client_certificate,
            client_key,
        };
        std::fs::write(pki.file("ca.pem"), &pki.ca).unwrap();
        std::fs::write(pki.file("server.pem"), server_certificate).unwrap();
        std::fs::write(pki.file("server.key"), server_key).unwrap();
        pki
    }

    fn unique() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A redis-server with TLS on this PKI's server certificate.
    fn server(&self, require_client_certificates: bool) -> RedisServer {
        let files = [
            self.file("server.pem"),
            self.file("server.key"),
            self.file("ca.pem"),
        ];
        RedisServer::start_tls(
            files.each_ref().map(|f| f.as_path()),
            require_client_certificates,
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_store(url: &str, timeout: Duration, ca: &str, identity: Option<&Pki>) -> RedisStore {
    let mut builder = RedisStore::builder(url)
        .prefix(PREFIX)
        .secret("replicas' shared secret")
        .timeout(timeout)
        .tls_root_certificates(ca);
    if let Some(pki) = identity {
        builder =
            builder.tls_client_identity(pki.client_certificate.as_str(), pki.client_key.as_str());
    }
    builder.build().unwrap()
}

const LIVE: Duration = Duration::from_secs(60);

async fn replicas_share_hits_and_invalidations_over_tls() {
    let pki = Pki::new("shared");
    let redis = pki.server(false);
    let data = Data::default();
    let a = replica_with(
        tls_store(&redis.tls_url(), PATIENT, &pki.ca, None),
        &data,
        LIVE,
    )
    .await;
    let b = replica_with(
        tls_store(&redis.tls_url(), PATIENT, &pki.ca, None),
        &data,
        LIVE,
    )
    .await;
    let tag = until_shared(&a, &[&b], "/notes/1").await;
    write_replaces(&b, &a, "/notes/1", &tag).await;
    assert_none_confirms(&[("A", &a), ("B", &b)], "/notes/1", &tag).await;
    assert_eq!(a.cache.stats().unavailable, 0);
    assert_eq!(b.cache.stats().unavailable, 0);
}

async fn mutual_tls_shares_hits_and_a_replica_without_a_certificate_fails_open() {
    let pki = Pki::new("mutual");
    let redis = pki.server(true);
    let data = Data::default();
    let store = |identity| tls_store(&redis.tls_url(), TIMEOUT_FAULTS, &pki.ca, identity);
    let a = replica_with(store(Some(&pki)), &data, LIVE).await;
    let b = replica_with(store(Some(&pki)), &data, LIVE).await;
    let anonymous = replica_with(store(None), &data, LIVE).await;
    let tag = until_shared(&a, &[&b], "/notes/1").await;
    // Without a client certificate, the server refuses the handshake: the
    // replica answers from its handler (the ETag layer's own 304), never a
    // 5xx, and counts Redis as unavailable.
    for _ in 0..5 {
        let (reached, got) = anonymous.revalidate("/notes/1", &tag).await;
        assert!(reached, "not from the cache");
        assert_eq!(got.status, StatusCode::NOT_MODIFIED);
        let got = fetch(&anonymous, "/notes/1", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    assert!(anonymous.cache.stats().unavailable > 0);
    // Its writes go on (default writes).
    let got = put(&anonymous, "/notes/2").await.unwrap();
    assert_eq!(got.status, StatusCode::NO_CONTENT);
}

async fn a_server_certificate_from_another_ca_fails_open() {
    let pki = Pki::new("server");
    let other = Pki::new("other");
    let redis = pki.server(false);
    let data = Data::default();
    let a = replica_with(
        tls_store(&redis.tls_url(), TIMEOUT_FAULTS, &other.ca, None),
        &data,
        LIVE,
    )
    .await;
    for _ in 0..5 {
        let got = fetch(&a, "/notes/1", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        let tag = got.etag().unwrap().to_owned();
        let (reached, got) = a.revalidate("/notes/1", &tag).await;
        assert!(reached, "not from the cache");
        assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    }
    let stats = a.cache.stats();
    assert!(stats.unavailable > 0, "{stats:?}");
    assert_eq!((stats.hits, stats.fills), (0, 0), "{stats:?}");
}

async fn a_handshake_that_never_completes_costs_at_most_the_timeout() {
    // A server that accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let pki = Pki::new("silent");
    let data = Data::default();
    let url = format!("rediss://127.0.0.1:{}/", addr.port());
    let a = replica_with(tls_store(&url, TIMEOUT_FAULTS, &pki.ca, None), &data, LIVE).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let got = fetch(&a, "/notes/1", &[]).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(got.status, StatusCode::OK);
    }
    eprintln!("silent TLS server: slowest request {slowest:?} (timeout {TIMEOUT_FAULTS:?})");
    assert!(
        slowest < TIMEOUT_FAULTS + Duration::from_millis(200),
        "{slowest:?}"
    );
    assert!(a.cache.stats().unavailable >= 10);
}

fn a_rediss_url_with_certificates_is_accepted_and_a_redis_url_with_them_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let pki = Pki::new("urls");
    let accepted = RedisStore::builder("rediss://127.0.0.1:1/")
        .tls_root_certificates(pki.ca.as_str())
        .tls_client_identity(pki.client_certificate.as_str(), pki.client_key.as_str())
        .build();
    assert!(accepted.is_ok(), "{accepted:?}");
    let error = RedisStore::builder("redis://127.0.0.1:1/")
        .tls_root_certificates(pki.ca.as_str())
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("rediss://"), "{error}");
}
