//! The disk tier's layout and its blocking I/O (callers run it on the blocking pool).
//!
//! ```text
//! data_dir/content/<XX>/<sha1hex>      committed, verified objects (XX = last byte, as WSUS shards)
//! data_dir/content/<XX>/<sha1hex>.seal its seal: an XXH3-128 per 64 KiB block, taken when the
//!                                      whole object was verified; every read from disk is
//!                                      checked against it
//! data_dir/corrupt/<sha1hex>           a root's committed object whose bytes no longer match
//! data_dir/partial/<sha1hex>.data      an object being filled: a sparse file of its full size
//! data_dir/partial/<sha1hex>.map       which slices of it are present, with a SHA-1 per slice
//! data_dir/tmp/                        imports and commits in progress; swept at start-up
//! ```
//!
//! Our own layout rather than cacache (DESIGN.md §3 allows it when measured): a fill already
//! writes every byte into a sparse file, so committing is one hashing read plus an atomic rename,
//! where cacache would copy the whole object a second time through its writer (for a 4 GiB
//! object: 4 GiB more written and twice the space held during the copy); and ranges need seeks,
//! which cacache does not offer. The file system is the index: a start-up scan rebuilds it, so
//! there is no second record to disagree with after a crash.
//!
//! Crash safety without an fsync per slice: a slice's data is written before its map slot, and
//! the slot holds the slice's SHA-1. After a crash (or a torn slot) a slice whose bytes do not
//! hash to its slot is simply absent again. A committed object was hashed in full and fsynced
//! before the rename that made it visible. `kill -9` can therefore never make us serve bytes that
//! were not verified against what upstream sent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha1::{Digest as _, Sha1};

use super::path::Digest;

const MAP_MAGIC: &[u8; 8] = b"WSEPART1";
/// magic, size, slice_bytes, last_modified (u64 LE each), the URL's extension (NUL-padded).
const MAP_HEADER: u64 = 8 + 8 + 8 + 8 + EXT_BYTES as u64;
const EXT_BYTES: usize = 16;
const SLOT: u64 = 20;
/// Block size of sequential reads (hashing, import).
const BLOCK: usize = 1 << 20;
const SEAL_MAGIC: &[u8; 8] = b"WSESEAL1";
/// magic, the object's size (u64 LE), then an XXH3-128 (LE) per [`SEAL_BLOCK`].
const SEAL_HEADER: u64 = 16;
/// What one entry of a seal covers. Every slice size (a power of two from 64 KiB) is a whole
/// number of blocks, so a seal outlives a change of `cache.slice_bytes`; 16 bytes per 64 KiB is
/// 0.02 % of the object.
pub const SEAL_BLOCK: u64 = 64 << 10;
/// Bytes of one seal entry. The seal finds damage, not forgery (whoever can write the cache can
/// write the seal too): a 128-bit non-cryptographic hash is enough, at ~10x SHA-1's speed.
const SEAL_ENTRY: u64 = 16;

/// One block's seal entry.
fn seal_entry(block: &[u8]) -> [u8; SEAL_ENTRY as usize] {
    xxhash_rust::xxh3::xxh3_128(block).to_le_bytes()
}

