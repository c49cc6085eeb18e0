//! TensorBoard event files: TFRecord framing (length, masked CRC-32C of the length, the
//! record, masked CRC-32C of the record) around `Event` protobufs (prost), as TensorFlow's
//! `EventFileWriter` writes them, and a reader of the same (what the tests check the files
//! with where Python's `tensorboard` is not installed).
//!
//! Layout as Keras's TensorBoard callback: `DIR/train/` and `DIR/validation/`, each with its
//! `events.out.tfevents.<seconds>.<host>.<pid>.<n>` file; scalars as `simple_value`.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// CRC-32C (Castagnoli), bit-reflected, table-driven.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = t[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// TFRecord's masked CRC (so that a CRC of data holding CRCs is not degenerate).
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One events file, appended to as the run goes.
pub struct EventWriter {
    out: BufWriter<std::fs::File>,
    pub path: PathBuf,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl EventWriter {
    /// A new events file in `dir` (made if missing), starting with the file version event.
    pub fn create(dir: &Path) -> Result<EventWriter, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        let t = now();
        let host = crate::hostname();
        // A name no other writer of this directory has, even within the same second.
        let mut n = 0;
        let path = loop {
            let p = dir.join(format!(
                "events.out.tfevents.{}.{host}.{}.{n}",
                t as u64,
                std::process::id()
            ));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let f = std::fs::File::create(&path)
            .map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
        let mut w = EventWriter {
            out: BufWriter::new(f),
            path,
        };
        w.write(&Event {
            wall_time: t,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        Ok(w)
    }

    fn write(&mut self, e: &Event) -> Result<(), String> {
        let data = prost::Message::encode_to_vec(e);
        let len = (data.len() as u64).to_le_bytes();
        let err = |x: std::io::Error| format!("{}: cannot write: {x}", self.path.display());
        self.out.write_all(&len).map_err(err)?;
        self.out
            .write_all(&masked_crc(&len).to_le_bytes())
            .map_err(err)?;
        self.out.write_all(&data).map_err(err)?;
        self.out
            .write_all(&masked_crc(&data).to_le_bytes())
            .map_err(err)
    }

    /// Scalars at `step`.
    pub fn scalars(&mut self, step: i64, values: &[(&str, f64)]) -> Result<(), String> {
        self.write(&Event {
            wall_time: now(),
            step,
            what: Some(What::Summary(Summary {
                value: values
                    .iter()
                    .map(|(tag, v)| SummaryValue {
                        tag: tag.to_string(),
                        simple_value: Some(*v as f32),
                    })
                    .collect(),
            })),
        })
    }

    /// Makes what was written readable (TensorBoard reads the file as it grows).
    pub fn flush(&mut self) -> Result<(), String> {
        self.out
            .flush()
            .map_err(|e| format!("{}: cannot write: {e}", self.path.display()))
    }
}

/// Every scalar of an events file: (step, tag, value), in file order. Checks every record's
/// CRCs; a truncated last record (a writer that died mid-write) ends the read.
pub fn read_scalars(path: &Path) -> Result<Vec<(i64, String, f32)>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut at = 0usize;
    let bad = |what: &str, at: usize| format!("{}: {what} at byte {at}", path.display());
    while at + 12 <= bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap());
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        if crc != masked_crc(len_bytes) {
            return Err(bad("a record length whose CRC does not match", at));
        }
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| (at + 12).checked_add(l))
            .and_then(|e| e.checked_add(4))
            .filter(|&e| e <= bytes.len())
        else {
            break;
        };
        let data = &bytes[at + 12..end - 4];
        let crc = u32::from_le_bytes(bytes[end - 4..end].try_into().unwrap());
        if crc != masked_crc(data) {
            return Err(bad("a record whose CRC does not match", at));
        }
        let e: Event =
            prost::Message::decode(data).map_err(|e| bad(&format!("not an Event ({e})"), at))?;
        if let Some(What::Summary(s)) = e.what {
            for v in s.value {
                if let Some(x) = v.simple_value {
                    out.push((e.step, v.tag, x));
                }
            }
        }
        at = end;
    }
    Ok(out)
}

/// The events files of a directory, oldest first.
pub fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_values() {
        // RFC 3720's test vectors (iSCSI): 32 zero bytes, 32 bytes of 0xFF, 0..31.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn events_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(1, &[("batch_loss", 0.5), ("epoch_learning_rate", 0.001)])
            .unwrap();
        w.scalars(2, &[("batch_loss", 0.25)]).unwrap();
        w.flush().unwrap();
        let r = read_scalars(&w.path).unwrap();
        assert_eq!(
            r,
            vec![
                (1, "batch_loss".into(), 0.5),
                (1, "epoch_learning_rate".into(), 0.001),
                (2, "batch_loss".into(), 0.25)
            ]
        );
        // A flipped bit is found; a truncated tail ends the read.
        let mut b = std::fs::read(&w.path).unwrap();
        let n = b.len();
        b[n - 6] ^= 1;
        std::fs::write(&w.path, &b).unwrap();
        assert!(read_scalars(&w.path).unwrap_err().contains("CRC"));
        b[n - 6] ^= 1;
        std::fs::write(&w.path, &b[..n - 3]).unwrap();
        assert_eq!(read_scalars(&w.path).unwrap().len(), 2);
        assert_eq!(event_files(dir.path()), vec![w.path.clone()]);
    }
}
