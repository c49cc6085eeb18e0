//! Reading Keras weight files (HDF5): Keras 3 `.weights.h5` (also inside `.keras` archives)
//! and tf.keras 2 `save_weights` / whole-model `.h5` files.
//!
//! A weights file is untrusted input, and libhdf5 (C) can crash or loop on malformed files
//! (a few hundred byte mutations of a `.h5` find several SIGSEGVs in its attribute reads). So
//! forgec never calls libhdf5 on a model's file in its own process: a child process, forked
//! for each file (`h5child`), opens it and answers requests over a socket (does a path exist,
//! a string attribute, a group's members, a dataset's shape, a dataset's data). The child runs
//! under a memory limit, every answer under a time limit; a child that dies or hangs is a
//! clean error naming the file, and forgec goes on (or exits with its message).
//! A dataset's data is read only after its shape has been checked against what the layer's
//! config needs (`StoredWeight`, read lazily), and only if the file can hold it.

use forgec_runtime::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod h5child;

/// Serialises every use of libhdf5 in this process: the forks of `h5child` and forgec's own
/// writes (`keras::save`). hdf5's own lock is a fair mutex that may hand itself to a thread
/// waiting for it: a thread parked on it when another forks would leave the child holding a
/// lock for a thread it does not have, and the child would hang. Behind this lock (a plain
/// one the child never takes) nobody waits on hdf5's.
static HDF5_GUARD: Mutex<()> = Mutex::new(());

/// Runs `f`, which may call libhdf5 in this process, with no HDF5 reader being forked
/// meanwhile. Every in-process use of the `hdf5` crate goes through here (tests too); not
/// reentrant.
pub fn with_hdf5<T>(f: impl FnOnce() -> T) -> T {
    let _g = HDF5_GUARD.lock().unwrap_or_else(|p| p.into_inner());
    f()
}

use h5child::{Child, Kind};

/// An open weight file and the layout it uses.
pub struct WeightFile {
    child: Mutex<Child>,
    /// How the file is named to the user (`model.keras:model.weights.h5`, say).
    display: String,
    layout: Layout,
    /// Keeps the extracted copy of an archive member alive.
    _tmp: Option<tempfile::TempPath>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    /// Keras 3: `layers/<snake_case_class>[_n]/vars/<i>`, nested objects below.
    Keras3,
    /// tf.keras 2: `<layer name>/<weight name>` listed by the `weight_names` attribute,
    /// under `model_weights/` in whole-model files.
    TfKeras { root: &'static str },
}

/// Where one layer's weights live in the file.
#[derive(Clone, Debug)]
pub struct LayerWeightsRef {
    /// Keras 3 group path of the layer (`layers/dense_1`).
    pub k3_path: String,
    /// Keras 3 sub-groups holding the variables, in order (`vars`, `cell/vars`, ...).
    pub k3_groups: Vec<String>,
    /// tf.keras 2 layer group name (the layer's name).
    pub tf_name: String,
}

/// A dataset's shape and element type, known before its data is read.
#[derive(Clone, Debug)]
pub struct StoredWeight {
    pub path: String,
    pub shape: Vec<usize>,
    kind: Kind,
}

impl WeightFile {
    pub fn open(path: &Path, display: String) -> Result<WeightFile, String> {
        WeightFile::open_inner(path, display, None)
    }

    /// Opens an HDF5 image held in memory (an archive member), through a temporary file.
    pub fn open_bytes(bytes: &[u8], display: String) -> Result<WeightFile, String> {
        use std::io::Write;
        let mut tmp = tempfile::NamedTempFile::new()
            .map_err(|e| format!("{display}: cannot create a temporary file: {e}"))?;
        tmp.write_all(bytes)
            .map_err(|e| format!("{display}: cannot write a temporary file: {e}"))?;
        let path = tmp.into_temp_path();
        let p: PathBuf = path.to_path_buf();
        WeightFile::open_inner(&p, display, Some(path))
    }

