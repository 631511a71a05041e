//! The pods/log subresource: what `kubectl logs [-c C] [-f] [--previous] [--tail N]` reads.
//!
//! Kubelets keep each container run's stdout and stderr in one file per run under the data
//! directory ([`pod_log_path`] is the one definition of where), rotated past a size into
//! `0.log.1` (the newest) … ([`rotated_log_path`]); the API server reads them directly because
//! every node of this process shares the data directory. A run's log is its rotated files,
//! oldest first, then the current one, read as one stream: rotation may split a line between
//! two files, never lose or repeat a byte.
//!
//! `--tail N` reads backwards from the end in [`CHUNK`]-byte steps until it has seen N line
//! ends, so its cost follows N, not the size of the log.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::Value;
use shipshape_api::{Kind, ObjectKey};
use tokio::io::AsyncReadExt;

use super::{ApiState, percent_decode, pod_or_not_found, status};
use crate::controllers::{container_running, container_status};
use crate::store_actor::Get;

/// How much one read of a log takes, backwards for `--tail` and forwards for what is shown.
const CHUNK: usize = 64 << 10;

/// More rotated files than any kubelet keeps (it keeps 4): where looking for the next one stops.
const MAX_ROTATED: u32 = 64;

/// Where the kubelet writes run `restarts` of `container` in pod `uid`.
pub fn pod_log_path(data_dir: &Path, uid: &str, container: &str, restarts: u64) -> PathBuf {
    data_dir
        .join("pods")
        .join(uid)
        .join("logs")
        .join(container)
        .join(format!("{restarts}.log"))
}

/// Rotated file `n` of the log at `current` (`0.log.1` is the newest, `0.log.2` older …), where
/// the kubelet moves the front of a log that grew past its limit.
pub fn rotated_log_path(current: &Path, n: u32) -> PathBuf {
    let mut name = current.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotating a log moves bytes from the current file into `.1` and renames the older files; a
/// reader between two of those steps would show some bytes twice or not at all. Kubelets and
/// the API server share a process, so one lock orders them: rotations write, readers read.
static ROTATION: RwLock<()> = RwLock::new(());

/// Keeps readers of container logs out while the caller rotates one (see [`ROTATION`]).
pub fn rotating() -> RwLockWriteGuard<'static, ()> {
    ROTATION.write().unwrap_or_else(PoisonError::into_inner)
}

fn reading() -> RwLockReadGuard<'static, ()> {
    ROTATION.read().unwrap_or_else(PoisonError::into_inner)
}

/// A file's device and inode: what tells a follower that a rotation replaced `.1`.
type FileId = (u64, u64);

fn identity(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().as_ref().map(file_id)
}

