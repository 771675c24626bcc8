//! A service's log: its output and the supervisor's notes in
//! `<log_dir>/<service>.log`, rotated by size to `.log.1`, `.log.2` ...; and
//! the two reads `gantry logs` needs, the tail and a follow that survives
//! rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::Stream;

/// How often [`follow`] looks for new bytes.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The most one item of [`follow`] carries, so a reader far behind gets
/// the backlog in pieces.
const FOLLOW_CHUNK: usize = 1 << 20;

/// Log files are readable by the agent's group (operators), not by all:
/// output may carry secrets.
const LOG_MODE: u32 = 0o640;

/// The live log file of `service`: `<log_dir>/<service>.log`.
pub fn log_path(log_dir: &Path, service: &str) -> PathBuf {
    log_dir.join(format!("{service}.log"))
}

/// The `n`th rotated file (1 is the newest): `<log_dir>/<service>.log.N`.
fn rotated_path(log_dir: &Path, service: &str, n: u32) -> PathBuf {
    log_dir.join(format!("{service}.log.{n}"))
}

/// The last `max_bytes` of the service's log across the live file and the
/// rotated ones, oldest first: what `gantry logs` prints. A rotation while
/// it reads may shift what it sees by one file. A service with no log file
/// at all is `NotFound`, naming the path (a mistyped service, or one that
/// never ran on this machine).
pub fn read_tail(log_dir: &Path, service: &str, max_bytes: u64) -> io::Result<Vec<u8>> {
    let live = log_path(log_dir, service);
    let mut pieces = Vec::new();
    let mut left = max_bytes;
    let mut found = false;
    for path in std::iter::once(live.clone()).chain((1..).map(|n| rotated_path(log_dir, service, n))) {
        if left == 0 {
            break;
        }
        let piece = match tail_of(&path, left) {
            Ok(piece) => piece,
            // The live file is missing between a rotation and the next write.
            Err(e) if e.kind() == io::ErrorKind::NotFound && path == live => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))),
        };
        found = true;
        left -= piece.len() as u64;
        pieces.push(piece);
    }
    if !found && max_bytes > 0 {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no log at {}", live.display())));
    }
    pieces.reverse();
    Ok(pieces.concat())
}

/// The last `n` bytes of the file at `path`.
fn tail_of(path: &Path, n: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut bytes = Vec::new();
    // `take`: the file may grow while we read.
    file.take(n).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The service's log as it grows, from byte `from_offset` of the live file
/// (the length [`read_tail`] saw, say): each item is the bytes that arrived
/// since the last. Polls every [`FOLLOW_POLL`]. When the live file is
/// rotated away, the rest of the old file comes first, then the new file
/// from its start; a file cut shorter than what was read (or an offset past
/// its end) is read again from its start. A follower slower than two whole
/// rotations misses the files in between. Never ends on its own; an error is
/// an item, and following goes on after it.
pub fn follow(
    log_dir: &Path,
    service: &str,
    from_offset: u64,
) -> impl Stream<Item = io::Result<Vec<u8>>> + Send + use<> {
    let follower = Follower::new(log_path(log_dir, service), from_offset);
    futures::stream::unfold(Some(follower), |follower| async move {
        let mut follower = follower?;
        loop {
            // File IO off the runtime's threads; one round trip per poll.
            let polled = tokio::task::spawn_blocking(move || {
                let result = follower.poll();
                (follower, result)
            })
            .await;
            let (back, result) = match polled {
                Ok(polled) => polled,
                // The poll panicked or the runtime is going away: end here.
                Err(e) => return Some((Err(io::Error::other(format!("following the log: {e}"))), None)),
            };
            follower = back;
            match result {
                Ok(bytes) if bytes.is_empty() => tokio::time::sleep(FOLLOW_POLL).await,
                Ok(bytes) => return Some((Ok(bytes), Some(follower))),
                Err(e) => {
                    // Not in a tight loop when the error persists.
                    tokio::time::sleep(FOLLOW_POLL).await;
                    return Some((Err(e), Some(follower)));
                }
            }
        }
    })
}

/// The synchronous heart of [`follow`]: the file it holds open (which keeps
/// a rotated file readable to its end) and how far it has read.
struct Follower {
    path: PathBuf,
    held: Option<Held>,
    /// Where to start in the first file opened.
    start: u64,
}

struct Held {
    file: File,
    /// (device, inode): which file the path names now.
    id: (u64, u64),
    offset: u64,
}

impl Follower {
    fn new(path: PathBuf, from_offset: u64) -> Self {
        Follower { path, held: None, start: from_offset }
    }

    /// The bytes that arrived since the last poll; empty when none did.
    fn poll(&mut self) -> io::Result<Vec<u8>> {
        let Some(held) = &mut self.held else {
            self.held = self.open_live(self.start)?;
            self.start = 0;
            return self.read_held();
        };
        let bytes = read_from(held)?;
        if !bytes.is_empty() {
            return Ok(bytes);
        }
        let live = match File::open(&self.path) {
            Ok(file) => file,
            // Between a rotation and the writer's next write.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let metadata = live.metadata()?;
        if identity(&metadata) == held.id {
            if metadata.len() < held.offset {
                // Cut in place (`truncate`, copytruncate): read it again.
                held.offset = 0;
                return self.read_held();
            }
            return Ok(Vec::new());
        }
        // Rotated: the old file is final now, but may have grown after the
        // read above and before the rename. Its rest first, then the new one.
        let rest = read_from(held)?;
        self.held = Some(Held { file: live, id: identity(&metadata), offset: 0 });
        if rest.is_empty() { self.read_held() } else { Ok(rest) }
    }

    /// Opens the live file at `offset` (at 0 if it is shorter); `None`
    /// while there is no live file.
    fn open_live(&self, offset: u64) -> io::Result<Option<Held>> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io::Error::new(e.kind(), format!("opening {}: {e}", self.path.display()))),
        };
        let metadata = file.metadata()?;
        let offset = if offset > metadata.len() { 0 } else { offset };
        Ok(Some(Held { file, id: identity(&metadata), offset }))
    }

    fn read_held(&mut self) -> io::Result<Vec<u8>> {
        self.held.as_mut().map_or_else(|| Ok(Vec::new()), read_from)
    }
}

