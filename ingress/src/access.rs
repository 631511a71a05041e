//! The access log: a line per request in nginx' `combined` format, followed by the host, the
//! Ingress, the backend, the pod that answered and the time to its headers, so a line says
//! which rule served a request and how long the pod took.
//!
//! Requests never wait on the disk, nor wake anything: lines are appended to a shared buffer
//! (a short lock) that a writer thread takes every 200 ms and writes (a buffer the writer is
//! behind on stops growing at 16 MiB; lines beyond are dropped and counted). The file is
//! renamed to `access.log.1` once it passes 64 MiB.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The size at which the log is rotated.
const ROTATE_AT: u64 = 64 * 1024 * 1024;
/// The most the buffer holds between two writes.
const BUFFER_LIMIT: usize = 16 * 1024 * 1024;
/// How often the writer takes the buffer.
const WRITE_EVERY: Duration = Duration::from_millis(200);

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

thread_local! {
    /// The second last formatted on this thread, and its text (`04/Dec/2026:21:50:02 +0000`).
    static STAMP: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

fn with_stamp<T>(at: jiff::Timestamp, f: impl FnOnce(&str) -> T) -> T {
    STAMP.with(|stamp| {
        let mut stamp = stamp.borrow_mut();
        if stamp.0 != at.as_second() {
            stamp.0 = at.as_second();
            stamp.1 = at
                .to_zoned(jiff::tz::TimeZone::UTC)
                .strftime("%d/%b/%Y:%H:%M:%S %z")
                .to_string();
        }
        f(&stamp.1)
    })
}

impl Entry<'_> {
    /// Appends the line, stamped `time`.
    fn write_to(&self, out: &mut String, time: &str) {
        let _ = write!(
            out,
            "{} - - [{time}] \"{} {} {:?}\" {} ",
            self.client, self.method, self.target, self.version, self.status,
        );
        match self.bytes {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => out.push('-'),
        }
        let _ = write!(
            out,
            " \"{}\" \"{}\" {} {} {} ",
            self.referer.replace('"', "\\\""),
            self.user_agent.replace('"', "\\\""),
            dash(self.host),
            dash(self.ingress),
            dash(self.backend),
        );
        match self.upstream {
            Some(address) => {
                let _ = write!(out, "{address}");
            }
            None => out.push('-'),
        }
        let _ = writeln!(out, " {:.3}", self.took.as_secs_f64());
    }
}

/// The lines not yet written, and where they go.
struct Shared {
    lines: Mutex<String>,
    path: PathBuf,
}

impl Drop for Shared {
    /// The last copy of the log is gone: what the writer has not taken yet is written now.
    fn drop(&mut self) {
        let lines = match self.lines.get_mut() {
            Ok(lines) => lines,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !lines.is_empty()
            && let Ok(mut file) = open(&self.path)
        {
            let _ = file.write_all(lines.as_bytes());
        }
    }
}

/// Where access lines go (nowhere when off).
#[derive(Clone)]
pub struct AccessLog {
    buffer: Option<Arc<Shared>>,
}

impl AccessLog {
    /// A log that writes nothing.
    pub fn off() -> Self {
        Self { buffer: None }
    }

    /// A log appending to `path` (its folder is created); its writer stops once every copy
    /// of the log is dropped.
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = open(path)?;
        let buffer = Arc::new(Shared {
            lines: Mutex::new(String::with_capacity(64 * 1024)),
            path: path.to_path_buf(),
        });
        let weak = Arc::downgrade(&buffer);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("ingress-access-log".to_string())
            .spawn(move || write_lines(weak, path, file))?;
        Ok(Self {
            buffer: Some(buffer),
        })
    }

    /// Logs one request (dropped, and counted, if the writer is far behind).
    pub fn record(&self, entry: Entry<'_>) {
        let Some(buffer) = &self.buffer else { return };
        with_stamp(jiff::Timestamp::now(), |time| {
            let mut buffer = match buffer.lines.lock() {
                Ok(buffer) => buffer,
                Err(poisoned) => poisoned.into_inner(),
            };
            if buffer.len() >= BUFFER_LIMIT {
                shipshape_actors::metrics::METRICS.ingress_log_dropped.inc();
                return;
            }
            entry.write_to(&mut buffer, time);
        });
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn write_lines(buffer: Weak<Shared>, path: PathBuf, mut file: std::fs::File) {
    let mut written = file.metadata().map_or(0, |m| m.len());
    let mut spare = String::with_capacity(64 * 1024);
    loop {
        std::thread::sleep(WRITE_EVERY);
        let Some(shared) = buffer.upgrade() else {
            // Every log is gone (the last one wrote what was left).
            return;
        };
        {
            let mut lines = match shared.lines.lock() {
                Ok(lines) => lines,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::swap(&mut *lines, &mut spare);
        }
        drop(shared);
        if spare.is_empty() {
            continue;
        }
        if file.write_all(spare.as_bytes()).is_ok() {
            written += spare.len() as u64;
        }
        spare.clear();
        if written >= ROTATE_AT {
            let rotated = path.with_extension("log.1");
            if std::fs::rename(&path, &rotated).is_ok()
                && let Ok(new) = open(&path)
            {
                file = new;
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
        let entry = Entry {
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
        };
        let mut line = String::new();
        entry.write_to(&mut line, "04/Dec/2026:21:50:02 +0000");
        assert_eq!(
            line,
            "127.0.0.1 - - [04/Dec/2026:21:50:02 +0000] \"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \"curl/7.88.1\" \
             web.example.com shop/web shop/web:80 10.244.0.5:8080 0.003\n"
        );
    }
}
