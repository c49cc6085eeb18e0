//! `forgec compile`: IR → MLIR (linalg on tensors) → LLVM → object code, wrapped in a C API.

pub mod cpu;
pub mod lower;

pub use cpu::{capi, llvm};

use forgec_ir::Graph;
use std::path::{Path, PathBuf};

/// The most threads a context runs on (`NAME_MAX_THREADS`).
pub const MAX_THREADS: usize = 64;

/// The most weights a library embeds (1.5 GiB): its data must stay within 2 GB of its code.
const EMBED_MAX_BYTES: usize = 3 << 29;

#[derive(Clone, Debug)]
pub struct Options {
    pub name: String,
    /// `native`, `x86-64-v2`, `x86-64-v3`, `x86-64-v4`, or an LLVM CPU (default: the portable
    /// `x86-64-v2` on x86_64, `generic` elsewhere).
    pub cpu: Option<String>,
    /// An LLVM target triple (default: this machine's).
    pub target: Option<String>,
    pub emit: Emit,
    /// `--weights external`: large constants go to `NAME.weights`, which the library maps when
    /// it is loaded, instead of into the library.
    pub external_weights: bool,
    /// The threads a new context of the library runs on (`--threads`, 1 to 64; its
    /// `set_threads` changes them).
    pub threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// forgec's text IR, after the compiler's passes.
    Ir,
    Mlir,
    Llvm,
    Asm,
    Obj,
    Lib,
}

impl Emit {
    pub fn parse(s: &str) -> Option<Emit> {
        Some(match s {
            "ir" => Emit::Ir,
            "mlir" => Emit::Mlir,
            "llvm" => Emit::Llvm,
            "asm" => Emit::Asm,
            "obj" => Emit::Obj,
            "lib" => Emit::Lib,
            _ => return None,
        })
    }
}

/// The graph as the compiler takes it: inference clean-ups applied, checked.
pub fn prepare(mut g: Graph) -> Result<Graph, String> {
    forgec_passes::run_pipeline(&mut g, forgec_passes::INFERENCE).map_err(|e| e.join("\n"))?;
    capi::batch_symbol(&g)?;
    Ok(g)
}

/// A valid C identifier for the artifact's name.
pub fn artifact_name(s: &str) -> String {
    capi::c_ident(s).to_lowercase()
}

/// What `forgec compile --train` adds to a library (see `cpu::train`): the step, evaluation
/// and prediction graphs as `forgec_passes::train` makes them, the initial state (trainable
/// weights in the step's order, then the slots, slot-major) and learning rate, and what
/// `NAME.json` says of the loss and optimizer (`meta`, with a one-line `title` for the header).
pub struct Training {
    pub step: Graph,
    pub eval: Graph,
    pub predict: Graph,
    pub state: Vec<(String, forgec_ir::Tensor)>,
    pub lr: f64,
    /// The metrics' names, as the step's and evaluation's outputs after the loss and state.
    pub metrics: Vec<String>,
    /// Whether the step's last output is the gradients' global norm (after the metrics).
    pub gradient_norm: bool,
    pub meta: serde_json::Value,
    pub title: String,
}

/// Compiles `g` into `out`; returns the files written. `source_sha256` and `flags` go into
/// `NAME.json`.
pub fn compile(
    g: Graph,
    opts: &Options,
    out: &Path,
    source_sha256: &str,
) -> Result<Vec<PathBuf>, String> {
    compile_with(g, None, opts, out, source_sha256)
}

/// `compile` with the training API (a library only).
pub fn compile_train(
    g: Graph,
    t: Training,
    opts: &Options,
    out: &Path,
    source_sha256: &str,
) -> Result<Vec<PathBuf>, String> {
    if opts.emit != Emit::Lib {
        return Err("--train makes a library: leave --emit at lib".into());
    }
    compile_with(g, Some(t), opts, out, source_sha256)
}

/// The training graphs prepared and lowered, each a model of its own in the library.
struct TrainBuilt {
    graphs: Vec<(String, Graph, Option<capi::WeightsFile>, Vec<String>)>,
}

