//! Durability (issue 5: "every acknowledged-flushed write intact after SIGKILL"): the pool's
//! metadata is a checkpoint plus a journal of the changes made since.
//!
//! - `checkpoint`: the whole state (volumes, block table, maps with their sharing), written
//!   to a new file, synced and renamed over the old one. It names its generation g.
//! - `journal.g`: the records applied after checkpoint g, appended at each commit in frames
//!   `[len: u32][crc32: u32][record]`. A torn or corrupt tail (a crash mid-append) ends
//!   the replay there: those records were never acknowledged.
//!
//! Records are replayed through the same `State::apply` that made them, so replay cannot
//! disagree with what the service did.

use super::tree::Forest;
use crate::error::{Result, StorageError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Where a block's bytes are: `nsect` sectors at `sector` of device `dev`, encoded by
/// `codec` in the first `len` bytes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub dev: u16,
    pub sector: u64,
    pub nsect: u32,
    pub codec: u8,
    pub len: u32,
}

/// A volume's or snapshot's settings.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct VolMeta {
    /// `VOL` or `VOL@SNAP`.
    pub name: String,
    pub size: u64,
    pub thick: bool,
    pub iops: Option<u64>,
    pub bps: Option<u64>,
    /// For a snapshot: the volume it was taken of.
    pub snapshot_of: Option<u32>,
    /// For a clone: the snapshot it was made from.
    pub origin: Option<u32>,
    pub created: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum Record {
    /// A block was stored (no references yet).
    Block {
        id: u64,
        loc: Loc,
        hash: Option<[u8; 32]>,
    },
    /// A block moved (tiering) or was rewritten elsewhere.
    Move {
        id: u64,
        loc: Loc,
    },
    /// Entry `idx` of map `vid` now holds `id` (0: a hole).
    Set {
        vid: u32,
        idx: u64,
        id: u64,
    },
    Create {
        vid: u32,
        meta: VolMeta,
    },
    /// Map `vid` becomes a copy of map `from` (snapshot, clone, rollback).
    Share {
        vid: u32,
        from: u32,
    },
    Resize {
        vid: u32,
        size: u64,
    },
    Qos {
        vid: u32,
        iops: Option<u64>,
        bps: Option<u64>,
    },
    Delete {
        vid: u32,
    },
}

pub fn encode(rec: &Record, out: &mut Vec<u8>) {
    // Serializing these plain types to a Vec cannot fail.
    let body = postcard::to_stdvec(rec).unwrap_or_default();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// The records of a journal up to its first torn or corrupt frame.
pub fn decode_all(data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(body) = rest.get(8..8 + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        match postcard::from_bytes(body) {
            Ok(rec) => out.push(rec),
            Err(_) => break,
        }
        rest = &rest[8 + len..];
    }
    out
}

#[derive(Serialize, Deserialize, Default)]
pub struct Checkpoint {
    pub generation: u64,
    pub next_id: u64,
    pub next_vid: u32,
    pub vols: Vec<(u32, VolMeta)>,
    pub blocks: Vec<(u64, Loc, Option<[u8; 32]>)>,
    pub forest: Forest,
}

pub fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal.{generation}"))
}

/// Writes `cp` as the pool's checkpoint, durably, then starts its empty journal and removes
/// the previous one.
pub fn write_checkpoint(dir: &Path, cp: &Checkpoint) -> Result<File> {
    let body = postcard::to_stdvec(cp).map_err(|e| StorageError::Invalid(e.to_string()))?;
    let tmp = dir.join("checkpoint.new");
    let mut f = File::create(&tmp).map_err(StorageError::io(&tmp))?;
    f.write_all(&crc32fast::hash(&body).to_le_bytes())
        .and_then(|_| f.write_all(&body))
        .and_then(|_| f.sync_all())
        .map_err(StorageError::io(&tmp))?;
    let journal = journal_path(dir, cp.generation);
    let jf = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&journal)
        .map_err(StorageError::io(&journal))?;
    jf.sync_all().map_err(StorageError::io(&journal))?;
    let path = dir.join("checkpoint");
    std::fs::rename(&tmp, &path).map_err(StorageError::io(&path))?;
    sync_dir(dir)?;
    if let Some(prev) = cp.generation.checked_sub(1) {
        let _ = std::fs::remove_file(journal_path(dir, prev));
    }
    Ok(jf)
}

pub fn read_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let path = dir.join("checkpoint");
    let mut data = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(StorageError::io(&path))?;
    let corrupt = |why: &str| StorageError::Io {
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()),
    };
    if data.len() < 4 || crc32fast::hash(&data[4..]).to_le_bytes() != data[..4] {
        return Err(corrupt(
            "the pool checkpoint is corrupt (checksum mismatch)",
        ));
    }
    postcard::from_bytes(&data[4..]).map_err(|_| corrupt("the pool checkpoint is corrupt"))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_ends_replay() {
        let mut buf = Vec::new();
        for i in 0..3 {
            encode(
                &Record::Set {
                    vid: 1,
                    idx: i,
                    id: i + 10,
                },
                &mut buf,
            );
        }
        assert_eq!(decode_all(&buf).len(), 3);
        assert_eq!(decode_all(&buf[..buf.len() - 1]).len(), 2);
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode_all(&bad).len(), 2);
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_all(&huge).is_empty());
    }
}