fn file_id(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

#[derive(Default)]
struct LogQuery {
    container: Option<String>,
    follow: bool,
    previous: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

fn parse(raw: Option<&str>) -> LogQuery {
    let mut query = LogQuery::default();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        let yes = value == "true" || value == "1";
        match key {
            "container" => query.container = Some(value).filter(|v| !v.is_empty()),
            "follow" => query.follow = yes,
            "previous" => query.previous = yes,
            "tailLines" => query.tail_lines = value.parse().ok(),
            "limitBytes" => query.limit_bytes = value.parse().ok(),
            _ => {}
        }
    }
    query
}

fn bad(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// What one request shows of a run's log, taken while no rotation runs.
struct Snapshot {
    /// Rotated files, oldest first, each open (a later rotation cannot swap it) and positioned
    /// where showing starts, with how many bytes to show.
    rotated: Vec<(File, u64)>,
    /// The current file's bytes from where showing starts to `current_length`.
    current: Vec<u8>,
    /// The current file's length when read: where following starts.
    current_length: u64,
    /// The newest rotated file's identity when read, for following.
    newest_rotated: Option<FileId>,
    /// Bytes read to find where the last lines start.
    scanned: u64,
}

/// Reads the run log at `path` with its rotated files: all of it, or with `tail` its last
/// lines, found by reading backwards `chunk` bytes at a time.
fn snapshot(path: &Path, tail: Option<usize>, chunk: usize) -> std::io::Result<Snapshot> {
    let _reading = reading();
    let current = File::open(path)?;
    let current_length = current.metadata()?.len();
    let mut files = Vec::new();
    for n in 1..=MAX_ROTATED {
        let Ok(file) = File::open(rotated_log_path(path, n)) else {
            break;
        };
        let length = file.metadata()?.len();
        files.push((file, length));
    }
    // From the open file, not its path: the one this snapshot reads.
    let newest_rotated = match files.first() {
        Some((file, _)) => Some(file_id(&file.metadata()?)),
        None => None,
    };
    files.reverse();
    files.push((current, current_length));
    let (first, offset, scanned) = match tail {
        Some(lines) => tail_start(&mut files, lines, chunk)?,
        None => (0, 0, 0),
    };
    let last = files.len() - 1;
    let mut rotated = Vec::new();
    let mut current = Vec::new();
    for (index, (mut file, length)) in files.into_iter().enumerate().skip(first) {
        let start = if index == first { offset } else { 0 };
        file.seek(SeekFrom::Start(start))?;
        if index == last {
            file.take(length - start).read_to_end(&mut current)?;
        } else if start < length {
            rotated.push((file, length - start));
        }
    }
    Ok(Snapshot {
        rotated,
        current,
        current_length,
        newest_rotated,
        scanned,
    })
}

/// Where the last `lines` lines of `files` (each with its length, read as one stream) start:
/// the file's index, the offset in it, and how many bytes were read to find out. As
/// `tail -n`, a final line end ends the last line rather than starting an empty one, and
/// fewer lines than asked means all of them.
fn tail_start(
    files: &mut [(File, u64)],
    lines: usize,
    chunk: usize,
) -> std::io::Result<(usize, u64, u64)> {
    let last = files.len().saturating_sub(1);
    if lines == 0 {
        return Ok((last, files.get(last).map_or(0, |(_, length)| *length), 0));
    }
    let mut buffer = vec![0; chunk.max(1)];
    let mut scanned = 0;
    let mut seen = 0;
    let mut at_stream_end = true;
    for (index, (file, length)) in files.iter_mut().enumerate().rev() {
        let mut end = *length;
        while end > 0 {
            let start = end.saturating_sub(buffer.len() as u64);
            let piece = &mut buffer[..(end - start) as usize];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(piece)?;
            scanned += piece.len() as u64;
            for (i, byte) in piece.iter().enumerate().rev() {
                let ends_stream = std::mem::replace(&mut at_stream_end, false);
                if *byte == b'\n' && !ends_stream {
                    seen += 1;
                    if seen == lines {
                        return Ok((index, start + i as u64 + 1, scanned));
                    }
                }
            }
            end = start;
        }
    }
    Ok((0, 0, scanned))
}

/// The restart count and waiting reason of `container` in `pod`'s status.
fn container_state(pod: &Value, container: &str) -> (u64, Option<String>) {
    match container_status(pod, container) {
        Some(s) => (
            s["restartCount"].as_u64().unwrap_or(0),
            s["state"]["waiting"]["reason"].as_str().map(str::to_string),
        ),
        None => (0, Some("ContainerCreating".into())),
    }
}

/// GET /api/v1/namespaces/{namespace}/pods/{name}/log
pub(super) async fn pod_log(
    state: &ApiState,
    namespace: String,
    name: String,
    raw_query: Option<&str>,
) -> Response {
    let query = parse(raw_query);
    let Some(data_dir) = state.data_dir.clone() else {
        return bad("this API server keeps no container logs".into());
    };
    let key = ObjectKey {
        kind: Kind::Pod,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let pod = match pod_or_not_found(state, &namespace, &name).await {
        Ok(pod) => pod,
        Err(answer) => return answer,
    };
    let names: Vec<String> = ["containers", "initContainers"]
        .iter()
        .filter_map(|field| pod["spec"][field].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let regular = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let container = match query.container {
        Some(c) if names.contains(&c) => c,
        Some(c) => return bad(format!("container {c} is not valid for pod {name}")),
        None if regular == 1 => names[0].clone(),
        None => {
            return bad(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            ));
        }
    };
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (restarts, waiting) = container_state(&pod, &container);
    let run = if query.previous {
        match restarts.checked_sub(1) {
            Some(previous) => previous,
            None => {
                return bad(format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                ));
            }
        }
    } else {
        restarts
    };
    let path = pod_log_path(&data_dir, &uid, &container, run);
    let read = {
        let path = path.clone();
        let tail = query.tail_lines;
        tokio::task::spawn_blocking(move || snapshot(&path, tail, CHUNK)).await
    };
    let snapshot = match read {
        Ok(Ok(snapshot)) => snapshot,
        Ok(Err(_)) => {
            let why = waiting.unwrap_or_else(|| "ContainerCreating".into());
            return bad(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {why}"
            ));
        }
        Err(error) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("reading the log of container \"{container}\" in pod \"{name}\": {error}"),
            );
        }
    };
    let Snapshot {
        rotated,
        mut current,
        current_length,
        newest_rotated,
        scanned,
    } = snapshot;
    if let Some(lines) = query.tail_lines {
        tracing::debug!(pod = %name, %container, lines, scanned, "read back to the last lines");
    }
    let headers = [(header::CONTENT_TYPE, "text/plain")];
    let following = query.follow && !query.previous;
    if rotated.is_empty() && !following {
        if let Some(limit) = query.limit_bytes {
            current.truncate(limit);
        }
        return (headers, current).into_response();
    }
    let shown = Shown {
        rotated: rotated
            .into_iter()
            .map(|(file, left)| (tokio::fs::File::from_std(file), left))
            .collect(),
        current: Some(current),
        left: query.limit_bytes,
    };
    let shown = futures_util::stream::unfold(shown, |mut shown| async move {
        let piece = shown.next().await?;
        Some((piece, shown))
    });
    if !following {
        return (headers, Body::from_stream(shown)).into_response();
    }
    // Follow: what is there, then what is appended, until the run ends (the pod is deleted or
    // the container restarts).
    let follow = Follow {
        position: Position {
            path,
            offset: current_length,
            newest_rotated,
        },
        store: state.store.clone(),
        key,
        uid,
        container,
        run,
        checks: 0,
    };
    let appended = futures_util::stream::unfold(follow, |mut follow| async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(more) = follow.read_more().await {
                return Some((Ok(Bytes::from(more)), follow));
            }
            follow.checks += 1;
            if follow.checks % 5 == 0 && !follow.still_running().await {
                return follow
                    .read_more()
                    .await
                    .map(|more| (Ok(Bytes::from(more)), follow));
            }
        }
    });
    (headers, Body::from_stream(shown.chain(appended))).into_response()
}

