//! A release's artifact from the server to an unpacked directory, in one
//! pass: the bytes are unpacked as they arrive (a `.tar`, or a `.tar.gz`
//! told by its magic bytes) into a staging directory, hashed and counted
//! on the way; only when the length and SHA-256 are the release's is the
//! directory marked complete and renamed into place. A mismatch or a cut
//! download leaves nothing behind, never a half release. The archive is
//! never written whole to disk and read back.
//!
//! The network side runs on the event loop; hashing and unpacking on a
//! blocking thread fed through a small channel, so a slow disk holds the
//! download back instead of buffering it.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use futures::StreamExt;
use gantry_api::ReleaseTarget;
use gantry_client::Client;
use sha2::Digest as _;
use tokio::sync::mpsc;

use super::releases::{COMPLETE, releases_dir, unpacked};

/// Attempts at reaching the server for an artifact, a second apart.
const FETCH_ATTEMPTS: u32 = 30;
const UNREACHABLE: &str = "the server is unreachable";
/// Chunks in flight between the download and the unpacking thread.
const IN_FLIGHT: usize = 16;

/// Downloads, verifies and unpacks `target` (unless it already is);
/// returns its directory.
pub async fn fetch(client: &Client, data_dir: &Path, target: &ReleaseTarget) -> Result<PathBuf, String> {
    if let Some(dir) = unpacked(data_dir, &target.service, target.version) {
        return Ok(dir);
    }
    let root = releases_dir(data_dir, &target.service);
    let staging = root.join(format!(".v{}.unpacking", target.version));
    // A server that cannot be reached (restarting) is asked again; bytes
    // that are not the release's are refused at once.
    let mut result = Err(String::new());
    for attempt in 0..FETCH_ATTEMPTS {
        result = download_unpacked(client, target, &staging).await;
        match &result {
            Err(why) if why.starts_with(UNREACHABLE) && attempt + 1 < FETCH_ATTEMPTS => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => break,
        }
    }
    if let Err(why) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(why);
    }
    let dir = root.join(format!("v{}", target.version));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir).map_err(|e| format!("moving the release into place: {e}"))?;
    Ok(dir)
}

/// The artifact unpacked into `staging` (made afresh), its length and
/// SHA-256 checked against the release's, then marked complete.
async fn download_unpacked(client: &Client, target: &ReleaseTarget, staging: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir_all(staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let (_, mut stream) = client.download_artifact(&target.service, &target.sha256).await.map_err(|e| match e {
        gantry_client::ClientError::Api { .. } => format!("fetching the artifact: {e}"),
        other => format!("{UNREACHABLE}: {other}"),
    })?;
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let unpacker = {
        let (target, staging) = (target.clone(), staging.to_owned());
        tokio::task::spawn_blocking(move || unpack_verified(Incoming::new(rx), &staging, &target))
    };
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("fetching the artifact: {e} (after {size} bytes)"));
        if let Ok(bytes) = &chunk {
            size += bytes.len() as u64;
        }
        let stop = chunk.is_err() || size > target.size;
        let chunk = if size > target.size {
            Err(format!("the artifact is longer than the release's {} bytes: refused", target.size))
        } else {
            chunk
        };
        // The thread takes every chunk (it drains what a failed unpack
        // left); a send fails only if it is gone, and then it says why.
        if tx.send(chunk).await.is_err() || stop {
            break;
        }
    }
    drop(tx);
    unpacker.await.map_err(|e| format!("the unpacking task failed: {e}"))?
}

/// On a blocking thread: unpacks what `input` yields into `staging`, then
/// checks what was read whole against the release. A failed check wins
/// over the unpacker's complaint (flipped bytes make a broken archive; the
/// hash is the reason to give).
fn unpack_verified(mut input: Incoming, staging: &Path, target: &ReleaseTarget) -> Result<(), String> {
    let unpacking = unpack(&mut input, staging);
    // Whatever the unpacker left unread (padding after the archive's end,
    // or all of it after an error) is hashed too.
    let drained = io::copy(&mut input, &mut io::sink());
    if let Some(why) = input.failed.take() {
        return Err(why);
    }
    if input.size != target.size {
        return Err(format!("the artifact was cut short: {} of {} bytes: refused", input.size, target.size));
    }
    let got: String = input.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != target.sha256 {
        return Err(format!("the artifact's SHA-256 is {got}, not the release's {}: refused", target.sha256));
    }
    unpacking.map_err(|e| format!("unpacking: {e}"))?;
    drained.map_err(|e| format!("unpacking: {e}"))?;
    std::fs::write(staging.join(COMPLETE), format!("v{}\n", target.version))
        .map_err(|e| format!("marking the release: {e}"))
}

/// A tar archive, gzipped or not, into `dir`: paths that would leave it
/// (`..`, absolute, through a link) are refused by the tar reader;
/// owners are not kept (the files are the agent's).
fn unpack(input: &mut Incoming, dir: &Path) -> io::Result<()> {
    let gzipped = input.starts_with(&[0x1f, 0x8b])?;
    let reader: Box<dyn Read + '_> =
        if gzipped { Box::new(flate2::read::GzDecoder::new(input)) } else { Box::new(input) };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    archive.unpack(dir)
}

