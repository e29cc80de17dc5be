//! The pages and the API over HTTPS, for operators who reach the appliance from anywhere but
//! its own loopback: browsers keep the session's `Secure` cookie over plain HTTP only for
//! `localhost`. The certificate is the operator's (`tls_cert`, `tls_key`: PEM files), or one
//! the appliance makes for itself on first start and keeps in `DATA_DIR/tls/`, naming its
//! addresses and host name, for the operator to trust or replace. Nodes keep booting over
//! plain HTTP: iPXE and the firmware do not carry the site's CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::AppState;

/// How long a client may take over its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Where the certificate came from, for the log.
#[derive(Debug, PartialEq)]
pub enum Source {
    Operator(PathBuf),
    Made(PathBuf),
    Kept(PathBuf),
}

/// The server's TLS configuration: the operator's certificate and key, else the appliance's
/// own, made on first start under `data_dir/tls` for `names` (host names and addresses).
pub fn config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    names: &[String],
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Source)> {
    let (cert, key, source) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), Source::Operator(c.into())),
        (None, None) => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if c.exists() && k.exists() {
                (c.clone(), k, Source::Kept(c))
            } else {
                make(&dir, names)?;
                (c.clone(), k, Source::Made(c))
            }
        }
        _ => anyhow::bail!("tls_cert and tls_key go together: name both or neither"),
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let private = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("cannot read the private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| format!("{} does not go with {}", key.display(), cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), source))
}

/// A self-signed certificate for `names`, its key readable by root only.
fn make(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .context("cannot make a self-signed certificate")?;
    let key = dir.join("key.pem");
    write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, made.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The names a certificate the appliance makes for itself carries: its host name, the
/// address nodes are told (`advertise`), the listen address when it is not a wildcard, and
/// loopback.
pub fn names(advertise: Option<std::net::Ipv4Addr>, listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        && !host.trim().is_empty()
    {
        names.push(host.trim().to_string());
    }
    if let Some(a) = advertise {
        names.push(a.to_string());
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.dedup();
    names
}

/// Serves the router over TLS on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let conns = state.conns.clone();
    let router = super::router(state);
    super::accept_loop(
        listener,
        "HTTPS",
        &conns,
        shutdown,
        move |stream, peer, conn, token| {
            let (acceptor, router) = (acceptor.clone(), router.clone());
            async move {
                match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => super::with_hyper(tls, peer, true, conn, router, token).await,
                    Ok(Err(e)) => info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => info!(%peer, "TLS handshake timed out"),
                }
            }
        },
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "10.0.0.1".to_string()];
        let (_, source) = config(None, None, dir.path(), &names).unwrap();
        let cert = dir.path().join("tls/cert.pem");
        assert_eq!(source, Source::Made(cert.clone()));
        let first = std::fs::read(&cert).unwrap();
        let (_, source) = config(None, None, dir.path(), &names).unwrap();
        assert_eq!(source, Source::Kept(cert.clone()));
        assert_eq!(std::fs::read(&cert).unwrap(), first, "not made again");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_wrong_or_half_configuration_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.pem");
        std::fs::write(&bogus, "not a certificate").unwrap();
        let e = config(Some(&bogus), None, dir.path(), &[]).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let e = config(Some(&bogus), Some(&bogus), dir.path(), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("bogus.pem"), "{e:#}");
        let missing = dir.path().join("missing.pem");
        let e = config(Some(&missing), Some(&missing), dir.path(), &[]).unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot read the certificate"),
            "{e:#}"
        );
    }

    #[test]
    fn names_cover_loopback_and_the_advertised_address() {
        let n = names(
            Some("10.0.0.1".parse().unwrap()),
            "0.0.0.0:8443".parse().unwrap(),
        );
        assert!(n.contains(&"localhost".to_string()));
        assert!(n.contains(&"10.0.0.1".to_string()));
        assert!(!n.contains(&"0.0.0.0".to_string()));
    }
}
