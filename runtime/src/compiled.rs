//! Loading and running a library made by `forgec compile` (graph mode: one call runs the whole
//! model). The library describes itself (`NAME_input_shape`, `NAME_input_dtype`, ...), so
//! nothing but the library file and its name is needed.

use crate::tensor::{DType, Tensor};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;

type Create = unsafe extern "C" fn() -> *mut c_void;
type Destroy = unsafe extern "C" fn(*mut c_void);
type LastError = unsafe extern "C" fn(*const c_void) -> *const c_char;
type RunV =
    unsafe extern "C" fn(*mut c_void, i64, *const *const c_void, *const *mut c_void) -> c_int;
type Shape = unsafe extern "C" fn(c_int, i64, *mut i64) -> c_int;
type Dtype = unsafe extern "C" fn(c_int) -> c_int;

/// A compiled model, with one context of its own: the context keeps the model's scratch
/// buffers between calls, so calls after the first allocate nothing. Calls from several threads
/// take turns on it.
pub struct CompiledModel {
    ctx: std::sync::Mutex<Ctx>,
    api: Api,
    lib: libloading::Library,
    name: String,
    pub num_inputs: usize,
    pub num_outputs: usize,
}

struct Ctx(*mut c_void);

/// The functions every call uses, looked up once at load ([0] inputs, [1] outputs).
#[derive(Clone, Copy)]
struct Api {
    run_v: RunV,
    last_error: LastError,
    shape: [Shape; 2],
    dtype: [Dtype; 2],
}

// The context is only used under the mutex, by one thread at a time.
unsafe impl Send for Ctx {}

impl Drop for CompiledModel {
    fn drop(&mut self) {
        let ctx = self
            .ctx
            .get_mut()
            .map(|c| c.0)
            .unwrap_or(std::ptr::null_mut());
        if let (false, Ok(destroy)) = (ctx.is_null(), self.sym::<Destroy>("destroy")) {
            unsafe { destroy(ctx) };
        }
    }
}

/// `NAME_what` in `lib`.
fn lookup(lib: &libloading::Library, name: &str, what: &str) -> Result<*const c_void, String> {
    let s = format!("{name}_{what}\0");
    unsafe { lib.get::<*const c_void>(s.as_bytes()) }
        .map(|f| *f)
        .map_err(|e| format!("the library has no `{name}_{what}`: {e}"))
}

fn dtype(code: c_int) -> Option<DType> {
    Some(match code {
        0 => DType::F32,
        1 => DType::F64,
        2 => DType::F16,
        3 => DType::BF16,
        4 => DType::I8,
        5 => DType::I32,
        6 => DType::I64,
        7 => DType::Bool,
        _ => return None,
    })
}

