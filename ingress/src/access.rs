//! The access log: a line per request in nginx' `combined` format, followed by the host, the
//! Ingress, the backend, the pod that answered and the time to its headers, so a line says
//! which rule served a request and how long the pod took.
//!
//! Requests never wait on the disk: lines go through a bounded channel to a writer thread
//! (a full channel drops the line and counts it); the file is flushed every second and
//! renamed to `access.log.1` once it passes 64 MiB.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

/// The size at which the log is rotated.
const ROTATE_AT: u64 = 64 * 1024 * 1024;

/// One request, as it is logged.
pub struct Entry<'a> {
    /// Who asked.
    pub client: IpAddr,
    /// The method.
    pub method: &'a str,
    /// The path and query.
    pub target: &'a str,
    /// The HTTP version.
    pub version: hyper::Version,
    /// The status answered.
    pub status: u16,
    /// The body's length, when the answer gave one.
    pub bytes: Option<u64>,
    /// `Referer`, or `-`.
    pub referer: &'a str,
    /// `User-Agent`, or `-`.
    pub user_agent: &'a str,
    /// The host routed by.
    pub host: &'a str,
    /// The Ingress (`namespace/name`), empty when nothing matched.
    pub ingress: &'a str,
    /// The backend (`namespace/service:port`), empty when nothing matched.
    pub backend: &'a str,
    /// The pod that answered, if one was reached.
    pub upstream: Option<SocketAddr>,
    /// Time to the answer's headers.
    pub took: Duration,
}

fn dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

impl Entry<'_> {
    /// The line, without its time (the writer puts that in).
    fn line(&self) -> String {
        format!(
            "{} - - [{{time}}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" {} {} {} {} {:.3}\n",
            self.client,
            self.method,
            self.target,
            self.version,
            self.status,
            self.bytes
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            self.referer.replace('"', "\\\""),
            self.user_agent.replace('"', "\\\""),
            dash(self.host),
            dash(self.ingress),
            dash(self.backend),
            self.upstream
                .map_or_else(|| "-".to_string(), |a| a.to_string()),
            self.took.as_secs_f64(),
        )
    }
}

/// Where access lines go (nowhere when off).
#[derive(Clone)]
pub struct AccessLog {
    lines: Option<SyncSender<(jiff::Timestamp, String)>>,
}

impl AccessLog {
    /// A log that writes nothing.
    pub fn off() -> Self {
        Self { lines: None }
    }

    /// A log appending to `path` (its folder is created).
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = open(path)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(16 * 1024);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("ingress-access-log".to_string())
            .spawn(move || write_lines(receiver, path, file))?;
        Ok(Self {
            lines: Some(sender),
        })
    }

    /// Logs one request (dropped, and counted, if the writer is behind).
    pub fn record(&self, entry: Entry<'_>) {
        let Some(lines) = &self.lines else { return };
        match lines.try_send((jiff::Timestamp::now(), entry.line())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                shipshape_actors::metrics::METRICS.ingress_log_dropped.inc();
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn write_lines(lines: Receiver<(jiff::Timestamp, String)>, path: PathBuf, file: std::fs::File) {
    let mut written = file.metadata().map_or(0, |m| m.len());
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut second = i64::MIN;
    let mut stamp = String::new();
    loop {
        let (at, line) = match lines.recv_timeout(Duration::from_secs(1)) {
            Ok(next) => next,
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        };
        if at.as_second() != second {
            second = at.as_second();
            stamp = at
                .to_zoned(jiff::tz::TimeZone::UTC)
                .strftime("%d/%b/%Y:%H:%M:%S %z")
                .to_string();
        }
        let line = line.replacen("{time}", &stamp, 1);
        if out.write_all(line.as_bytes()).is_err() {
            continue;
        }
        written += line.len() as u64;
        if written >= ROTATE_AT {
            let _ = out.flush();
            let rotated = path.with_extension("log.1");
            if std::fs::rename(&path, &rotated).is_ok()
                && let Ok(file) = open(&path)
            {
                out = std::io::BufWriter::with_capacity(64 * 1024, file);
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_as_combined_plus_the_route() {
        let line = Entry {
            client: "127.0.0.1".parse().unwrap(),
            method: "GET",
            target: "/a?b=1",
            version: hyper::Version::HTTP_11,
            status: 200,
            bytes: Some(12),
            referer: "-",
            user_agent: "curl/7.88.1",
            host: "web.example.com",
            ingress: "shop/web",
            backend: "shop/web:80",
            upstream: Some("10.244.0.5:8080".parse().unwrap()),
            took: Duration::from_millis(3),
        }
        .line();
        assert_eq!(
            line,
            "127.0.0.1 - - [{time}] \"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \"curl/7.88.1\" \
             web.example.com shop/web shop/web:80 10.244.0.5:8080 0.003\n"
        );
    }
}