fn build_training(
    t: &Training,
    name: &str,
    target: &llvm::Target_,
    dir: &Path,
    threads: usize,
) -> Result<TrainBuilt, String> {
    let internal =
        |e: String| format!("internal error in forgec's code generator (training step): {e}");
    let mut graphs = Vec::new();
    for (tag, g) in [
        ("step", &t.step),
        ("eval", &t.eval),
        ("predict", &t.predict),
    ] {
        let g = prepare(g.clone())?;
        let pname = format!("{name}_forgec_{tag}");
        let (entry, text, weights) = lower_for(&g, target, &pname)?;
        if keep_scratch() {
            let _ = std::fs::write(dir.join(format!("{pname}.mlir")), &text);
        }
        let parts = llvm::compile(&text, target, llvm::Stage::Objects, &pname).map_err(internal)?;
        let mut objects = Vec::new();
        for (i, bytes) in parts.iter().enumerate() {
            let o = format!("kernel_{tag}{i}.o");
            std::fs::write(dir.join(&o), bytes).map_err(|e| e.to_string())?;
            objects.push(o);
        }
        let file = (!weights.is_empty()).then(|| capi::weights_file(&weights));
        let placed = match &file {
            None => capi::Weights::None,
            Some(f) => capi::Weights::Embedded(f),
        };
        let version = env!("CARGO_PKG_VERSION");
        std::fs::write(
            dir.join(format!("{pname}.h")),
            capi::header(&g, &pname, version, false, threads),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(
            dir.join(format!("wrapper_{tag}.c")),
            capi::wrapper(&g, &pname, &entry, placed, threads),
        )
        .map_err(|e| e.to_string())?;
        graphs.push((tag.to_string(), g, file, objects));
    }
    Ok(TrainBuilt { graphs })
}

/// FORGEC_KEEP_SCRATCH=1: keep the scratch directory, with the MLIR of every compiled part.
fn keep_scratch() -> bool {
    std::env::var_os("FORGEC_KEEP_SCRATCH").is_some_and(|v| v == "1")
}

fn compile_with(
    g: Graph,
    training: Option<Training>,
    opts: &Options,
    out: &Path,
    source_sha256: &str,
) -> Result<Vec<PathBuf>, String> {
    let target = llvm::target(opts.target.as_deref(), opts.cpu.as_deref())?;
    // A library for another machine needs its C toolchain: said before any work is done.
    let tools = if opts.emit == Emit::Lib {
        Some(capi::toolchain(&target.triple, &llvm::host_triple())?)
    } else {
        None
    };
    let g = prepare(g)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create: {e}", out.display()))?;
    let name = &opts.name;
    if opts.emit == Emit::Ir {
        let file = out.join(format!("{name}.ir"));
        std::fs::write(&file, forgec_ir::text::print(&g))
            .map_err(|e| format!("{}: cannot write: {e}", file.display()))?;
        return Ok(vec![file]);
    }
    let (entry, text, weights) = lower_for(&g, &target, name)?;
    let write = |file: PathBuf, bytes: &[u8]| -> Result<PathBuf, String> {
        std::fs::write(&file, bytes)
            .map_err(|e| format!("{}: cannot write: {e}", file.display()))?;
        Ok(file)
    };
    if opts.emit == Emit::Mlir {
        return Ok(vec![write(
            out.join(format!("{name}.mlir")),
            text.as_bytes(),
        )?]);
    }
    let internal = |e: String| {
        format!(
            "internal error in forgec's code generator: {e}\nthis is a bug in forgec; `forgec compile --emit mlir` shows the MLIR it made, and `forgec run --engine interp` runs the model meanwhile"
        )
    };
    let stage = match opts.emit {
        Emit::Llvm => llvm::Stage::Llvm,
        Emit::Asm => llvm::Stage::Asm,
        Emit::Obj => llvm::Stage::Object,
        _ => llvm::Stage::Objects,
    };
    let parts = llvm::compile(&text, &target, stage, name).map_err(internal)?;
    let first = parts.first().map_or(&[][..], |p| p.as_slice());
    match opts.emit {
        Emit::Llvm => return Ok(vec![write(out.join(format!("{name}.ll")), first)?]),
        Emit::Asm => return Ok(vec![write(out.join(format!("{name}.s")), first)?]),
        Emit::Obj => return Ok(vec![write(out.join(format!("{name}.o")), first)?]),
        _ => {}
    }
    let mut scratch =
        tempfile::tempdir().map_err(|e| format!("cannot make a scratch directory: {e}"))?;
    // FORGEC_KEEP_SCRATCH=1 keeps the C sources, objects and MLIR the library is made from (for
    // reading the generated code, or compiling it with other flags).
    if keep_scratch() {
        scratch.disable_cleanup(true);
        eprintln!(
            "forgec: scratch directory kept: {}",
            scratch.path().display()
        );
        let _ = std::fs::write(scratch.path().join(format!("{name}.mlir")), &text);
    }
    let version = env!("CARGO_PKG_VERSION");
    let mut objects = Vec::new();
    for (i, bytes) in parts.iter().enumerate() {
        let o = format!("kernel{i}.o");
        std::fs::write(scratch.path().join(&o), bytes).map_err(|e| e.to_string())?;
        objects.push(o);
    }
    let file = weights_file(&weights, opts);
    let placed = placement(&file, opts)?;
    let (mut header, wrapper) = c_text(&g, opts, &entry, placed);
    std::fs::write(scratch.path().join("wrapper.c"), wrapper).map_err(|e| e.to_string())?;
    let (cc, ar) = tools.ok_or("internal error: a library without its C toolchain")?;
    let mut train_meta = None;
    if let Some(t) = &training {
        let built = build_training(t, name, &target, scratch.path(), opts.threads)?;
        let gr = |k: usize| &built.graphs[k].1;
        let tp = cpu::train::TrainParts {
            step: gr(0),
            eval: gr(1),
            predict: gr(2),
            state: &t.state,
            lr: t.lr,
            num_inputs: g.inputs.len(),
            num_labels: g.outputs.len(),
            metrics: &t.metrics,
            gradient_norm: t.gradient_norm,
        };
        if let Some(why) = cpu::train::obstacle(&tp) {
            return Err(format!("--train: {why}"));
        }
        let c = cpu::train::wrapper(name, &tp)?;
        std::fs::write(scratch.path().join("train.c"), c).map_err(|e| e.to_string())?;
        std::fs::write(
            scratch.path().join("train_state.bin"),
            cpu::train::state_blob(&t.state, t.lr),
        )
        .map_err(|e| e.to_string())?;
        // The training API goes before the header's closing lines.
        let close = header
            .rfind("\n#ifdef __cplusplus")
            .ok_or("internal error: the header has no end")?;
        header.insert_str(close + 1, &cpu::train::header(name, &tp, &t.title));
        std::fs::write(scratch.path().join(format!("{name}.h")), &header)
            .map_err(|e| e.to_string())?;
        let mut parts = vec![capi::LinkPart {
            name: name.clone(),
            tag: String::new(),
            objects: objects.clone(),
            wrapper: "wrapper.c".into(),
            weights: placed,
        }];
        for (tag, _, file, objs) in &built.graphs {
            parts.push(capi::LinkPart {
                name: format!("{name}_forgec_{tag}"),
                tag: tag.clone(),
                objects: objs.clone(),
                wrapper: format!("wrapper_{tag}.c"),
                weights: match file {
                    None => capi::Weights::None,
                    Some(f) => capi::Weights::Embedded(f),
                },
            });
        }
        let exports: Vec<String> = capi::API_FUNCTIONS
            .iter()
            .chain(cpu::train::TRAIN_FUNCTIONS)
            .map(|f| format!("{name}_{f}"))
            .collect();
        let extra = vec![(
            "train.c".to_string(),
            vec![(
                format!("{name}_forgec_train_init"),
                "train_state.bin".to_string(),
            )],
        )];
        capi::link_parts(
            scratch.path(),
            &parts,
            &extra,
            name,
            out,
            (&cc, &ar),
            &exports,
        )?;
        train_meta = Some(train_json(t, &tp));
    } else {
        std::fs::write(scratch.path().join(format!("{name}.h")), &header)
            .map_err(|e| e.to_string())?;
        capi::link(scratch.path(), &objects, name, out, (&cc, &ar), &placed)?;
    }
    let h = write(out.join(format!("{name}.h")), header.as_bytes())?;
    let meta = metadata(&g, name, version, source_sha256, opts, &target, train_meta);
    let j = write(out.join(format!("{name}.json")), meta.as_bytes())?;
    let mut files = vec![
        out.join(format!("lib{name}.a")),
        out.join(format!("lib{name}.so")),
        h,
        j,
    ];
    if let (Some(f), true) = (&file, opts.external_weights) {
        files.push(write(out.join(format!("{name}.weights")), &f.bytes)?);
    }
    Ok(files)
}

/// The prepared graph lowered to MLIR for the CPU of `target`: the entry's name, the module
/// text and the large constants. Every global symbol of the object carries the model's name,
/// so that several models link into one program; the large constants are always the entry
/// function's arguments (from NAME.weights with `--weights external`, else from a blob the
/// assembler puts into the library).
fn lower_for(
    g: &Graph,
    target: &llvm::Target_,
    name: &str,
) -> Result<(String, String, Vec<lower::ExternalWeight>), String> {
    let entry = format!("{name}_forgec_main");
    let cpu = cpu::Cpu::new(g, llvm::simd_lanes(target));
    let (text, weights) = lower::emit(g, &cpu, &entry)?;
    Ok((entry, text, weights))
}

fn weights_file(weights: &[lower::ExternalWeight], opts: &Options) -> Option<capi::WeightsFile> {
    (opts.external_weights || !weights.is_empty()).then(|| capi::weights_file(weights))
}

/// Where the library finds its weights: none, embedded, or `NAME.weights`.
fn placement<'a>(
    file: &'a Option<capi::WeightsFile>,
    opts: &Options,
) -> Result<capi::Weights<'a>, String> {
    Ok(match file {
        None => capi::Weights::None,
        Some(f) if opts.external_weights => capi::Weights::External(f),
        Some(f) => {
            // Beyond 2 GB of data, code cannot reach the data after it (x86-64's default code
            // model): such weights must stay outside.
            if f.bytes.len() > EMBED_MAX_BYTES {
                return Err(format!(
                    "the model has {:.1} GB of weights, more than a library can embed ({:.1} GB): compile it with --weights external",
                    f.bytes.len() as f64 / 1e9,
                    EMBED_MAX_BYTES as f64 / 1e9
                ));
            }
            capi::Weights::Embedded(f)
        }
    })
}

