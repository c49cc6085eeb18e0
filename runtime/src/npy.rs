//! NumPy `.npy` and `.npz` reading and writing.
//!
//! Reading accepts little- and big-endian floats and integers, booleans, unsigned integers
//! (widened to the next signed type) and Fortran order (returned in C order).

use crate::tensor::{checked_numel, DType, Data, Tensor};
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct NpyError(pub String);

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NpyError {}

fn err<T>(msg: impl Into<String>) -> Result<T, NpyError> {
    Err(NpyError(msg.into()))
}

/// Reads one `.npy` file. Errors name the file.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let bytes = std::fs::read(path)
        .map_err(|e| NpyError(format!("{}: cannot read: {e}", path.display())))?;
    read_npy_bytes(&bytes).map_err(|e| NpyError(format!("{}: {}", path.display(), e.0)))
}

/// A `.npy` file mapped into memory rather than read: its rows are copied out on demand, so a
/// data set larger than memory can be trained on (the kernel pages the file in and out). Only
/// what maps as it is: little-endian, C order, of a type the runtime holds (float16/32/64,
/// int8/32/64, bool); `map_npy` answers None for the rest, which `read_npy` converts.
pub struct MappedNpy {
    map: std::sync::Arc<memmap2::Mmap>,
    start: usize,
    shape: Vec<usize>,
    dtype: DType,
    width: usize,
}

impl fmt::Debug for MappedNpy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MappedNpy({:?} {:?})", self.dtype, self.shape)
    }
}

/// Maps `path` (None: a file that does not map as it is; read it instead). The header and the
/// file's length are checked as `read_npy` checks them.
pub fn map_npy(path: &Path) -> Result<Option<MappedNpy>, NpyError> {
    let disp = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| NpyError(format!("{disp}: cannot read: {e}")))?;
    // SAFETY: the mapping is read-only; a file changed under a running training is the
    // user's (forgec train checks the data's SHA-256 before and on --resume).
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| NpyError(format!("{disp}: cannot map: {e}")))?;
    let len = map.len();
    mapped(std::sync::Arc::new(map), 0, len, &disp.to_string())
}

