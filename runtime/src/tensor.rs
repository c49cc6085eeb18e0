use std::fmt;

/// Element types forgec knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I8,
    I32,
    I64,
    Bool,
}

impl DType {
    pub const ALL: [DType; 8] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::I32,
        DType::I64,
        DType::Bool,
    ];

    /// The short name used in forgec's IR text (`f32`, `i64`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Parses the dtype names Keras and NumPy use (`float32`, `int64`, ...).
    pub fn from_numpy_name(s: &str) -> Option<DType> {
        Some(match s {
            "float32" => DType::F32,
            "float64" => DType::F64,
            "float16" => DType::F16,
            "bfloat16" => DType::BF16,
            "int8" => DType::I8,
            "int32" => DType::I32,
            "int64" => DType::I64,
            "bool" => DType::Bool,
            _ => return DType::from_name(s),
        })
    }

    pub fn numpy_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I8 => "int8",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::Bool => "bool",
        }
    }

    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::I8 | DType::I32 | DType::I64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Typed element storage. f16 and bf16 are kept as their raw bits.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<u16>),
    BF16(Vec<u16>),
    I8(Vec<i8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl Data {
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::I8(_) => DType::I8,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::F16(v) | Data::BF16(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorError(pub String);

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TensorError {}

/// A dense, row-major host tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Data,
}

/// Number of elements of `shape`, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Tensor, TensorError> {
        let n = checked_numel(&shape)
            .ok_or_else(|| TensorError(format!("shape {shape:?} has too many elements")))?;
        if n != data.len() {
            return Err(TensorError(format!(
                "shape {:?} needs {} elements but {} were given",
                shape,
                n,
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor {
            shape: vec![],
            data: Data::F32(vec![v]),
        }
    }

    pub fn from_f32(shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, Data::F32(v))
    }

    /// Builds a tensor of `dtype` from f64 values, rounding to the element type.
    pub fn from_f64_values(
        dtype: DType,
        shape: Vec<usize>,
        v: &[f64],
    ) -> Result<Tensor, TensorError> {
        let data = match dtype {
            DType::F32 => Data::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F64 => Data::F64(v.to_vec()),
            // Half types round through f32, as half-precision kernels (and NumPy) compute in f32
            // and round the result: rounding f64 straight to 16 bits can differ at ties.
            DType::F16 => Data::F16(
                v.iter()
                    .map(|&x| half::f16::from_f32(x as f32).to_bits())
                    .collect(),
            ),
            DType::BF16 => Data::BF16(
                v.iter()
                    .map(|&x| half::bf16::from_f32(x as f32).to_bits())
                    .collect(),
            ),
            DType::I8 => Data::I8(v.iter().map(|&x| x as i8).collect()),
            DType::I32 => Data::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I64 => Data::I64(v.iter().map(|&x| x as i64).collect()),
            DType::Bool => Data::Bool(v.iter().map(|&x| x != 0.0).collect()),
        };
        Tensor::new(shape, data)
    }

    /// Builds a tensor of `dtype` from i64 values (wrapping to narrower integer types).
    pub fn from_i64_values(
        dtype: DType,
        shape: Vec<usize>,
        v: &[i64],
    ) -> Result<Tensor, TensorError> {
        let data = match dtype {
            DType::I8 => Data::I8(v.iter().map(|&x| x as i8).collect()),
            DType::I32 => Data::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I64 => Data::I64(v.to_vec()),
            DType::Bool => Data::Bool(v.iter().map(|&x| x != 0).collect()),
            _ => {
                let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                return Tensor::from_f64_values(dtype, shape, &f);
            }
        };
        Tensor::new(shape, data)
    }

    pub fn full(dtype: DType, shape: Vec<usize>, value: f64) -> Result<Tensor, TensorError> {
        let n = checked_numel(&shape)
            .ok_or_else(|| TensorError(format!("shape {shape:?} has too many elements")))?;
        Tensor::from_f64_values(dtype, shape, &vec![value; n])
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    pub fn into_data(self) -> Data {
        self.data
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype().size_bytes()
    }

    /// The samples `rows` (indices into the leading dim, in that order) as a new tensor: a
    /// batch drawn from a dataset. Panics on a rank-0 tensor or an index out of range.
    pub fn take_rows(&self, rows: &[usize]) -> Tensor {
        let per: usize = self.shape[1..].iter().product();
        fn take<T: Copy>(v: &[T], rows: &[usize], per: usize) -> Vec<T> {
            let mut out = Vec::with_capacity(rows.len() * per);
            for &r in rows {
                out.extend_from_slice(&v[r * per..(r + 1) * per]);
            }
            out
        }
        let data = match &self.data {
            Data::F32(v) => Data::F32(take(v, rows, per)),
            Data::F64(v) => Data::F64(take(v, rows, per)),
            Data::F16(v) => Data::F16(take(v, rows, per)),
            Data::BF16(v) => Data::BF16(take(v, rows, per)),
            Data::I8(v) => Data::I8(take(v, rows, per)),
            Data::I32(v) => Data::I32(take(v, rows, per)),
            Data::I64(v) => Data::I64(take(v, rows, per)),
            Data::Bool(v) => Data::Bool(take(v, rows, per)),
        };
        let mut shape = self.shape.clone();
        shape[0] = rows.len();
        Tensor { shape, data }
    }

    /// `take_rows` into `out`, reusing its storage (no allocation once it is large enough);
    /// `out` takes this tensor's dtype.
    pub fn take_rows_into(&self, rows: &[usize], out: &mut Tensor) {
        let per: usize = self.shape[1..].iter().product();
        fn take<T: Copy>(v: &[T], rows: &[usize], per: usize, out: &mut Vec<T>) {
            out.clear();
            for &r in rows {
                out.extend_from_slice(&v[r * per..(r + 1) * per]);
            }
        }
        macro_rules! into {
            ($var:ident, $v:expr) => {{
                if !matches!(out.data, Data::$var(_)) {
                    out.data = Data::$var(Vec::new());
                }
                let Data::$var(o) = &mut out.data else {
                    unreachable!()
                };
                take($v, rows, per, o);
            }};
        }
        match &self.data {
            Data::F32(v) => into!(F32, v),
            Data::F64(v) => into!(F64, v),
            Data::F16(v) => into!(F16, v),
            Data::BF16(v) => into!(BF16, v),
            Data::I8(v) => into!(I8, v),
            Data::I32(v) => into!(I32, v),
            Data::I64(v) => into!(I64, v),
            Data::Bool(v) => into!(Bool, v),
        }
        out.shape.clear();
        out.shape.extend_from_slice(&self.shape);
        out.shape[0] = rows.len();
    }

    /// Same data, new shape with the same element count.
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, self.data)
    }

    /// Every element as f64 (exact for all dtypes but i64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F64(v) => v.clone(),
            Data::F16(v) => v
                .iter()
                .map(|&b| half::f16::from_bits(b).to_f64())
                .collect(),
            Data::BF16(v) => v
                .iter()
                .map(|&b| half::bf16::from_bits(b).to_f64())
                .collect(),
            Data::I8(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }

    /// Every element as i64 (floats truncate toward zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            Data::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I64(v) => v.clone(),
            Data::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            _ => self.to_f64_vec().into_iter().map(|x| x as i64).collect(),
        }
    }

    /// Converts to another dtype (floats to ints truncate; anything to bool is `!= 0`).
    pub fn cast(&self, to: DType) -> Tensor {
        if to == self.dtype() {
            return self.clone();
        }
        let shape = self.shape.clone();
        let t = if self.dtype().is_float() || to.is_float() {
            Tensor::from_f64_values(to, shape, &self.to_f64_vec())
        } else {
            Tensor::from_i64_values(to, shape, &self.to_i64_vec())
        };
        t.expect("cast keeps the element count")
    }

    /// Largest absolute difference to `other`, relative to `other`'s largest magnitude.
    /// Shapes must match.
    pub fn max_rel_diff(&self, other: &Tensor) -> Result<f64, TensorError> {
        if self.shape != other.shape {
            return Err(TensorError(format!(
                "shapes differ: {:?} vs {:?}",
                self.shape, other.shape
            )));
        }
        let a = self.to_f64_vec();
        let b = other.to_f64_vec();
        let scale = b
            .iter()
            .fold(0.0f64, |m, x| m.max(x.abs()))
            .max(f64::MIN_POSITIVE);
        let mut worst = 0.0f64;
        for (x, y) in a.iter().zip(&b) {
            let d = (x - y).abs();
            if d.is_nan() {
                return Ok(f64::INFINITY);
            }
            worst = worst.max(d);
        }
        Ok(worst / scale)
    }
}