/// The header and the C wrapper of the library.
fn c_text(g: &Graph, opts: &Options, entry: &str, placed: capi::Weights) -> (String, String) {
    let version = env!("CARGO_PKG_VERSION");
    let name = &opts.name;
    (
        capi::header(g, name, version, opts.external_weights, opts.threads),
        capi::wrapper(g, name, entry, placed, opts.threads),
    )
}

/// The C sources `compile` would build the library from (`NAME.h` and the wrapper), without
/// running LLVM: for the tests, which compile them with a C compiler's strictest warnings.
pub fn c_sources(g: Graph, opts: &Options) -> Result<(String, String), String> {
    let g = prepare(g)?;
    let target = llvm::target(opts.target.as_deref(), opts.cpu.as_deref())?;
    let (entry, _, weights) = lower_for(&g, &target, &opts.name)?;
    let file = weights_file(&weights, opts);
    Ok(c_text(&g, opts, &entry, placement(&file, opts)?))
}

fn metadata(
    g: &Graph,
    name: &str,
    version: &str,
    sha: &str,
    opts: &Options,
    t: &llvm::Target_,
    train: Option<serde_json::Value>,
) -> String {
    let tensors = |ids: &[forgec_ir::ValueId]| -> Vec<serde_json::Value> {
        ids.iter()
            .map(|&i| {
                let ty = g.ty(i);
                serde_json::json!({
                    "name": g.value(i).name,
                    "dtype": ty.dtype.numpy_name(),
                    "shape": ty.shape.iter().map(|d| match d {
                        forgec_ir::Dim::Known(n) => serde_json::json!(n),
                        forgec_ir::Dim::Sym(_) => serde_json::json!("batch"),
                    }).collect::<Vec<_>>(),
                })
            })
            .collect()
    };
    let mut v = serde_json::json!({
        "name": name,
        "forgec_version": version,
        "source_sha256": sha,
        "inputs": tensors(&g.inputs),
        "outputs": tensors(&g.outputs),
        "flags": {
            "cpu": opts.cpu.as_ref().unwrap_or(&t.cpu),
            "target": t.triple,
            "weights": if opts.external_weights { "external" } else { "embedded" },
            "threads": opts.threads,
        },
    });
    if let Some(tr) = train {
        v["train"] = tr;
    }
    serde_json::to_string_pretty(&v).expect("json") + "\n"
}