/// What `held` has beyond its offset, up to [`FOLLOW_CHUNK`] bytes.
fn read_from(held: &mut Held) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; 64 * 1024];
    let mut filled = 0;
    while filled < FOLLOW_CHUNK {
        if filled == bytes.len() {
            bytes.resize((bytes.len() * 2).min(FOLLOW_CHUNK), 0);
        }
        let n = held.file.read_at(&mut bytes[filled..], held.offset)?;
        if n == 0 {
            break;
        }
        filled += n;
        held.offset += n as u64;
    }
    bytes.truncate(filled);
    Ok(bytes)
}

fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    (metadata.dev(), metadata.ino())
}

/// The writing side: appends to the live file and rotates it by size.
/// Never fails: a file that cannot be written is the `problem` the
/// supervisor reports, and the service goes on running (a full disk must
/// not take services down).
#[derive(Debug)]
pub(crate) struct LogFile {
    dir: PathBuf,
    service: String,
    max_bytes: u64,
    keep: u32,
    /// Open lazily, and again after a failure.
    file: Option<File>,
    size: u64,
    /// Whether the last byte written ended a line (or nothing was written).
    at_line_start: bool,
    problem: Option<String>,
}

impl LogFile {
    /// A log for `service` in `dir` rotated before it would exceed
    /// `max_bytes` (0 counts as 1), keeping `keep` rotated files.
    pub(crate) fn new(dir: &Path, service: &str, max_bytes: u64, keep: u32) -> Self {
        LogFile {
            dir: dir.to_owned(),
            service: service.to_owned(),
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
            size: 0,
            at_line_start: true,
            problem: None,
        }
    }

    /// Why the last write or rotation failed; cleared by the next success.
    pub(crate) fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// A line of the supervisor's own: `--- gantry: NOTE ---`, on a line of
    /// its own even when the service's last output did not end one.
    pub(crate) fn note(&mut self, note: &str) {
        let newline = if self.at_line_start { "" } else { "\n" };
        self.write(format!("{newline}--- gantry: {note} ---\n").as_bytes());
    }

    /// Appends `data`, rotating first whenever it would not fit; a chunk
    /// is split at its last line break that fits, so lines stay whole
    /// unless one is longer than a file may be.
    pub(crate) fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = fitting(data, self.max_bytes.saturating_sub(self.size), self.size == 0);
            let (now, rest) = data.split_at(take);
            if !self.append(now) {
                return;
            }
            data = rest;
            if !data.is_empty() && !self.rotate() {
                // Better a file over its size than lost output.
                self.append(data);
                return;
            }
        }
    }

    /// Appends `data` to the live file; false (with the problem kept) if
    /// it cannot.
    fn append(&mut self, data: &[u8]) -> bool {
        if data.is_empty() {
            return true;
        }
        let written = self.open().and_then(|file| file.write_all(data));
        match written {
            Ok(()) => {
                self.size += data.len() as u64;
                self.at_line_start = data.ends_with(b"\n");
                self.problem = None;
                true
            }
            Err(e) => {
                self.file = None;
                self.problem = Some(format!("writing {}: {e}", self.live().display()));
                false
            }
        }
    }

    /// The open live file, created (with its directory) if missing.
    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let file = OpenOptions::new().create(true).append(true).mode(LOG_MODE).open(self.live())?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        self.file.as_mut().ok_or_else(|| io::Error::other("the log file was just opened"))
    }

    /// `.log.(keep-1)` -> `.log.keep` ... `.log` -> `.log.1` (with `keep`
    /// 0, the live file is removed); the next write starts a new live file.
    fn rotate(&mut self) -> bool {
        self.file = None;
        match self.shift() {
            Ok(()) => {
                self.size = 0;
                true
            }
            Err(e) => {
                self.problem = Some(format!("rotating {}: {e}", self.live().display()));
                false
            }
        }
    }

    fn shift(&self) -> io::Result<()> {
        if self.keep == 0 {
            return std::fs::remove_file(self.live());
        }
        for n in (1..self.keep).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(self.live(), self.rotated(1))
    }

    fn live(&self) -> PathBuf {
        log_path(&self.dir, &self.service)
    }

    fn rotated(&self, n: u32) -> PathBuf {
        rotated_path(&self.dir, &self.service, n)
    }
}

/// How much of `data` goes into a file with `room` bytes left: all of it
/// if it fits; else up to its last line break that fits; else, into an
/// empty file, as much as fits (at least a byte, so writing progresses);
/// else nothing (rotate first).
fn fitting(data: &[u8], room: u64, empty: bool) -> usize {
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if data.len() <= room {
        return data.len();
    }
    match data[..room].iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if empty => room.max(1),
        None => 0,
    }
}

#[cfg(test)]
mod tests;