/// What a response shows before it follows: the rotated files' parts, then the current file's,
/// at most `left` bytes in all (limitBytes).
struct Shown {
    rotated: std::collections::VecDeque<(tokio::fs::File, u64)>,
    current: Option<Vec<u8>>,
    left: Option<usize>,
}

impl Shown {
    /// The next piece to send, or `None` when everything is shown.
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            let left = self.left.unwrap_or(usize::MAX);
            if left == 0 {
                return None;
            }
            let Some((file, unread)) = self.rotated.front_mut() else {
                let mut current = self.current.take()?;
                current.truncate(left);
                self.left = self.left.map(|l| l - current.len());
                return Some(Ok(Bytes::from(current)));
            };
            let want = CHUNK
                .min(left)
                .min(usize::try_from(*unread).unwrap_or(usize::MAX));
            let mut piece = vec![0; want];
            let read = match file.read(&mut piece).await {
                Ok(read) => read,
                Err(error) => return Some(Err(error)),
            };
            if read == 0 {
                self.rotated.pop_front();
                continue;
            }
            piece.truncate(read);
            *unread -= read as u64;
            if *unread == 0 {
                self.rotated.pop_front();
            }
            self.left = self.left.map(|l| l - read);
            return Some(Ok(Bytes::from(piece)));
        }
    }
}

/// Where a follower is in a run's log: an offset in the current file, and the newest rotated
/// file it knows of, so that it can tell a rotation moved the front of the current file away.
#[derive(Clone)]
struct Position {
    path: PathBuf,
    offset: u64,
    newest_rotated: Option<FileId>,
}