impl CompiledModel {
    /// Loads `libNAME.so`.
    pub fn load(path: &Path, name: &str) -> Result<CompiledModel, String> {
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("{}: cannot load: {e}", path.display()))?;
        let sym = |what: &str| -> Result<*const c_void, String> { lookup(&lib, name, what) };
        // Function pointers from the library, valid as long as `lib` (a field) is loaded.
        let api = unsafe {
            Api {
                run_v: std::mem::transmute::<*const c_void, RunV>(sym("run_v")?),
                last_error: std::mem::transmute::<*const c_void, LastError>(sym("last_error")?),
                shape: [
                    std::mem::transmute::<*const c_void, Shape>(sym("input_shape")?),
                    std::mem::transmute::<*const c_void, Shape>(sym("output_shape")?),
                ],
                dtype: [
                    std::mem::transmute::<*const c_void, Dtype>(sym("input_dtype")?),
                    std::mem::transmute::<*const c_void, Dtype>(sym("output_dtype")?),
                ],
            }
        };
        let mut m = CompiledModel {
            ctx: std::sync::Mutex::new(Ctx(std::ptr::null_mut())),
            api,
            lib,
            name: name.to_string(),
            num_inputs: 0,
            num_outputs: 0,
        };
        let create: Create = m.sym("create")?;
        let ctx = unsafe { create() };
        if ctx.is_null() {
            return Err(
                "the model could not make its context: out of memory, or the threads it was compiled to start (forgec compile --threads) could not be started"
                    .into(),
            );
        }
        m.ctx = std::sync::Mutex::new(Ctx(ctx));
        let [shape, oshape] = m.api.shape;
        let mut dims = [0i64; 16];
        m.num_inputs = (0..)
            .take_while(|&i| unsafe { shape(i, 1, dims.as_mut_ptr()) } >= 0)
            .count();
        m.num_outputs = (0..)
            .take_while(|&i| unsafe { oshape(i, 1, dims.as_mut_ptr()) } >= 0)
            .count();
        Ok(m)
    }

    fn sym<T: Copy>(&self, what: &str) -> Result<T, String> {
        let p = lookup(&self.lib, &self.name, what)?;
        // `T` is the function pointer type of `what`, as declared in NAME.h.
        Ok(unsafe { std::mem::transmute_copy::<*const c_void, T>(&p) })
    }

    fn shape_of(&self, output: bool, i: usize, batch: i64) -> Result<(Vec<usize>, DType), String> {
        let (f, d) = (
            self.api.shape[output as usize],
            self.api.dtype[output as usize],
        );
        let mut dims = [0i64; 16];
        let r = unsafe { f(i as c_int, batch, dims.as_mut_ptr()) };
        if !(0..=16).contains(&r) {
            return Err(format!(
                "the library reports no shape for {} {i}",
                if output { "output" } else { "input" }
            ));
        }
        let dt = dtype(unsafe { d(i as c_int) }).ok_or("unknown element type")?;
        Ok((dims[..r as usize].iter().map(|&x| x as usize).collect(), dt))
    }

    /// Runs later calls on `threads` threads (the batch is cut into slices). An error, with the
    /// library's reason, when the model's samples cannot be computed apart.
    pub fn set_threads(&self, threads: usize) -> Result<(), String> {
        type SetThreads = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
        let set: SetThreads = self.sym("set_threads")?;
        let last: LastError = self.sym("last_error")?;
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        let n = c_int::try_from(threads).unwrap_or(c_int::MAX);
        let rc = unsafe { set(guard.0, n) };
        if rc != 0 {
            let msg = unsafe { CStr::from_ptr(last(guard.0)) };
            return Err(msg.to_string_lossy().into_owned());
        }
        Ok(())
    }

    /// The CPU the running code was compiled for (`NAME_cpu`): an LLVM CPU name, or the x86-64
    /// level a portable library picked for this machine. None for a library older than it.
    pub fn cpu(&self) -> Option<String> {
        type Cpu = unsafe extern "C" fn() -> *const std::ffi::c_char;
        let f: Cpu = self.sym("cpu").ok()?;
        let p = unsafe { f() };
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// The threads the context's runs use (`forgec compile --threads`, then `set_threads`).
    pub fn threads(&self) -> Result<usize, String> {
        type Threads = unsafe extern "C" fn(*const c_void) -> c_int;
        let get: Threads = self.sym("threads")?;
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        Ok(unsafe { get(guard.0) }.max(0) as usize)
    }

    /// Runs on `inputs` (in order); the batch is the first dim of the first input.
    pub fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
        let mut outs = self.output_buffers(Self::batch_of(inputs))?;
        self.run_with(inputs, &mut outs)?;
        outs.into_iter()
            .map(|(shape, dt, b)| from_bytes(shape, dt, &b))
            .collect()
    }

    fn batch_of(inputs: &[&Tensor]) -> i64 {
        inputs
            .first()
            .and_then(|t| t.shape().first().copied())
            .unwrap_or(1) as i64
    }

    /// The outputs' shapes, dtypes and zeroed buffers for a call at `batch` (see `run_with`).
    pub fn output_buffers(&self, batch: i64) -> Result<Vec<OutputBuffer>, String> {
        let mut outs = Vec::new();
        for i in 0..self.num_outputs {
            let (shape, dt) = self.shape_of(true, i, batch)?;
            let n = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= 1 << 31)
                .ok_or_else(|| {
                    format!("output {i} would have shape {shape:?}, over 2^31 elements")
                })?;
            outs.push((shape, dt, vec![0u8; n * dt.size_bytes()]));
        }
        Ok(outs)
    }

    /// Runs on `inputs` into `outs` (from `output_buffers` for the same batch), allocating
    /// nothing: one call of the library, as an application makes it (`forgec bench` times this).
    pub fn run_with(&self, inputs: &[&Tensor], outs: &mut [OutputBuffer]) -> Result<(), String> {
        if inputs.len() != self.num_inputs {
            return Err(format!(
                "the model takes {} inputs, got {}",
                self.num_inputs,
                inputs.len()
            ));
        }
        let batch = Self::batch_of(inputs);
        let mut in_ptrs: Vec<*const c_void> = Vec::new();
        for (i, t) in inputs.iter().enumerate() {
            let (shape, dt) = self.shape_of(false, i, batch)?;
            if t.shape() != shape.as_slice() || t.dtype() != dt {
                return Err(format!(
                    "input {i} must be {dt} {shape:?} for batch {batch}, got {} {:?}",
                    t.dtype(),
                    t.shape()
                ));
            }
            in_ptrs.push(data_ptr(t));
        }
        if outs.len() != self.num_outputs {
            return Err(format!(
                "the model has {} outputs, got {} buffers",
                self.num_outputs,
                outs.len()
            ));
        }
        for (i, o) in outs.iter().enumerate() {
            let (shape, dt) = self.shape_of(true, i, batch)?;
            let bytes = shape.iter().product::<usize>() * dt.size_bytes();
            if o.0 != shape || o.1 != dt || o.2.len() != bytes {
                return Err(format!(
                    "output buffer {i} must be {dt} {shape:?} for batch {batch} (see output_buffers)"
                ));
            }
        }
        let (last, run) = (self.api.last_error, self.api.run_v);
        let out_ptrs: Vec<*mut c_void> = outs
            .iter_mut()
            .map(|o| o.2.as_mut_ptr() as *mut c_void)
            .collect();
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        unsafe {
            let rc = run(guard.0, batch, in_ptrs.as_ptr(), out_ptrs.as_ptr());
            let msg = CStr::from_ptr(last(guard.0)).to_string_lossy().into_owned();
            drop(guard);
            if rc != 0 {
                return Err(format!("the compiled model failed ({rc}): {msg}"));
            }
        }
        Ok(())
    }
}

