//! Decoding ONNX tensors and types: every storage form, checked before allocating.

use forgec_ir::{Dim, TensorType};
use forgec_runtime::{DType, Data, Tensor};
use onnx_protobuf::{TensorProto, TypeProto};
use std::path::Path;

/// ONNX element type codes.
pub fn dtype_of(code: i32) -> Result<DType, String> {
    Ok(match code {
        1 => DType::F32,
        2 | 4 | 5 | 6 => DType::I32, // uint8, uint16, int16 widen to int32
        3 => DType::I8,
        7 | 12 | 13 => DType::I64, // uint32 and uint64 widen to int64
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        16 => DType::BF16,
        8 => return Err("string tensors are not supported".into()),
        14 | 15 => return Err("complex tensors are not supported".into()),
        17..=20 => return Err("float8 tensors are not supported".into()),
        21 | 22 => return Err("4-bit integer tensors are not supported".into()),
        c => return Err(format!("unknown element type code {c}")),
    })
}

pub fn dtype_name(code: i32) -> &'static str {
    match code {
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        _ => "other",
    }
}

/// The value range of an integer element type code.
pub fn int_range(code: i32) -> Option<(f64, f64)> {
    Some(match code {
        2 => (0.0, 255.0),
        3 => (-128.0, 127.0),
        4 => (0.0, 65535.0),
        5 => (-32768.0, 32767.0),
        6 => (i32::MIN as f64, i32::MAX as f64),
        12 => (0.0, u32::MAX as f64),
        7 => (i64::MIN as f64, i64::MAX as f64),
        13 => (0.0, u64::MAX as f64),
        _ => return None,
    })
}

/// The bit width of an unsigned integer type code.
pub fn unsigned_bits(code: i32) -> Option<u32> {
    match code {
        2 => Some(8),
        4 => Some(16),
        12 => Some(32),
        13 => Some(64),
        _ => None,
    }
}

/// Tensors forgec will hold in memory: 2^31 elements.
pub const MAX_ELEMS: u64 = 1 << 31;

/// The largest constant that import makes by itself (folding, ConstantOfShape, Range): 16M
/// elements (64 MB of f32). Stored tensors are bounded by the file's size instead.
pub const FOLD_MAX_ELEMS: u64 = 1 << 24;

fn le<const N: usize>(b: &[u8], i: usize) -> [u8; N] {
    b[i * N..(i + 1) * N].try_into().expect("length checked")
}

