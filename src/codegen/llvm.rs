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

pub struct Target_ {
    pub triple: String,
    pub cpu: String,
    pub features: String,
}

/// Resolves `--target` and `--cpu` (native, x86-64-v2/v3/v4, or any LLVM CPU name; default
/// x86-64-v2 on x86_64, generic elsewhere). A triple
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
        "x86-64-v2"
    } else {
        "generic"
    });
    let known = match arch {
        "x86_64" => Some(super::cpus::X86_64),
        "aarch64" | "arm64" => Some(super::cpus::AARCH64),
        _ => None,
    };
    if let Some(known) = known {
        if cpu != "native" && !known.contains(&cpu) {
            let mut hint = if arch == "x86_64" {
                "x86-64-v2 (portable), x86-64-v3, x86-64-v4"
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
    Object,
}

/// Runs the pipeline on `mlir`; returns the requested stage (text or object bytes).
/// Scratch buffers come from `<name>_forgec_alloc` / `<name>_forgec_free`, which the C wrapper
/// defines over the calling context's cache (see `capi::wrapper`).
pub fn compile(mlir: &str, t: &Target_, stage: Stage, name: &str) -> Result<Vec<u8>, String> {
    // FORGEC_TIMINGS=1 prints each stage's time to stderr.
    let timings = std::env::var_os("FORGEC_TIMINGS").is_some();
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
        return Ok(module.as_operation().to_string().into_bytes());
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
    ] {
        if let Some(f) = llmod.get_function(generic) {
            f.as_global_value()
                .set_name(&format!("{name}_forgec_{ours}"));
        }
    }
    // MLIR's async runtime calls, answered by the C wrapper (`capi::ASYNC_RUNTIME`) under the
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
    let triple = TargetTriple::create(&t.triple);
    let target = Target::from_triple(&triple).map_err(|e| format!("target `{}`: {e}", t.triple))?;
    let tm = target
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
        })?;
    llmod.set_triple(&triple);
    llmod.set_data_layout(&tm.get_target_data().get_data_layout());
    llmod
        .run_passes(
            "default<O3>",
            &tm,
            inkwell::passes::PassBuilderOptions::create(),
        )
        .map_err(|e| format!("LLVM optimization failed: {e}"))?;
    lap("LLVM O3");
    if stage == Stage::Llvm {
        return Ok(llmod.print_to_string().to_string().into_bytes());
    }
    let kind = if stage == Stage::Asm {
        FileType::Assembly
    } else {
        FileType::Object
    };
    let out = tm
        .write_to_memory_buffer(&llmod, kind)
        .map(|b| b.as_slice().to_vec())
        .map_err(|e| format!("code generation failed: {e}"));
    lap("machine code");
    out
}