/// An output's shape, dtype and bytes, which `CompiledModel::run_with` writes.
pub type OutputBuffer = (Vec<usize>, DType, Vec<u8>);

/// The tensor's elements, in place: the C API takes them as they are laid out in memory (a Rust
/// `bool` is one byte, 0 or 1, as the C API's booleans).
fn data_ptr(t: &Tensor) -> *const c_void {
    use crate::tensor::Data;
    match t.data() {
        Data::F32(v) => v.as_ptr() as _,
        Data::F64(v) => v.as_ptr() as _,
        Data::F16(v) | Data::BF16(v) => v.as_ptr() as _,
        Data::I8(v) => v.as_ptr() as _,
        Data::I32(v) => v.as_ptr() as _,
        Data::I64(v) => v.as_ptr() as _,
        Data::Bool(v) => v.as_ptr() as _,
    }
}

fn from_bytes(shape: Vec<usize>, dt: DType, b: &[u8]) -> Result<Tensor, String> {
    use crate::tensor::Data;
    let w = dt.size_bytes();
    let n = b.len() / w;
    let at = |i: usize| &b[i * w..(i + 1) * w];
    let data = match dt {
        DType::F32 => Data::F32(
            (0..n)
                .map(|i| f32::from_ne_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        DType::F64 => Data::F64(
            (0..n)
                .map(|i| f64::from_ne_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        DType::F16 => Data::F16(
            (0..n)
                .map(|i| u16::from_ne_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        DType::BF16 => Data::BF16(
            (0..n)
                .map(|i| u16::from_ne_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        DType::I8 => Data::I8(b.iter().map(|&x| x as i8).collect()),
        DType::I32 => Data::I32(
            (0..n)
                .map(|i| i32::from_ne_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        DType::I64 => Data::I64(
            (0..n)
                .map(|i| i64::from_ne_bytes(at(i).try_into().unwrap()))
                .collect(),
        ),
        DType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
    };
    Tensor::new(shape, data).map_err(|e| e.0)
}

/// A failed call of a training library: its status code and `NAME_train_last_error`.
#[derive(Debug, Clone)]
pub struct CallError {
    pub code: i32,
    pub message: String,
}

impl CallError {
    /// `NAME_ERR_NONFINITE`: the step's loss or update was not finite; the state is as before.
    pub const NONFINITE: i32 = 7;
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// `NAME_train_step_weighted` and `NAME_train_evaluate_weighted`: context, batch, inputs,
/// labels, sample weights (NULL: ones), loss, metrics.
type TrainData = unsafe extern "C" fn(
    *mut c_void,
    i64,
    *const *const c_void,
    *const *const c_void,
    *const *const c_void,
    *mut f64,
    *mut f64,
) -> c_int;
type TrainPredict =
    unsafe extern "C" fn(*mut c_void, i64, *const *const c_void, *const *mut c_void) -> c_int;

/// A state tensor of a training library: name, byte offset in the state blob, shape, dtype.
#[derive(Clone, Debug)]
pub struct StateTensor {
    pub name: String,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// A library made by `forgec compile --train`, with one training context of its own (its
/// state: weights, optimizer slots, step count, learning rate). Calls from several threads take
/// `NAME_train_gradient_norm`.
type GradientNorm = unsafe extern "C" fn(*const c_void) -> f64;

/// turns on it.
pub struct Trainer {
    ctx: std::sync::Mutex<Ctx>,
    step: TrainData,
    evaluate: TrainData,
    predict: TrainPredict,
    last_error: LastError,
    /// `NAME_train_label_shape` / `_dtype`, looked up once (every step checks the labels).
    label_shape: Shape,
    label_dtype: Dtype,
    /// `NAME_train_gradient_norm`, absent from libraries older than it.
    gradient_norm: Option<GradientNorm>,
    model: CompiledModel,
    pub num_labels: usize,
    pub state: Vec<StateTensor>,
    /// The metrics every step and evaluation computes, by name.
    pub metrics: Vec<String>,
}

impl Drop for Trainer {
    fn drop(&mut self) {
        let ctx = self
            .ctx
            .get_mut()
            .map(|c| c.0)
            .unwrap_or(std::ptr::null_mut());
        if let (false, Ok(destroy)) = (ctx.is_null(), self.model.sym::<Destroy>("train_destroy")) {
            unsafe { destroy(ctx) };
        }
    }
}

impl Trainer {
    /// Loads `libNAME.so` (made with `--train`) and makes a training context: the weights of
    /// the model file it was compiled from, zero slots, step 0.
    pub fn load(path: &Path, name: &str) -> Result<Trainer, String> {
        let model = CompiledModel::load(path, name)?;
        let create: Create = model.sym("train_create")?;
        type Count = unsafe extern "C" fn(c_int, i64, *mut i64) -> c_int;
        type Tensor_ = unsafe extern "C" fn(c_int, *mut *const c_char, *mut i64, *mut i64) -> c_int;
        let label_shape: Count = model.sym("train_label_shape")?;
        let state_tensor: Tensor_ = model.sym("train_state_tensor")?;
        let state_dtype: Dtype = model.sym("train_state_dtype")?;
        let mut dims = [0i64; 16];
        let num_labels = (0..)
            .take_while(|&i| unsafe { label_shape(i, 1, dims.as_mut_ptr()) } >= 0)
            .count();
        let mut state = Vec::new();
        for i in 0.. {
            let (mut name, mut off) = (std::ptr::null(), 0i64);
            let r = unsafe { state_tensor(i, &mut name, &mut off, dims.as_mut_ptr()) };
            if r < 0 {
                break;
            }
            let dt = dtype(unsafe { state_dtype(i) }).ok_or("unknown state element type")?;
            state.push(StateTensor {
                name: unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned(),
                offset: off as usize,
                shape: dims[..r as usize].iter().map(|&d| d as usize).collect(),
                dtype: dt,
            });
        }
        type Name = unsafe extern "C" fn(c_int) -> *const c_char;
        let metric_name: Name = model.sym("train_metric_name")?;
        let mut metrics = Vec::new();
        for i in 0.. {
            let p = unsafe { metric_name(i) };
            if p.is_null() {
                break;
            }
            metrics.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
        }
        let ctx = unsafe { create() };
        if ctx.is_null() {
            return Err("the training context could not be made: out of memory, or its threads could not be started".into());
        }
        Ok(Trainer {
            ctx: std::sync::Mutex::new(Ctx(ctx)),
            step: model.sym("train_step_weighted")?,
            evaluate: model.sym("train_evaluate_weighted")?,
            predict: model.sym("train_predict")?,
            last_error: model.sym("train_last_error")?,
            label_shape: model.sym("train_label_shape")?,
            label_dtype: model.sym("train_label_dtype")?,
            gradient_norm: model.sym("train_gradient_norm").ok(),
            model,
            num_labels,
            state,
            metrics,
        })
    }

    fn fail(&self, ctx: *mut c_void, rc: c_int) -> CallError {
        let msg = unsafe { CStr::from_ptr((self.last_error)(ctx)) };
        CallError {
            code: rc,
            message: msg.to_string_lossy().into_owned(),
        }
    }

    fn plain(e: String) -> CallError {
        CallError {
            code: 3,
            message: e,
        }
    }

    /// The inputs and labels checked against the library's shapes for their batch.
    fn data_ptrs(
        &self,
        inputs: &[&Tensor],
        labels: Option<&[&Tensor]>,
    ) -> Result<(i64, Vec<*const c_void>, Vec<*const c_void>), CallError> {
        let batch = CompiledModel::batch_of(inputs);
        if inputs.len() != self.model.num_inputs {
            return Err(Self::plain(format!(
                "the model takes {} inputs, got {}",
                self.model.num_inputs,
                inputs.len()
            )));
        }
        let mut ins = Vec::new();
        for (i, t) in inputs.iter().enumerate() {
            let (shape, dt) = self.model.shape_of(false, i, batch).map_err(Self::plain)?;
            if t.shape() != shape.as_slice() || t.dtype() != dt {
                return Err(Self::plain(format!(
                    "input {i} must be {dt} {shape:?} for batch {batch}, got {} {:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            ins.push(data_ptr(t));
        }
        let mut ls = Vec::new();
        if let Some(labels) = labels {
            let (shape, dtype_of) = (self.label_shape, self.label_dtype);
            if labels.len() != self.num_labels {
                return Err(Self::plain(format!(
                    "the model takes {} labels, got {}",
                    self.num_labels,
                    labels.len()
                )));
            }
            for (i, t) in labels.iter().enumerate() {
                let mut dims = [0i64; 16];
                let r = unsafe { shape(i as c_int, batch, dims.as_mut_ptr()) };
                let want: Vec<usize> = dims[..r.max(0) as usize]
                    .iter()
                    .map(|&d| d as usize)
                    .collect();
                let dt = dtype(unsafe { dtype_of(i as c_int) });
                if t.shape() != want.as_slice() || Some(t.dtype()) != dt {
                    return Err(Self::plain(format!(
                        "labels {i} must be {} {want:?} for batch {batch}, got {} {:?}",
                        dt.map_or("?".into(), |d| d.to_string()),
                        t.dtype(),
                        t.shape()
                    )));
                }
                ls.push(data_ptr(t));
            }
        }
        Ok((batch, ins, ls))
    }

    /// One training step; returns the loss (before the update) and the metrics.
    pub fn step(
        &self,
        inputs: &[&Tensor],
        labels: &[&Tensor],
    ) -> Result<(f64, Vec<f64>), CallError> {
        self.call(self.step, inputs, labels, None)
    }

    /// One training step with Keras's sample weights: one `[batch]` tensor per output, of
    /// the weights' float type.
    pub fn step_weighted(
        &self,
        inputs: &[&Tensor],
        labels: &[&Tensor],
        sample_weights: &[&Tensor],
    ) -> Result<(f64, Vec<f64>), CallError> {
        self.call(self.step, inputs, labels, Some(sample_weights))
    }

    /// The loss and metrics of the current weights, without an update.
    pub fn evaluate(
        &self,
        inputs: &[&Tensor],
        labels: &[&Tensor],
    ) -> Result<(f64, Vec<f64>), CallError> {
        self.call(self.evaluate, inputs, labels, None)
    }

    /// `evaluate` with sample weights, as `step_weighted`.
    pub fn evaluate_weighted(
        &self,
        inputs: &[&Tensor],
        labels: &[&Tensor],
        sample_weights: &[&Tensor],
    ) -> Result<(f64, Vec<f64>), CallError> {
        self.call(self.evaluate, inputs, labels, Some(sample_weights))
    }

    fn call(
        &self,
        f: TrainData,
        inputs: &[&Tensor],
        labels: &[&Tensor],
        sample_weights: Option<&[&Tensor]>,
    ) -> Result<(f64, Vec<f64>), CallError> {
        let (batch, ins, ls) = self.data_ptrs(inputs, Some(labels))?;
        let mut sw: Vec<*const c_void> = Vec::new();
        if let Some(ws) = sample_weights {
            let dt = self.state.first().map_or(DType::F32, |s| s.dtype);
            if ws.len() != self.num_labels {
                return Err(Self::plain(format!(
                    "the model takes {} sample weight arrays (one per output), got {}",
                    self.num_labels,
                    ws.len()
                )));
            }
            for (i, t) in ws.iter().enumerate() {
                if t.shape() != [batch as usize] || t.dtype() != dt {
                    return Err(Self::plain(format!(
                        "sample weights {i} must be {dt} [{batch}], got {} {:?}",
                        t.dtype(),
                        t.shape()
                    )));
                }
                sw.push(data_ptr(t));
            }
        }
        let swp = if sample_weights.is_some() {
            sw.as_ptr()
        } else {
            std::ptr::null()
        };
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        let mut loss = 0.0f64;
        let mut metrics = vec![0.0f64; self.metrics.len()];
        let rc = unsafe {
            f(
                guard.0,
                batch,
                ins.as_ptr(),
                ls.as_ptr(),
                swp,
                &mut loss,
                metrics.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(self.fail(guard.0, rc));
        }
        Ok((loss, metrics))
    }

    /// The model's outputs with the current weights.
    pub fn predict(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, CallError> {
        let (batch, ins, _) = self.data_ptrs(inputs, None)?;
        let mut outs = self.model.output_buffers(batch).map_err(Self::plain)?;
        let ptrs: Vec<*mut c_void> = outs
            .iter_mut()
            .map(|o| o.2.as_mut_ptr() as *mut c_void)
            .collect();
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        let rc = unsafe { (self.predict)(guard.0, batch, ins.as_ptr(), ptrs.as_ptr()) };
        if rc != 0 {
            return Err(self.fail(guard.0, rc));
        }
        drop(guard);
        outs.into_iter()
            .map(|(s, dt, b)| from_bytes(s, dt, &b).map_err(Self::plain))
            .collect()
    }

    /// The whole state as the library lays it out (`NAME_train_get_state`).
    pub fn get_state(&self) -> Result<Vec<u8>, CallError> {
        type Size = unsafe extern "C" fn() -> usize;
        type Get = unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> c_int;
        let size: Size = self.model.sym("train_state_size").map_err(Self::plain)?;
        let get: Get = self.model.sym("train_get_state").map_err(Self::plain)?;
        let n = unsafe { size() };
        let mut b = vec![0u8; n];
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        let rc = unsafe { get(guard.0, b.as_mut_ptr() as *mut c_void, n) };
        if rc != 0 {
            return Err(self.fail(guard.0, rc));
        }
        Ok(b)
    }

    /// Replaces the state with a blob from `get_state` (of this library).
    pub fn set_state(&self, blob: &[u8]) -> Result<(), CallError> {
        type Set = unsafe extern "C" fn(*mut c_void, *const c_void, usize) -> c_int;
        let set: Set = self.model.sym("train_set_state").map_err(Self::plain)?;
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        let rc = unsafe { set(guard.0, blob.as_ptr() as *const c_void, blob.len()) };
        if rc != 0 {
            return Err(self.fail(guard.0, rc));
        }
        Ok(())
    }

    /// State tensor `i` of a blob from `get_state`.
    pub fn tensor(&self, blob: &[u8], i: usize) -> Result<Tensor, String> {
        let s = self.state.get(i).ok_or("no such state tensor")?;
        let n: usize = s.shape.iter().product::<usize>() * s.dtype.size_bytes();
        let b = blob
            .get(s.offset..s.offset + n)
            .ok_or("the blob is shorter than the state")?;
        from_bytes(s.shape.clone(), s.dtype, b)
    }

    /// The global L2 norm of the last good step's gradients, before clipping; None before
    /// the first step, or for a library that does not compute it.
    pub fn gradient_norm(&self) -> Option<f64> {
        let f = self.gradient_norm?;
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        let v = unsafe { f(guard.0) };
        (!v.is_nan()).then_some(v)
    }

    /// Steps taken.
    pub fn steps(&self) -> Result<i64, String> {
        type Steps = unsafe extern "C" fn(*const c_void) -> i64;
        let f: Steps = self.model.sym("train_steps")?;
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        Ok(unsafe { f(guard.0) })
    }

    /// Calls `f` on the context; a non-zero status is the library's error.
    fn status(&self, f: impl FnOnce(*mut c_void) -> c_int) -> Result<(), CallError> {
        let guard = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        let rc = f(guard.0);
        if rc != 0 {
            return Err(self.fail(guard.0, rc));
        }
        Ok(())
    }

    /// Sets the learning rate of the next steps.
    pub fn set_lr(&self, lr: f64) -> Result<(), CallError> {
        type SetLr = unsafe extern "C" fn(*mut c_void, f64) -> c_int;
        let f: SetLr = self.model.sym("train_set_lr").map_err(Self::plain)?;
        self.status(|c| unsafe { f(c, lr) })
    }

    /// Sets the seed of Dropout's masks.
    pub fn set_seed(&self, seed: u64) -> Result<(), CallError> {
        type SetSeed = unsafe extern "C" fn(*mut c_void, u64) -> c_int;
        let f: SetSeed = self.model.sym("train_set_seed").map_err(Self::plain)?;
        self.status(|c| unsafe { f(c, seed) })
    }

    /// Runs later calls on `threads` threads.
    pub fn set_threads(&self, threads: usize) -> Result<(), CallError> {
        type SetThreads = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
        let f: SetThreads = self.model.sym("train_set_threads").map_err(Self::plain)?;
        let n = c_int::try_from(threads).unwrap_or(c_int::MAX);
        self.status(|c| unsafe { f(c, n) })
    }
}