impl Position {
    /// What was appended to the log since the last read (empty: nothing).
    fn read_more(&mut self) -> std::io::Result<Vec<u8>> {
        let _reading = reading();
        let mut next = self.clone();
        let mut more = Vec::new();
        let newest = identity(&rotated_log_path(&self.path, 1));
        if newest != self.newest_rotated {
            // Each rotation since the last read moved the front of the current file into a new
            // `.1` (and the older ones down): of those new files, oldest first, what lies past
            // the offset was not shown yet, and the offset moves back by what they took.
            let fresh: Vec<PathBuf> = (1..=MAX_ROTATED)
                .map(|n| rotated_log_path(&self.path, n))
                .take_while(|p| identity(p).is_some_and(|id| Some(id) != self.newest_rotated))
                .collect();
            for rotated in fresh.iter().rev() {
                let mut file = File::open(rotated)?;
                let length = file.metadata()?.len();
                if next.offset >= length {
                    next.offset -= length;
                    continue;
                }
                file.seek(SeekFrom::Start(next.offset))?;
                file.take(length - next.offset).read_to_end(&mut more)?;
                next.offset = 0;
            }
            next.newest_rotated = newest;
        }
        let mut file = File::open(&self.path)?;
        let length = file.metadata()?.len();
        if length < next.offset {
            // Cut short by something else than a rotation: start again from the top.
            next.offset = 0;
        }
        file.seek(SeekFrom::Start(next.offset))?;
        let read = file.take(length - next.offset).read_to_end(&mut more)?;
        next.offset += read as u64;
        *self = next;
        Ok(more)
    }
}

struct Follow {
    position: Position,
    store: kameo::actor::ActorRef<crate::StoreActor>,
    key: ObjectKey,
    uid: String,
    container: String,
    run: u64,
    checks: u64,
}

impl Follow {
    async fn read_more(&mut self) -> Option<Vec<u8>> {
        let mut position = self.position.clone();
        let (position, more) = tokio::task::spawn_blocking(move || {
            let more = position.read_more();
            (position, more)
        })
        .await
        .ok()?;
        self.position = position;
        more.ok().filter(|more| !more.is_empty())
    }

    async fn still_running(&self) -> bool {
        match self.store.ask(Get(self.key.clone())).await {
            Ok(Some(stored)) => {
                let pod = &stored.object;
                if pod["metadata"]["uid"] != self.uid.as_str() {
                    return false;
                }
                let (restarts, _) = container_state(pod, &self.container);
                restarts == self.run && container_running(pod, &self.container)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last `n` lines of `bytes`: what the endpoint showed when it read whole files.
    fn tail(bytes: &[u8], n: usize) -> &[u8] {
        if n == 0 {
            return &[];
        }
        let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let mut seen = 0;
        for (i, byte) in trimmed.iter().enumerate().rev() {
            if *byte == b'\n' {
                seen += 1;
                if seen == n {
                    return &bytes[i + 1..];
                }
            }
        }
        bytes
    }

    /// What a request shows of the log at `path` (without limitBytes), and how many bytes it
    /// read from disk for that.
    fn shown(path: &Path, lines: Option<usize>, chunk: usize) -> (Vec<u8>, u64) {
        let snapshot = snapshot(path, lines, chunk).expect("a readable log");
        let mut bytes = Vec::new();
        for (file, length) in snapshot.rotated {
            file.take(length)
                .read_to_end(&mut bytes)
                .expect("a rotated file");
        }
        bytes.extend(&snapshot.current);
        let read = snapshot.scanned + bytes.len() as u64;
        (bytes, read)
    }

    /// Writes `parts` as a run's log: the last is the current file, those before it rotated
    /// files, oldest first.
    fn write_log(dir: &Path, parts: &[&[u8]]) -> PathBuf {
        let path = dir.join("0.log");
        let (current, rotated) = parts.split_last().expect("a current file");
        std::fs::write(&path, current).expect("the current file");
        for (i, part) in rotated.iter().rev().enumerate() {
            let n = u32::try_from(i + 1).expect("a few files");
            std::fs::write(rotated_log_path(&path, n), part).expect("a rotated file");
        }
        path
    }

    /// A deterministic, uneven log: lines of 0 to 40 bytes, some empty.
    fn lines_of(seed: u64, count: usize, final_newline: bool) -> Vec<u8> {
        let mut state = seed;
        let mut bytes = Vec::new();
        for i in 0..count {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let width = (state >> 59) as usize * 40 / 31;
            bytes.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, width));
            if i + 1 < count || final_newline {
                bytes.push(b'\n');
            }
        }
        bytes
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\n", 0), b"");
    }

    #[test]
    fn tail_of_a_large_log_reads_only_its_end() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let whole: Vec<u8> = (0..1_500_000)
            .flat_map(|i| format!("line {i:08}\n").into_bytes())
            .collect();
        let path = write_log(dir.path(), &[&whole]);
        for lines in [1, 10, 1000] {
            let (bytes, read) = shown(&path, Some(lines), CHUNK);
            assert_eq!(bytes, tail(&whole, lines), "--tail {lines}");
            assert!(
                read < 3 * CHUNK as u64,
                "--tail {lines} read {read} bytes of a {} byte log",
                whole.len()
            );
        }
    }