pub struct Dirs {
    pub root: PathBuf,
    content: PathBuf,
    partial: PathBuf,
    tmp: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Dirs {
    pub fn new(data_dir: &Path) -> Dirs {
        Dirs {
            root: data_dir.to_path_buf(),
            content: data_dir.join("content"),
            partial: data_dir.join("partial"),
            tmp: data_dir.join("tmp"),
        }
    }

    pub fn create(&self) -> io::Result<()> {
        for dir in [&self.content, &self.partial, &self.tmp] {
            fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    pub fn committed(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.content.join(&hex[38..]).join(hex)
    }

    pub(super) fn partial_data(&self, digest: &Digest) -> PathBuf {
        self.partial.join(format!("{}.data", digest.to_hex()))
    }

    fn seal(&self, digest: &Digest) -> PathBuf {
        let mut path = self.committed(digest).into_os_string();
        path.push(".seal");
        PathBuf::from(path)
    }

    fn corrupt(&self, digest: &Digest) -> PathBuf {
        self.root.join("corrupt").join(digest.to_hex())
    }

    fn partial_map(&self, digest: &Digest) -> PathBuf {
        self.partial.join(format!("{}.map", digest.to_hex()))
    }

    fn temp(&self, tag: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{tag}-{}-{n}", std::process::id()))
    }
}

/// What a start-up scan learns of one committed object.
pub struct CommittedInfo {
    pub digest: Digest,
    pub size: u64,
    /// Seconds since the epoch; the object's Last-Modified.
    pub last_modified: u64,
    /// Milliseconds since the epoch; recency for eviction (we set atime ourselves).
    pub accessed_ms: u64,
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Remove everything in `tmp/`: imports and commits a crash interrupted.
pub fn sweep_tmp(dirs: &Dirs) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(&dirs.tmp)? {
        let entry = entry?;
        if fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Every committed object on disk. Files that are not named by a digest are left alone.
pub fn scan_committed(dirs: &Dirs) -> io::Result<Vec<CommittedInfo>> {
    let mut found = Vec::new();
    for shard in fs::read_dir(&dirs.content)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(shard.path())? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(digest) = name.to_str().and_then(Digest::from_hex) else {
                continue;
            };
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            found.push(CommittedInfo {
                digest,
                size: meta.len(),
                last_modified: meta.modified().map(unix_secs).unwrap_or(0),
                accessed_ms: meta.accessed().map(unix_ms).unwrap_or(0),
            });
        }
    }
    Ok(found)
}

/// Stat one committed object (an import may have added it while we run).
pub fn stat_committed(dirs: &Dirs, digest: &Digest) -> Option<CommittedInfo> {
    let meta = fs::metadata(dirs.committed(digest)).ok()?;
    meta.is_file().then(|| CommittedInfo {
        digest: *digest,
        size: meta.len(),
        last_modified: meta.modified().map(unix_secs).unwrap_or(0),
        accessed_ms: meta.accessed().map(unix_ms).unwrap_or(0),
    })
}

/// Record a read for eviction order, without touching Last-Modified (the mtime).
pub fn touch_accessed(dirs: &Dirs, digest: &Digest, when: SystemTime) -> io::Result<()> {
    let file = File::options().write(true).open(dirs.committed(digest))?;
    file.set_times(fs::FileTimes::new().set_accessed(when))
}

/// Read `len` bytes at `offset`. A short file is an error: it means the object is damaged.
pub fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

/// Take a committed object out of its place at once (a rename into `tmp/`), so that nothing can
/// find it there any more; the returned file is removed later with [`remove_retired`]. `None`
/// when it was not there.
pub fn retire_committed(dirs: &Dirs, digest: &Digest) -> io::Result<Option<PathBuf>> {
    let _ = fs::remove_file(dirs.seal(digest));
    let retired = dirs.temp("evicted");
    match fs::rename(dirs.committed(digest), &retired) {
        Ok(()) => Ok(Some(retired)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn remove_retired(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An object being filled: its sparse data file and its slice map, both open.
pub struct PartialFile {
    /// Shared with responses that send written slices from it: the commit renames the file,
    /// so the descriptor goes on naming the same bytes.
    pub data: std::sync::Arc<File>,
    map: File,
    pub size: u64,
    pub slice_bytes: u64,
    pub last_modified: u64,
    /// The extension of the content URL it is fetched under.
    pub ext: String,
}

impl PartialFile {
    pub fn slice_count(&self) -> u64 {
        self.slicing().count(self.size)
    }

    fn slicing(&self) -> super::Slicing {
        super::Slicing::new(self.slice_bytes)
    }

    fn slice_len(&self, index: u64) -> u64 {
        self.slicing().len(self.size, index)
    }

    /// Write one slice, then record it as present. The data is written first: a crash between
    /// the two leaves the slice absent, never a slot promising bytes that are not there.
    pub fn write_slice(&self, index: u64, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() as u64 != self.slice_len(index) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "slice {index} has {} bytes, expected {}",
                    bytes.len(),
                    self.slice_len(index)
                ),
            ));
        }
        self.data.write_all_at(bytes, self.slicing().start(index))?;
        let digest = Sha1::digest(bytes);
        self.map.write_all_at(&digest, MAP_HEADER + index * SLOT)
    }
}

impl PartialFile {
    /// Whether `bytes`, read from disk as slice `index`, hash to the digest its map slot
    /// recorded when the slice was written.
    pub fn check_slice(&self, index: u64, bytes: &[u8]) -> io::Result<bool> {
        let mut slot = [0u8; SLOT as usize];
        self.map
            .read_exact_at(&mut slot, MAP_HEADER + index * SLOT)?;
        Ok(Sha1::digest(bytes).as_slice() == slot)
    }

    /// Forget slice `index` (its bytes on disk went bad): absent again, after a restart too.
    pub fn forget_slice(&self, index: u64) -> io::Result<()> {
        self.map
            .write_all_at(&[0u8; SLOT as usize], MAP_HEADER + index * SLOT)
    }
}

/// Create the files of a new partial object (replacing any leftovers).
pub fn create_partial(
    dirs: &Dirs,
    digest: &Digest,
    ext: &str,
    size: u64,
    slice_bytes: u64,
    last_modified: u64,
) -> io::Result<PartialFile> {
    let data = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dirs.partial_data(digest))?;
    data.set_len(size)?;
    let slices = super::Slicing::new(slice_bytes).count(size);
    let mut header = Vec::with_capacity((MAP_HEADER + slices * SLOT) as usize);
    header.extend_from_slice(MAP_MAGIC);
    header.extend_from_slice(&size.to_le_bytes());
    header.extend_from_slice(&slice_bytes.to_le_bytes());
    header.extend_from_slice(&last_modified.to_le_bytes());
    let mut ext_field = [0u8; EXT_BYTES];
    let ext_len = ext.len().min(EXT_BYTES);
    ext_field[..ext_len].copy_from_slice(&ext.as_bytes()[..ext_len]);
    header.extend_from_slice(&ext_field);
    header.resize((MAP_HEADER + slices * SLOT) as usize, 0);
    let mut map = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dirs.partial_map(digest))?;
    map.write_all(&header)?;
    Ok(PartialFile {
        data: data.into(),
        map,
        size,
        slice_bytes,
        last_modified,
        ext: ext[..ext_len].to_owned(),
    })
}

/// Remove a partial object's files.
pub fn discard_partial(dirs: &Dirs, digest: &Digest) {
    let _ = fs::remove_file(dirs.partial_data(digest));
    let _ = fs::remove_file(dirs.partial_map(digest));
}

/// A partial object found at start-up, with the slices whose bytes still match their map slot.
pub struct Recovered {
    pub digest: Digest,
    pub file: PartialFile,
    pub present: Vec<bool>,
}

/// Every partial object on disk. A map that is unreadable, of another slice size, or whose data
/// file is missing or of the wrong size is discarded (cleanly: both files removed).
pub fn recover_partials(dirs: &Dirs, slice_bytes: u64) -> io::Result<Vec<Recovered>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(&dirs.partial)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".map")) else {
            continue;
        };
        let Some(digest) = Digest::from_hex(hex) else {
            continue;
        };
        match recover_one(dirs, &digest, slice_bytes) {
            Ok(Some(r)) => out.push(r),
            _ => discard_partial(dirs, &digest),
        }
    }
    // Data files without a map are debris of a crash during creation.
    for entry in fs::read_dir(&dirs.partial)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "data") && !path.with_extension("map").exists() {
            let _ = fs::remove_file(path);
        }
    }
    Ok(out)
}

