//! MLIR text → MLIR passes → LLVM IR (inkwell, in memory) → O3 → object code.

use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;
use melior::dialect::DialectRegistry;
use melior::ir::operation::OperationLike;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{register_all_dialects, register_all_llvm_translations, register_all_passes};
use melior::Context;

/// Lowers linalg on tensors to the LLVM dialect with plain loops. The `llvm.emit_c_interface`
/// wrapper takes one memref descriptor pointer per argument. The kernels' `scf.forall`s become
/// tasks (`async-parallel-for`: the chunks but the first are coroutines handed to the async
/// runtime, which the C wrapper implements over the context's thread pool; the caller runs the
/// first chunk and waits for the others).
pub const PIPELINE: &str = "builtin.module(\
eliminate-empty-tensors,\
one-shot-bufferize{bufferize-function-boundaries=1 function-boundary-type-conversion=identity-layout-map allow-return-allocs-from-loops=1},\
canonicalize,buffer-deallocation-pipeline,convert-bufferization-to-memref,\
scf-forall-to-parallel,async-parallel-for{async-dispatch=0 num-workers=-1 min-task-size=1},\
async-to-async-runtime,async-runtime-ref-counting,async-runtime-ref-counting-opt,convert-async-to-llvm,\
func.func(convert-linalg-to-loops),convert-vector-to-scf,\
convert-scf-to-cf,expand-strided-metadata,lower-affine,convert-vector-to-llvm,\
convert-math-to-funcs,finalize-memref-to-llvm{use-generic-functions=1},convert-arith-to-llvm,convert-ub-to-llvm,convert-math-to-llvm,convert-math-to-libm,\
convert-func-to-llvm,convert-cf-to-llvm,convert-index-to-llvm,reconcile-unrealized-casts)";

#[derive(Clone, Debug)]
pub struct Target_ {
    pub triple: String,
    pub cpu: String,
    pub features: String,
}

/// The version of the LLVM (and MLIR, built from the same tree) linked in: (major, minor, patch).
pub fn llvm_version() -> (u32, u32, u32) {
    inkwell::support::get_llvm_version()
}

/// Resolves `--target` and `--cpu` (native, portable, x86-64-v2/v3/v4, or any LLVM CPU name;
/// default portable on x86_64, generic elsewhere: `Target_::levels` are what is compiled). A triple
/// LLVM has no backend for, or a CPU name it does not know for x86_64/aarch64 (where LLVM would
/// abort or silently drop it), is the user's error, said before any work is done.
pub fn target(triple: Option<&str>, cpu: Option<&str>) -> Result<Target_, String> {
    let host = TargetMachine::get_default_triple()
        .as_str()
        .to_string_lossy()
        .into_owned();
    let triple = triple.map_or_else(|| host.clone(), |t| t.to_string());
    Target::initialize_all(&InitializationConfig::default());
    Target::from_triple(&TargetTriple::create(&triple)).map_err(|e| {
        format!(
            "--target {triple}: LLVM has no backend for it ({}); use a triple such as \
             x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu",
            e.to_string_lossy()
        )
    })?;
    let arch = triple.split('-').next().unwrap_or("");
    let cpu = cpu.unwrap_or(if arch == "x86_64" {
        PORTABLE
    } else {
        "generic"
    });
    if cpu == PORTABLE {
        if arch != "x86_64" {
            return Err(format!(
                "--cpu portable: builds x86-64-v2, v3 and v4 into one library, for x86_64 only; \
                 for {arch} use generic or a CPU name from `llc -mtriple={triple} -mcpu=help`"
            ));
        }
        return Ok(Target_ {
            triple,
            cpu: PORTABLE.into(),
            features: String::new(),
        });
    }
    let known = match arch {
        "x86_64" => Some(super::cpus::X86_64),
        "aarch64" | "arm64" => Some(super::cpus::AARCH64),
        _ => None,
    };
    if let Some(known) = known {
        if cpu != "native" && !known.contains(&cpu) {
            let mut hint = if arch == "x86_64" {
                "portable (v2, v3 and v4 in one library), x86-64-v2, x86-64-v3, x86-64-v4"
            } else {
                "generic, neoverse-n1, apple-m1"
            }
            .to_string();
            if host.split('-').next() == Some(arch) {
                hint = format!("native (this machine), {hint}");
            }
            return Err(format!(
                "--cpu {cpu}: not a CPU LLVM knows for {arch}; use {hint}, \
                 or another name from `llc -mtriple={triple} -mcpu=help`"
            ));
        }
    }
    let (cpu, features) = if cpu == "native" {
        (
            TargetMachine::get_host_cpu_name().to_string(),
            TargetMachine::get_host_cpu_features().to_string(),
        )
    } else {
        (cpu.to_string(), String::new())
    };
    Ok(Target_ {
        triple,
        cpu,
        features,
    })
}

