//! A simulated disk for the power-loss test: every file keeps the bytes
//! written (what reads see, the page cache) apart from the bytes synced
//! (what survives a power cut), and the directory keeps its durable entries
//! apart from the creations, removals and renames not yet synced.
//!
//! [`SimDisk::cut_power`] keeps only what was synced, plus what a real disk
//! may also keep: a random prefix of each file's unsynced bytes (perhaps
//! ending in garbage: a torn sector), or a random choice of its unsynced
//! sectors, and a random prefix of the unsynced directory operations (a
//! journaling file system commits them in order, each one whole). Handles
//! opened before the cut fail from then on, as the dead machine's would.
//! A cut can be armed to happen at the n-th disk operation, so that it
//! lands anywhere inside the engine's write and checkpoint paths.
//!
//! Random choices come from a seeded generator: one seed gives the same
//! choices (thread scheduling, which the test does not control, aside).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::disk::{self, Disk, DiskFile};

/// Size of a sector: the unit a torn write garbles or keeps.
const SECTOR: usize = 512;

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability 1/`n`.
    pub(crate) fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// The simulated disk; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct SimDisk(Arc<Mutex<Sim>>);

/// What the disk has done, for the test to check its workload reached the
/// paths it means to test.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SimCounts {
    pub syncs: u64,
    pub renames: u64,
    pub power_cuts: u64,
    /// Power cuts that left some unsynced bytes of a file behind.
    pub torn_files: u64,
}

#[derive(Debug)]
struct Sim {
    rng: Rng,
    /// Handles of an older epoch are dead (opened before a power cut).
    epoch: u64,
    next_inode: u64,
    files: HashMap<u64, SimFile>,
    /// The names as the running system sees them.
    names: BTreeMap<PathBuf, u64>,
    /// The names a power cut keeps for sure.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Directory operations since the last directory sync, in order.
    pending: Vec<DirOp>,
    locked: HashSet<u64>,
    /// Disk operations so far, and the one at which the power goes.
    operations: u64,
    cut_at: Option<u64>,
    counts: SimCounts,
}

#[derive(Debug, Default)]
struct SimFile {
    written: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl DirOp {
    fn dir(&self) -> &Path {
        match self {
            DirOp::Link(path, _) | DirOp::Unlink(path) | DirOp::Rename(path, _) => disk::parent(path),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            DirOp::Link(path, inode) => {
                names.insert(path.clone(), *inode);
            }
            DirOp::Unlink(path) => {
                names.remove(path);
            }
            DirOp::Rename(from, to) => {
                if let Some(inode) = names.remove(from) {
                    names.insert(to.clone(), inode);
                }
            }
        }
    }
}

fn power_is_off() -> io::Error {
    io::Error::other("simulated power cut")
}

impl SimDisk {
    pub(crate) fn new(seed: u64) -> SimDisk {
        SimDisk(Arc::new(Mutex::new(Sim {
            rng: Rng::new(seed),
            epoch: 0,
            next_inode: 1,
            files: HashMap::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            pending: Vec::new(),
            locked: HashSet::new(),
            operations: 0,
            cut_at: None,
            counts: SimCounts::default(),
        })))
    }

    fn sim(&self) -> MutexGuard<'_, Sim> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cuts the power at the `n`-th disk operation from now (1 = the next).
    pub(crate) fn cut_power_after(&self, n: u64) {
        let mut sim = self.sim();
        sim.cut_at = Some(sim.operations + n.max(1));
    }

    /// Whether an armed power cut has not happened yet.
    pub(crate) fn armed(&self) -> bool {
        self.sim().cut_at.is_some()
    }

    /// Cuts the power now.
    pub(crate) fn cut_power(&self) {
        self.sim().cut_power();
    }

    pub(crate) fn counts(&self) -> SimCounts {
        self.sim().counts
    }

    /// Flips a bit of the synced byte at `offset` of the file at `path`: the
    /// damage a power cut cannot do.
    pub(crate) fn corrupt(&self, path: &Path, offset: usize) {
        let mut sim = self.sim();
        let inode = sim.durable_names[path];
        let file = sim.files.get_mut(&inode).expect("a named file exists");
        file.synced[offset] ^= 0x40;
        file.written = file.synced.clone();
    }