/// The download as a reader: each chunk hashed and counted as it is read.
struct Incoming {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    hasher: sha2::Sha256,
    size: u64,
    /// Why the download stopped early, if it did.
    failed: Option<String>,
}

impl Incoming {
    fn new(rx: mpsc::Receiver<Result<Bytes, String>>) -> Incoming {
        Incoming { rx, current: Bytes::new(), hasher: sha2::Sha256::new(), size: 0, failed: None }
    }

    /// Waits for the next chunk; false at the end (or a failed download).
    fn next_chunk(&mut self) -> bool {
        match self.rx.blocking_recv() {
            Some(Ok(chunk)) => {
                self.current = chunk;
                true
            }
            Some(Err(why)) => {
                self.failed.get_or_insert(why);
                false
            }
            None => false,
        }
    }

    /// Whether the bytes begin with `magic` (read ahead, not consumed).
    fn starts_with(&mut self, magic: &[u8]) -> io::Result<bool> {
        while self.current.len() < magic.len() {
            let held = std::mem::take(&mut self.current);
            if !self.next_chunk() {
                self.current = held;
                return Ok(false);
            }
            if !held.is_empty() {
                let mut joined = held.to_vec();
                joined.extend_from_slice(&self.current);
                self.current = Bytes::from(joined);
            }
        }
        Ok(self.current.starts_with(magic))
    }
}

impl Read for Incoming {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if !self.next_chunk() {
                return match &self.failed {
                    Some(why) => Err(io::Error::other(why.clone())),
                    None => Ok(0),
                };
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(bytes: &[u8]) -> ReleaseTarget {
        let sha: String = sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        ReleaseTarget {
            service: "api".into(),
            version: 3,
            sha256: sha,
            size: bytes.len() as u64,
            shutdown_delay_ms: 0,
            min_healthy_ms: 0,
            healthy_deadline_ms: 0,
        }
    }

    /// A tar of `bin/api.py`, written by the tar crate.
    fn archive(body: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append_data(&mut header, "bin/api.py", body).unwrap();
        builder.into_inner().unwrap()
    }

    /// `bytes` sent in `chunk`-sized pieces (then `tail`), unpacked and
    /// verified against `target` into a fresh directory.
    fn run(
        bytes: &[u8],
        chunk: usize,
        tail: Option<Result<Bytes, String>>,
        target: &ReleaseTarget,
    ) -> (tempfile::TempDir, Result<(), String>) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(bytes.len() / chunk + 2);
        for piece in bytes.chunks(chunk) {
            tx.try_send(Ok(Bytes::copy_from_slice(piece))).unwrap();
        }
        if let Some(tail) = tail {
            tx.try_send(tail).unwrap();
        }
        drop(tx);
        let result = unpack_verified(Incoming::new(rx), dir.path(), target);
        (dir, result)
    }

    #[test]
    fn a_tar_and_a_tar_gz_unpack_in_any_chunking_and_are_marked_complete() {
        let tar = archive(b"print('v3')\n");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        for bytes in [&tar, &gz] {
            for chunk in [1, 7, 512, 1 << 20] {
                let (dir, result) = run(bytes, chunk, None, &target(bytes));
                assert_eq!(result, Ok(()), "chunks of {chunk}");
                assert_eq!(std::fs::read(dir.path().join("bin/api.py")).unwrap(), b"print('v3')\n");
                assert_eq!(std::fs::read_to_string(dir.path().join(COMPLETE)).unwrap(), "v3\n");
            }
        }
    }

    #[test]
    fn flipped_bytes_are_refused_by_their_hash_and_nothing_is_marked() {
        let tar = archive(b"print('v3')\n");
        let want = target(&tar);
        // Every region: the header (a broken archive), the body, the padding.
        for at in [10, 512, tar.len() - 1] {
            let mut bad = tar.clone();
            bad[at] ^= 0xff;
            let (dir, result) = run(&bad, 100, None, &want);
            let why = result.unwrap_err();
            assert!(why.contains("SHA-256 is") && why.ends_with("refused"), "byte {at}: {why}");
            assert!(!dir.path().join(COMPLETE).exists());
        }
    }

    #[test]
    fn a_cut_or_failed_download_is_refused_with_its_reason() {
        let tar = archive(b"print('v3')\n");
        let want = target(&tar);
        let (dir, result) = run(&tar[..tar.len() - 600], 256, None, &want);
        assert!(result.unwrap_err().starts_with("the artifact was cut short"));
        assert!(!dir.path().join(COMPLETE).exists());
        let (dir, result) =
            run(&tar[..700], 256, Some(Err("fetching the artifact: reset (after 700 bytes)".into())), &want);
        assert_eq!(result, Err("fetching the artifact: reset (after 700 bytes)".into()));
        assert!(!dir.path().join(COMPLETE).exists());
    }

    #[test]
    fn a_path_out_of_the_release_is_not_written() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        // The tar crate's builder refuses `..` itself: the name is set raw.
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escaped.py");
        header.set_cksum();
        builder.append(&header, &b"boom"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let (dir, result) = run(&tar, 512, None, &target(&tar));
        assert!(!dir.path().parent().unwrap().join("escaped.py").exists());
        assert!(result.is_err() || !dir.path().join("escaped.py").exists());
    }
}
