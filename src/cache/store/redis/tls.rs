//! TLS to Redis (feature `redis-tls`): the redis client's rustls
//! connections, and the crypto provider they need.

use rustls::crypto::CryptoProvider;

/// Makes sure rustls has a process-wide crypto provider before the redis
/// client builds its TLS configuration (it asks rustls for the process
/// default). When the app has installed one, it is used; otherwise ring's
/// is installed (the one this crate enables). Without this, a build in
/// which another crate also enables rustls's other provider (aws-lc-rs)
/// would leave rustls unable to choose, and every connection would fail.
pub(super) fn ensure_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Err: another thread installed one meanwhile, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