/// Decodes a TensorProto (typed fields, raw_data, or external data under `base_dir`).
pub fn tensor(t: &TensorProto, base_dir: &Path) -> Result<Tensor, String> {
    let code = t.data_type;
    let dtype = dtype_of(code)?;
    let mut n: u64 = 1;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(format!("negative dim {d} in {:?}", t.dims));
        }
        n = n
            .checked_mul(d as u64)
            .filter(|&n| n <= MAX_ELEMS)
            .ok_or_else(|| {
                format!(
                    "dims {:?} hold more than 2^31 elements: refusing to allocate",
                    t.dims
                )
            })?;
        shape.push(d as usize);
    }
    let n = n as usize;
    let external;
    let raw: Option<&[u8]> = if t.data_location.value() == 1 {
        external = read_external(t, base_dir, n, code)?;
        Some(&external)
    } else if !t.raw_data.is_empty() || (n == 0) {
        Some(&t.raw_data)
    } else {
        None
    };
    let width = match code {
        1 | 6 | 12 => 4,
        7 | 11 | 13 => 8,
        10 | 16 | 4 | 5 => 2,
        2 | 3 | 9 => 1,
        _ => 0,
    };
    let count_err = |got: usize| {
        format!(
            "dims {:?} need {n} elements but the data holds {got}",
            t.dims
        )
    };
    let data = if let Some(b) = raw {
        if b.len() != n * width {
            return Err(format!(
                "dims {:?} of {} need {} bytes of raw data but {} are stored",
                t.dims,
                dtype_name(code),
                n * width,
                b.len()
            ));
        }
        match code {
            1 => Data::F32((0..n).map(|i| f32::from_le_bytes(le(b, i))).collect()),
            11 => Data::F64((0..n).map(|i| f64::from_le_bytes(le(b, i))).collect()),
            10 => Data::F16((0..n).map(|i| u16::from_le_bytes(le(b, i))).collect()),
            16 => Data::BF16((0..n).map(|i| u16::from_le_bytes(le(b, i))).collect()),
            3 => Data::I8(b.iter().map(|&x| x as i8).collect()),
            2 => Data::I32(b.iter().map(|&x| x as i32).collect()),
            9 => Data::Bool(b.iter().map(|&x| x != 0).collect()),
            4 => Data::I32(
                (0..n)
                    .map(|i| u16::from_le_bytes(le(b, i)) as i32)
                    .collect(),
            ),
            5 => Data::I32(
                (0..n)
                    .map(|i| i16::from_le_bytes(le(b, i)) as i32)
                    .collect(),
            ),
            6 => Data::I32((0..n).map(|i| i32::from_le_bytes(le(b, i))).collect()),
            12 => Data::I64(
                (0..n)
                    .map(|i| u32::from_le_bytes(le(b, i)) as i64)
                    .collect(),
            ),
            7 => Data::I64((0..n).map(|i| i64::from_le_bytes(le(b, i))).collect()),
            13 => Data::I64(
                (0..n)
                    .map(|i| u64::from_le_bytes(le(b, i)) as i64)
                    .collect(),
            ),
            _ => unreachable!("dtype_of accepted it"),
        }
    } else {
        match code {
            1 => {
                if t.float_data.len() != n {
                    return Err(count_err(t.float_data.len()));
                }
                Data::F32(t.float_data.clone())
            }
            11 => {
                if t.double_data.len() != n {
                    return Err(count_err(t.double_data.len()));
                }
                Data::F64(t.double_data.clone())
            }
            // int32_data also carries int8/uint8/int16/uint16/bool/float16/bfloat16 values.
            2..=6 | 9 | 10 | 16 => {
                if t.int32_data.len() != n {
                    return Err(count_err(t.int32_data.len()));
                }
                let v = &t.int32_data;
                match code {
                    3 => Data::I8(v.iter().map(|&x| x as i8).collect()),
                    9 => Data::Bool(v.iter().map(|&x| x != 0).collect()),
                    10 => Data::F16(v.iter().map(|&x| x as u16).collect()),
                    16 => Data::BF16(v.iter().map(|&x| x as u16).collect()),
                    _ => Data::I32(v.clone()),
                }
            }
            7 => {
                if t.int64_data.len() != n {
                    return Err(count_err(t.int64_data.len()));
                }
                Data::I64(t.int64_data.clone())
            }
            12 | 13 => {
                if t.uint64_data.len() != n {
                    return Err(count_err(t.uint64_data.len()));
                }
                Data::I64(t.uint64_data.iter().map(|&x| x as i64).collect())
            }
            _ => unreachable!("dtype_of accepted it"),
        }
    };
    debug_assert_eq!(data.dtype(), dtype);
    Tensor::new(shape, data).map_err(|e| e.0)
}

fn read_external(t: &TensorProto, base_dir: &Path, n: usize, code: i32) -> Result<Vec<u8>, String> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    let loc = get("location").ok_or("external data without a `location`")?;
    let rel = Path::new(&loc);
    // Refuse paths that leave the model's directory.
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "external data path `{loc}` leaves the model's directory: refused (keep the data file next to the model)"
        ));
    }
    let path = base_dir.join(rel);
    let offset: u64 = get("offset")
        .map(|s| s.parse().map_err(|_| format!("bad offset `{s}`")))
        .transpose()?
        .unwrap_or(0);
    let width = match code {
        1 | 6 | 12 => 4,
        7 | 11 | 13 => 8,
        10 | 16 | 4 | 5 => 2,
        _ => 1,
    };
    let want = (n as u64).saturating_mul(width);
    let length: u64 = get("length")
        .map(|s| s.parse().map_err(|_| format!("bad length `{s}`")))
        .transpose()?
        .unwrap_or(want);
    if length != want {
        return Err(format!(
            "external data {loc}: length {length} bytes, but the tensor's {n} elements need {want}"
        ));
    }
    let mut f = open_confined(base_dir, rel)
        .map_err(|e| format!("external data file {}: {e}", path.display()))?;
    let size = f
        .metadata()
        .map_err(|e| format!("external data file {}: {e}", path.display()))?
        .len();
    offset
        .checked_add(length)
        .filter(|&e| e <= size)
        .ok_or_else(|| {
            format!(
                "external data file {} has {size} bytes, fewer than offset {offset} + length {length}",
                path.display(),
            )
        })?;
    use std::io::{Read, Seek, SeekFrom};
    let mut out = vec![0u8; length as usize];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut out))
        .map_err(|e| format!("external data file {}: {e}", path.display()))?;
    Ok(out)
}