/// `--cpu portable`: the x86-64 levels in one library, picked at load (`cpu::portable`).
pub const PORTABLE: &str = "portable";

impl Target_ {
    /// The targets the code is compiled for: the levels of `--cpu portable`, else itself.
    pub fn levels(&self) -> Vec<Target_> {
        if self.cpu != PORTABLE {
            return vec![self.clone()];
        }
        super::portable::LEVELS
            .iter()
            .map(|&l| Target_ {
                triple: self.triple.clone(),
                cpu: super::portable::level_cpu(l),
                features: String::new(),
            })
            .collect()
    }

    pub fn is_portable(&self) -> bool {
        self.cpu == PORTABLE
    }
}

/// The triple of the machine forgec runs on.
pub fn host_triple() -> String {
    TargetMachine::get_default_triple()
        .as_str()
        .to_string_lossy()
        .into_owned()
}

/// f32 lanes of the widest vector registers `t` has: 16 with AVX-512, 8 with AVX2, else 4
/// (SSE2 and NEON, which every x86_64 and aarch64 CPU has).
pub fn simd_lanes(t: &Target_) -> usize {
    let arch = t.triple.split('-').next().unwrap_or("");
    if arch != "x86_64" {
        return 4;
    }
    if !t.features.is_empty() {
        let has = |f: &str| t.features.split(',').any(|x| x == format!("+{f}"));
        return if has("avx512f") {
            16
        } else if has("avx2") {
            8
        } else {
            4
        };
    }
    const AVX512: &[&str] = &[
        "x86-64-v4",
        "skylake-avx512",
        "cascadelake",
        "cooperlake",
        "cannonlake",
        "icelake-client",
        "icelake-server",
        "tigerlake",
        "sapphirerapids",
        "rocketlake",
        "graniterapids",
        "graniterapids-d",
        "emeraldrapids",
        "diamondrapids",
        "znver4",
        "znver5",
        "knl",
        "knm",
    ];
    const AVX2: &[&str] = &[
        "x86-64-v3",
        "haswell",
        "broadwell",
        "skylake",
        "alderlake",
        "raptorlake",
        "meteorlake",
        "arrowlake",
        "arrowlake-s",
        "lunarlake",
        "pantherlake",
        "gracemont",
        "sierraforest",
        "grandridge",
        "clearwaterforest",
        "znver1",
        "znver2",
        "znver3",
        "bdver4",
    ];
    if AVX512.contains(&t.cpu.as_str()) {
        16
    } else if AVX2.contains(&t.cpu.as_str()) {
        8
    } else {
        4
    }
}

/// The features the target machine is made with: with AVX-512, LLVM's tuning for most CPUs
/// prefers 256-bit vectors, which splits the matmul kernels' 512-bit accumulators in two and
/// spills them; forgec's kernels are sized for the full width.
fn machine_features(t: &Target_) -> String {
    if simd_lanes(t) < 16 {
        return t.features.clone();
    }
    if t.features.is_empty() {
        "-prefer-256-bit".into()
    } else {
        format!("{},-prefer-256-bit", t.features)
    }
}

/// Which stage's text to return instead of object code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    LoweredMlir,
    Llvm,
    Asm,
    /// One object file.
    Object,
    /// Object files for a library: a big model's op functions in several parts, optimized and
    /// compiled in parallel.
    Objects,
}

