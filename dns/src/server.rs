//! The server: a hickory-server request handler that answers from the current [`Zone`], served
//! over TCP by hickory-server's own listener and over UDP by one task per socket (several
//! sockets share each address with SO_REUSEPORT). The UDP task parses with hickory's
//! `Request`, calls the same handler inline and sends the encoded answer itself: hickory's own
//! UDP loop spawns a task per query and hands every answer through a channel, which costs a
//! third of the throughput on two cores.
//!
//! Names outside the cluster's zones are REFUSED, unless an upstream was configured explicitly,
//! in which case the question is passed on to it as asked.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::net::xfer::Protocol as Transport;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use socket2::{Domain, Protocol, Socket, Type};

use crate::view::ZoneCell;
use crate::zone::Lookup;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// An address could not be listened on.
    #[error(
        "cluster DNS cannot listen on {address} ({protocol}): {source}; is another DNS server \
         (named, dnsmasq, systemd-resolved) using it? Choose another with --dns-listen"
    )]
    Listen {
        /// The address.
        address: SocketAddr,
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// What the system said.
        source: std::io::Error,
    },
}

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// How long an upstream has to answer a passed-on question.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers every question from the zone of the moment.
#[derive(Clone)]
struct Handler {
    zone: Arc<ZoneCell>,
    upstream: Option<SocketAddr>,
}

impl Handler {
    /// Passes a question outside our zones to the upstream, returning its answer's records.
    async fn forward(&self, upstream: SocketAddr, request: &Request) -> Option<Message> {
        let bind: SocketAddr = match upstream.ip() {
            IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
            IpAddr::V6(_) => ([0u16; 8], 0).into(),
        };
        let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
        socket.send_to(request.as_slice(), upstream).await.ok()?;
        let mut buffer = vec![0u8; 4096];
        let (len, _) = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv_from(&mut buffer))
            .await
            .ok()?
            .ok()?;
        let reply = Message::from_vec(&buffer[..len]).ok()?;
        (reply.metadata.id == request.metadata.id).then_some(reply)
    }
}

async fn send<R: ResponseHandler>(
    request: &Request,
    mut response: R,
    metadata: Metadata,
    answers: &[&Record],
    authorities: &[&Record],
    additionals: &[&Record],
) -> ResponseInfo {
    let edns = request.edns.as_ref().map(|asked| {
        let mut edns = Edns::new();
        edns.set_max_payload(asked.max_payload().max(512));
        edns.set_version(0);
        edns
    });
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = &edns {
        builder.edns(edns);
    }
    let message = builder.build(
        metadata,
        answers.iter().copied(),
        authorities.iter().copied(),
        std::iter::empty(),
        additionals.iter().copied(),
    );
    match response.send_response(message).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "cannot send a DNS response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            metadata.response_code = ResponseCode::NotImp;
            return send(request, response, metadata, &[], &[], &[]).await;
        }
        let Ok(info) = request.request_info() else {
            metadata.response_code = ResponseCode::FormErr;
            return send(request, response, metadata, &[], &[], &[]).await;
        };
        let zone = self.zone.load();
        match zone.lookup(info.query.name(), info.query.query_type()) {
            Lookup::Records(records) => {
                metadata.authoritative = true;
                send(request, response, metadata, &records, &[], &[]).await
            }
            Lookup::NoData(soa) => {
                metadata.authoritative = true;
                send(request, response, metadata, &[], &[soa], &[]).await
            }
            Lookup::NxDomain(soa) => {
                metadata.authoritative = true;
                metadata.response_code = ResponseCode::NXDomain;
                send(request, response, metadata, &[], &[soa], &[]).await
            }
            Lookup::NotOurs => {
                let forwarded = match self.upstream {
                    Some(upstream) => self.forward(upstream, request).await,
                    None => None,
                };
                match forwarded {
                    Some(reply) => {
                        metadata.response_code = reply.metadata.response_code;
                        metadata.recursion_available = reply.metadata.recursion_available;
                        let answers: Vec<&Record> = reply.answers.iter().collect();
                        let authorities: Vec<&Record> = reply.authorities.iter().collect();
                        let additionals: Vec<&Record> = reply.additionals.iter().collect();
                        send(
                            request,
                            response,
                            metadata,
                            &answers,
                            &authorities,
                            &additionals,
                        )
                        .await
                    }
                    None => {
                        metadata.response_code = if self.upstream.is_some() {
                            ResponseCode::ServFail
                        } else {
                            ResponseCode::Refused
                        };
                        send(request, response, metadata, &[], &[], &[]).await
                    }
                }
            }
        }
    }
}