/// Maps every member of an `.npz` archive written by `np.savez` (members stored as they
/// are), each a [`MappedNpy`] over the one mapping of the file. None when a member is
/// compressed (`np.savez_compressed`) or does not map as it is: read the archive with
/// [`read_npz`] instead.
pub fn map_npz(path: &Path) -> Result<Option<Vec<(String, MappedNpy)>>, NpyError> {
    let disp = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| NpyError(format!("{disp}: cannot read: {e}")))?;
    // SAFETY: as in map_npy.
    let map = std::sync::Arc::new(
        unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| NpyError(format!("{disp}: cannot map: {e}")))?,
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&map[..]))
        .map_err(|e| NpyError(format!("{disp}: not a valid .npz (zip) archive: {e}")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let f = zip
            .by_index(i)
            .map_err(|e| NpyError(format!("{disp}: broken archive member #{i}: {e}")))?;
        if f.compression() != zip::CompressionMethod::Stored {
            return Ok(None);
        }
        let name = f
            .name()
            .map_err(|e| NpyError(format!("{disp}: member #{i} has a bad name: {e}")))?
            .trim_end_matches(".npy")
            .to_string();
        let (Some(at), Ok(len)) = (f.data_start(), usize::try_from(f.size())) else {
            return Ok(None);
        };
        let at = usize::try_from(at).map_err(|_| NpyError(format!("{disp}: too large")))?;
        if at.checked_add(len).is_none_or(|e| e > map.len()) {
            return err(format!(
                "{disp}: member {name} runs past the end of the file"
            ));
        }
        match mapped(map.clone(), at, len, &format!("{disp}: member {name}"))? {
            Some(m) => out.push((name, m)),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// The `.npy` at bytes `at..at + len` of `map`, checked (None: it does not map as it is).
fn mapped(
    map: std::sync::Arc<memmap2::Mmap>,
    at: usize,
    len: usize,
    disp: &str,
) -> Result<Option<MappedNpy>, NpyError> {
    let bytes: &[u8] = &map[at..at + len];
    if bytes.len() < 12 || &bytes[..6] != b"\x93NUMPY" {
        return err(format!(
            "{disp}: not a .npy file (missing the \\x93NUMPY magic)"
        ));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Ok(None),
    };
    let Some(end) = start.checked_add(hlen).filter(|&e| e <= bytes.len()) else {
        return err(format!("{disp}: truncated .npy header"));
    };
    let Ok(header) = std::str::from_utf8(&bytes[start..end]) else {
        return err(format!("{disp}: the .npy header is not text"));
    };
    let h = parse_header(header).map_err(|e| NpyError(format!("{disp}: {}", e.0)))?;
    let (dtype, width) = match h.descr.as_str() {
        "<f4" | "=f4" => (DType::F32, 4),
        "<f8" | "=f8" => (DType::F64, 8),
        "<f2" | "=f2" => (DType::F16, 2),
        "|i1" | "<i1" | "=i1" => (DType::I8, 1),
        "<i4" | "=i4" => (DType::I32, 4),
        "<i8" | "=i8" => (DType::I64, 8),
        "|b1" | "<b1" | "=b1" => (DType::Bool, 1),
        _ => return Ok(None),
    };
    if h.fortran || h.shape.is_empty() || cfg!(target_endian = "big") {
        return Ok(None);
    }
    let need = checked_numel(&h.shape)
        .and_then(|n| n.checked_mul(width))
        .ok_or_else(|| NpyError(format!("{disp}: shape {:?} is too large", h.shape)))?;
    if bytes.len() - end < need {
        return err(format!(
            "{disp}: truncated data: shape {:?} of {} needs {need} bytes, the file has {}",
            h.shape,
            h.descr,
            bytes.len() - end
        ));
    }
    Ok(Some(MappedNpy {
        map: map.clone(),
        start: at + end,
        shape: h.shape,
        dtype,
        width,
    }))
}

impl MappedNpy {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Rows `rows` (indices along the first axis, in range) into `out`, reusing its storage.
    pub fn take_rows_into(&self, rows: &[usize], out: &mut Tensor) {
        let per: usize = self.shape[1..].iter().product();
        let row_bytes = per * self.width;
        let body = &self.map[self.start..];
        let row = |r: usize| &body[r * row_bytes..(r + 1) * row_bytes];
        macro_rules! fill {
            ($var:ident, $ty:ty, $conv:expr) => {{
                if !matches!(out.data, Data::$var(_)) {
                    out.data = Data::$var(Vec::new());
                }
                let Data::$var(o) = &mut out.data else {
                    unreachable!()
                };
                o.clear();
                o.reserve(rows.len() * per);
                for &r in rows {
                    o.extend(row(r).chunks_exact(std::mem::size_of::<$ty>()).map($conv));
                }
            }};
        }
        match self.dtype {
            DType::F32 => fill!(F32, f32, |c| f32::from_le_bytes(c.try_into().unwrap())),
            DType::F64 => fill!(F64, f64, |c| f64::from_le_bytes(c.try_into().unwrap())),
            DType::F16 => fill!(F16, u16, |c| u16::from_le_bytes(c.try_into().unwrap())),
            DType::BF16 => fill!(BF16, u16, |c| u16::from_le_bytes(c.try_into().unwrap())),
            DType::I8 => fill!(I8, i8, |c| c[0] as i8),
            DType::I32 => fill!(I32, i32, |c| i32::from_le_bytes(c.try_into().unwrap())),
            DType::I64 => fill!(I64, i64, |c| i64::from_le_bytes(c.try_into().unwrap())),
            DType::Bool => fill!(Bool, u8, |c| c[0] != 0),
        }
        out.shape.clear();
        out.shape.extend_from_slice(&self.shape);
        out.shape[0] = rows.len();
    }
}

/// Reads every array of an `.npz` archive, in archive order, named without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, NpyError> {
    let file = std::fs::File::open(path)
        .map_err(|e| NpyError(format!("{}: cannot read: {e}", path.display())))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        NpyError(format!(
            "{}: not a valid .npz (zip) archive: {e}",
            path.display()
        ))
    })?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| {
            NpyError(format!(
                "{}: broken archive member #{i}: {e}",
                path.display()
            ))
        })?;
        let name = f
            .name()
            .map_err(|e| {
                NpyError(format!(
                    "{}: member #{i} has a bad name: {e}",
                    path.display()
                ))
            })?
            .to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(|e| {
            NpyError(format!(
                "{}: cannot read member {name}: {e}",
                path.display()
            ))
        })?;
        let t = read_npy_bytes(&bytes)
            .map_err(|e| NpyError(format!("{}: member {name}: {}", path.display(), e.0)))?;
        out.push((name.trim_end_matches(".npy").to_string(), t));
    }
    Ok(out)
}

struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
}

fn parse_header(h: &str) -> Result<Header, NpyError> {
    // The header is a Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
    let field = |key: &str| -> Result<&str, NpyError> {
        let pat = format!("'{key}':");
        let at = h
            .find(&pat)
            .ok_or_else(|| NpyError(format!("header has no '{key}' field")))?;
        Ok(h[at + pat.len()..].trim_start())
    };
    let d = field("descr")?;
    let descr = d
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| {
            NpyError("header 'descr' is not a string (structured arrays are not supported)".into())
        })?
        .to_string();
    let f = field("fortran_order")?;
    let fortran = if f.starts_with("True") {
        true
    } else if f.starts_with("False") {
        false
    } else {
        return err("header 'fortran_order' is neither True nor False");
    };
    let s = field("shape")?;
    let s = s
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| NpyError("header 'shape' is not a tuple".into()))?;
    let mut shape = Vec::new();
    for part in s.split(',') {
        let p = part.trim();
        if p.is_empty() {
            continue;
        }
        let p = p.trim_end_matches('L');
        shape.push(
            p.parse::<usize>()
                .map_err(|_| NpyError(format!("header shape entry '{p}' is not a size")))?,
        );
    }
    Ok(Header {
        descr,
        fortran,
        shape,
    })
}

/// Parses the bytes of one `.npy` file.
pub fn read_npy_bytes(bytes: &[u8]) -> Result<Tensor, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return err("not a .npy file (missing the \\x93NUMPY magic)");
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return err("truncated .npy header");
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return err(format!("unsupported .npy format version {v}")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| NpyError("truncated .npy header".into()))?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| NpyError("the .npy header is not text".into()))?;
    let h = parse_header(header)?;
    let body = &bytes[end..];
    let n = checked_numel(&h.shape)
        .ok_or_else(|| NpyError(format!("shape {:?} is too large", h.shape)))?;
    let (endian, code) = match h.descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &h.descr[1..]),
        _ => ('<', h.descr.as_str()),
    };
    let big = endian == '>';
    let width: usize = match code {
        "f4" | "i4" | "u4" => 4,
        "f8" | "i8" | "u8" => 8,
        "f2" | "i2" | "u2" => 2,
        "i1" | "u1" | "b1" => 1,
        other => {
            return err(format!(
                "unsupported dtype '{other}' (supported: float16/32/64, int8/16/32/64, uint8/16/32/64, bool)"
            ))
        }
    };
    let need = n
        .checked_mul(width)
        .ok_or_else(|| NpyError(format!("shape {:?} is too large", h.shape)))?;
    if body.len() < need {
        return err(format!(
            "truncated data: shape {:?} of {} needs {} bytes, the file has {}",
            h.shape,
            h.descr,
            need,
            body.len()
        ));
    }
    let body = &body[..need];
    let chunk = |i: usize| -> [u8; 8] {
        let mut b = [0u8; 8];
        let src = &body[i * width..(i + 1) * width];
        if big {
            for (k, &x) in src.iter().rev().enumerate() {
                b[k] = x;
            }
        } else {
            b[..width].copy_from_slice(src);
        }
        b
    };
    let data = match code {
        "f4" => Data::F32(
            (0..n)
                .map(|i| f32::from_le_bytes(chunk(i)[..4].try_into().unwrap()))
                .collect(),
        ),
        "f8" => Data::F64((0..n).map(|i| f64::from_le_bytes(chunk(i))).collect()),
        "f2" => Data::F16(
            (0..n)
                .map(|i| u16::from_le_bytes(chunk(i)[..2].try_into().unwrap()))
                .collect(),
        ),
        "i1" => Data::I8(body.iter().map(|&b| b as i8).collect()),
        "u1" => Data::I32(body.iter().map(|&b| b as i32).collect()),
        "b1" => Data::Bool(body.iter().map(|&b| b != 0).collect()),
        "i2" => Data::I32(
            (0..n)
                .map(|i| i16::from_le_bytes(chunk(i)[..2].try_into().unwrap()) as i32)
                .collect(),
        ),
        "u2" => Data::I32(
            (0..n)
                .map(|i| u16::from_le_bytes(chunk(i)[..2].try_into().unwrap()) as i32)
                .collect(),
        ),
        "i4" => Data::I32(
            (0..n)
                .map(|i| i32::from_le_bytes(chunk(i)[..4].try_into().unwrap()))
                .collect(),
        ),
        "u4" => Data::I64(
            (0..n)
                .map(|i| u32::from_le_bytes(chunk(i)[..4].try_into().unwrap()) as i64)
                .collect(),
        ),
        "i8" => Data::I64((0..n).map(|i| i64::from_le_bytes(chunk(i))).collect()),
        "u8" => Data::I64(
            (0..n)
                .map(|i| u64::from_le_bytes(chunk(i)) as i64)
                .collect(),
        ),
        _ => unreachable!("checked above"),
    };
    let t = Tensor::new(h.shape.clone(), data).map_err(|e| NpyError(e.0))?;
    if h.fortran && h.shape.len() > 1 {
        Ok(fortran_to_c(t))
    } else {
        Ok(t)
    }
}