fn recover_one(dirs: &Dirs, digest: &Digest, slice_bytes: u64) -> io::Result<Option<Recovered>> {
    let mut map = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dirs.partial_map(digest))?;
    let mut bytes = Vec::new();
    map.read_to_end(&mut bytes)?;
    if bytes.len() < MAP_HEADER as usize || &bytes[..8] != MAP_MAGIC {
        return Ok(None);
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[8 + i * 8..16 + i * 8]);
        u64::from_le_bytes(w)
    };
    let (size, stored_slice, last_modified) = (word(0), word(1), word(2));
    let ext_field = &bytes[32..32 + EXT_BYTES];
    let ext_len = ext_field.iter().position(|b| *b == 0).unwrap_or(EXT_BYTES);
    let Ok(ext) = std::str::from_utf8(&ext_field[..ext_len]) else {
        return Ok(None);
    };
    if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(None);
    }
    let ext = ext.to_owned();
    let slices = super::Slicing::new(slice_bytes).count(size);
    if stored_slice != slice_bytes || bytes.len() as u64 != MAP_HEADER + slices * SLOT {
        return Ok(None);
    }
    let data = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dirs.partial_data(digest))?;
    if data.metadata()?.len() != size {
        return Ok(None);
    }
    let file = PartialFile {
        data: data.into(),
        map,
        size,
        slice_bytes,
        last_modified,
        ext,
    };
    let mut present = vec![false; slices as usize];
    let zero = [0u8; SLOT as usize];
    for (index, flag) in present.iter_mut().enumerate() {
        let at = (MAP_HEADER + index as u64 * SLOT) as usize;
        let slot = &bytes[at..at + SLOT as usize];
        if slot == zero {
            continue;
        }
        let len = file.slice_len(index as u64) as usize;
        let data = read_at(&file.data, file.slicing().start(index as u64), len)?;
        if Sha1::digest(&data).as_slice() == slot {
            *flag = true;
        } else {
            file.map
                .write_all_at(&zero, MAP_HEADER + index as u64 * SLOT)?;
        }
    }
    Ok(Some(Recovered {
        digest: *digest,
        file,
        present,
    }))
}