    #[test]
    fn tail_across_rotated_files_shows_what_the_whole_log_would() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (seed, count, final_newline) in [
            (1, 0, false),
            (2, 1, false),
            (3, 1, true),
            (4, 7, true),
            (5, 40, false),
            (6, 120, true),
        ] {
            let whole = lines_of(seed, count, final_newline);
            let len = whole.len();
            // Cut points: none, at line ends, mid-line, empty files, one file per byte.
            let mut splits: Vec<Vec<usize>> = vec![vec![], vec![0], vec![len], vec![0, 0, len]];
            let step = (len / 10).max(1);
            splits.extend((0..=len).step_by(step).map(|at| vec![at]));
            splits.extend(
                (0..=len)
                    .step_by(2 * step + 1)
                    .map(|at| vec![at / 3, at / 2, at]),
            );
            if len <= 8 {
                splits.push((0..=len).collect());
            }
            // Every count of lines around the edges, and a sample between.
            let counts: Vec<usize> = (0..=count + 2)
                .filter(|n| count < 10 || *n < 4 || *n + 4 > count || n % 9 == 0)
                .collect();
            let chunks: &[usize] = if len < 100 {
                &[1, 2, 7, CHUNK]
            } else {
                &[3, 64, CHUNK]
            };
            for cuts in splits {
                let mut parts = Vec::new();
                let mut from = 0;
                for &cut in &cuts {
                    parts.push(&whole[from..cut]);
                    from = cut;
                }
                parts.push(&whole[from..]);
                for n in 1..=MAX_ROTATED {
                    let _ = std::fs::remove_file(rotated_log_path(&dir.path().join("0.log"), n));
                }
                let path = write_log(dir.path(), &parts);
                let (all, _) = shown(&path, None, CHUNK);
                assert_eq!(all, whole, "the whole log, cut at {cuts:?}");
                for &chunk in chunks {
                    for &lines in &counts {
                        let (bytes, _) = shown(&path, Some(lines), chunk);
                        assert_eq!(
                            bytes,
                            tail(&whole, lines),
                            "--tail {lines} of {count} lines cut at {cuts:?}, read {chunk} at a time"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_follower_sees_each_byte_once_across_rotations() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = write_log(dir.path(), &[b"one\ntwo\n"]);
        let mut position = Position {
            path: path.clone(),
            offset: 8,
            newest_rotated: None,
        };
        let append = |bytes: &[u8]| {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("the log");
            std::io::Write::write_all(&mut file, bytes).expect("an append");
        };
        // As the kubelet rotates: the front moves to a new `.1`, the rest stays in place.
        let rotate = |front: usize| {
            let _rotating = rotating();
            let bytes = std::fs::read(&path).expect("the log");
            for n in (1..MAX_ROTATED).rev() {
                let _ = std::fs::rename(rotated_log_path(&path, n), rotated_log_path(&path, n + 1));
            }
            std::fs::write(rotated_log_path(&path, 1), &bytes[..front]).expect("a rotated file");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("the log");
            std::os::unix::fs::FileExt::write_all_at(&file, &bytes[front..], 0).expect("the rest");
            file.set_len((bytes.len() - front) as u64).expect("the cut");
        };
        append(b"three\n");
        assert_eq!(position.read_more().expect("a read"), b"three\n");
        append(b"four\n");
        rotate(10);
        append(b"five\n");
        assert_eq!(position.read_more().expect("a read"), b"four\nfive\n");
        assert_eq!(position.read_more().expect("a read"), b"");
        // Two rotations between reads, the second taking bytes not shown yet.
        append(b"six\n");
        rotate(9);
        append(b"seven\n");
        rotate(12);
        assert_eq!(position.read_more().expect("a read"), b"six\nseven\n");
        let (whole, _) = shown(&path, None, CHUNK);
        assert_eq!(whole, b"one\ntwo\nthree\nfour\nfive\nsix\nseven\n");
    }

    #[test]
    fn reads_kubectl_log_options() {
        let q = parse(Some(
            "container=web&follow=true&tailLines=10&previous=false",
        ));
        assert_eq!(q.container.as_deref(), Some("web"));
        assert!(q.follow && !q.previous);
        assert_eq!(q.tail_lines, Some(10));
    }
}
