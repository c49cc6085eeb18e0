//! `forgec run`: the model's outputs, computed by the compiled engine or the reference interpreter.

use crate::keras::LoadOptions;
use crate::UserError;
use forgec_runtime::Tensor;
use std::path::{Path, PathBuf};

/// Reads `[NAME=]FILE.npy` and `.npz` arguments into named (or positional) tensors.
pub fn read_inputs(
    args: &[String],
    input_names: &[String],
) -> Result<Vec<(String, Tensor)>, UserError> {
    read_inputs_with(
        args,
        input_names,
        &|p| forgec_runtime::read_npy(p).map_err(|e| UserError::new(e.0)),
        &|p| forgec_runtime::read_npz(p).map_err(|e| UserError::new(e.0)),
    )
}

/// Arrays by name.
pub type Named<T> = Vec<(String, T)>;

/// `read_inputs` with the `.npy` files read by `npy` and the `.npz` archives by `npz`
/// (`forgec train` maps its inputs' `.npy` files and stored `.npz` members instead of reading
/// them).
pub fn read_inputs_with<T>(
    args: &[String],
    input_names: &[String],
    npy: &dyn Fn(&Path) -> Result<T, UserError>,
    npz: &dyn Fn(&Path) -> Result<Named<T>, UserError>,
) -> Result<Named<T>, UserError> {
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
            named.extend(npz(path)?);
        } else {
            let t = npy(path)?;
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

/// Which engine runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Compiled when every op lowers, else the interpreter (with a note).
    Auto,
    Compiled,
    Interp,
}

impl Engine {
    pub fn parse(s: &str) -> Option<Engine> {
        Some(match s {
            "auto" => Engine::Auto,
            "compiled" => Engine::Compiled,
            "interp" => Engine::Interp,
            _ => return None,
        })
    }
}

/// Compiles `g` into a scratch library and runs it on `ins` (matched to the graph's inputs).
/// Compiles `g` into a scratch library and runs it on `ins` (matched to the graph's inputs) on
/// `threads` threads.
pub fn run_compiled(
    g: &forgec_ir::Graph,
    ins: &[(String, Tensor)],
    threads: usize,
) -> Result<Vec<Tensor>, String> {
    // The interpreter's checks give the clear messages (missing, unknown, dtype, shape).
    let (ordered, _) = forgec_ir::interp::check_inputs(g, ins).map_err(|e| e.0)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let opts = crate::codegen::Options {
        name: "model".into(),
        cpu: Some("native".into()),
        target: None,
        emit: crate::codegen::Emit::Lib,
        external_weights: false,
        threads: 1,
    };
    crate::codegen::compile(g.clone(), &opts, dir.path(), "")?;
    let lib =
        forgec_runtime::compiled::CompiledModel::load(&dir.path().join("libmodel.so"), "model")?;
    lib.set_threads(threads)
        .map_err(|e| format!("--threads {threads}: {e}"))?;
    lib.run(&ordered)
}

pub fn cmd(
    model: &Path,
    weights: Option<PathBuf>,
    inputs: &[String],
    out_dir: &Path,
    npz: bool,
    (engine, threads): (&str, usize),
) -> Result<i32, UserError> {
    let engine = Engine::parse(engine).ok_or_else(|| {
        UserError::new(format!("--engine {engine}: use auto, compiled or interp"))
    })?;
    super::check_threads(threads)?;
    if engine == Engine::Interp && threads > 1 {
        return Err(UserError::new(format!(
            "--threads {threads}: the reference interpreter runs on one thread; use --engine compiled (or auto) for more"
        )));
    }
    // The output directory first: a directory that cannot be written is said before the work.
    super::writable_dir(out_dir, "--output-dir")?;
    let opts = LoadOptions {
        weights,
        allow_missing_weights: false,
        input_shape: None,
    };
    let m = crate::load_any(model, &opts).map_err(|e| UserError::new(e.to_string()))?;
    let mut g = m.into_graph();
    forgec_passes::run_pipeline(&mut g, forgec_passes::INTERPRETER)
        .map_err(|e| UserError::new(e.join("\n")))?;
    let names: Vec<String> = g.inputs.iter().map(|&i| g.value(i).name.clone()).collect();
    let ins = read_inputs(inputs, &names)?;
    let interp = |g: &forgec_ir::Graph| {
        forgec_ir::interp::run(g, &ins)
            .map_err(|e| UserError::new(format!("{}: {}", model.display(), e.0)))
    };
    let out_names = output_file_names(&g);
    let outs = match engine {
        Engine::Interp => interp(&g)?,
        Engine::Compiled => run_compiled(&g, &ins, threads)
            .map_err(|e| UserError::new(format!("{}: {e}", model.display())))?,
        Engine::Auto => match run_compiled(&g, &ins, threads) {
            Ok(o) => o,
            Err(e) if e.contains("does not lower") || e.contains("is not compiled yet") => {
                eprintln!(
                    "note: running the reference interpreter{}: {}",
                    if threads > 1 { " (on one thread)" } else { "" },
                    e.lines().next().unwrap_or("")
                );
                interp(&g)?
            }
            Err(e) => return Err(UserError::new(format!("{}: {e}", model.display()))),
        },
    };
    let mut bundle = Vec::new();
    for ((&o, t), file_name) in g.outputs.iter().zip(outs).zip(out_names) {
        let name = g.value(o).name.clone();
        let file = out_dir.join(format!("{file_name}.npy"));
        forgec_runtime::write_npy(&file, &t).map_err(|e| UserError::new(e.0))?;
        println!(
            "{}: {:?} {} -> {}",
            name.escape_debug(),
            t.shape(),
            t.dtype().numpy_name(),
            file.display()
        );
        bundle.push((file_name, t));
    }
    if npz {
        let file = out_dir.join("outputs.npz");
        forgec_runtime::write_npz(&file, &bundle).map_err(|e| UserError::new(e.0))?;
        println!("all outputs -> {}", file.display());
    }
    Ok(0)
}

/// The file name (without `.npy`) of each graph output: the output's name where it is a plain
/// file name, else with every character but ASCII letters, digits, `-`, `_`, `.` and `:` made `_`
/// (a name such as `../x` or `/tmp/x` never leaves the output directory), cut to 100 bytes,
/// never empty or starting with `.`, and made distinct.
pub fn output_file_names(g: &forgec_ir::Graph) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for &o in &g.outputs {
        let mut f: String = g
            .value(o)
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
        if f.is_empty() || f.starts_with('.') {
            f.insert(0, '_');
        }
        let base = f.clone();
        let mut k = 1;
        while out.iter().any(|x| x.eq_ignore_ascii_case(&f)) {
            k += 1;
            f = format!("{base}_{k}");
        }
        out.push(f);
    }
    out
}