    /// The durable length of the file at `path`.
    pub(crate) fn synced_len(&self, path: &Path) -> Option<usize> {
        let sim = self.sim();
        sim.durable_names.get(path).map(|inode| sim.files[inode].synced.len())
    }

    /// Runs one operation of a run of `epoch` on a live disk; the power
    /// goes before (`cut_first`) or after the operation when it is the
    /// armed one.
    fn operate<T>(&self, epoch: u64, cut_first: bool, op: impl FnOnce(&mut Sim) -> T) -> io::Result<T> {
        let mut sim = self.sim();
        if epoch != sim.epoch {
            return Err(power_is_off());
        }
        sim.operations += 1;
        let cut = sim.cut_at == Some(sim.operations);
        if cut && cut_first {
            sim.cut_power();
            return Err(power_is_off());
        }
        let result = op(&mut sim);
        if cut {
            sim.cut_power();
            // A handle the operation made is dropped outside the lock (its
            // drop takes it).
            drop(sim);
            drop(result);
            return Err(power_is_off());
        }
        Ok(result)
    }

    fn handle(&self, sim: &Sim, inode: u64) -> Arc<dyn DiskFile> {
        Arc::new(SimHandle { disk: self.clone(), inode, epoch: sim.epoch })
    }

    /// The disk as one run of the engine sees it: after the next power cut
    /// every operation through it fails, as a dead process's would (a
    /// checkpoint thread of the old run must not write into the new one).
    pub(crate) fn mount(&self) -> Arc<dyn Disk> {
        Arc::new(SimMount { disk: self.clone(), epoch: self.sim().epoch })
    }
}

/// [`SimDisk`] for one run of the engine.
#[derive(Debug)]
struct SimMount {
    disk: SimDisk,
    epoch: u64,
}

impl Sim {
    fn link_new(&mut self, path: &Path) -> u64 {
        let inode = self.next_inode;
        self.next_inode += 1;
        self.files.insert(inode, SimFile::default());
        self.names.insert(path.to_owned(), inode);
        self.pending.push(DirOp::Link(path.to_owned(), inode));
        inode
    }

    fn lock(&mut self, inode: u64) -> io::Result<()> {
        if !self.locked.insert(inode) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked by another store"));
        }
        Ok(())
    }

    fn cut_power(&mut self) {
        self.cut_at = None;
        self.counts.power_cuts += 1;
        // A journaling file system commits directory operations in order,
        // each whole: some prefix of the unsynced ones made it.
        let kept = self.rng.below(self.pending.len() as u64 + 1) as usize;
        for op in &self.pending[..kept] {
            op.apply(&mut self.durable_names);
        }
        self.pending.clear();
        self.names = self.durable_names.clone();
        let live: HashSet<u64> = self.names.values().copied().collect();
        self.files.retain(|inode, _| live.contains(inode));
        let mut inodes: Vec<u64> = self.files.keys().copied().collect();
        inodes.sort_unstable();
        for inode in inodes {
            let file = self.files.get_mut(&inode).expect("listed");
            let survived = after_power_cut(&file.synced, &file.written, &mut self.rng);
            if survived != file.synced {
                self.counts.torn_files += 1;
            }
            file.synced = survived.clone();
            file.written = survived;
        }
        self.locked.clear();
        self.epoch += 1;
    }
}