/// Runs the pipeline on `mlir`; returns the requested stage (text or object bytes: one
/// object, or with `Stage::Objects` one per part).
/// Scratch buffers come from `<name>_forgec_alloc` / `<name>_forgec_free`, which the C wrapper
/// defines over the calling context's cache (see `capi::wrapper`).
pub fn compile(mlir: &str, t: &Target_, stage: Stage, name: &str) -> Result<Vec<Vec<u8>>, String> {
    let timings = timings();
    let mut clock = std::time::Instant::now();
    let mut lap = |what: &str| {
        if timings {
            eprintln!("forgec: {what}: {:.2} s", clock.elapsed().as_secs_f64());
        }
        clock = std::time::Instant::now();
    };
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let ctx = Context::new();
    ctx.append_dialect_registry(&registry);
    ctx.load_all_available_dialects();
    register_all_passes();
    register_all_llvm_translations(&ctx);
    let mut module = Module::parse(&ctx, mlir).ok_or("the generated MLIR does not parse")?;
    lap("parse MLIR");
    if !module.as_operation().verify() {
        return Err("the generated MLIR does not verify".into());
    }
    let pm = PassManager::new(&ctx);
    melior::utility::parse_pass_pipeline(pm.as_operation_pass_manager(), PIPELINE)
        .map_err(|e| format!("the pass pipeline does not parse: {e}"))?;
    pm.run(&mut module)
        .map_err(|e| format!("an MLIR pass failed: {e}"))?;
    lap("MLIR passes");
    if stage == Stage::LoweredMlir {
        return Ok(vec![module.as_operation().to_string().into_bytes()]);
    }
    let llctx = inkwell::context::Context::create();
    let raw = unsafe {
        mlir_sys::mlirTranslateModuleToLLVMIR(module.as_operation().to_raw(), llctx.raw() as _)
    };
    if raw.is_null() {
        return Err("translating the LLVM dialect to LLVM IR failed".into());
    }
    let llmod = unsafe { inkwell::module::Module::new(raw as _) };
    for (generic, ours) in [
        ("_mlir_memref_to_llvm_alloc", "alloc"),
        ("_mlir_memref_to_llvm_aligned_alloc", "aligned_alloc"),
        ("_mlir_memref_to_llvm_free", "free"),
        ("forgec_threads", "threads"),
        // The coroutine frames of MLIR's async lowering, kept by the wrapper for the next call.
        ("aligned_alloc", "frame_alloc"),
        ("free", "frame_free"),
        // The strided copy of MLIR's runner library, answered by the wrapper.
        ("memrefCopy", "memrefCopy"),
    ] {
        if let Some(f) = llmod.get_function(generic) {
            f.as_global_value()
                .set_name(&format!("{name}_forgec_{ours}"));
        }
    }
    // MLIR's async runtime calls, answered by the C wrapper (the `async` section of `cpu/wrapper.c`) under the
    // model's name: `mlirAsyncRuntimeCreateToken` -> `NAME_forgec_async_CreateToken`.
    for f in llmod.get_functions() {
        let n = f.get_name().to_string_lossy().into_owned();
        let rest = n
            .strip_prefix("mlirAsyncRuntime")
            .or_else(|| n.strip_prefix("mlirAsyncRuntim"));
        if let (Some(rest), 0) = (rest, f.count_basic_blocks()) {
            f.as_global_value()
                .set_name(&format!("{name}_forgec_async_{rest}"));
        }
    }
    // Only the entry points are exported: the op functions (`op12`) and MLIR's helpers would
    // clash between two models linked into one program.
    let entry = format!("{name}_forgec_main");
    for f in llmod.get_functions() {
        let n = f.get_name().to_string_lossy().into_owned();
        // (`__truncsfbf2` is weak and hidden already, and LLVM's libcalls must find it.)
        let exported = n == entry || n == format!("_mlir_ciface_{entry}") || n == "__truncsfbf2";
        if f.count_basic_blocks() > 0 && !exported {
            f.set_linkage(inkwell::module::Linkage::Internal);
        }
    }
    lap("translate to LLVM IR");
    Target::initialize_all(&InitializationConfig::default());
    if stage == Stage::Objects {
        let parts = partition(&llmod, name, t)?;
        if parts.len() > 1 {
            let bitcode = llmod.write_bitcode_to_memory().as_slice().to_vec();
            let out = compile_parts(&bitcode, t, &parts, name);
            lap(&format!("LLVM O3 and machine code, {} parts", parts.len()));
            return out;
        }
    }
    let tm = machine(t)?;
    optimize(&llmod, &tm)?;
    lap("LLVM O3");
    if stage == Stage::Llvm {
        return Ok(vec![llmod.print_to_string().to_string().into_bytes()]);
    }
    let kind = if stage == Stage::Asm {
        FileType::Assembly
    } else {
        FileType::Object
    };
    let out = emit(&llmod, &tm, kind);
    lap("machine code");
    Ok(vec![out?])
}

/// Whether to print each stage's time (and the parts') to stderr: `FORGEC_TIMINGS=1`.
fn timings() -> bool {
    std::env::var_os("FORGEC_TIMINGS").is_some()
}

/// The target machine for `t` (LLVM's targets initialized).
fn machine(t: &Target_) -> Result<TargetMachine, String> {
    let triple = TargetTriple::create(&t.triple);
    let target = Target::from_triple(&triple).map_err(|e| format!("target `{}`: {e}", t.triple))?;
    target
        .create_target_machine(
            &triple,
            &t.cpu,
            &machine_features(t),
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| {
            format!(
                "LLVM cannot make a machine for `{}` / cpu `{}`",
                t.triple, t.cpu
            )
        })
}