fn fortran_to_c(t: Tensor) -> Tensor {
    // A Fortran-ordered array is the C-ordered array of the reversed shape, transposed.
    let shape = t.shape().to_vec();
    let rank = shape.len();
    let n = t.numel();
    let mut idx = vec![0usize; rank];
    let src = t.to_f64_vec();
    let isrc = t.to_i64_vec();
    let mut fv = vec![0f64; n];
    let mut iv = vec![0i64; n];
    for c in 0..n {
        // C-order index `c` -> multi-index -> Fortran offset.
        let mut rem = c;
        for d in (0..rank).rev() {
            idx[d] = rem % shape[d];
            rem /= shape[d];
        }
        let mut off = 0;
        let mut stride = 1;
        for d in 0..rank {
            off += idx[d] * stride;
            stride *= shape[d];
        }
        fv[c] = src[off];
        iv[c] = isrc[off];
    }
    let dtype = t.dtype();
    if dtype.is_float() {
        Tensor::from_f64_values(dtype, shape, &fv).expect("same count")
    } else {
        Tensor::from_i64_values(dtype, shape, &iv).expect("same count")
    }
}

/// Serializes a tensor as `.npy` (format 1.0, little-endian, C order).
pub fn write_npy_bytes(t: &Tensor) -> Vec<u8> {
    let descr = match t.dtype() {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        // NumPy has no bfloat16: write it widened to float32.
        DType::BF16 => return write_npy_bytes(&t.cast(DType::F32)),
        DType::I8 => "|i1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
    };
    let shape = match t.shape().len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.shape()[0]),
        _ => format!(
            "({})",
            t.shape()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending with a newline.
    let total = 10 + header.len() + 1;
    let pad = (64 - total % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.size_bytes());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match t.data() {
        Data::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::F16(v) | Data::BF16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I8(v) => v.iter().for_each(|x| out.push(*x as u8)),
        Data::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::Bool(v) => v.iter().for_each(|x| out.push(*x as u8)),
    }
    out
}

pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    std::fs::write(path, write_npy_bytes(t))
        .map_err(|e| NpyError(format!("{}: cannot write: {e}", path.display())))
}

