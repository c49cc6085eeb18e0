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
    /// `native`, `portable` (x86-64-v2, v3 and v4 in one library, picked at load), `x86-64-v2`,
    /// `x86-64-v3`, `x86-64-v4`, or an LLVM CPU (default: `portable` on x86_64, `generic`
    /// elsewhere).
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

/// One model of a library (the model itself, or a training graph) lowered and compiled for each
/// level of the target (one, or the three of `--cpu portable`), with each level's header and
/// wrapper written into the scratch dir: one `capi::LinkPart` per level, all sharing one weights
/// file (`files`: its view per level; none when the model has no large constants).
struct Built {
    /// (part name, file tag, objects, wrapper) per level.
    parts: Vec<(String, String, Vec<String>, String)>,
    files: Vec<capi::WeightsFile>,
}

/// What `build` makes: the part's name (`NAME`, or `NAME_forgec_step`...), the tag that keeps
/// its files apart ("" for the model's own), and how its weights are placed.
struct PartSpec<'a> {
    name: &'a str,
    tag: &'a str,
    library: &'a str,
    external: bool,
    threads: usize,
    /// Whether LLVM makes the objects (`c_sources` wants the C alone).
    objects: bool,
}

impl<'a> PartSpec<'a> {
    /// The library's own model, as `opts` asks for it.
    fn model(opts: &'a Options, objects: bool) -> Self {
        PartSpec {
            name: &opts.name,
            tag: "",
            library: &opts.name,
            external: opts.external_weights,
            threads: opts.threads,
            objects,
        }
    }
}

impl Built {
    fn link_parts(&self, external: bool) -> Vec<capi::LinkPart<'_>> {
        self.parts
            .iter()
            .enumerate()
            .map(|(k, (name, tag, objects, wrapper))| capi::LinkPart {
                name: name.clone(),
                tag: tag.clone(),
                objects: objects.clone(),
                wrapper: wrapper.clone(),
                weights: match self.files.get(k) {
                    None => capi::Weights::None,
                    Some(f) if external => capi::Weights::External(f),
                    Some(f) => capi::Weights::Embedded(f),
                },
            })
            .collect()
    }
}