/// LLVM's O3 pipeline on `m` for the machine `tm`.
fn optimize(m: &inkwell::module::Module, tm: &TargetMachine) -> Result<(), String> {
    m.set_triple(&tm.get_triple());
    m.set_data_layout(&tm.get_target_data().get_data_layout());
    passes(m, tm, "default<O3>")
}

/// The LLVM pass pipeline `pipeline` on `m`.
fn passes(m: &inkwell::module::Module, tm: &TargetMachine, pipeline: &str) -> Result<(), String> {
    m.run_passes(pipeline, tm, inkwell::passes::PassBuilderOptions::create())
        .map_err(|e| format!("LLVM optimization failed: {e}"))
}

/// Assembly or object code for `m`.
fn emit(
    m: &inkwell::module::Module,
    tm: &TargetMachine,
    kind: FileType,
) -> Result<Vec<u8>, String> {
    tm.write_to_memory_buffer(m, kind)
        .map(|b| b.as_slice().to_vec())
        .map_err(|e| format!("code generation failed: {e}"))
}

/// A module's op functions (`op12`: one per computing node, see `mlir::emit`) of more than
/// this many LLVM instructions (before O3) are cut into 2 or 4 parts, each optimized and
/// compiled on a thread of its own.
const PART_INSTRUCTIONS: usize = 20_000;

/// At most this many parts. A fixed count for a given model, whatever this machine's cores:
/// the same input gives the same objects everywhere.
const MAX_PARTS: usize = 4;

/// Cuts `m`'s op functions into parts of about equal weight (each op with the helpers it
/// reaches: its `parallel_compute_fn`s, coroutines), heaviest first into the lightest part;
/// the entry functions stay in part 0. When there is more than one part, every op function is
/// renamed `NAME_forgec_opN` and made external and hidden, so that the entry can call it from
/// another object and two models' ops do not clash in one program. Returns each part's op
/// names (one part holding them all when the module is small).
fn partition(
    m: &inkwell::module::Module,
    name: &str,
    t: &Target_,
) -> Result<Vec<Vec<String>>, String> {
    use inkwell::llvm_sys::core::{
        LLVMGetNumOperands, LLVMGetOperand, LLVMGetValueName2, LLVMIsAFunction,
    };
    use inkwell::values::AsValueRef;
    use std::collections::{BTreeMap, BTreeSet};
    // Each defined function's instruction count and the defined functions it refers to.
    let mut size: BTreeMap<String, usize> = BTreeMap::new();
    let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in m.get_functions() {
        if f.count_basic_blocks() == 0 {
            continue;
        }
        let fname = f.get_name().to_string_lossy().into_owned();
        let (mut n, mut to) = (0usize, BTreeSet::new());
        for bb in f.get_basic_block_iter() {
            for inst in bb.get_instructions() {
                n += 1;
                let v = inst.as_value_ref();
                // SAFETY: `v` is a live instruction of `m`; operands are read, not changed.
                unsafe {
                    for k in 0..LLVMGetNumOperands(v).max(0) as u32 {
                        let op = LLVMGetOperand(v, k);
                        if !op.is_null() && !LLVMIsAFunction(op).is_null() {
                            let mut len = 0usize;
                            let p = LLVMGetValueName2(op, &mut len);
                            if !p.is_null() {
                                let s = std::slice::from_raw_parts(p as *const u8, len);
                                to.insert(String::from_utf8_lossy(s).into_owned());
                            }
                        }
                    }
                }
            }
        }
        size.insert(fname.clone(), n);
        refs.insert(fname, to);
    }
    let is_op = |s: &str| {
        s.strip_prefix("op")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    let ops: Vec<String> = size.keys().filter(|s| is_op(s)).cloned().collect();
    // An op's weight: its own instructions and those of the helpers it reaches (not other ops).
    let weight = |root: &str| -> usize {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![root.to_string()]);
        let mut w = 0;
        while let Some(f) = todo.pop() {
            if !seen.insert(f.clone()) {
                continue;
            }
            w += size.get(&f).copied().unwrap_or(0);
            for g in refs.get(&f).into_iter().flatten() {
                if !is_op(g) && size.contains_key(g) {
                    todo.push(g.clone());
                }
            }
        }
        w
    };
    let mut weighted: Vec<(usize, String)> = ops.iter().map(|o| (weight(o), o.clone())).collect();
    let total: usize = weighted.iter().map(|(w, _)| w).sum();
    // 1, 2 or 4 parts: whole numbers of them per core on 2 or 4 cores.
    let n = match total.div_ceil(PART_INSTRUCTIONS) {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => MAX_PARTS,
    }
    .min(ops.len().max(1));
    if timings() {
        eprintln!(
            "forgec: {total} LLVM instructions in {} op functions: {n} parts",
            ops.len()
        );
    }
    if n == 1 {
        return Ok(vec![ops]);
    }
    // While the ops are still internal with one caller: their constant arguments (the memref
    // descriptors' sizes and strides, the weights' addresses) go into their bodies and out of
    // their signatures. Without this every part compiles general code, slower to make and run.
    let tm = machine(t)?;
    passes(m, &tm, "ipsccp,deadargelim")?;
    weighted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut parts: Vec<(usize, Vec<String>)> = vec![(0, Vec::new()); n];
    for (w, o) in weighted {
        let lightest = (0..n).min_by_key(|&i| (parts[i].0, i)).unwrap_or(0);
        parts[lightest].0 += w;
        parts[lightest].1.push(o);
    }
    for f in m.get_functions() {
        let fname = f.get_name().to_string_lossy().into_owned();
        if is_op(&fname) && f.count_basic_blocks() > 0 {
            f.as_global_value()
                .set_name(&format!("{name}_forgec_{fname}"));
            f.set_linkage(inkwell::module::Linkage::External);
            f.as_global_value()
                .set_visibility(inkwell::GlobalVisibility::Hidden);
        }
    }
    Ok(parts
        .into_iter()
        .map(|(_, os)| os.iter().map(|o| format!("{name}_forgec_{o}")).collect())
        .collect())
}

