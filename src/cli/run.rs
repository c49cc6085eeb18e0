//! `forgec run`: the model's outputs, computed by forgec's reference interpreter.

use crate::keras::LoadOptions;
use crate::UserError;
use forgec_runtime::Tensor;
use std::path::{Path, PathBuf};

/// Reads `[NAME=]FILE.npy` and `.npz` arguments into named (or positional) tensors.
pub fn read_inputs(
    args: &[String],
    input_names: &[String],
) -> Result<Vec<(String, Tensor)>, UserError> {
    let mut named = Vec::new();
    let mut positional = Vec::new();
    for a in args {
        let (name, file) = match a.split_once('=') {
            Some((n, f)) if !n.is_empty() && !n.contains('/') => {
                (Some(n.to_string()), f.to_string())
            }
            _ => (None, a.clone()),
        };
        let path = Path::new(&file);
        if path.extension().is_some_and(|e| e == "npz") {
            let arrays = forgec_runtime::read_npz(path).map_err(|e| UserError::new(e.0))?;
            named.extend(arrays);
        } else {
            let t = forgec_runtime::read_npy(path).map_err(|e| UserError::new(e.0))?;
            match name {
                Some(n) => named.push((n, t)),
                None => positional.push((file, t)),
            }
        }
    }
    // Unnamed inputs fill the model's inputs not given by name, in order.
    let free: Vec<&String> = input_names
        .iter()
        .filter(|n| !named.iter().any(|(m, _)| m == *n))
        .collect();
    if positional.len() > free.len() {
        return Err(UserError::new(format!(
            "{} unnamed input files for {} model inputs ({}): name them as NAME=FILE.npy",
            positional.len(),
            free.len(),
            input_names.join(", ")
        )));
    }
    for ((_, t), n) in positional.into_iter().zip(free) {
        named.push((n.clone(), t));
    }
    Ok(named)
}

pub fn cmd(
    model: &Path,
    weights: Option<PathBuf>,
    inputs: &[String],
    out_dir: &Path,
    npz: bool,
) -> Result<i32, UserError> {
    let opts = LoadOptions {
        weights,
        allow_missing_weights: false,
        input_shape: None,
    };
    let m = crate::load_any(model, &opts).map_err(|e| UserError::new(e.to_string()))?;
    let mut g = m.into_graph();
    forgec_passes::run_pipeline(&mut g, &["strip-dropout", "dce"])
        .map_err(|e| UserError::new(e.join("\n")))?;
    let names: Vec<String> = g.inputs.iter().map(|&i| g.value(i).name.clone()).collect();
    let ins = read_inputs(inputs, &names)?;
    let outs = forgec_ir::interp::run(&g, &ins)
        .map_err(|e| UserError::new(format!("{}: {}", model.display(), e.0)))?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| UserError::new(format!("{}: cannot create: {e}", out_dir.display())))?;
    let mut bundle = Vec::new();
    for (&o, t) in g.outputs.iter().zip(outs) {
        let name = g.value(o).name.clone();
        let file = out_dir.join(format!("{name}.npy"));
        forgec_runtime::write_npy(&file, &t).map_err(|e| UserError::new(e.0))?;
        println!(
            "{name}: {:?} {} -> {}",
            t.shape(),
            t.dtype().numpy_name(),
            file.display()
        );
        bundle.push((name, t));
    }
    if npz {
        let file = out_dir.join("outputs.npz");
        forgec_runtime::write_npz(&file, &bundle).map_err(|e| UserError::new(e.0))?;
        println!("all outputs -> {}", file.display());
    }
    Ok(0)
}