/// The SHA-1 of a whole object and its seal (an entry per [`SEAL_BLOCK`]), from its bytes in
/// order.
struct Sealer {
    whole: Sha1,
    /// The current block's bytes so far (less than a block).
    block: Vec<u8>,
    seal: Vec<u8>,
}

impl Sealer {
    fn new() -> Sealer {
        Sealer {
            whole: Sha1::new(),
            block: Vec::with_capacity(SEAL_BLOCK as usize),
            seal: Vec::new(),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        while !bytes.is_empty() {
            let room = SEAL_BLOCK as usize - self.block.len();
            let n = room.min(bytes.len());
            if self.block.is_empty() && n == SEAL_BLOCK as usize {
                // A whole block in place: no copy.
                self.seal.extend_from_slice(&seal_entry(&bytes[..n]));
            } else {
                self.block.extend_from_slice(&bytes[..n]);
                if self.block.len() == SEAL_BLOCK as usize {
                    self.seal.extend_from_slice(&seal_entry(&self.block));
                    self.block.clear();
                }
            }
            bytes = &bytes[n..];
        }
    }

    /// (the whole object's SHA-1, its seal's entries).
    fn finish(mut self) -> ([u8; 20], Vec<u8>) {
        if !self.block.is_empty() {
            self.seal.extend_from_slice(&seal_entry(&self.block));
        }
        (self.whole.finalize().into(), self.seal)
    }
}

/// SHA-1 of `len` bytes of a file from its start, read in large blocks, and its seal.
fn hash_file(file: &File, len: u64) -> io::Result<([u8; 20], Vec<u8>)> {
    let mut sealer = Sealer::new();
    let mut buf = vec![0u8; BLOCK];
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(BLOCK as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset)?;
        sealer.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(sealer.finish())
}

/// Write the seal of a committed object of `size` bytes (atomically: a whole seal or none).
fn write_seal(dirs: &Dirs, digest: &Digest, size: u64, digests: &[u8]) -> io::Result<()> {
    let temp = dirs.temp("seal");
    let mut bytes = Vec::with_capacity(SEAL_HEADER as usize + digests.len());
    bytes.extend_from_slice(SEAL_MAGIC);
    bytes.extend_from_slice(&size.to_le_bytes());
    bytes.extend_from_slice(digests);
    fs::write(&temp, &bytes)?;
    let target = dirs.seal(digest);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(&temp, &target).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}

/// What a committed object's seal says of bytes read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// Every block matches.
    Matches,
    /// A block does not: the bytes on disk changed since they were verified.
    Differs,
    /// No usable seal (an object committed before seals, or one being sealed): nothing to
    /// check against.
    Unsealed,
}

