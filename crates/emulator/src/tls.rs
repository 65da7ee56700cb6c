//! HTTPS: the server's certificate (made at start, or read from files) and the accept
//! loop that puts rustls in front of the router.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{EmulatorError, Tls};

/// The server's TLS configuration and its certificate (PEM) for clients to trust.
pub(crate) fn server_config(tls: &Tls) -> Result<(Arc<ServerConfig>, String), EmulatorError> {
    let config = |e: String| EmulatorError::Config(e);
    let (certs, key, pem) = match tls {
        Tls::Generated { cert_out } => {
            let made = rcgen::generate_simple_self_signed(vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
            ])
            .map_err(|e| config(format!("could not make a TLS certificate: {e}")))?;
            let pem = made.cert.pem();
            if let Some(path) = cert_out {
                std::fs::write(path, &pem).map_err(|e| {
                    config(format!(
                        "could not write the TLS certificate to {}: {e}",
                        path.display()
                    ))
                })?;
            }
            let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
            (vec![made.cert.der().clone()], key, pem)
        }
        Tls::Files { cert, key } => {
            let read = |p: &std::path::Path, what: &str| {
                std::fs::read(p)
                    .map_err(|e| config(format!("could not read the {what} {}: {e}", p.display())))
            };
            let cert_pem = read(cert, "TLS certificate")?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| config(format!("{} is not a PEM certificate: {e}", cert.display())))?;
            if certs.is_empty() {
                return Err(config(format!("{} holds no certificate", cert.display())));
            }
            let key_pem = read(key, "TLS key")?;
            // The key's parse error is not shown: it could quote the key.
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|_| config(format!("{} holds no PEM private key", key.display())))?;
            let pem = String::from_utf8_lossy(&cert_pem).into_owned();
            (certs, key, pem)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| config(format!("the TLS certificate and key do not fit: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(server), pem))
}

/// Accepts connections, each through a TLS handshake, until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|v| *v) => return Ok(()),
            a = listener.accept() => a,
        };
        let (tcp, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait a moment instead of spinning.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A client that does not trust the certificate ends here.
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
