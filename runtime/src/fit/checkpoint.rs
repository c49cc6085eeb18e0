//! The training loop's checkpoints: one file, `DIR/checkpoint.bin`, with what a run needs to go on
//! as if it had never stopped: a JSON header (the run's arguments, the SHA-256 of its model and
//! data files, where it is: epoch, step, the history so far) and the training library's state
//! blob (weights, optimizer slots, step count, learning rate, Dropout's seed). The shuffling
//! order is a function of the seed and the epoch, so the position is enough to take the same
//! batches again.
//!
//! Layout: `FGCCKPT1`, the header's length (u64, little-endian), the header, the blobs (the
//! state, then EarlyStopping's best weights when it keeps them; the header's `blobs` gives
//! their lengths). Written
//! to `checkpoint.bin.tmp`, flushed to the disk, then renamed over the last one: a run killed at
//! any moment leaves either the old checkpoint or the new one, whole.

use serde_json::Value;
use std::io::Write;
use std::path::Path;

pub const FILE: &str = "checkpoint.bin";
const MAGIC: &[u8; 8] = b"FGCCKPT1";

/// A checkpoint as read back: the header and the state blob.
pub struct Checkpoint {
    pub meta: Value,
    /// The state blob, then any other (EarlyStopping's best state).
    pub blobs: Vec<Vec<u8>>,
}

/// Writes `DIR/checkpoint.bin` (see the module's doc). On failure (a full disk, an unwritable
/// directory) the last good checkpoint stays, and the message says where it is.
pub fn write(dir: &Path, meta: &Value, blobs: &[&[u8]]) -> Result<(), String> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut meta = meta.clone();
    meta["blobs"] = blobs.iter().map(|b| b.len()).collect::<Vec<_>>().into();
    let json = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
    let put = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&(json.len() as u64).to_le_bytes())?;
        f.write_all(&json)?;
        for b in blobs {
            f.write_all(b)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename itself reaches the disk with the directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    put().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        let kept = if path.exists() {
            format!("the last good checkpoint is still {}", path.display())
        } else {
            "no checkpoint was written before".to_string()
        };
        format!(
            "{}: cannot write the checkpoint: {e}; {kept}",
            tmp.display()
        )
    })
}

/// Reads `DIR/checkpoint.bin`, checking its frame (the blob itself is checked by the library
/// it is given to).
pub fn read(dir: &Path) -> Result<Checkpoint, String> {
    let path = dir.join(FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "{}: cannot read the checkpoint: {e} (--resume takes the --out directory of a run \
             started with forgec train)",
            path.display()
        )
    })?;
    let bad = |why: &str| format!("{}: {why}", path.display());
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("not a forgec checkpoint"));
    }
    let n = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= bytes.len() - 16)
        .ok_or_else(|| bad("damaged: its header runs past the end of the file"))?;
    let meta: Value = serde_json::from_slice(&bytes[16..16 + n])
        .map_err(|e| bad(&format!("damaged: its header does not parse ({e})")))?;
    let mut at = 16 + n;
    let mut blobs = Vec::new();
    for len in meta["blobs"]
        .as_array()
        .ok_or_else(|| bad("damaged: no blob lengths"))?
    {
        let len = len
            .as_u64()
            .and_then(|l| usize::try_from(l).ok())
            .filter(|&l| l <= bytes.len() - at)
            .ok_or_else(|| bad("damaged: a blob runs past the end of the file"))?;
        blobs.push(bytes[at..at + len].to_vec());
        at += len;
    }
    if blobs.is_empty() || at != bytes.len() {
        return Err(bad("damaged: its blobs do not fill the file"));
    }
    Ok(Checkpoint { meta, blobs })
}