/// Writes named arrays into one uncompressed `.npz` archive.
pub fn write_npz(path: &Path, arrays: &[(String, Tensor)]) -> Result<(), NpyError> {
    let werr = |e: &dyn fmt::Display| NpyError(format!("{}: cannot write: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(|e| werr(&e))?;
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    for (name, t) in arrays {
        zip.start_file(format!("{name}.npy"), opts)
            .map_err(|e| werr(&e))?;
        zip.write_all(&write_npy_bytes(t)).map_err(|e| werr(&e))?;
    }
    zip.finish().map_err(|e| werr(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_dtypes() {
        for dt in DType::ALL {
            let t = Tensor::from_f64_values(dt, vec![2, 3], &[0.0, 1.0, -2.0, 3.5, 4.0, -5.25])
                .unwrap();
            let back = read_npy_bytes(&write_npy_bytes(&t)).unwrap();
            if dt == DType::BF16 {
                assert_eq!(back, t.cast(DType::F32));
            } else {
                assert_eq!(back, t, "{dt}");
            }
        }
    }

    /// A mapped file gives the rows `read_npy` gives, in any order, for every dtype that maps;
    /// the rest (Fortran order, big-endian, widened unsigned types) is read instead.
    #[test]
    fn mapped_rows_are_read_rows() {
        let dir = std::env::temp_dir().join(format!("forgec-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vals: Vec<f64> = (0..24).map(|i| i as f64 * 0.5 - 3.0).collect();
        for dt in DType::ALL {
            let t = Tensor::from_f64_values(dt, vec![4, 3, 2], &vals).unwrap();
            let p = dir.join(format!("{dt}.npy"));
            write_npy(&p, &t).unwrap();
            let read = read_npy(&p).unwrap();
            match map_npy(&p).unwrap() {
                Some(m) => {
                    assert_eq!((m.shape(), m.dtype()), (read.shape(), read.dtype()), "{dt}");
                    let mut out = Tensor::scalar_f32(0.0);
                    for rows in [vec![3, 0, 2], vec![1], vec![]] {
                        m.take_rows_into(&rows, &mut out);
                        assert_eq!(out, read.take_rows(&rows), "{dt} {rows:?}");
                    }
                }
                None => panic!("{dt} does not map"),
            }
        }
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n";
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&1.5f32.to_be_bytes());
        std::fs::write(dir.join("big.npy"), &b).unwrap();
        assert!(map_npy(&dir.join("big.npy")).unwrap().is_none());
        // A file shorter than its header says is an error, as read_npy says.
        let mut c = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
        c.extend_from_slice(&(h.len() as u16).to_le_bytes());
        c.extend_from_slice(h.as_bytes());
        c.extend_from_slice(&1.5f32.to_le_bytes());
        std::fs::write(dir.join("short.npy"), &c).unwrap();
        assert!(map_npy(&dir.join("short.npy"))
            .unwrap_err()
            .0
            .contains("truncated data"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scalar_and_fortran() {
        let s = Tensor::scalar_f32(2.5);
        assert_eq!(read_npy_bytes(&write_npy_bytes(&s)).unwrap(), s);
        // A 2x3 Fortran-ordered int32 array [[0,1,2],[3,4,5]] is stored column by column.
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }\n";
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        for v in [0i32, 3, 1, 4, 2, 5] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let t = read_npy_bytes(&b).unwrap();
        assert_eq!(t.to_i64_vec(), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(read_npy_bytes(b"hello").unwrap_err().0.contains("magic"));
        let full = write_npy_bytes(&Tensor::from_f32(vec![4], vec![1.0; 4]).unwrap());
        let e = read_npy_bytes(&full[..full.len() - 3]).unwrap_err();
        assert!(e.0.contains("truncated data"), "{e}");
        let mut huge = b"\x93NUMPY\x01\x00".to_vec();
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }\n";
        huge.extend_from_slice(&(h.len() as u16).to_le_bytes());
        huge.extend_from_slice(h.as_bytes());
        assert!(read_npy_bytes(&huge).unwrap_err().0.contains("too large"));
    }

    #[test]
    fn npz_members_map_unless_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::from_f64_values(
            DType::F32,
            vec![5, 3],
            &(0..15).map(f64::from).collect::<Vec<_>>(),
        )
        .unwrap();
        let b = Tensor::from_f64_values(DType::I64, vec![5], &[4.0, 3.0, 2.0, 1.0, 0.0]).unwrap();
        let p = dir.path().join("d.npz");
        write_npz(
            &p,
            &[("a".to_string(), a.clone()), ("b".to_string(), b.clone())],
        )
        .unwrap();
        let m = map_npz(&p).unwrap().expect("stored members map");
        assert_eq!(m.len(), 2);
        let rows = [4, 0, 2];
        for ((name, mapped), want) in m.iter().zip([&a, &b]) {
            let mut out = Tensor::full(mapped.dtype(), vec![0], 0.0).unwrap();
            mapped.take_rows_into(&rows, &mut out);
            assert_eq!(out, want.take_rows(&rows), "{name}");
        }
        assert_eq!(m[0].0, "a");
        // np.savez_compressed's members are deflated: they are read, not mapped.
        let c = dir.path().join("c.npz");
        {
            use std::io::Write;
            let mut z = zip::ZipWriter::new(std::fs::File::create(&c).unwrap());
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            z.start_file("a.npy", o).unwrap();
            z.write_all(&write_npy_bytes(&a)).unwrap();
            z.finish().unwrap();
        }
        assert!(map_npz(&c).unwrap().is_none());
        assert_eq!(read_npz(&c).unwrap()[0].1, a);
    }
}
