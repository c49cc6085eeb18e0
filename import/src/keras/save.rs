//! Writing weights in Keras 3's `.weights.h5` layout, so that `keras.Model.load_weights`
//! takes what forgec trained: `layers/<snake_case_class>[_n]/vars/<i>` for every layer (an
//! empty `vars` group for a layer without weights), the model's own `vars` group at the root,
//! and `optimizer/vars/<i>` (the step count, the learning rate, then each trainable weight's
//! slots in weight order), as Keras's `save_weights` writes them.
//!
//! The file is forgec's own output, written in this process (reading untrusted HDF5 happens in
//! a child: `weights`), under `weights::with_hdf5`; it is written to a temporary name and renamed, so a run that dies
//! leaves either the old file or the new one.

use forgec_runtime::{DType, Tensor};
use std::path::Path;

/// One `vars` group of the layout: its path, the `name` attribute Keras gives it, and the IR
/// weights (by value name) stored in it as datasets `0`, `1`, ...
#[derive(Clone, Debug, PartialEq)]
pub struct VarGroup {
    pub path: String,
    pub name: String,
    pub vars: Vec<String>,
}

/// Where every weight of an imported Keras model goes in a Keras 3 weights file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct K3Layout {
    /// The model's name (the root `vars` group's `name`).
    pub model: String,
    /// Every layer's groups, in the model's layer order.
    pub groups: Vec<VarGroup>,
}

impl K3Layout {
    /// Every weight's IR name, in Keras's variable order.
    pub fn weights(&self) -> impl Iterator<Item = &str> {
        self.groups
            .iter()
            .flat_map(|g| g.vars.iter().map(|v| v.as_str()))
    }

    /// The dataset path of IR weight `name` (`layers/dense/vars/0`).
    pub fn path_of(&self, name: &str) -> Option<String> {
        self.groups.iter().find_map(|g| {
            g.vars
                .iter()
                .position(|v| v == name)
                .map(|i| format!("{}/{i}", g.path))
        })
    }
}

/// The optimizer's part of the file: Keras's name for it (`adam`), the step count, the
/// learning rate, and the slots in Keras's order (each trainable weight's slots together).
pub struct OptimizerVars<'a> {
    pub name: &'a str,
    pub iterations: i64,
    pub learning_rate: f32,
    pub slots: Vec<&'a Tensor>,
}

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> String + '_ {
    move |e| format!("{}: cannot write: {e}", path.display())
}

fn name_attr(g: &hdf5::Group, name: &str, path: &Path) -> Result<(), String> {
    let v: hdf5::types::VarLenUnicode = name
        .parse()
        .map_err(|_| format!("{}: a name with a NUL byte: {name:?}", path.display()))?;
    g.new_attr::<hdf5::types::VarLenUnicode>()
        .shape(())
        .create("name")
        .and_then(|a| a.write_scalar(&v))
        .map_err(h5err(path))
}

fn group(f: &hdf5::File, p: &str, path: &Path) -> Result<hdf5::Group, String> {
    match f.group(p) {
        Ok(g) => Ok(g),
        Err(_) => f.create_group(p).map_err(h5err(path)),
    }
}

fn dataset(g: &hdf5::Group, name: &str, t: &Tensor, path: &Path) -> Result<(), String> {
    fn write<T: hdf5::H5Type>(
        g: &hdf5::Group,
        name: &str,
        shape: &[usize],
        v: &[T],
    ) -> hdf5::Result<()> {
        g.new_dataset::<T>().shape(shape).create(name)?.write_raw(v)
    }
    let (shape, v) = (t.shape(), t.to_f64_vec());
    match t.dtype() {
        DType::F64 => write(g, name, shape, &v),
        DType::I64 | DType::I32 | DType::Bool => {
            let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            write(g, name, shape, &v)
        }
        _ => {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            write(g, name, shape, &v)
        }
    }
    .map_err(h5err(path))
}

/// Writes `layout`'s weights (their values from `value`, by IR name) and the optimizer's
/// variables to `path`, atomically.
pub fn write_weights_h5(
    path: &Path,
    layout: &K3Layout,
    value: &dyn Fn(&str) -> Option<Tensor>,
    optimizer: Option<&OptimizerVars>,
) -> Result<(), String> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let res = super::weights::with_hdf5(|| {
        let f = hdf5::File::create(&tmp).map_err(h5err(path))?;
        group(&f, "layers", path)?;
        for g in &layout.groups {
            let grp = group(&f, &g.path, path)?;
            name_attr(&grp, &g.name, path)?;
            for (i, w) in g.vars.iter().enumerate() {
                let t = value(w)
                    .ok_or_else(|| format!("{}: no value for the weight `{w}`", path.display()))?;
                dataset(&grp, &i.to_string(), &t, path)?;
            }
        }
        let root = group(&f, "vars", path)?;
        name_attr(&root, &layout.model, path)?;
        if let Some(o) = optimizer {
            let grp = group(&f, "optimizer/vars", path)?;
            name_attr(&grp, o.name, path)?;
            let it = Tensor::from_f64_values(DType::I64, vec![], &[o.iterations as f64])
                .expect("a scalar");
            dataset(&grp, "0", &it, path)?;
            let lr = Tensor::from_f64_values(DType::F32, vec![], &[o.learning_rate as f64])
                .expect("a scalar");
            dataset(&grp, "1", &lr, path)?;
            for (i, s) in o.slots.iter().enumerate() {
                dataset(&grp, &(i + 2).to_string(), s, path)?;
            }
        }
        f.close().map_err(h5err(path))
    });
    match res {
        Ok(()) => std::fs::rename(&tmp, path)
            .map_err(|e| format!("{}: cannot write: {e}", path.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