/// Check `bytes`, read at `offset` (a multiple of [`SEAL_BLOCK`]) of the committed object
/// `digest` of `size` bytes, against its seal.
pub fn check_seal(
    dirs: &Dirs,
    digest: &Digest,
    size: u64,
    offset: u64,
    bytes: &[u8],
) -> io::Result<Seal> {
    if bytes.is_empty() || !offset.is_multiple_of(SEAL_BLOCK) {
        return Ok(Seal::Unsealed);
    }
    let file = match File::open(dirs.seal(digest)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Seal::Unsealed),
        Err(e) => return Err(e),
    };
    let mut header = [0u8; SEAL_HEADER as usize];
    if file.read_exact_at(&mut header, 0).is_err()
        || &header[..8] != SEAL_MAGIC
        || header[8..] != size.to_le_bytes()
        || file.metadata()?.len() != SEAL_HEADER + size.div_ceil(SEAL_BLOCK) * SEAL_ENTRY
    {
        return Ok(Seal::Unsealed);
    }
    let first = offset / SEAL_BLOCK;
    let blocks = (bytes.len() as u64).div_ceil(SEAL_BLOCK);
    let mut expected = vec![0u8; (blocks * SEAL_ENTRY) as usize];
    file.read_exact_at(&mut expected, SEAL_HEADER + first * SEAL_ENTRY)?;
    let differs = bytes
        .chunks(SEAL_BLOCK as usize)
        .zip(expected.chunks(SEAL_ENTRY as usize))
        .any(|(block, entry)| seal_entry(block) != entry);
    Ok(if differs {
        Seal::Differs
    } else {
        Seal::Matches
    })
}

/// Whether a committed object has a usable seal.
pub fn is_sealed(dirs: &Dirs, digest: &Digest, size: u64) -> bool {
    fs::metadata(dirs.seal(digest))
        .is_ok_and(|m| m.len() == SEAL_HEADER + size.div_ceil(SEAL_BLOCK) * SEAL_ENTRY)
}

/// Hash a whole committed object of `size` bytes: seal it when it matches its name (an object
/// committed before seals); `false` when it does not.
pub fn seal_committed(dirs: &Dirs, digest: &Digest, size: u64) -> io::Result<bool> {
    let file = File::open(dirs.committed(digest))?;
    let (whole, seal) = hash_file(&file, size)?;
    if whole != digest.0 {
        return Ok(false);
    }
    write_seal(dirs, digest, size, &seal)?;
    Ok(true)
}