fn build(g: &Graph, spec: &PartSpec, target: &llvm::Target_, dir: &Path) -> Result<Built, String> {
    let internal = |e: String| {
        format!(
            "internal error in forgec's code generator: {e}\nthis is a bug in forgec; `forgec compile --emit mlir` shows the MLIR it made, and `forgec run --engine interp` runs the model meanwhile"
        )
    };
    let levels = target.levels();
    let portable = target.is_portable();
    let mut lowered = Vec::new();
    for t in &levels {
        let pname = if portable {
            cpu::portable::level_part(spec.name, level_of(t))
        } else {
            spec.name.to_string()
        };
        let (entry, text, weights) = lower_for(g, t, &pname)?;
        if keep_scratch() {
            let _ = std::fs::write(dir.join(format!("{pname}.mlir")), &text);
        }
        lowered.push((pname, entry, text, weights));
    }
    let lists: Vec<&[lower::ExternalWeight]> = lowered.iter().map(|l| l.3.as_slice()).collect();
    let files = if spec.external || lists.iter().any(|l| !l.is_empty()) {
        capi::weights_files(&lists)
    } else {
        Vec::new()
    };
    if !spec.external {
        if let Some(f) = files.first() {
            embeddable(f)?;
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = Vec::new();
    for (k, ((pname, entry, text, _), t)) in lowered.iter().zip(&levels).enumerate() {
        let ftag = match (portable, spec.tag.is_empty()) {
            (false, _) => spec.tag.to_string(),
            (true, true) => format!("v{}", level_of(t)),
            (true, false) => format!("{}_v{}", spec.tag, level_of(t)),
        };
        let objs = if spec.objects {
            llvm::compile(text, t, llvm::Stage::Objects, pname).map_err(internal)?
        } else {
            Vec::new()
        };
        let mut objects = Vec::new();
        for (i, bytes) in objs.iter().enumerate() {
            let o = match (ftag.is_empty(), portable) {
                (true, _) => format!("kernel{i}.o"),
                (false, false) => format!("kernel_{ftag}{i}.o"),
                (false, true) => format!("kernel_{ftag}_{i}.o"),
            };
            std::fs::write(dir.join(&o), bytes).map_err(|e| e.to_string())?;
            objects.push(o);
        }
        let placed = match files.get(k) {
            None => capi::Weights::None,
            Some(f) if spec.external => capi::Weights::External(f),
            Some(f) => capi::Weights::Embedded(f),
        };
        let role = capi::Role {
            cpu: &t.cpu,
            library: spec.library,
            level: portable,
        };
        let wrapper = if ftag.is_empty() {
            "wrapper.c".to_string()
        } else {
            format!("wrapper_{ftag}.c")
        };
        std::fs::write(
            dir.join(&wrapper),
            capi::wrapper(g, pname, entry, placed, spec.threads, role),
        )
        .map_err(|e| e.to_string())?;
        if pname != spec.library {
            std::fs::write(
                dir.join(format!("{pname}.h")),
                capi::header(g, pname, version, spec.external, spec.threads),
            )
            .map_err(|e| e.to_string())?;
        }
        parts.push((pname.clone(), ftag, objects, wrapper));
    }
    if portable && spec.name != spec.library {
        // The training API includes the part's own header, whose functions the dispatcher
        // resolves to a level's.
        std::fs::write(
            dir.join(format!("{}.h", spec.name)),
            capi::header(g, spec.name, version, spec.external, spec.threads),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(Built { parts, files })
}

/// The level of a portable library's target (`x86-64-vN`).
fn level_of(t: &llvm::Target_) -> u32 {
    t.cpu
        .strip_prefix("x86-64-v")
        .and_then(|n| n.parse().ok())
        .unwrap_or(2)
}

/// The training graphs prepared and compiled, each a model of its own in the library.
fn build_training(
    t: &Training,
    name: &str,
    target: &llvm::Target_,
    dir: &Path,
    threads: usize,
) -> Result<Vec<(String, Graph, Built)>, String> {
    let mut graphs = Vec::new();
    for (tag, g) in [
        ("step", &t.step),
        ("eval", &t.eval),
        ("predict", &t.predict),
    ] {
        let g = prepare(g.clone())?;
        let pname = format!("{name}_forgec_{tag}");
        let spec = PartSpec {
            name: &pname,
            tag,
            library: name,
            external: false,
            threads,
            objects: true,
        };
        let built = build(&g, &spec, target, dir)?;
        graphs.push((tag.to_string(), g, built));
    }
    Ok(graphs)
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
    let write = |file: PathBuf, bytes: &[u8]| -> Result<PathBuf, String> {
        std::fs::write(&file, bytes)
            .map_err(|e| format!("{}: cannot write: {e}", file.display()))?;
        Ok(file)
    };
    if opts.emit != Emit::Lib {
        return emit_stage(&g, opts, &target, out);
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
    }
    let dir = scratch.path();
    let version = env!("CARGO_PKG_VERSION");
    let spec = PartSpec::model(opts, true);
    let main = build(&g, &spec, &target, dir)?;
    let mut header = capi::header(&g, name, version, opts.external_weights, opts.threads);
    let (cc, ar) = tools.ok_or("internal error: a library without its C toolchain")?;
    let mut parts = main.link_parts(opts.external_weights);
    let mut exports: Vec<String> = capi::API_FUNCTIONS
        .iter()
        .map(|f| format!("{name}_{f}"))
        .collect();
    let mut extra = Vec::new();
    // The parts whose API functions a portable library's dispatcher resolves.
    let mut dispatched = vec![(name.clone(), api_names())];
    let mut train_meta = None;
    let training = match &training {
        Some(t) => Some((t, build_training(t, name, &target, dir, opts.threads)?)),
        None => None,
    };
    if let Some((t, built)) = &training {
        let gr = |k: usize| &built[k].1;
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
        std::fs::write(dir.join("train.c"), c).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.join("train_state.bin"),
            cpu::train::state_blob(&t.state, t.lr),
        )
        .map_err(|e| e.to_string())?;
        // The training API goes before the header's closing lines.
        let close = header
            .rfind("\n#ifdef __cplusplus")
            .ok_or("internal error: the header has no end")?;
        header.insert_str(close + 1, &cpu::train::header(name, &tp, &t.title));
        for (tag, _, b) in built {
            parts.extend(b.link_parts(false));
            dispatched.push((format!("{name}_forgec_{tag}"), api_names()));
        }
        exports.extend(
            cpu::train::TRAIN_FUNCTIONS
                .iter()
                .map(|f| format!("{name}_{f}")),
        );
        extra.push((
            "train.c".to_string(),
            vec![(
                format!("{name}_forgec_train_init"),
                "train_state.bin".to_string(),
            )],
        ));
        train_meta = Some(train_json(t, &tp));
    }
    if target.is_portable() {
        let map = opts.external_weights && !main.files.is_empty();
        let c = cpu::portable::dispatcher(name, &dispatched, map);
        std::fs::write(dir.join("portable.c"), c).map_err(|e| e.to_string())?;
        extra.push(("portable.c".to_string(), Vec::new()));
    }
    std::fs::write(dir.join(format!("{name}.h")), &header).map_err(|e| e.to_string())?;
    capi::link_parts(dir, &parts, &extra, name, out, (&cc, &ar), &exports)?;
    let h = write(out.join(format!("{name}.h")), header.as_bytes())?;
    let meta = metadata(&g, name, version, source_sha256, opts, &target, train_meta);
    let j = write(out.join(format!("{name}.json")), meta.as_bytes())?;
    let mut files = vec![
        out.join(format!("lib{name}.a")),
        out.join(format!("lib{name}.so")),
        h,
        j,
    ];
    if let (Some(f), true) = (main.files.first(), opts.external_weights) {
        files.push(write(out.join(format!("{name}.weights")), &f.bytes)?);
    }
    Ok(files)
}

/// The API functions of a model's wrapper.
fn api_names() -> Vec<String> {
    capi::API_FUNCTIONS.iter().map(|f| f.to_string()).collect()
}

/// `--emit mlir|llvm|asm|obj`: one file, or one per level of a portable target
/// (`NAME.x86-64-v3.s`).
fn emit_stage(
    g: &Graph,
    opts: &Options,
    target: &llvm::Target_,
    out: &Path,
) -> Result<Vec<PathBuf>, String> {
    let name = &opts.name;
    let internal = |e: String| {
        format!(
            "internal error in forgec's code generator: {e}\nthis is a bug in forgec; `forgec compile --emit mlir` shows the MLIR it made, and `forgec run --engine interp` runs the model meanwhile"
        )
    };
    let (stage, ext) = match opts.emit {
        Emit::Mlir => (None, "mlir"),
        Emit::Llvm => (Some(llvm::Stage::Llvm), "ll"),
        Emit::Asm => (Some(llvm::Stage::Asm), "s"),
        _ => (Some(llvm::Stage::Object), "o"),
    };
    let mut files = Vec::new();
    for t in target.levels() {
        let pname = if target.is_portable() {
            cpu::portable::level_part(name, level_of(&t))
        } else {
            name.clone()
        };
        let (_, text, _) = lower_for(g, &t, &pname)?;
        let bytes = match stage {
            None => text.into_bytes(),
            Some(stage) => {
                let parts = llvm::compile(&text, &t, stage, &pname).map_err(internal)?;
                parts.into_iter().next().unwrap_or_default()
            }
        };
        let file = if target.is_portable() {
            out.join(format!("{name}.{}.{ext}", t.cpu))
        } else {
            out.join(format!("{name}.{ext}"))
        };
        std::fs::write(&file, bytes)
            .map_err(|e| format!("{}: cannot write: {e}", file.display()))?;
        files.push(file);
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

/// Embedded weights must stay within reach of the code.
fn embeddable(f: &capi::WeightsFile) -> Result<(), String> {
    // Beyond 2 GB of data, code cannot reach the data after it (x86-64's default code model):
    // such weights must stay outside.
    if f.bytes.len() > EMBED_MAX_BYTES {
        return Err(format!(
            "the model has {:.1} GB of weights, more than a library can embed ({:.1} GB): compile it with --weights external",
            f.bytes.len() as f64 / 1e9,
            EMBED_MAX_BYTES as f64 / 1e9
        ));
    }
    Ok(())
}

/// The C sources `compile` would build the library from (file name and text: `NAME.h`, the
/// wrappers, a portable library's levels' headers and its dispatcher `portable.c`), without
/// running LLVM: for the tests, which compile them with a C compiler's strictest warnings.
pub fn c_sources(g: Graph, opts: &Options) -> Result<Vec<(String, String)>, String> {
    let g = prepare(g)?;
    let target = llvm::target(opts.target.as_deref(), opts.cpu.as_deref())?;
    let scratch =
        tempfile::tempdir().map_err(|e| format!("cannot make a scratch directory: {e}"))?;
    let dir = scratch.path();
    let name = &opts.name;
    let spec = PartSpec::model(opts, false);
    let main = build(&g, &spec, &target, dir)?;
    let version = env!("CARGO_PKG_VERSION");
    let header = capi::header(&g, name, version, opts.external_weights, opts.threads);
    std::fs::write(dir.join(format!("{name}.h")), header).map_err(|e| e.to_string())?;
    if target.is_portable() {
        let map = opts.external_weights && !main.files.is_empty();
        let c = cpu::portable::dispatcher(name, &[(name.clone(), api_names())], map);
        std::fs::write(dir.join("portable.c"), c).map_err(|e| e.to_string())?;
    }
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        if matches!(p.extension().and_then(|x| x.to_str()), Some("c" | "h")) {
            let text = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
            let file = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            files.push((file, text));
        }
    }
    files.sort();
    Ok(files)
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
    if t.is_portable() {
        // The levels inside, picked at load by CPUID (`cpu::portable`).
        v["flags"]["levels"] = t.levels().iter().map(|l| l.cpu.clone()).collect();
    }
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