/// Sends one UDP answer straight from the thread that received the question.
#[derive(Clone)]
struct UdpReply {
    socket: Arc<std::net::UdpSocket>,
    to: SocketAddr,
    /// The largest answer the asker takes (EDNS, else 512 bytes, RFC 1035).
    max_size: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(self.max_size);
        let info = response.destructive_emit(&mut encoder)?;
        // A UDP send does not wait for the peer: at worst it takes a free buffer.
        self.socket.send_to(&bytes, self.to)?;
        Ok(info)
    }
}

/// How often a UDP thread looks up from an idle socket to see whether it should stop.
const UDP_IDLE_CHECK: Duration = Duration::from_millis(200);

/// Serves one UDP socket on this thread until `stop` is set. Several threads share a socket:
/// the kernel hands each datagram to one waiting thread, so the load spreads by itself.
fn serve_udp(
    socket: Arc<std::net::UdpSocket>,
    handler: Handler,
    runtime: tokio::runtime::Handle,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut buffer = vec![0u8; 4096];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (len, from) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "cluster DNS: receive failed");
                continue;
            }
        };
        if from.port() == 0 {
            continue;
        }
        let Ok(request) = Request::from_bytes(buffer[..len].to_vec(), from, Transport::Udp) else {
            continue;
        };
        if request.metadata.message_type != MessageType::Query {
            continue;
        }
        let reply = UdpReply {
            socket: socket.clone(),
            to: from,
            max_size: request
                .edns
                .as_ref()
                .map_or(512, |edns| edns.max_payload().max(512)),
        };
        if handler.upstream.is_some() {
            // A question may wait on the upstream: do not hold up the others.
            let handler = handler.clone();
            runtime.spawn(async move {
                handler
                    .handle_request::<_, TokioTime>(&request, reply)
                    .await;
            });
        } else {
            // Answered from memory: nothing in it waits, so it runs to the end here.
            runtime.block_on(handler.handle_request::<_, TokioTime>(&request, reply));
        }
    }
}

/// How many ports to try when asked for any port (0): UDP picks one, and TCP may find it taken.
const ANY_PORT_TRIES: usize = 16;

/// A UDP socket and a TCP listener on the same address. Port 0 asks for any port: TCP takes
/// the one UDP got, and if some TCP socket already holds that port, another is tried.
fn bind_both(
    requested: SocketAddr,
) -> Result<(std::net::UdpSocket, tokio::net::TcpListener, SocketAddr), DnsError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let socket = bind(requested, Type::DGRAM)
            .and_then(|socket| {
                socket.set_nonblocking(false)?;
                socket.set_read_timeout(Some(UDP_IDLE_CHECK))?;
                Ok(std::net::UdpSocket::from(socket))
            })
            .map_err(|source| DnsError::Listen {
                address: requested,
                protocol: "udp",
                source,
            })?;
        let address = socket.local_addr().unwrap_or(requested);
        match bind(address, Type::STREAM)
            .and_then(|socket| tokio::net::TcpListener::from_std(socket.into()))
        {
            Ok(listener) => return Ok((socket, listener, address)),
            Err(error)
                if requested.port() == 0
                    && error.kind() == std::io::ErrorKind::AddrInUse
                    && tries < ANY_PORT_TRIES => {}
            Err(source) => {
                return Err(DnsError::Listen {
                    address,
                    protocol: "tcp",
                    source,
                });
            }
        }
    }
}

