//! The listeners: plain HTTP and HTTPS, each connection served by hyper (HTTP/1.1 with
//! upgrades, or HTTP/2: by ALPN over TLS, by its preface in the clear).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::proxy::Proxy;
use crate::tls::SniResolver;

/// How long a client may take to send a request's headers (slow clients hold a connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the ingress could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A listener could not be bound.
    #[error(
        "the ingress cannot listen on {address}: {source} ({flag} ADDR chooses another address, {flag} off none)"
    )]
    Bind {
        /// Where.
        address: SocketAddr,
        /// The flag that chose it.
        flag: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The default certificate could not be made.
    #[error(transparent)]
    Certificate(#[from] crate::tls::CertificateError),
}

/// A bound listener, before serving.
pub struct Bound {
    listener: TcpListener,
    address: SocketAddr,
}

impl Bound {
    /// Binds `address` (for `flag`'s error message); port 0 picks a free port.
    pub fn bind(address: SocketAddr, flag: &'static str) -> Result<Bound, ListenError> {
        let error = |source| ListenError::Bind {
            address,
            flag,
            source,
        };
        let std_listener = std::net::TcpListener::bind(address).map_err(error)?;
        std_listener.set_nonblocking(true).map_err(error)?;
        let listener = TcpListener::from_std(std_listener).map_err(error)?;
        let address = listener.local_addr().map_err(error)?;
        Ok(Bound { listener, address })
    }

    /// The address bound (with the port chosen).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// The running listeners; stopping aborts every connection.
pub struct Listeners {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Listeners {
    /// Serves `http` in the clear and `https` with certificates from `resolver`.
    pub fn serve(
        proxy: Arc<Proxy>,
        http: Option<Bound>,
        https: Option<Bound>,
        resolver: Arc<SniResolver>,
    ) -> Listeners {
        let mut tasks = Vec::new();
        if let Some(bound) = http {
            tasks.push(tokio::spawn(accept(proxy.clone(), bound, None)));
        }
        if let Some(bound) = https {
            let mut config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(resolver);
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let acceptor = TlsAcceptor::from(Arc::new(config));
            tasks.push(tokio::spawn(accept(proxy, bound, Some(acceptor))));
        }
        Listeners { tasks }
    }

    /// Stops accepting and drops every open connection.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn accept(proxy: Arc<Proxy>, bound: Bound, tls: Option<TlsAcceptor>) {
    let port = bound.address.port();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = bound.listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, mostly: wait rather than spin.
                tracing::warn!(%error, "ingress: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                None => serve(proxy, TokioIo::new(stream), client, false, port).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            serve(proxy, TokioIo::new(stream), client, true, port).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%client, %error, "ingress: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%client, "ingress: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve<I>(proxy: Arc<Proxy>, io: I, client: SocketAddr, tls: bool, port: u16)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request| proxy.clone().handle(request, client, tls, port));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    if let Err(error) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(%client, %error, "ingress: connection ended with an error");
    }
}
