//! The listeners: plain HTTP and HTTPS, each connection served by hyper (HTTP/1.1 with
//! upgrades, or HTTP/2 when TLS' ALPN chose it).
//!
//! Shaped as nginx is: one thread per core, each with its own single-threaded runtime waiting
//! on the same listening sockets (whichever is free accepts) and its own pool of connections
//! to pods. A request, its connection to the pod
//! and the answer stay on one thread: nothing wakes another thread, which on a busy machine
//! cost the work-stealing runtime a third of its time in context switches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::access::AccessLog;
use crate::proxy::{Connection, Proxy, RouteCell};
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
    /// A serving thread could not be started.
    #[error("cannot start the ingress' threads: {0}")]
    Thread(std::io::Error),
    /// The default certificate could not be made.
    #[error(transparent)]
    Certificate(#[from] crate::tls::CertificateError),
}

/// One listening address, a descriptor of it per serving thread.
pub struct Bound {
    sockets: Vec<std::net::TcpListener>,
    address: SocketAddr,
}

impl Bound {
    /// Binds `address` (for `flag`'s error message; port 0 picks a free port) and shares the
    /// socket between `copies` serving threads: each waits on it, and whichever is free takes
    /// the next connection (nginx' default; per-thread sockets by `SO_REUSEPORT` split
    /// connections by a hash, which left one thread busy while the other idled).
    pub fn bind(
        address: SocketAddr,
        flag: &'static str,
        copies: usize,
    ) -> Result<Bound, ListenError> {
        let error = |source| ListenError::Bind {
            address,
            flag,
            source,
        };
        let first = std::net::TcpListener::bind(address).map_err(error)?;
        first.set_nonblocking(true).map_err(error)?;
        let bound = first.local_addr().map_err(error)?;
        let mut sockets = Vec::new();
        for _ in 1..copies.max(1) {
            sockets.push(first.try_clone().map_err(error)?);
        }
        sockets.push(first);
        Ok(Bound {
            sockets,
            address: bound,
        })
    }

    /// The address bound (with the port chosen).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// The serving threads; stopping ends them and every connection they hold.
pub struct Listeners {
    threads: Vec<(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

/// What each serving thread is given.
struct Shared {
    routes: Arc<RouteCell>,
    log: AccessLog,
    tls: Option<TlsAcceptor>,
}

impl Listeners {
    /// Serves `http` in the clear and `https` with certificates from `resolver`, on as many
    /// threads as each was bound times.
    pub fn serve(
        routes: Arc<RouteCell>,
        log: AccessLog,
        http: Option<Bound>,
        https: Option<Bound>,
        resolver: Arc<SniResolver>,
    ) -> Result<Listeners, ListenError> {
        let tls = https.as_ref().map(|_| {
            let mut config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(resolver);
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            TlsAcceptor::from(Arc::new(config))
        });
        let mut plain: Vec<std::net::TcpListener> = http.map(|b| b.sockets).unwrap_or_default();
        let mut secure: Vec<std::net::TcpListener> = https.map(|b| b.sockets).unwrap_or_default();
        let count = plain.len().max(secure.len());
        let mut threads = Vec::new();
        for index in 0..count {
            let shared = Shared {
                routes: routes.clone(),
                log: log.clone(),
                tls: tls.clone(),
            };
            let mine = (plain.pop(), secure.pop());
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let thread = std::thread::Builder::new()
                .name(format!("ingress-{index}"))
                .spawn(move || serve_thread(shared, mine, stopped))
                .map_err(ListenError::Thread)?;
            threads.push((thread, stop));
        }
        Ok(Listeners { threads })
    }

    /// Stops accepting and drops every open connection.
    pub async fn stop(self) {
        let mut joins = Vec::new();
        for (thread, stop) in self.threads {
            let _ = stop.send(());
            joins.push(thread);
        }
        let _ = tokio::task::spawn_blocking(move || {
            for thread in joins {
                let _ = thread.join();
            }
        })
        .await;
    }
}

fn serve_thread(
    shared: Shared,
    (http, https): (Option<std::net::TcpListener>, Option<std::net::TcpListener>),
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "ingress: cannot start a serving thread");
            return;
        }
    };
    runtime.block_on(async move {
        let proxy = Arc::new(Proxy::new(shared.routes, shared.log));
        let mut accepting = JoinSet::new();
        for (socket, tls) in [(http, None), (https, shared.tls)] {
            let Some(socket) = socket else { continue };
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    accepting.spawn(accept(proxy.clone(), listener, tls));
                }
                Err(error) => tracing::error!(%error, "ingress: a listener failed"),
            }
        }
        let _ = stopped.await;
        accepting.abort_all();
    });
    // Dropping the runtime drops every connection task still running.
}

async fn accept(proxy: Arc<Proxy>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
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
                None => serve(proxy, TokioIo::new(stream), client, false, port, false).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve(proxy, TokioIo::new(stream), client, true, port, h2).await
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

async fn serve<I>(proxy: Arc<Proxy>, io: I, client: SocketAddr, tls: bool, port: u16, h2: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let connection = Arc::new(Connection::new(client, tls, port));
    let service = service_fn(move |request| proxy.clone().handle(request, connection.clone()));
    let served = if h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service)
            .await
    } else {
        // HTTP/1.1 unless ALPN chose h2: no sniffing of each connection's first bytes.
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(true)
            .serve_connection(io, service)
            .with_upgrades()
            .await
    };
    if let Err(error) = served {
        tracing::debug!(%client, %error, "ingress: connection ended with an error");
    }
}