/// A socket bound to `address`, even if that address is not on an interface yet: a node's
/// bridge (and so its gateway address) appears with its first pod.
fn bind(address: SocketAddr, kind: Type) -> Result<Socket, std::io::Error> {
    let domain = Domain::for_address(address);
    let protocol = if kind == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let socket = Socket::new(domain, kind, Some(protocol))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv4() && !address.ip().is_loopback() {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    if kind == Type::STREAM {
        socket.listen(1024)?;
    }
    Ok(socket)
}

/// UDP threads per address: one per core, so answering is not one thread's work.
fn udp_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The running DNS server.
pub struct DnsServer {
    tcp: hickory_server::Server<Handler>,
    udp: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addresses: Vec<SocketAddr>,
}

impl DnsServer {
    /// Listens on every address (UDP and TCP) and answers from `zone`; questions outside the
    /// cluster go to `upstream` if given, else are refused. Must be called inside a tokio
    /// runtime (TCP and forwarded questions run on it).
    pub fn start(
        zone: Arc<ZoneCell>,
        listen: &[SocketAddr],
        upstream: Option<SocketAddr>,
    ) -> Result<DnsServer, DnsError> {
        let handler = Handler { zone, upstream };
        let runtime = tokio::runtime::Handle::current();
        let mut tcp = hickory_server::Server::new(handler.clone());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut udp = Vec::new();
        let mut addresses = Vec::new();
        for &address in listen {
            let (socket, listener, address) = bind_both(address)?;
            let socket = Arc::new(socket);
            for n in 0..udp_threads() {
                let (socket, handler, runtime, stop) = (
                    socket.clone(),
                    handler.clone(),
                    runtime.clone(),
                    stop.clone(),
                );
                let thread = std::thread::Builder::new()
                    .name(format!("dns-udp-{n}"))
                    .spawn(move || serve_udp(socket, handler, runtime, stop))
                    .map_err(|source| DnsError::Listen {
                        address,
                        protocol: "udp",
                        source,
                    })?;
                udp.push(thread);
            }
            tcp.register_listener(listener, TCP_IDLE, 64);
            addresses.push(address);
        }
        Ok(DnsServer {
            tcp,
            udp,
            stop,
            addresses,
        })
    }

    /// The addresses it listens on (with the ports actually bound).
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Stops listening and finishes the questions in flight.
    pub async fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let threads = std::mem::take(&mut self.udp);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        if let Err(error) = self.tcp.shutdown_gracefully().await {
            tracing::debug!(%error, "cluster DNS stopped with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::zone::{ServiceInfo, ServiceTarget, Zone, ZoneConfig};

    fn config(domain: &str) -> ZoneConfig {
        ZoneConfig {
            domain: domain.into(),
            ttl: 5,
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
            pod_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
            dns_ip: Ipv4Addr::new(10, 96, 0, 10),
        }
    }

    fn serving(domain: &str, address: &str) -> Arc<ZoneCell> {
        let config = config(domain);
        let cell = ZoneCell::new(&config);
        let web = ServiceInfo {
            namespace: "default".into(),
            name: "web".into(),
            target: ServiceTarget::ClusterIp(vec![address.parse().unwrap()]),
            ports: vec![],
            endpoints: vec![],
        };
        cell.store(Zone::build(&config, 1, [&web], []));
        cell
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 4242;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message.to_vec().unwrap()
    }

    async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&query(name, qtype), server).await.unwrap();
        let mut buffer = vec![0u8; 4096];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        Message::from_vec(&buffer[..len]).unwrap()
    }

    fn addresses(reply: &Message) -> Vec<IpAddr> {
        reply
            .answers
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .collect()
    }

    #[tokio::test]
    async fn answers_over_udp_and_tcp_and_refuses_other_names() {
        let server = DnsServer::start(
            serving("cluster.local", "10.96.0.20"),
            &["127.0.0.1:0".parse().unwrap()],
            None,
        )
        .unwrap();
        let address = server.addresses()[0];
        let reply = ask_udp(address, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative);
        assert_eq!(addresses(&reply), ["10.96.0.20".parse::<IpAddr>().unwrap()]);
        let missing = ask_udp(address, "nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            missing.authorities.len(),
            1,
            "the SOA, for negative caching"
        );
        let outside = ask_udp(address, "example.org.", RecordType::A).await;
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

        // TCP: a two-byte length, then the message.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let asked = query("web.default.svc.cluster.local.", RecordType::A);
        stream.write_u16(asked.len() as u16).await.unwrap();
        stream.write_all(&asked).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buffer = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buffer).await.unwrap();
        let reply = Message::from_vec(&buffer).unwrap();
        assert_eq!(addresses(&reply), ["10.96.0.20".parse::<IpAddr>().unwrap()]);
        server.stop().await;
    }

    #[tokio::test]
    async fn an_explicit_upstream_answers_names_outside_the_cluster() {
        // The upstream is another instance on loopback serving a different domain.
        let upstream = DnsServer::start(
            serving("other.test", "10.96.0.30"),
            &["127.0.0.1:0".parse().unwrap()],
            None,
        )
        .unwrap();
        let server = DnsServer::start(
            serving("cluster.local", "10.96.0.20"),
            &["127.0.0.1:0".parse().unwrap()],
            Some(upstream.addresses()[0]),
        )
        .unwrap();
        let reply = ask_udp(
            server.addresses()[0],
            "web.default.svc.other.test.",
            RecordType::A,
        )
        .await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&reply), ["10.96.0.30".parse::<IpAddr>().unwrap()]);
        assert!(!reply.metadata.authoritative, "not our answer");
        server.stop().await;
        upstream.stop().await;
    }
}
