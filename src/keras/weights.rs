//! Reading Keras weight files (HDF5): Keras 3 `.weights.h5` (also inside `.keras` archives)
//! and tf.keras 2 `save_weights` / whole-model `.h5` files.

use forgec_runtime::{DType, Tensor};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use std::path::{Path, PathBuf};

/// An open weight file and the layout it uses.
pub struct WeightFile {
    file: hdf5::File,
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

fn hdf5_err(display: &str, what: &str, e: impl std::fmt::Display) -> String {
    format!("{display}: {what}: {e}")
}

impl WeightFile {
    pub fn open(path: &Path, display: String) -> Result<WeightFile, String> {
        WeightFile::open_inner(path, display, None)
    }

    /// Opens an HDF5 image held in memory (an archive member), through a temporary file.
    pub fn open_bytes(bytes: &[u8], display: String) -> Result<WeightFile, String> {
        use std::io::Write;
        let mut tmp = tempfile::NamedTempFile::new()
            .map_err(|e| hdf5_err(&display, "cannot create a temporary file", e))?;
        tmp.write_all(bytes)
            .map_err(|e| hdf5_err(&display, "cannot write a temporary file", e))?;
        let path = tmp.into_temp_path();
        let p: PathBuf = path.to_path_buf();
        WeightFile::open_inner(&p, display, Some(path))
    }

    fn open_inner(
        path: &Path,
        display: String,
        tmp: Option<tempfile::TempPath>,
    ) -> Result<WeightFile, String> {
        let file = hdf5::File::open(path).map_err(|e| {
            format!("{display}: not a readable HDF5 file ({e}); re-save the weights with model.save_weights()")
        })?;
        let layout = if file.link_exists("layers") || file.link_exists("vars") {
            Layout::Keras3
        } else if file.link_exists("model_weights") {
            Layout::TfKeras {
                root: "model_weights",
            }
        } else if file.attr("layer_names").is_ok() {
            Layout::TfKeras { root: "" }
        } else {
            return Err(format!(
                "{display}: an HDF5 file, but not Keras weights (no `layers` group and no `layer_names` attribute)"
            ));
        };
        Ok(WeightFile {
            file,
            display,
            layout,
            _tmp: tmp,
        })
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The whole-model tf.keras `.h5` keeps the model's JSON in the root's `model_config`.
    pub fn model_config(&self) -> Option<String> {
        read_string_attr(&self.file, "model_config")
    }

    pub fn training_config(&self) -> Option<String> {
        read_string_attr(&self.file, "training_config")
    }

    /// The layer's variables in storage order, each with the dataset path it came from.
    pub fn layer_weights(&self, r: &LayerWeightsRef) -> Result<Vec<(String, Tensor)>, String> {
        match self.layout {
            Layout::Keras3 => {
                let mut out = Vec::new();
                let mut found_any = self.file.link_exists(&r.k3_path);
                for g in &r.k3_groups {
                    let gp = format!("{}/{}", r.k3_path, g);
                    if !self.file.link_exists(&gp) {
                        continue;
                    }
                    found_any = true;
                    let group = self
                        .file
                        .group(&gp)
                        .map_err(|e| hdf5_err(&self.display, &gp, e))?;
                    let mut names = group
                        .member_names()
                        .map_err(|e| hdf5_err(&self.display, &gp, e))?;
                    // Variables are named 0, 1, 2, ...: order numerically.
                    names.sort_by_key(|n| n.parse::<usize>().unwrap_or(usize::MAX));
                    for n in names {
                        let p = format!("{gp}/{n}");
                        out.push((p.clone(), self.read_dataset(&p)?));
                    }
                }
                if !found_any {
                    return Err(format!(
                        "{}: no group `{}` for this layer",
                        self.display, r.k3_path
                    ));
                }
                Ok(out)
            }
            Layout::TfKeras { root } => {
                let gp = if root.is_empty() {
                    r.tf_name.clone()
                } else {
                    format!("{root}/{}", r.tf_name)
                };
                if !self.file.link_exists(&gp) {
                    return Err(format!("{}: no group `{gp}` for this layer", self.display));
                }
                let group = self
                    .file
                    .group(&gp)
                    .map_err(|e| hdf5_err(&self.display, &gp, e))?;
                let names: Vec<String> =
                    read_string_list_attr(&group, "weight_names").unwrap_or_default();
                let mut out = Vec::new();
                for n in names {
                    let p = format!("{gp}/{n}");
                    out.push((p.clone(), self.read_dataset(&p)?));
                }
                Ok(out)
            }
        }
    }

    fn read_dataset(&self, p: &str) -> Result<Tensor, String> {
        let ds = self
            .file
            .dataset(p)
            .map_err(|e| hdf5_err(&self.display, p, e))?;
        let shape = ds.shape();
        let desc = ds
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(|e| hdf5_err(&self.display, p, e))?;
        let bad = |e: hdf5::Error| hdf5_err(&self.display, p, e);
        let t = match desc {
            TypeDescriptor::Float(FloatSize::U4) => {
                Tensor::from_f32(shape.clone(), ds.read_raw::<f32>().map_err(bad)?)
            }
            TypeDescriptor::Float(FloatSize::U8) => {
                let v: Vec<f64> = ds.read_raw::<f64>().map_err(bad)?;
                Tensor::from_f64_values(DType::F64, shape.clone(), &v)
            }
            TypeDescriptor::Integer(IntSize::U8) | TypeDescriptor::Unsigned(IntSize::U8) => {
                let v: Vec<i64> = ds.read_raw::<i64>().map_err(bad)?;
                Tensor::from_i64_values(DType::I64, shape.clone(), &v)
            }
            TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
                let v: Vec<i32> = ds.read_raw::<i32>().map_err(bad)?;
                Tensor::from_i64_values(
                    DType::I32,
                    shape.clone(),
                    &v.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                )
            }
            TypeDescriptor::Boolean => {
                let v: Vec<bool> = ds.read_raw::<bool>().map_err(bad)?;
                Tensor::new(shape.clone(), forgec_runtime::Data::Bool(v))
            }
            other => {
                return Err(format!(
                    "{}: {p}: unsupported element type {other:?}",
                    self.display
                ))
            }
        };
        t.map_err(|e| format!("{}: {p}: {}", self.display, e.0))
    }
}

fn read_string_attr(loc: &hdf5::Location, name: &str) -> Option<String> {
    let a = loc.attr(name).ok()?;
    if let Ok(s) = a.read_scalar::<hdf5::types::VarLenUnicode>() {
        return Some(s.as_str().to_string());
    }
    if let Ok(s) = a.read_scalar::<hdf5::types::VarLenAscii>() {
        return Some(s.as_str().to_string());
    }
    // Fixed-length strings: read the raw bytes.
    let bytes: Vec<u8> = a.read_raw::<u8>().ok()?;
    Some(
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .to_string(),
    )
}

fn read_string_list_attr(loc: &hdf5::Location, name: &str) -> Option<Vec<String>> {
    let a = loc.attr(name).ok()?;
    if let Ok(v) = a.read_raw::<hdf5::types::VarLenUnicode>() {
        return Some(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    if let Ok(v) = a.read_raw::<hdf5::types::VarLenAscii>() {
        return Some(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    None
}