/// `NAME.json`'s `train`: the loss and optimizer (`meta`), the labels, and the state layout.
fn train_json(t: &Training, p: &cpu::train::TrainParts) -> serde_json::Value {
    let (offs, total) = cpu::train::layout(p.state);
    let labels: Vec<serde_json::Value> = (0..p.num_labels)
        .map(|k| {
            let v = p.eval.inputs[p.num_inputs + k];
            let ty = p.eval.ty(v);
            serde_json::json!({
                "name": p.eval.value(v).name,
                "dtype": ty.dtype.numpy_name(),
                "shape": ty.shape.iter().map(|d| match d {
                    forgec_ir::Dim::Known(n) => serde_json::json!(n),
                    forgec_ir::Dim::Sym(_) => serde_json::json!("batch"),
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let tensors: Vec<serde_json::Value> = p
        .state
        .iter()
        .zip(&offs)
        .map(|((n, x), o)| {
            serde_json::json!({
                "name": n,
                "dtype": x.dtype().numpy_name(),
                "shape": x.shape(),
                "offset": o,
                "bytes": x.size_bytes(),
            })
        })
        .collect();
    let mut m = t.meta.clone();
    m["labels"] = serde_json::json!(labels);
    m["state"] = serde_json::json!({
        "bytes": total,
        "header": {
            "bytes": cpu::train::STATE_HEADER,
            "magic": "FORGECT1 (bytes 0-7), then 8 bytes of this layout's id",
            "steps": {"offset": 16, "dtype": "int64"},
            "learning_rate": {"offset": 24, "dtype": "float64"},
            "seed": {"offset": 32, "dtype": "uint64"},
            "size": {"offset": 40, "dtype": "int64"},
        },
        "tensors": tensors,
    });
    m
}