/// What a file holds after a power cut: its synced bytes, and of the bytes
/// written since, either a random prefix (perhaps ending in a sector of
/// garbage) or a random choice of whole sectors (the disk wrote them back
/// out of order). Its length is the synced one or, if it grew, anywhere up
/// to the written one.
fn after_power_cut(synced: &[u8], written: &[u8], rng: &mut Rng) -> Vec<u8> {
    let Some(first) = (0..synced.len().max(written.len())).find(|&i| synced.get(i) != written.get(i)) else {
        return synced.to_vec();
    };
    let byte = |data: &[u8], i: usize| data.get(i).copied().unwrap_or(0);
    match rng.below(3) {
        0 => synced.to_vec(),
        1 => {
            // A prefix of the unsynced bytes reached the disk.
            let cut = first + rng.below((written.len().max(first) - first) as u64 + 1) as usize;
            let mut out = written[..cut.min(written.len())].to_vec();
            if cut < written.len() && rng.one_in(2) {
                // The sector being written when the power went is garbage.
                let end = ((cut / SECTOR + 1) * SECTOR).min(written.len());
                out.extend((cut..end).map(|_| rng.next() as u8));
            }
            let len = out.len().max(synced.len());
            out.extend((out.len()..len).map(|i| byte(synced, i)));
            out
        }
        _ => {
            // Whole sectors, each from the written or the synced version.
            let len = if written.len() > synced.len() && rng.one_in(2) { written.len() } else { synced.len() };
            let mut out: Vec<u8> = (0..len).map(|i| byte(synced, i)).collect();
            let mut sector = first / SECTOR * SECTOR;
            while sector < len {
                let end = (sector + SECTOR).min(len);
                if rng.one_in(2) {
                    for (i, slot) in out.iter_mut().enumerate().take(end).skip(sector) {
                        *slot = byte(written, i);
                    }
                }
                sector = end;
            }
            out
        }
    }
}

impl Disk for SimMount {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        // One flat namespace: directories always exist.
        Ok(())
    }

    fn open_locked(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let disk = &self.disk;
        disk.operate(self.epoch, true, |sim| {
            let inode = match sim.names.get(path) {
                Some(&inode) => inode,
                None => sim.link_new(path),
            };
            sim.lock(inode)?;
            Ok(disk.handle(sim, inode))
        })?
    }

    fn create_locked(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let disk = &self.disk;
        disk.operate(self.epoch, false, |sim| {
            // Truncating an existing file: a new one in its place is how a
            // crash can see it (the old bytes or none).
            if let Some(old) = sim.names.get(path).copied() {
                if sim.locked.contains(&old) {
                    return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
                }
                sim.pending.push(DirOp::Unlink(path.to_owned()));
            }
            let inode = sim.link_new(path);
            sim.lock(inode)?;
            Ok(disk.handle(sim, inode))
        })?
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.operate(self.epoch, false, |sim| {
            if sim.names.remove(path).is_none() {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            sim.pending.push(DirOp::Unlink(path.to_owned()));
            Ok(())
        })?
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.operate(self.epoch, false, |sim| {
            let inode = sim.names.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            sim.names.insert(to.to_owned(), inode);
            sim.pending.push(DirOp::Rename(from.to_owned(), to.to_owned()));
            sim.counts.renames += 1;
            Ok(())
        })?
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.operate(self.epoch, true, |sim| {
            let pending = std::mem::take(&mut sim.pending);
            for op in pending {
                if op.dir() == dir {
                    op.apply(&mut sim.durable_names);
                } else {
                    sim.pending.push(op);
                }
            }
            sim.counts.syncs += 1;
        })
    }

    fn preallocation(&self) -> u64 {
        4096
    }
}

/// An open file of the simulated disk.
#[derive(Debug)]
struct SimHandle {
    disk: SimDisk,
    inode: u64,
    epoch: u64,
}

impl SimHandle {
    fn file<'a>(&self, sim: &'a mut Sim) -> &'a mut SimFile {
        sim.files.get_mut(&self.inode).expect("an open file exists until the power goes")
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let mut sim = self.disk.sim();
        if sim.epoch == self.epoch {
            sim.locked.remove(&self.inode);
        }
    }
}

impl DiskFile for SimHandle {
    fn read_all(&self) -> io::Result<Vec<u8>> {
        self.disk.operate(self.epoch, true, |sim| self.file(sim).written.clone())
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        // The power may go just after the bytes reached the page cache.
        self.disk.operate(self.epoch, false, |sim| {
            let file = self.file(sim);
            let offset = offset as usize;
            if file.written.len() < offset + bytes.len() {
                file.written.resize(offset + bytes.len(), 0);
            }
            file.written[offset..offset + bytes.len()].copy_from_slice(bytes);
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.operate(self.epoch, false, |sim| self.file(sim).written.resize(len as usize, 0))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.operate(self.epoch, true, |sim| {
            sim.counts.syncs += 1;
            let file = self.file(sim);
            file.synced = file.written.clone();
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}