/// Optimizes and compiles each part of the module in `bitcode` (see `partition`) on its own
/// LLVM context, as many at once as this machine has cores (at most one per part). Part 0 holds
/// the entry functions, the others' ops as declarations; part `i > 0` its ops only.
fn compile_parts(
    bitcode: &[u8],
    t: &Target_,
    parts: &[Vec<String>],
    name: &str,
) -> Result<Vec<Vec<u8>>, String> {
    use inkwell::module::Linkage;
    let entry = format!("{name}_forgec_main");
    let entries = [entry.clone(), format!("_mlir_ciface_{entry}")];
    let one = |i: usize| -> Result<Vec<u8>, String> {
        let ctx = inkwell::context::Context::create();
        let buf =
            inkwell::memory_buffer::MemoryBuffer::create_from_memory_range_copy(bitcode, "part");
        let m = inkwell::module::Module::parse_bitcode_from_buffer(&buf, &ctx)
            .map_err(|e| format!("reading back the module's bitcode: {e}"))?;
        for (j, ops) in parts.iter().enumerate() {
            if j == i {
                continue;
            }
            for op in ops {
                let Some(f) = m.get_function(op) else {
                    continue;
                };
                if i == 0 {
                    // The entry calls it: a declaration in its place.
                    let ty = f.get_type();
                    f.as_global_value().set_name(&format!("{op}.elsewhere"));
                    let d = m.add_function(op, ty, Some(Linkage::External));
                    d.as_global_value()
                        .set_visibility(inkwell::GlobalVisibility::Hidden);
                    d.set_call_conventions(f.get_call_conventions());
                    f.replace_all_uses_with(d);
                    // SAFETY: `f` has no uses left and is not used again.
                    unsafe { f.delete() };
                } else {
                    // Only the entry (dropped below) calls it: O3 drops it.
                    f.set_linkage(Linkage::Internal);
                }
            }
        }
        if i > 0 {
            for e in &entries {
                if let Some(f) = m.get_function(e) {
                    f.set_linkage(Linkage::Internal);
                }
            }
        }
        let clock = std::time::Instant::now();
        let tm = machine(t)?;
        // What the other parts hold goes first: O3 would optimize it before dropping it.
        passes(&m, &tm, "globaldce")?;
        optimize(&m, &tm)?;
        let o = emit(&m, &tm, FileType::Object);
        if timings() {
            eprintln!(
                "forgec: part {i} ({} ops): {:.2} s",
                parts[i].len(),
                clock.elapsed().as_secs_f64()
            );
        }
        o
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |c| c.get())
        .min(parts.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Option<Result<Vec<u8>, String>>> = (0..parts.len()).map(|_| None).collect();
    let done = std::sync::Mutex::new(&mut out);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= parts.len() {
                    break;
                }
                let r = one(i);
                if let Ok(mut d) = done.lock() {
                    d[i] = Some(r);
                }
            });
        }
    });
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err("a code generation thread stopped".into())))
        .collect()
}