    fn open_inner(
        path: &Path,
        display: String,
        tmp: Option<tempfile::TempPath>,
    ) -> Result<WeightFile, String> {
        let mut child = Child::spawn(path).map_err(|e| {
            format!("{display}: not a readable HDF5 file ({e}); re-save the weights with model.save_weights()")
        })?;
        let at = |e: String| format!("{display}: {e}");
        let layout = if child.exists("layers").map_err(at)? || child.exists("vars").map_err(at)? {
            Layout::Keras3
        } else if child.exists("model_weights").map_err(at)? {
            Layout::TfKeras {
                root: "model_weights",
            }
        } else if child.has_attr("", "layer_names").map_err(at)? {
            Layout::TfKeras { root: "" }
        } else {
            return Err(format!(
                "{display}: an HDF5 file, but not Keras weights (no `layers` group and no `layer_names` attribute)"
            ));
        };
        Ok(WeightFile {
            child: Mutex::new(child),
            display,
            layout,
            _tmp: tmp,
        })
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        // A panic while the lock was held leaves the child as it was: go on with it.
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The whole-model tf.keras `.h5` keeps the model's JSON in the root's `model_config`.
    /// (An error when the reader failed; `None` when the file has no such attribute.)
    pub fn model_config(&self) -> Result<Option<String>, String> {
        self.child()
            .str_attr("", "model_config")
            .map_err(|e| format!("{}: model_config: {e}", self.display))
    }

    pub fn training_config(&self) -> Option<String> {
        self.child().str_attr("", "training_config").ok().flatten()
    }

    /// The layer's variables in storage order (shapes and types only; see `read`).
    pub fn layer_weights(&self, r: &LayerWeightsRef) -> Result<Vec<StoredWeight>, String> {
        let mut c = self.child();
        let d = &self.display;
        let at = |p: &str, e: String| format!("{d}: {p}: {e}");
        match self.layout {
            Layout::Keras3 => {
                let mut out = Vec::new();
                let mut found_any = c.exists(&r.k3_path).map_err(|e| at(&r.k3_path, e))?;
                for g in &r.k3_groups {
                    let gp = format!("{}/{}", r.k3_path, g);
                    if !c.exists(&gp).map_err(|e| at(&gp, e))? {
                        continue;
                    }
                    found_any = true;
                    let mut names = c.members(&gp).map_err(|e| at(&gp, e))?;
                    // Variables are named 0, 1, 2, ...: order numerically.
                    names.sort_by_key(|n| n.parse::<usize>().unwrap_or(usize::MAX));
                    for n in names {
                        let p = format!("{gp}/{n}");
                        out.push(self.info(&mut c, &p)?);
                    }
                }
                if !found_any {
                    return Err(format!("{d}: no group `{}` for this layer", r.k3_path));
                }
                Ok(out)
            }
            Layout::TfKeras { root } => {
                let gp = if root.is_empty() {
                    r.tf_name.clone()
                } else {
                    format!("{root}/{}", r.tf_name)
                };
                if !c.exists(&gp).map_err(|e| at(&gp, e))? {
                    return Err(format!("{d}: no group `{gp}` for this layer"));
                }
                let names = c
                    .str_list_attr(&gp, "weight_names")
                    .map_err(|e| at(&gp, e))?
                    .unwrap_or_default();
                let mut out = Vec::new();
                for n in names {
                    let p = format!("{gp}/{n}");
                    out.push(self.info(&mut c, &p)?);
                }
                Ok(out)
            }
        }
    }

    fn info(&self, c: &mut Child, p: &str) -> Result<StoredWeight, String> {
        let (shape, kind) = c
            .info(p)
            .map_err(|e| format!("{}: {p}: {e}", self.display))?;
        Ok(StoredWeight {
            path: p.to_string(),
            shape,
            kind,
        })
    }

    /// The data of a dataset whose shape was checked.
    pub fn read(&self, w: &StoredWeight) -> Result<Tensor, String> {
        let p = &w.path;
        let bytes = self
            .child()
            .read(p)
            .map_err(|e| format!("{}: {p}: {e}", self.display))?;
        let shape = w.shape.clone();
        let n: usize = shape.iter().product();
        let width = w.kind.width();
        if bytes.len() != n * width {
            return Err(format!(
                "{}: {p}: {} bytes of data for shape {shape:?}",
                self.display,
                bytes.len()
            ));
        }
        let words = |w: usize| bytes.chunks_exact(w);
        let t = match w.kind {
            Kind::F32 => Tensor::from_f32(
                shape,
                words(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect(),
            ),
            Kind::F64 => {
                let v: Vec<f64> = words(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect();
                Tensor::from_f64_values(DType::F64, shape, &v)
            }
            Kind::I64 => {
                let v: Vec<i64> = words(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect();
                Tensor::from_i64_values(DType::I64, shape, &v)
            }
            Kind::I32 => {
                let v: Vec<i64> = words(4)
                    .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                    .collect();
                Tensor::from_i64_values(DType::I32, shape, &v)
            }
            Kind::Bool => Tensor::new(
                shape,
                forgec_runtime::Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
            ),
        };
        t.map_err(|e| format!("{}: {p}: {}", self.display, e.0))
    }
}