/// Take a committed object whose bytes no longer match out of service: on a branch it is
/// removed (the upstream has it again); on a root, which cannot fetch it again, it is moved to
/// `corrupt/` for the operator. Its seal goes either way.
pub fn remove_corrupt(dirs: &Dirs, digest: &Digest, keep: bool) -> io::Result<()> {
    let _ = fs::remove_file(dirs.seal(digest));
    let result = if keep {
        let target = dirs.corrupt(digest);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(dirs.committed(digest), target)
    } else {
        fs::remove_file(dirs.committed(digest))
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub enum CommitOutcome {
    Committed,
    /// The bytes do not hash to the name: the partial files are gone.
    Mismatch {
        actual: Digest,
    },
}

/// Verify a complete partial object against its name and make it a committed object.
pub fn commit(dirs: &Dirs, digest: &Digest, file: &PartialFile) -> io::Result<CommitOutcome> {
    let (whole, seal) = hash_file(&file.data, file.size)?;
    let actual = Digest(whole);
    if actual != *digest {
        discard_partial(dirs, digest);
        return Ok(CommitOutcome::Mismatch { actual });
    }
    // The seal is in place before the object is: a committed object always has one.
    write_seal(dirs, digest, file.size, &seal)?;
    let modified = UNIX_EPOCH + Duration::from_secs(file.last_modified);
    file.data.set_times(
        fs::FileTimes::new()
            .set_modified(modified)
            .set_accessed(SystemTime::now()),
    )?;
    file.data.sync_all()?;
    let target = dirs.committed(digest);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(dirs.partial_data(digest), &target)?;
    let _ = fs::remove_file(dirs.partial_map(digest));
    Ok(CommitOutcome::Committed)
}

/// Copy one file into the store under its SHA-1, verifying nothing but computing the name.
/// Returns the digest, the size, and whether it was new.
pub fn import_file(dirs: &Dirs, source: &Path) -> io::Result<(Digest, u64, bool)> {
    let mut input = File::open(source)?;
    let modified = input
        .metadata()?
        .modified()
        .unwrap_or_else(|_| SystemTime::now());
    let temp_path = dirs.temp("import");
    let mut output = File::create(&temp_path)?;
    let result = (|| {
        let mut sealer = Sealer::new();
        let mut buf = vec![0u8; BLOCK];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sealer.update(&buf[..n]);
            output.write_all(&buf[..n])?;
            size += n as u64;
        }
        let (whole, seal) = sealer.finish();
        let digest = Digest(whole);
        let target = dirs.committed(&digest);
        if target.exists() {
            return Ok((digest, size, false));
        }
        write_seal(dirs, &digest, size, &seal)?;
        output.set_times(fs::FileTimes::new().set_modified(modified))?;
        output.sync_all()?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&temp_path, &target)?;
        Ok((digest, size, true))
    })();
    let _ = fs::remove_file(&temp_path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(bytes: &[u8]) -> Digest {
        Digest(Sha1::digest(bytes).into())
    }

    #[test]
    fn partial_fill_recover_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        dirs.create().unwrap();
        let body: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let digest = digest_of(&body);
        let file = create_partial(
            &dirs,
            &digest,
            "cab",
            body.len() as u64,
            4096,
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(file.slice_count(), 3);
        file.write_slice(0, &body[..4096]).unwrap();
        file.write_slice(2, &body[8192..]).unwrap();
        assert!(
            file.write_slice(1, &body[..10]).is_err(),
            "wrong length refused"
        );
        drop(file);

        // Corrupt slice 2's data behind the map's back: recovery must drop it.
        let data = OpenOptions::new()
            .write(true)
            .open(dirs.partial_data(&digest))
            .unwrap();
        data.write_all_at(b"XX", 8192).unwrap();
        let mut found = recover_partials(&dirs, 4096).unwrap();
        assert_eq!(found.len(), 1);
        let rec = found.pop().unwrap();
        assert_eq!(rec.present, vec![true, false, false]);
        assert_eq!(rec.file.ext, "cab");

        rec.file.write_slice(1, &body[4096..8192]).unwrap();
        rec.file.write_slice(2, &body[8192..]).unwrap();
        assert!(matches!(
            commit(&dirs, &digest, &rec.file).unwrap(),
            CommitOutcome::Committed
        ));
        assert_eq!(fs::read(dirs.committed(&digest)).unwrap(), body);
        let scanned = scan_committed(&dirs).unwrap();
        assert_eq!(scanned.len(), 1);
        assert_eq!(scanned[0].last_modified, 1_700_000_000);
        assert!(recover_partials(&dirs, 4096).unwrap().is_empty());
    }

    #[test]
    fn a_seal_finds_any_changed_block_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(&dir.path().join("data"));
        dirs.create().unwrap();
        let src = dir.path().join("big.cab");
        // Three blocks and a bit, so the last entry covers a short block.
        let body: Vec<u8> = (0..(3 * SEAL_BLOCK + 1000))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        fs::write(&src, &body).unwrap();
        let (digest, size, _) = import_file(&dirs, &src).unwrap();
        assert!(is_sealed(&dirs, &digest, size));
        // Fed in odd pieces, the sealer gives the same seal as the import's 1 MiB reads.
        let mut sealer = Sealer::new();
        for piece in body.chunks(7777) {
            sealer.update(piece);
        }
        let (whole, seal) = sealer.finish();
        assert_eq!(whole, digest.0);
        assert_eq!(seal.len() as u64, 4 * SEAL_ENTRY);
        assert_eq!(
            &fs::read(dirs.seal(&digest)).unwrap()[SEAL_HEADER as usize..],
            &seal[..]
        );
        let at = |offset: u64, len: u64| body[offset as usize..(offset + len) as usize].to_vec();
        let check = |offset, bytes: &[u8]| check_seal(&dirs, &digest, size, offset, bytes).unwrap();
        assert_eq!(check(0, &body), Seal::Matches);
        assert_eq!(
            check(SEAL_BLOCK, &at(SEAL_BLOCK, 2 * SEAL_BLOCK)),
            Seal::Matches
        );
        assert_eq!(
            check(3 * SEAL_BLOCK, &at(3 * SEAL_BLOCK, 1000)),
            Seal::Matches
        );
        let mut flipped = at(SEAL_BLOCK, 2 * SEAL_BLOCK);
        flipped[SEAL_BLOCK as usize + 5] ^= 1;
        assert_eq!(check(SEAL_BLOCK, &flipped), Seal::Differs);
        // Not on a block boundary, or no seal: nothing to check against.
        assert_eq!(check(1, &at(1, 10)), Seal::Unsealed);
        fs::remove_file(dirs.seal(&digest)).unwrap();
        assert_eq!(check(0, &body), Seal::Unsealed);
        assert!(seal_committed(&dirs, &digest, size).unwrap());
        assert_eq!(check(0, &body), Seal::Matches);
    }

    #[test]
    fn wrong_bytes_are_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        dirs.create().unwrap();
        let digest = digest_of(b"the real bytes");
        let file = create_partial(&dirs, &digest, "exe", 14, 4096, 0).unwrap();
        file.write_slice(0, b"the fake bytes").unwrap();
        assert!(matches!(
            commit(&dirs, &digest, &file).unwrap(),
            CommitOutcome::Mismatch { .. }
        ));
        assert!(!dirs.committed(&digest).exists());
        assert!(recover_partials(&dirs, 4096).unwrap().is_empty());
    }

    #[test]
    fn other_slice_size_discards_partials() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        dirs.create().unwrap();
        let digest = digest_of(b"x");
        create_partial(&dirs, &digest, "exe", 1, 4096, 0).unwrap();
        assert!(recover_partials(&dirs, 8192).unwrap().is_empty());
        assert!(!dirs.partial_map(&digest).exists());
    }

    #[test]
    fn import_names_by_digest_and_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(&dir.path().join("data"));
        dirs.create().unwrap();
        let src = dir.path().join("payload.cab");
        fs::write(&src, b"payload").unwrap();
        let (digest, size, new) = import_file(&dirs, &src).unwrap();
        assert_eq!((digest, size, new), (digest_of(b"payload"), 7, true));
        assert!(
            !import_file(&dirs, &src).unwrap().2,
            "second import is a no-op"
        );
        fs::write(dirs.temp("stale"), b"junk").unwrap();
        assert_eq!(sweep_tmp(&dirs).unwrap(), 1);
    }
}