/// Opens `rel` below `base` without following a symbolic link anywhere on the way (a link
/// could point out of the model's directory) and only if it is a regular file (a FIFO would
/// block forever, a device file would be read without end).
pub fn open_confined(base: &Path, rel: &Path) -> Result<std::fs::File, String> {
    use std::ffi::CString;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Component;
    let cstr = |s: &std::ffi::OsStr| {
        CString::new(s.as_bytes()).map_err(|_| "a path with a NUL byte: refused".to_string())
    };
    let base_c = cstr(if base.as_os_str().is_empty() {
        std::ffi::OsStr::new(".")
    } else {
        base.as_os_str()
    })?;
    let flags_dir = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: plain syscalls on NUL-terminated paths; every fd is closed or owned below.
    let mut dir = unsafe { libc::open(base_c.as_ptr(), flags_dir) };
    if dir < 0 {
        return Err(format!(
            "cannot open the model's directory: {}",
            std::io::Error::last_os_error()
        ));
    }
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(Ok(s)),
            Component::CurDir => None,
            _ => Some(Err(())),
        })
        .collect::<Result<_, _>>()
        .map_err(|_| {
            unsafe { libc::close(dir) };
            "the path leaves the model's directory: refused".to_string()
        })?;
    if parts.is_empty() {
        unsafe { libc::close(dir) };
        return Err("an empty path".into());
    }
    for (k, part) in parts.iter().enumerate() {
        let c = match cstr(part) {
            Ok(c) => c,
            Err(e) => {
                unsafe { libc::close(dir) };
                return Err(e);
            }
        };
        let last = k + 1 == parts.len();
        let flags = if last {
            // O_NONBLOCK: opening a FIFO must not wait for a writer.
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC
        } else {
            flags_dir | libc::O_NOFOLLOW
        };
        let fd = unsafe { libc::openat(dir, c.as_ptr(), flags) };
        let err = std::io::Error::last_os_error();
        unsafe { libc::close(dir) };
        if fd < 0 {
            return Err(match err.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => format!(
                    "`{}` is a symbolic link (or not a directory): refused, as it may point out of the model's directory (copy the data file there)",
                    part.to_string_lossy()
                ),
                _ => err.to_string(),
            });
        }
        dir = fd;
    }
    // SAFETY: `dir` is an open descriptor that nothing else owns.
    let f = unsafe { std::fs::File::from_raw_fd(dir) };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file (a FIFO, device or directory): refused".into());
    }
    Ok(f)
}

/// A value's declared tensor type. Unnamed dims become fresh symbols from `fresh`.
pub fn value_type(tp: &TypeProto, fresh: &mut dyn FnMut() -> String) -> Result<TensorType, String> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value as D;
    use onnx_protobuf::type_proto::Value;
    let Some(Value::TensorType(t)) = &tp.value else {
        return Err(
            "only tensor inputs and outputs are supported (not sequences, maps or optionals)"
                .into(),
        );
    };
    let dtype = dtype_of(t.elem_type)?;
    let Some(shape) = t.shape.as_ref() else {
        return Err("the input has no shape: forgec needs the rank of every graph input".into());
    };
    let dims = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(D::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
            Some(D::DimParam(p)) if !p.is_empty() => Dim::Sym(sanitize(p)),
            _ => Dim::Sym(fresh()),
        })
        .collect();
    Ok(TensorType::new(dtype, dims))
}

/// Symbols must be plain identifiers in the text form.
pub fn sanitize(p: &str) -> String {
    let mut s: String = p
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}
