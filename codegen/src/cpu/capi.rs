//! The C API of a compiled model: `NAME.h`, a small C99 wrapper around MLIR's C interface,
//! and the link steps (`ar` for `libNAME.a`, `cc -shared` for `libNAME.so`).

use forgec_ir::{DType, Dim, Graph, Op, ValueId};
use std::fmt::Write;
use std::path::Path;
use std::process::Command;

fn c_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "float",
        DType::F64 => "double",
        DType::F16 | DType::BF16 => "uint16_t",
        DType::I8 => "int8_t",
        DType::I32 => "int32_t",
        DType::I64 => "int64_t",
        DType::Bool => "uint8_t",
    }
}

/// A C identifier from a value name: ASCII letters, digits and `_` (anything else becomes
/// `_`), at most 64 characters, never starting with a digit or `_` (identifiers starting with
/// `_` and a capital or a second `_` are reserved to the C implementation).
pub fn c_ident(s: &str) -> String {
    let mut o: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(64)
        .collect();
    if o.is_empty() || o.starts_with(|c: char| c.is_ascii_digit() || c == '_') {
        o.insert_str(0, "v_");
    }
    o
}

/// `s` as the inside of a C string literal: printable ASCII as it is, but for `"`, `\` and
/// `?` (no trigraph can form), everything else as a three-digit octal escape (a hex escape
/// would swallow the digits after it). Names longer than 200 bytes are cut, marked `...`.
pub fn c_escape(s: &str) -> String {
    let bytes = s.as_bytes();
    let cut = bytes.len() > 200;
    let mut o = String::new();
    for &b in &bytes[..bytes.len().min(200)] {
        match b {
            b'"' | b'\\' | b'?' => {
                o.push('\\');
                o.push(b as char);
            }
            0x20..=0x7e => o.push(b as char),
            _ => o.push_str(&format!("\\{b:03o}")),
        }
    }
    if cut {
        o.push_str("...");
    }
    o
}

/// `s` for a C comment: escaped as in a string literal, and no `*/` or `/*` left to end or
/// open a comment.
pub fn c_comment(s: &str) -> String {
    c_escape(s).replace("*/", "*\\/").replace("/*", "/\\*")
}

/// The one symbolic dim the C API lets the caller choose (the batch), if any.
pub fn batch_symbol(g: &Graph) -> Result<Option<String>, String> {
    let mut syms: Vec<String> = Vec::new();
    for &i in g.inputs.iter().chain(&g.outputs) {
        for d in &g.ty(i).shape {
            if let Dim::Sym(s) = d {
                if !syms.contains(s) {
                    syms.push(s.clone());
                }
            }
        }
    }
    match syms.len() {
        0 => Ok(None),
        1 => Ok(Some(syms.remove(0))),
        _ => Err(format!(
            "the model has several symbolic dims ({}): the compiled API chooses the batch size only; fix the others (e.g. the sequence length) in the model",
            syms.join(", ")
        )),
    }
}

/// Why the batch cannot be split across threads, if it cannot: every sample must be computed
/// from its own rows alone. That holds when the batch symbol is only ever the leading dim and
/// no op works along that dim (a reduction over the batch, a softmax across samples, a
/// transpose that moves the batch, ...). Ops not known to be per-sample count as mixing.
pub fn batch_split_obstacle(g: &Graph) -> Option<String> {
    let sym = match batch_symbol(g) {
        Ok(Some(s)) => s,
        Ok(None) => return Some("the model has no batch dim".into()),
        Err(e) => return Some(e),
    };
    let leading = |v: forgec_ir::ValueId| {
        let s = &g.ty(v).shape;
        s.first() == Some(&Dim::Sym(sym.clone()))
            && !s[1..].iter().any(|d| matches!(d, Dim::Sym(_)))
    };
    let no_sym = |v: forgec_ir::ValueId| !g.ty(v).shape.iter().any(|d| matches!(d, Dim::Sym(_)));
    for &v in g.inputs.iter().chain(&g.outputs) {
        if !leading(v) {
            return Some(format!(
                "`{}` does not have the batch as its first dim",
                g.value(v).name
            ));
        }
    }
    for n in &g.nodes {
        let batched = n.inputs.iter().chain(&n.outputs).any(|&v| !no_sym(v));
        if !batched {
            continue;
        }
        if !n
            .inputs
            .iter()
            .chain(&n.outputs)
            .all(|&v| leading(v) || no_sym(v))
        {
            return Some(format!("{} moves the batch dim", n.origin));
        }
        let per_sample = match &n.op {
            Op::Unary(_)
            | Op::Binary(_)
            | Op::Select
            | Op::Cast { .. }
            | Op::MatMul
            | Op::Conv(_)
            | Op::Pool(_)
            | Op::Reshape { .. }
            | Op::Dropout { .. }
            | Op::BatchNorm { .. }
            | Op::Rnn(_) => true,
            Op::Softmax { axis, .. } => *axis != 0,
            Op::Reduce { axes, .. } => !axes.contains(&0),
            Op::LayerNorm { axes, .. } => !axes.contains(&0),
            Op::Transpose { perm } => perm.first() == Some(&0),
            Op::Concat { axis } => *axis != 0,
            Op::Pad { pads, .. } => pads.first() == Some(&(0, 0)),
            // A table lookup by per-sample indices, or a per-sample lookup by fixed ones.
            Op::Gather { axis } => {
                let (data, idx) = (n.inputs[0], n.inputs[1]);
                (no_sym(data) && *axis == 0) || (leading(data) && *axis != 0 && no_sym(idx))
            }
            _ => false,
        };
        if !per_sample {
            return Some(format!("{} ({}) may mix samples", n.origin, n.op.name()));
        }
    }
    None
}

/// The fewest samples of a batch slice worth a thread of its own. A slice of fewer than about
/// 4M multiply-adds costs more to hand over than it saves, as the kernels can split their
/// rows instead. A recurrent layer's steps run on one thread whatever the batch (each step's
/// work is too small to hand out), so a model with one gains from slices of 250K of
/// its steps' multiply-adds already.
pub fn min_slice(g: &Graph) -> u64 {
    let (all, serial) = macs_per_sample(g);
    let rows = 4_000_000 / all.max(1);
    SERIAL_SLICE_MACS
        .checked_div(serial)
        .map_or(rows, |r| r.min(rows))
        .max(1)
}

const SERIAL_SLICE_MACS: u64 = 250_000;

/// Elements (4 bytes each, roughly) that a slice of the batch may keep in flight per op: about
/// 2 MB, the cache a core can count on.
const CACHE_ELEMS: u64 = 512 * 1024;

/// The samples per model call when a batch is run in slices (on any number of threads): few
/// enough that the largest op's inputs and output for the slice stay in cache (a batch of 32
/// through mobilenetv2 streams 40 MB per layer otherwise), many enough that each slice's
/// reading of the weights costs at most a quarter of what it moves in activations (a dense
/// model at a small batch keeps its batch whole). Counted in elements per sample.
pub fn cache_slice(g: &Graph) -> u64 {
    let per_sample = |v: forgec_ir::ValueId| -> u64 {
        let s = &g.ty(v).shape;
        if !s.iter().any(|d| matches!(d, Dim::Sym(_))) {
            return 0;
        }
        s.iter()
            .filter_map(|d| d.known())
            .map(|d| d as u64)
            .product()
    };
    let (mut widest, mut moved, mut weights) = (0u64, 0u64, 0u64);
    for n in &g.nodes {
        if let Op::Const { .. } = &n.op {
            let s = &g.ty(n.outputs[0]).shape;
            weights += s
                .iter()
                .filter_map(|d| d.known())
                .map(|d| d as u64)
                .product::<u64>();
            continue;
        }
        let act: u64 = n
            .inputs
            .iter()
            .chain(&n.outputs)
            .map(|&v| per_sample(v))
            .sum();
        widest = widest.max(act);
        moved += act;
    }
    let for_cache = CACHE_ELEMS / widest.max(1);
    let for_weights = (4 * weights).div_ceil(moved.max(1));
    for_cache.max(for_weights).max(1)
}

/// Multiply-adds per sample, roughly (all of them, and those of the recurrent layers' steps,
/// state by recurrent kernel):
/// matmuls, convolutions and recurrent layers by their loops, every other op by its output's
/// size.
pub fn macs_per_sample(g: &Graph) -> (u64, u64) {
    let per_sample = |v: forgec_ir::ValueId| -> u64 {
        g.ty(v)
            .shape
            .iter()
            .filter_map(|d| d.known())
            .map(|d| d as u64)
            .product()
    };
    let mut serial = 0;
    let all = g
        .nodes
        .iter()
        .map(|n| {
            let out = n.outputs.first().map_or(0, |&o| per_sample(o));
            match &n.op {
                Op::MatMul => {
                    let k = g
                        .ty(n.inputs[0])
                        .shape
                        .last()
                        .and_then(|d| d.known())
                        .unwrap_or(1);
                    out * k as u64
                }
                Op::Conv(c) => {
                    let w: u64 = g
                        .ty(n.inputs[1])
                        .shape
                        .iter()
                        .filter_map(|d| d.known())
                        .map(|d| d as u64)
                        .product();
                    let cout = match c.layout {
                        forgec_ir::Layout::ChannelsLast => g.ty(n.inputs[1]).shape.last(),
                        forgec_ir::Layout::ChannelsFirst => g.ty(n.inputs[1]).shape.first(),
                    }
                    .and_then(|d| d.known())
                    .unwrap_or(1) as u64;
                    out * (w / cout.max(1))
                }
                // Every step multiplies its input and the state by the gates' kernels.
                Op::Rnn(r) => {
                    let x = &g.ty(n.inputs[0]).shape;
                    let (steps, features) = match (x.get(1), x.get(2)) {
                        (Some(t), Some(f)) => (t.known().unwrap_or(1), f.known().unwrap_or(1)),
                        _ => (1, 1),
                    };
                    let gu = (steps * r.cell.gates() * r.units) as u64;
                    serial += gu * r.units as u64;
                    gu * (features + r.units) as u64
                }
                Op::Const { .. } => 0,
                _ => out,
            }
        })
        .sum();
    (all, serial)
}

fn dims_expr(shape: &[Dim]) -> Vec<String> {
    shape
        .iter()
        .map(|d| match d {
            Dim::Known(n) => n.to_string(),
            Dim::Sym(_) => "batch".to_string(),
        })
        .collect()
}

/// The header's names of the inputs and outputs (in that order): C identifiers from the
/// model's names, made distinct, and kept off C's keywords and `ctx`/`batch`.
fn header_names(g: &Graph) -> Vec<String> {
    const TAKEN: &[&str] = &[
        "ctx", "batch", "auto", "break", "case", "char", "const", "continue", "default", "do",
        "double", "else", "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long",
        "register", "restrict", "return", "short", "signed", "sizeof", "static", "struct",
        "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "bool", "true",
        "false",
    ];
    let mut names: Vec<String> = Vec::new();
    for &v in g.inputs.iter().chain(&g.outputs) {
        let mut id = c_ident(&g.value(v).name);
        while TAKEN.contains(&id.as_str()) || names.contains(&id) {
            id.push('_');
        }
        names.push(id);
    }
    names
}

/// The parameters of `NAME_run`: the context, the batch, then one typed buffer per input and
/// output, named `names` (the header's names, or the wrapper's own `io0, io1, ...`, which no
/// model name can make collide with the wrapper's locals and globals).
fn run_params(g: &Graph, name: &str, names: &[String]) -> Vec<String> {
    let mut params = vec![format!("{name}_ctx *ctx"), "int64_t batch".to_string()];
    for (k, &v) in g.inputs.iter().chain(&g.outputs).enumerate() {
        let konst = if k < g.inputs.len() { "const " } else { "" };
        params.push(format!("{konst}{} *{}", c_type(g.ty(v).dtype), names[k]));
    }
    params
}

/// The wrapper's names of the inputs and outputs.
fn wrapper_names(g: &Graph) -> Vec<String> {
    (0..g.inputs.len() + g.outputs.len())
        .map(|k| format!("io{k}"))
        .collect()
}

pub fn header(g: &Graph, name: &str, version: &str, external: bool, threads: usize) -> String {
    let up = name.to_uppercase();
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* {name}.h: generated by forgec {version}. Plain C99; link with -l{name} (and -lm). */"
    );
    let _ = writeln!(h, "#ifndef {up}_H\n#define {up}_H\n\n#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {{\n#endif\n");
    let _ = writeln!(h, "/* Status codes. */");
    let _ = writeln!(h, "#define {up}_OK 0\n#define {up}_ERR_NULL 1   /* a NULL context, input or output */\n#define {up}_ERR_BATCH 2  /* a batch size outside 0..{up}_MAX_BATCH */\n#define {up}_ERR_ARG 3    /* another argument out of range (see {name}_last_error) */\n#define {up}_ERR_WEIGHTS 4 /* the weights file is missing or not this build's */\n#define {up}_ERR_MEMORY 5 /* a scratch buffer could not be allocated */\n#define {up}_ERR_BUSY 6   /* the context is running another thread's call (one context per thread) */\n");
    if external {
        let _ = writeln!(h, "/* Built with --weights external: the library maps {name}.weights when it is loaded, from\n * ${up}_WEIGHTS if set, else from the directory of the shared library (or of the program that\n * links the static one). Without it, runs return {up}_ERR_WEIGHTS and say where they looked. */\n");
    }
    let _ = writeln!(h, "#define {up}_MAX_BATCH 1073741824\n#define {up}_MAX_THREADS {}\n#define {up}_NUM_INPUTS {}\n#define {up}_NUM_OUTPUTS {}\n", crate::MAX_THREADS, g.inputs.len(), g.outputs.len());
    let _ = writeln!(h, "/* One context per thread that runs the model (contexts are independent; nothing is shared).\n * A call on a context that another thread's call is using returns {up}_ERR_BUSY at once (and\n * leaves its error text alone); never destroy a context while a call on it runs.\n * A new context runs on {up}_DEFAULT_THREADS thread(s) (forgec compile --threads {threads}); NULL when\n * it cannot be allocated or its threads cannot be started. */");
    let _ = writeln!(h, "#define {up}_DEFAULT_THREADS {threads}\ntypedef struct {name}_ctx {name}_ctx;\n{name}_ctx *{name}_create(void);\nvoid {name}_destroy({name}_ctx *ctx);");
    let _ = writeln!(h, "/* The last error's text for this context (\"\" after a success). */\nconst char *{name}_last_error(const {name}_ctx *ctx);\n");
    let _ = writeln!(h, "/* Threads for this context's runs (default 1): the context starts threads - 1 threads of its\n * own, which spin briefly and then sleep between runs. A run whose batch gives every thread a\n * slice worth it is cut into slices that the threads take in turn; otherwise (batch 1, or a model whose samples\n * cannot be computed apart) the matmul, convolution and pooling kernels split their rows or\n * columns across the threads, no chunk smaller than is worth a thread. Results are the same, to\n * the bit, on any number of threads. {up}_ERR_ARG for a count outside 1..{up}_MAX_THREADS or\n * threads that cannot be started. */\nint {name}_set_threads({name}_ctx *ctx, int threads);\n/* The threads this context's runs use (0 for a NULL context). */\nint {name}_threads(const {name}_ctx *ctx);\n");
    let _ = writeln!(
        h,
        "/* Runs the model on `batch` samples. Buffers are dense, row-major:"
    );
    for (k, &i) in g.inputs.iter().enumerate() {
        let t = g.ty(i);
        let _ = writeln!(
            h,
            " *   input {k} `{}`: {} [{}]",
            c_comment(&g.value(i).name),
            c_type(t.dtype),
            dims_expr(&t.shape).join(", ")
        );
    }
    for (k, &o) in g.outputs.iter().enumerate() {
        let t = g.ty(o);
        let _ = writeln!(
            h,
            " *   output {k} `{}`: {} [{}]",
            c_comment(&g.value(o).name),
            c_type(t.dtype),
            dims_expr(&t.shape).join(", ")
        );
    }
    let _ = writeln!(
        h,
        " * An output may not overlap an input or another output ({up}_ERR_ARG).\n * Returns {up}_OK or an error code ({name}_last_error says why). */"
    );
    let params = run_params(g, name, &header_names(g));
    let _ = writeln!(h, "int {name}_run({});\n", params.join(", "));
    let _ = writeln!(
        h,
        "/* The same with the buffers in arrays, in the order above (for generic callers). */"
    );
    let _ = writeln!(h, "int {name}_run_v({name}_ctx *ctx, int64_t batch, const void *const *inputs, void *const *outputs);\n");
    let _ = writeln!(h, "/* Shapes for a batch size: writes the rank's dims to `dims`, returns the rank (or -1). */");
    let _ = writeln!(h, "int {name}_input_shape(int i, int64_t batch, int64_t *dims);\nint {name}_output_shape(int i, int64_t batch, int64_t *dims);");
    let _ = writeln!(
        h,
        "/* Element types: 0 f32, 1 f64, 2 f16, 3 bf16, 4 i8, 5 i32, 6 i64, 7 bool (one byte). */"
    );
    let _ = writeln!(
        h,
        "int {name}_input_dtype(int i);\nint {name}_output_dtype(int i);"
    );
    let _ = writeln!(h, "\n#ifdef __cplusplus\n}}\n#endif\n#endif");
    h
}

/// The C checks of the indices that a gather takes straight from a model input (through one
/// cast at most): each must lie in -n..n-1 for a dim of n, or the run returns `ERR_ARG`.
fn index_checks(g: &Graph, up: &str) -> String {
    let prod = g.producers();
    let mut seen: Vec<(usize, usize)> = Vec::new();
    let mut c = String::new();
    for n in &g.nodes {
        let forgec_ir::Op::Gather { axis } = n.op else {
            continue;
        };
        let Some(dn) = g.ty(n.inputs[0]).shape.get(axis).and_then(|d| d.known()) else {
            continue;
        };
        let mut idx = n.inputs[1];
        if let Some(p) = prod[idx.0] {
            if matches!(g.nodes[p].op, forgec_ir::Op::Cast { .. }) {
                idx = g.nodes[p].inputs[0];
            }
        }
        let Some(k) = g.inputs.iter().position(|&i| i == idx) else {
            continue;
        };
        if seen.contains(&(k, dn)) {
            continue;
        }
        seen.push((k, dn));
        let t = g.ty(idx);
        let (var, cond) = match t.dtype {
            DType::F32 | DType::F64 => ("double", format!("x > -{}.0 && x < {dn}.0", dn + 1)),
            DType::I8 | DType::I32 | DType::I64 => ("int64_t", format!("x >= -{dn} && x < {dn}")),
            _ => continue,
        };
        let count = {
            let d = dims_expr(&t.shape);
            if d.is_empty() {
                "(int64_t)1".to_string()
            } else {
                format!("(int64_t){}", d.join(" * (int64_t)"))
            }
        };
        let _ = writeln!(
            c,
            "    for (int64_t e = 0, n = {count}; e < n; e++) {{ {var} x = ({var})io{k}[e]; if (!({cond})) {{ snprintf(ctx->error, sizeof ctx->error, \"input {k} (`%s`): index %.17g at element %lld is out of range for %s (a dim of {dn}: valid 0..{})\", \"{}\", (double)x, (long long)e, \"{}\"); return {up}_ERR_ARG; }} }}",
            dn.saturating_sub(1),
            c_escape(&g.value(idx).name),
            c_escape(&n.origin.to_string()),
        );
    }
    c
}

pub fn dtype_code(d: DType) -> i32 {
    match d {
        DType::F32 => 0,
        DType::F64 => 1,
        DType::F16 => 2,
        DType::BF16 => 3,
        DType::I8 => 4,
        DType::I32 => 5,
        DType::I64 => 6,
        DType::Bool => 7,
    }
}

/// `NAME.weights` (`--weights external`): a 64-byte header (`FORGECW1`, the total size, the
/// SHA-256 of what follows) and every external constant, each at a 64-byte-aligned offset.
pub struct WeightsFile {
    pub bytes: Vec<u8>,
    /// (offset, dims) of each constant, in the entry function's argument order.
    pub blocks: Vec<(usize, Vec<usize>)>,
}

pub fn weights_file(ws: &[crate::lower::ExternalWeight]) -> WeightsFile {
    use sha2::{Digest, Sha256};
    let mut data = Vec::new();
    let mut blocks = Vec::new();
    for w in ws {
        while data.len() % 64 != 0 {
            data.push(0);
        }
        blocks.push((64 + data.len(), w.dims.clone()));
        data.extend_from_slice(&w.bytes);
    }
    let mut bytes = b"FORGECW1".to_vec();
    bytes.extend_from_slice(&((64 + data.len()) as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(&data));
    bytes.extend_from_slice(&checksum64(&data).to_le_bytes());
    bytes.resize(64, 0);
    bytes.extend_from_slice(&data);
    WeightsFile { bytes, blocks }
}

/// The checksum of a weights file's data that the library verifies when it maps the file
/// (`NAME_sum`, the same arithmetic in C): four lanes of 64-bit words, each xored in, rotated
/// and multiplied; the tail zero-padded; the lanes and the length folded. Fast (a few GB/s), and
/// any flipped byte changes it.
pub fn checksum64(data: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = [1u64, 2, 3, 4];
    let mut step = |block: &[u8]| {
        for (j, hj) in h.iter_mut().enumerate() {
            let w = u64::from_le_bytes(block[8 * j..8 * j + 8].try_into().expect("8 bytes"));
            *hj = (*hj ^ w).rotate_left(29).wrapping_mul(K);
        }
    };
    let mut chunks = data.chunks_exact(32);
    for b in &mut chunks {
        step(b);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 32];
        b[..rest.len()].copy_from_slice(rest);
        step(&b);
    }
    h[0] ^ h[1].rotate_left(17) ^ h[2].rotate_left(31) ^ h[3].rotate_left(47) ^ data.len() as u64
}

/// Where the large constants (the entry function's weight arguments) live.
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    /// There are none.
    None,
    /// In the library: the blob `NAME_forgec_weights` (see `weights_asm`).
    Embedded(&'a WeightsFile),
    /// In `NAME.weights`, mapped when the library is loaded (`--weights external`).
    External(&'a WeightsFile),
}

/// An assembly file that puts `weights.bin` (the bytes of a `WeightsFile`, written beside it)
/// into the library's read-only data as the hidden symbol `NAME_forgec_weights`, 64-byte
/// aligned. The assembler copies the bytes (`.incbin`): the weights never pass through MLIR or
/// LLVM, whose constants cost several copies of them in memory and most of a big model's compile
/// time. (The empty `.note.GNU-stack` keeps the stack of a program that links it
/// non-executable.)
fn weights_asm(name: &str) -> String {
    format!(
        "\t.section .rodata.{name}_forgec_weights,\"a\"\n\t.balign 64\n\t.globl {name}_forgec_weights\n\t.hidden {name}_forgec_weights\n{name}_forgec_weights:\n\t.incbin \"weights.bin\"\n\t.section .note.GNU-stack,\"\",%progbits\n"
    )
}

pub fn wrapper(g: &Graph, name: &str, entry: &str, weights: Weights, threads: usize) -> String {
    let (file, external) = match weights {
        Weights::None => (None, false),
        Weights::Embedded(w) => (Some(w), false),
        Weights::External(w) => (Some(w), true),
    };
    // Whether (and why not) the batch may be cut across threads.
    let obstacle = batch_split_obstacle(g);
    let splittable = obstacle.is_none();
    let up = name.to_uppercase();
    let mut c = String::new();
    if external {
        // dladdr (the library's own path) and mmap.
        c.push_str("#define _GNU_SOURCE\n#include <dlfcn.h>\n#include <fcntl.h>\n#include <string.h>\n#include <sys/mman.h>\n#include <sys/stat.h>\n#include <unistd.h>\n");
    }
    let _ = writeln!(
        c,
        "#include \"{name}.h\"\n#include <stdio.h>\n#include <stdlib.h>\n#include <pthread.h>\n#include <sched.h>\n#include <setjmp.h>\n"
    );
    let wblocks: &[(usize, Vec<usize>)] = file.map_or(&[], |w| &w.blocks);
    let mut ranks: Vec<usize> = g
        .inputs
        .iter()
        .chain(&g.outputs)
        .map(|&v| g.ty(v).rank())
        .chain(wblocks.iter().map(|(_, d)| d.len()))
        .collect();
    ranks.sort();
    ranks.dedup();
    for r in &ranks {
        if *r == 0 {
            let _ = writeln!(
                c,
                "typedef struct {{ void *allocated; void *aligned; int64_t offset; }} memref_0;"
            );
        } else {
            let _ = writeln!(c, "typedef struct {{ void *allocated; void *aligned; int64_t offset; int64_t sizes[{r}]; int64_t strides[{r}]; }} memref_{r};");
        }
    }
    let args: Vec<String> = g
        .inputs
        .iter()
        .chain(&g.outputs)
        .map(|&v| format!("memref_{} *", g.ty(v).rank()))
        .chain(wblocks.iter().map(|(_, d)| format!("memref_{} *", d.len())))
        .collect();
    let _ = writeln!(
        c,
        "\nextern void _mlir_ciface_{entry}({});\n",
        args.join(", ")
    );
    if let Weights::Embedded(_) = weights {
        let _ = writeln!(
            c,
            "extern const char {name}_forgec_weights[] __attribute__((visibility(\"hidden\")));\nstatic const char *const {name}_weights = {name}_forgec_weights;\n"
        );
    }
    if let Weights::External(w) = weights {
        let hash: Vec<String> = w.bytes[16..32]
            .iter()
            .map(|b| format!("0x{b:02x}"))
            .collect();
        let _ = write!(
            c,
            "static const char *{name}_weights;
static char {name}_weights_error[600] = \"the weights file was not mapped\";
static const unsigned char {name}_weights_hash[16] = {{ {hash} }};
static uint64_t {name}_rotl(uint64_t x, int r) {{ return (x << r) | (x >> (64 - r)); }}
/* capi::checksum64 */
static uint64_t {name}_sum(const unsigned char *d, size_t n) {{
    const uint64_t k = 0x9E3779B97F4A7C15ull;
    uint64_t h[4] = {{ 1, 2, 3, 4 }}, w;
    unsigned char tail[32];
    for (size_t i = 0; i < n; i += 32) {{
        const unsigned char *b = d + i;
        if (n - i < 32) {{ memset(tail, 0, 32); memcpy(tail, b, n - i); b = tail; }}
        for (int j = 0; j < 4; j++) {{ memcpy(&w, b + 8 * j, 8); h[j] = {name}_rotl(h[j] ^ w, 29) * k; }}
    }}
    return h[0] ^ {name}_rotl(h[1], 17) ^ {name}_rotl(h[2], 31) ^ {name}_rotl(h[3], 47) ^ (uint64_t)n;
}}
/* Maps NAME.weights when the library is loaded: from ${up}_WEIGHTS if set, else from the
 * directory of the file this code was loaded from (the shared library, or the program that
 * linked the static one). The file must be this build's: its size and hash are checked. */
__attribute__((constructor)) static void {name}_map_weights(void) {{
    char path[4096];
    const char *env = getenv(\"{up}_WEIGHTS\");
    if (env) snprintf(path, sizeof path, \"%s\", env);
    else {{
        Dl_info info;
        if (!dladdr((void *)&{name}_weights_hash, &info) || !info.dli_fname) {{
            snprintf({name}_weights_error, sizeof {name}_weights_error, \"cannot find where the library was loaded from: set {up}_WEIGHTS to the path of {name}.weights\");
            return;
        }}
        snprintf(path, sizeof path, \"%s\", info.dli_fname);
        char *slash = strrchr(path, '/');
        size_t dir = slash ? (size_t)(slash - path + 1) : 0;
        snprintf(path + dir, sizeof path - dir, \"{name}.weights\");
    }}
    int fd = open(path, O_RDONLY);
    if (fd < 0) {{
        snprintf({name}_weights_error, sizeof {name}_weights_error, \"cannot open the weights file %s: put {name}.weights beside the library or set {up}_WEIGHTS\", path);
        return;
    }}
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size != {total}) {{
        snprintf({name}_weights_error, sizeof {name}_weights_error, \"%s has %lld bytes, not the {total} of this build's weights\", path, (long long)st.st_size);
        close(fd);
        return;
    }}
    void *p = mmap(NULL, {total}, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {{
        snprintf({name}_weights_error, sizeof {name}_weights_error, \"cannot map %s\", path);
        return;
    }}
    if (memcmp(p, \"FORGECW1\", 8) != 0 || memcmp((const char *)p + 16, {name}_weights_hash, 16) != 0) {{
        munmap(p, {total});
        snprintf({name}_weights_error, sizeof {name}_weights_error, \"%s holds other weights (another model or build of it)\", path);
        return;
    }}
    /* The data must be what was written: a flipped byte would give wrong outputs silently. */
    uint64_t want; memcpy(&want, (const char *)p + 48, 8);
    if ({name}_sum((const unsigned char *)p + 64, {total} - 64) != want) {{
        munmap(p, {total});
        snprintf({name}_weights_error, sizeof {name}_weights_error, \"%s is damaged: its checksum does not match its data (copy the file again)\", path);
        return;
    }}
    {name}_weights = (const char *)p;
}}
",
            hash = hash.join(", "),
            total = w.bytes.len()
        );
    }
    // MLIR lowers copies between strided views to a call of `memrefCopy` (from its runner
    // library): the artifact carries its own, renamed `NAME_forgec_memrefCopy` by
    // `llvm::compile`, so that it never meets another library's.
    c.push_str(&MEMREF_COPY.replace("NAME", name));
    // Scratch memory: the kernels allocate and free their intermediate buffers through these
    // two functions. A context keeps the buffers freed during a call for the next call (the
    // same sizes come back every call at a given batch size), so that a steady stream of calls
    // neither mallocs nor page-faults. The context of the running call is found through a
    // thread-local pointer: two threads, each with its own context, never share a buffer.
    let _ = writeln!(
        c,
        "#define {up}_CACHE 1024
struct {name}_ctx {{ char error[256]; void *blk[{up}_CACHE]; int nblk; int threads; int intra; {name}_ctx *sub[{up}_MAX_THREADS]; void *pool; jmp_buf oom; volatile int armed; int busy; int failed; }};
static __thread {name}_ctx *{name}_current;
/* A pool thread running a task: where an allocation that fails jumps back to (the task is
 * abandoned, its token set as an error, and the run that handed it out fails with
 * {up}_ERR_MEMORY). */
static __thread jmp_buf *{name}_task_oom;
static __thread void *{name}_last_token;
static void {name}_oom(size_t n) {{
    {name}_ctx *ctx = {name}_current;
    if (ctx && ctx->armed) longjmp(ctx->oom, 1);
    if ({name}_task_oom) longjmp(*{name}_task_oom, 1);
    /* Not reached: every allocation happens inside a run, on its thread or a pool task. */
    (void)n;
}}
typedef struct {{ size_t size; size_t pad; }} {name}_hdr;
void *{name}_forgec_alloc(size_t n) {{
    {name}_ctx *ctx = {name}_current;
    if (ctx) for (int i = ctx->nblk - 1; i >= 0; i--) {{
        {name}_hdr *h = ({name}_hdr *)ctx->blk[i];
        if (h->size == n) {{ ctx->blk[i] = ctx->blk[--ctx->nblk]; return h + 1; }}
    }}
    {name}_hdr *h = ({name}_hdr *)malloc(sizeof({name}_hdr) + n);
    if (!h) {{
        /* Back to the run, which returns {up}_ERR_MEMORY (the call's buffers so far are lost). */
        {name}_oom(n);
        return NULL;
    }}
    h->size = n;
    return h + 1;
}}
void {name}_forgec_free(void *p) {{
    if (!p) return;
    {name}_hdr *h = ({name}_hdr *)p - 1;
    {name}_ctx *ctx = {name}_current;
    if (ctx && ctx->nblk < {up}_CACHE) ctx->blk[ctx->nblk++] = h; else free(h);
}}
"
    );
    let _ = writeln!(
        c,
        "/* A context on one thread (the batch slices' contexts are). */\nstatic {name}_ctx *{name}_new(void) {{\n    {name}_ctx *ctx = ({name}_ctx *)calloc(1, sizeof({name}_ctx));\n    if (ctx) ctx->threads = 1;\n    return ctx;\n}}"
    );
    let _ = writeln!(
        c,
        "struct {name}_pool;\nstatic void {name}_pool_stop(struct {name}_pool *pl);
void {name}_destroy({name}_ctx *ctx) {{
    if (!ctx) return;
    {name}_pool_stop((struct {name}_pool *)ctx->pool);
    for (int i = 0; i < ctx->nblk; i++) free(ctx->blk[i]);
    for (int t = 0; t < {up}_MAX_THREADS; t++) {name}_destroy(ctx->sub[t]);
    free(ctx);
}}"
    );
    let _ = writeln!(c, "const char *{name}_last_error(const {name}_ctx *ctx) {{ return ctx ? ctx->error : \"the context is NULL\"; }}\n");
    // Shapes and dtypes.
    for (what, list) in [("input", &g.inputs), ("output", &g.outputs)] {
        let _ = writeln!(c, "int {name}_{what}_shape(int i, int64_t batch, int64_t *dims) {{\n    if (!dims) return -1;\n    switch (i) {{");
        for (k, &v) in list.iter().enumerate() {
            let d = dims_expr(&g.ty(v).shape);
            let sets: String = d
                .iter()
                .enumerate()
                .map(|(j, e)| format!("dims[{j}] = {e}; "))
                .collect();
            let _ = writeln!(c, "    case {k}: {sets}return {};", d.len());
        }
        let _ = writeln!(c, "    default: (void)batch; return -1;\n    }}\n}}");
        let _ = writeln!(c, "int {name}_{what}_dtype(int i) {{\n    switch (i) {{");
        for (k, &v) in list.iter().enumerate() {
            let _ = writeln!(c, "    case {k}: return {};", dtype_code(g.ty(v).dtype));
        }
        let _ = writeln!(c, "    default: return -1;\n    }}\n}}\n");
    }
    // `NAME_call`: one call of the kernels on buffers already checked.
    let params = run_params(g, name, &wrapper_names(g));
    let mut checks = String::new();
    let mut body = String::new();
    let mut descs = Vec::new();
    for (k, &v) in g.inputs.iter().chain(&g.outputs).enumerate() {
        let t = g.ty(v);
        let id = format!("io{k}");
        let what = if k < g.inputs.len() {
            format!("input {k}")
        } else {
            format!("output {}", k - g.inputs.len())
        };
        let _ = writeln!(
            checks,
            "    if (!{id}) {{ snprintf(ctx->error, sizeof ctx->error, \"{what} (`%s`) is NULL\", \"{}\"); return {up}_ERR_NULL; }}",
            c_escape(&g.value(v).name)
        );
        let r = t.rank();
        let d = dims_expr(&t.shape);
        if r == 0 {
            let _ = writeln!(
                body,
                "    memref_0 m{k} = {{ (void *){id}, (void *){id}, 0 }};"
            );
        } else {
            let mut strides = vec!["1".to_string(); r];
            for j in (0..r - 1).rev() {
                strides[j] = format!("{} * {}", strides[j + 1], d[j + 1]);
            }
            let _ = writeln!(
                body,
                "    memref_{r} m{k} = {{ (void *){id}, (void *){id}, 0, {{ {} }}, {{ {} }} }};",
                d.join(", "),
                strides.join(", ")
            );
        }
        descs.push(format!("&m{k}"));
    }
    // Table lookups by indices the caller passes (Keras's Embedding: a gather by an input, or
    // by an input cast to integers): every index is checked before any kernel runs, as the
    // interpreter does (the kernels clamp an index computed inside the model instead).
    let _ = write!(checks, "{}", index_checks(g, &up));
    // The kernels write an output while they still read the inputs (and may read an output
    // they wrote, for a later one): a buffer that overlaps another is refused.
    let nin = g.inputs.len();
    let ios: Vec<ValueId> = g.inputs.iter().chain(&g.outputs).copied().collect();
    let bytes = |v: ValueId| -> String {
        let t = g.ty(v);
        let mut d = dims_expr(&t.shape);
        d.push(format!("sizeof({})", c_type(t.dtype)));
        format!("(size_t){}", d.join(" * (size_t)"))
    };
    for k in nin..ios.len() {
        for j in 0..k {
            let what = if j < nin {
                format!("input {j}")
            } else {
                format!("output {}", j - nin)
            };
            let _ = writeln!(
                checks,
                "    {{ size_t a = {}, b = {}; if (a && b && (const char *)io{k} < (const char *)io{j} + b && (const char *)io{j} < (const char *)io{k} + a) {{ snprintf(ctx->error, sizeof ctx->error, \"output {} (`%s`) overlaps {what} (`%s`): give each output a buffer of its own\", \"{}\", \"{}\"); return {up}_ERR_ARG; }} }}",
                bytes(ios[k]),
                bytes(ios[j]),
                k - nin,
                c_escape(&g.value(ios[k]).name),
                c_escape(&g.value(ios[j]).name)
            );
        }
    }
    for (j, (off, dims)) in wblocks.iter().enumerate() {
        let r = dims.len();
        let mut strides = vec![1usize; r];
        for i in (0..r.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1];
        }
        let list = |v: &[usize]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            body,
            "    memref_{r} w{j} = {{ (void *)({name}_weights + {off}), (void *)({name}_weights + {off}), 0, {{ {} }}, {{ {} }} }};",
            list(dims),
            list(&strides)
        );
        descs.push(format!("&w{j}"));
    }
    let _ = writeln!(c, "static void {name}_drain({name}_ctx *ctx);");
    let _ = writeln!(c, "static int {name}_call({}) {{", params.join(", "));
    c.push_str(&body);
    if !g
        .inputs
        .iter()
        .chain(&g.outputs)
        .any(|&v| g.ty(v).shape.iter().any(|d| d.known().is_none()))
    {
        let _ = writeln!(c, "    (void)batch;");
    }
    let _ = writeln!(
        c,
        "    {name}_ctx *volatile outer = {name}_current;\n    {name}_current = ctx;\n    ctx->failed = 0;\n    if (setjmp(ctx->oom)) {{\n        ctx->armed = 0;\n        {name}_drain(ctx);\n        {name}_current = outer;\n        snprintf(ctx->error, sizeof ctx->error, \"out of memory: a scratch buffer for batch %lld could not be allocated\", (long long)batch);\n        return {up}_ERR_MEMORY;\n    }}\n    ctx->armed = 1;\n    _mlir_ciface_{entry}({});\n    ctx->armed = 0;\n    {name}_current = outer;\n    if (__atomic_load_n(&ctx->failed, __ATOMIC_ACQUIRE)) {{\n        snprintf(ctx->error, sizeof ctx->error, \"out of memory: a scratch buffer for batch %lld could not be allocated on a pool thread\", (long long)batch);\n        return {up}_ERR_MEMORY;\n    }}\n    return {up}_OK;\n}}\n",
        descs.join(", ")
    );
    // Threads: the batch is cut into slices, each run by `NAME_call` with the taking thread's
    // own context (and so its own scratch buffers).
    let args = wrapper_names(g);
    // Elements per sample of each buffer (the batch is the leading dim of every one, when the
    // batch is split; the numbers are unused otherwise, and a scalar has none).
    let per: Vec<usize> = g
        .inputs
        .iter()
        .chain(&g.outputs)
        .map(|&v| {
            g.ty(v)
                .shape
                .iter()
                .skip(1)
                .filter_map(|d| d.known())
                .product()
        })
        .collect();
    {
        let mut fields = String::new();
        for p in &params[2..] {
            let _ = write!(fields, " {p};");
        }
        let _ = writeln!(
            c,
            "typedef struct {{ {name}_ctx *ctx; int64_t batch; int rc;{fields} }} {name}_job;\n\
",
        );
        let _ = writeln!(c, "typedef struct {name}_pool {name}_pool;
typedef struct {{ {name}_pool *pool; int i; }} {name}_slot;
/* Tasks: chunks of a kernel (coroutines of MLIR's async runtime, see below). */
typedef struct {{ void (*fn)(void *); void *arg; void *token; int *failed; }} {name}_task;
#define {up}_QCAP (2 * {up}_MAX_THREADS)
struct {name}_pool {{
    pthread_mutex_t mu; pthread_cond_t go, done;
    unsigned gen; int pending, quit, n, sleeping, qhead, qcount, active;
    {name}_task q[{up}_QCAP];
    pthread_t tid[{up}_MAX_THREADS]; {name}_slot slot[{up}_MAX_THREADS];
    /* A split batch: `whole`, in `nslices` slices of `slice` samples; `next` is the next
     * slice to take; `jobs[t]` is thread t's context and first error. */
    {name}_job whole, jobs[{up}_MAX_THREADS]; int64_t slice, nslices, next;
}};
static void {name}_relax(void) {{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__(\"yield\");
#endif
}}
static int {name}_pool_pop({name}_pool *pl, {name}_task *t) {{
    if (__atomic_load_n(&pl->qcount, __ATOMIC_ACQUIRE) == 0) return 0;
    pthread_mutex_lock(&pl->mu);
    int ok = pl->qcount > 0;
    if (ok) {{
        *t = pl->q[pl->qhead];
        pl->qhead = (pl->qhead + 1) % {up}_QCAP;
        __atomic_add_fetch(&pl->active, 1, __ATOMIC_ACQ_REL);
        __atomic_store_n(&pl->qcount, pl->qcount - 1, __ATOMIC_RELEASE);
    }}
    pthread_mutex_unlock(&pl->mu);
    return ok;
}}
static void {name}_token_fail(void *token);
/* Runs a task (popped from `pl`'s queue, or NULL). An allocation that fails inside it jumps
 * back here: the task is abandoned, its token set as an error (so that nobody waits for it),
 * and its run marked as failed. */
static void {name}_run_task({name}_pool *pl, {name}_task t) {{
    jmp_buf here;
    jmp_buf *outer = {name}_task_oom;
    {name}_ctx *ctx = {name}_current;
    int armed = ctx ? ctx->armed : 0;
    if (ctx) ctx->armed = 0;
    {name}_task_oom = &here;
    if (setjmp(here) == 0) t.fn(t.arg);
    else {{
        if (t.failed) __atomic_store_n(t.failed, 1, __ATOMIC_RELEASE);
        if (t.token) {name}_token_fail(t.token);
    }}
    {name}_task_oom = outer;
    if (ctx) ctx->armed = armed;
    if (pl) __atomic_sub_fetch(&pl->active, 1, __ATOMIC_ACQ_REL);
}}
static void {name}_pool_push({name}_pool *pl, {name}_task t) {{
    pthread_mutex_lock(&pl->mu);
    /* A full queue: the task runs here and now (a coroutine may be resumed once saved). */
    if (pl->qcount == {up}_QCAP) {{ pthread_mutex_unlock(&pl->mu); {name}_run_task(NULL, t); return; }}
    pl->q[(pl->qhead + pl->qcount) % {up}_QCAP] = t;
    __atomic_store_n(&pl->qcount, pl->qcount + 1, __ATOMIC_RELEASE);
    if (pl->sleeping) pthread_cond_signal(&pl->go);
    pthread_mutex_unlock(&pl->mu);
}}
/* Takes slices of a split batch, one after another, until none is left (after an error
 * none is taken). */
static void {name}_take({name}_pool *pl, int t);
/* A pool thread: runs tasks as they come (spinning a while for the next one, as a kernel hands
 * out chunks every few microseconds, then sleeping), and its slice of each new generation of
 * batch-split jobs (if it has rows). */
static void *{name}_pool_main(void *p) {{
    {name}_slot *s = ({name}_slot *)p;
    {name}_pool *pl = s->pool;
    unsigned seen = 0;
    {name}_task t;
    for (;;) {{
        for (long spin = 0; spin < (1L << 15); spin++) {{
            if ({name}_pool_pop(pl, &t)) {{ {name}_run_task(pl, t); spin = 0; continue; }}
            if (__atomic_load_n(&pl->gen, __ATOMIC_ACQUIRE) != seen || __atomic_load_n(&pl->quit, __ATOMIC_ACQUIRE)) break;
            {name}_relax();
        }}
        pthread_mutex_lock(&pl->mu);
        while (pl->gen == seen && !pl->quit && pl->qcount == 0) {{
            pl->sleeping++;
            pthread_cond_wait(&pl->go, &pl->mu);
            pl->sleeping--;
        }}
        if (pl->quit) {{ pthread_mutex_unlock(&pl->mu); break; }}
        if (pl->gen == seen) {{ pthread_mutex_unlock(&pl->mu); continue; }}
        seen = pl->gen;
        pthread_mutex_unlock(&pl->mu);
        {name}_take(pl, s->i);
        pthread_mutex_lock(&pl->mu);
        if (--pl->pending == 0) pthread_cond_signal(&pl->done);
        pthread_mutex_unlock(&pl->mu);
    }}
    return NULL;
}}
static void {name}_pool_stop({name}_pool *pl) {{
    if (!pl) return;
    pthread_mutex_lock(&pl->mu);
    __atomic_store_n(&pl->quit, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pl->go);
    pthread_mutex_unlock(&pl->mu);
    for (int i = 1; i <= pl->n; i++) pthread_join(pl->tid[i], NULL);
    pthread_mutex_destroy(&pl->mu); pthread_cond_destroy(&pl->go); pthread_cond_destroy(&pl->done);
    free(pl);
}}
/* After a run jumped out on an out-of-memory: the tasks it handed out are run or finished
 * before it returns, so that none writes to the caller's buffers after. */
static void {name}_drain({name}_ctx *ctx) {{
    {name}_pool *pl = ({name}_pool *)ctx->pool;
    {name}_task t;
    if (!pl) return;
    for (;;) {{
        if ({name}_pool_pop(pl, &t)) {{ {name}_run_task(pl, t); continue; }}
        if (__atomic_load_n(&pl->active, __ATOMIC_ACQUIRE) == 0 && __atomic_load_n(&pl->qcount, __ATOMIC_ACQUIRE) == 0) return;
        {name}_relax();
    }}
}}
/* Starts threads - 1 pool threads (the caller's thread is the first worker). */
static {name}_pool *{name}_pool_start(int threads) {{
    {name}_pool *pl = ({name}_pool *)calloc(1, sizeof *pl);
    if (!pl) return NULL;
    pthread_mutex_init(&pl->mu, NULL); pthread_cond_init(&pl->go, NULL); pthread_cond_init(&pl->done, NULL);
    for (int i = 1; i < threads; i++) {{
        pl->slot[i].pool = pl; pl->slot[i].i = i;
        if (pthread_create(&pl->tid[i], NULL, {name}_pool_main, &pl->slot[i]) != 0) break;
        pl->n = i;
    }}
    return pl;
}}
");
        let offs: Vec<String> = args
            .iter()
            .zip(&per)
            .map(|(a, p)| format!("w->{a} + b0 * {p}"))
            .collect();
        let _ = writeln!(c, "static void {name}_take({name}_pool *pl, int t) {{
    {name}_job *j = &pl->jobs[t];
    const {name}_job *w = &pl->whole;
    for (;;) {{
        int64_t k = __atomic_fetch_add(&pl->next, 1, __ATOMIC_RELAXED);
        if (k >= pl->nslices) return;
        int64_t b0 = k * pl->slice, n = w->batch - b0 < pl->slice ? w->batch - b0 : pl->slice;
        int rc = {name}_call(j->ctx, n, {});
        if (rc != {up}_OK) {{ j->rc = rc; __atomic_store_n(&pl->next, pl->nslices, __ATOMIC_RELAXED); return; }}
    }}
}}", offs.join(", "));
    }
    c.push_str(&ASYNC_RUNTIME.replace("NAME", name));
    let _ = writeln!(c, "static int {name}_set_threads_owned({name}_ctx *ctx, int threads) {{\n    ctx->error[0] = 0;");
    let _ = writeln!(c, "    if (threads < 1 || threads > {up}_MAX_THREADS) {{ snprintf(ctx->error, sizeof ctx->error, \"%d threads: use 1..%d\", threads, {up}_MAX_THREADS); return {up}_ERR_ARG; }}");
    let _ = writeln!(c, "    if (threads == ctx->threads) return {up}_OK;\n    {name}_pool_stop(({name}_pool *)ctx->pool);\n    ctx->pool = NULL;\n    ctx->threads = 1;\n    if (threads > 1) {{\n        ctx->pool = {name}_pool_start(threads);\n        if (!ctx->pool || (({name}_pool *)ctx->pool)->n == 0) {{ {name}_pool_stop(({name}_pool *)ctx->pool); ctx->pool = NULL; snprintf(ctx->error, sizeof ctx->error, \"could not start %d threads\", threads); return {up}_ERR_ARG; }}\n    }}\n    ctx->threads = threads;\n    return {up}_OK;\n}}\n");
    let _ = writeln!(c, "int {name}_set_threads({name}_ctx *ctx, int threads) {{\n    if (!ctx) return {up}_ERR_NULL;\n    if (__atomic_exchange_n(&ctx->busy, 1, __ATOMIC_ACQUIRE)) return {up}_ERR_BUSY;\n    int rc = {name}_set_threads_owned(ctx, threads);\n    __atomic_store_n(&ctx->busy, 0, __ATOMIC_RELEASE);\n    return rc;\n}}");
    let _ = writeln!(
        c,
        "int {name}_threads(const {name}_ctx *ctx) {{ return ctx ? ctx->threads : 0; }}"
    );
    let _ = writeln!(
        c,
        "{name}_ctx *{name}_create(void) {{\n    {name}_ctx *ctx = {name}_new();"
    );
    if threads > 1 {
        let _ = writeln!(c, "    if (ctx && {name}_set_threads(ctx, {threads}) != {up}_OK) {{ {name}_destroy(ctx); return NULL; }}");
    }
    let _ = writeln!(c, "    return ctx;\n}}\n");
    let _ = writeln!(c, "static int {name}_run_owned({}) {{", params.join(", "));
    let _ = writeln!(
        c,
        "    if (!ctx) return {up}_ERR_NULL;\n    ctx->error[0] = 0;"
    );
    let _ = writeln!(
        c,
        "    if (batch < 0 || batch > {up}_MAX_BATCH) {{ snprintf(ctx->error, sizeof ctx->error, \"batch size %lld is outside 0..%lld\", (long long)batch, (long long){up}_MAX_BATCH); return {up}_ERR_BATCH; }}"
    );
    c.push_str(&checks);
    if external {
        let _ = writeln!(c, "    if (!{name}_weights) {{ snprintf(ctx->error, sizeof ctx->error, \"%s\", {name}_weights_error); return {up}_ERR_WEIGHTS; }}");
    }
    if splittable {
        let _ = writeln!(c, "    {name}_pool *pl = ({name}_pool *)ctx->pool;");
        let _ = writeln!(
            c,
            "    int nt = ctx->threads < batch ? ctx->threads : (int)batch;"
        );
        let _ = writeln!(c, "    if (pl && nt > pl->n + 1) nt = pl->n + 1;");
        let min_rows = min_slice(g);
        let _ = writeln!(c, "    if (batch / {min_rows} < nt) nt = batch / {min_rows} > 1 ? (int)(batch / {min_rows}) : 1;");
        // The batch is split when every thread gets a slice worth it; otherwise the kernels
        // split their rows (`NAME_forgec_threads`).
        // The batch is split when every thread gets a slice worth it: the threads take slices
        // of at most `cache_slice` samples in turn (a thread slowed by another program takes
        // fewer); otherwise the kernels split their rows (`NAME_forgec_threads`).
        let slice = cache_slice(g);
        let _ = writeln!(
            c,
            "    if (pl && nt > 1 && nt == pl->n + 1) {{\n        ctx->intra = 1;"
        );
        let _ = writeln!(c, "        int64_t even = (batch + nt - 1) / nt;");
        // As many slices as a multiple of the threads, of near-equal size: every thread gets
        // the same share on an idle machine.
        let _ = writeln!(c, "        int64_t most = even < {slice} ? even : {slice}, ns = (batch + most - 1) / most;\n        ns = (ns + nt - 1) / nt * nt;\n        pl->slice = (batch + ns - 1) / ns;\n        pl->nslices = (batch + pl->slice - 1) / pl->slice;\n        pl->next = 0;");
        let sets: Vec<String> = args
            .iter()
            .map(|a| format!("pl->whole.{a} = {a};"))
            .collect();
        let _ = writeln!(c, "        pl->whole.batch = batch; {}", sets.join(" "));
        let _ = writeln!(c, "        for (int t = 0; t < nt; t++) {{");
        let _ = writeln!(
            c,
            "            if (t > 0 && !ctx->sub[t]) ctx->sub[t] = {name}_new();"
        );
        let _ = writeln!(
            c,
            "            {name}_ctx *tc = t == 0 ? ctx : ctx->sub[t];"
        );
        let _ = writeln!(
            c,
            "            if (!tc) return {name}_call(ctx, batch, {});",
            args.join(", ")
        );
        let _ = writeln!(
            c,
            "            pl->jobs[t].ctx = tc; pl->jobs[t].rc = {up}_OK;\n        }}"
        );
        let _ = writeln!(c, "        pthread_mutex_lock(&pl->mu);\n        pl->pending = pl->n;\n        __atomic_store_n(&pl->gen, pl->gen + 1, __ATOMIC_RELEASE);\n        pthread_cond_broadcast(&pl->go);\n        pthread_mutex_unlock(&pl->mu);");
        let _ = writeln!(c, "        {name}_take(pl, 0);");
        let _ = writeln!(c, "        pthread_mutex_lock(&pl->mu);\n        while (pl->pending > 0) pthread_cond_wait(&pl->done, &pl->mu);\n        pthread_mutex_unlock(&pl->mu);");
        // A slice's error (out of memory) is the run's.
        let _ = writeln!(c, "        for (int t = 0; t < nt; t++) if (pl->jobs[t].rc != {up}_OK) {{\n            if (t > 0) snprintf(ctx->error, sizeof ctx->error, \"%s\", pl->jobs[t].ctx->error);\n            return pl->jobs[t].rc;\n        }}\n        return {up}_OK;\n    }}");
        // One thread: a batch larger than a slice runs slice by slice all the same.
        if slice < 1 << 30 {
            let offs: Vec<String> = args
                .iter()
                .zip(&per)
                .map(|(a, p)| format!("{a} + b0 * {p}"))
                .collect();
            let _ = writeln!(c, "    if (!pl && batch > {slice}) {{\n        ctx->intra = 1;\n        for (int64_t b0 = 0; b0 < batch; b0 += {slice}) {{\n            int rc = {name}_call(ctx, batch - b0 < {slice} ? batch - b0 : {slice}, {});\n            if (rc != {up}_OK) return rc;\n        }}\n        return {up}_OK;\n    }}", offs.join(", "));
        }
    }
    let _ = writeln!(
        c,
        "    ctx->intra = ctx->pool ? (({name}_pool *)ctx->pool)->n + 1 : 1;\n    return {name}_call(ctx, batch, {});\n}}\n",
        args.join(", ")
    );
    // One call at a time per context: a second thread's call is refused, never run alongside.
    let _ = writeln!(c, "int {name}_run({}) {{", params.join(", "));
    let _ = writeln!(c, "    if (!ctx) return {up}_ERR_NULL;\n    if (__atomic_exchange_n(&ctx->busy, 1, __ATOMIC_ACQUIRE)) return {up}_ERR_BUSY;\n    int rc = {name}_run_owned(ctx, batch, {});\n    __atomic_store_n(&ctx->busy, 0, __ATOMIC_RELEASE);\n    return rc;\n}}\n", args.join(", "));
    let _ = writeln!(c, "int {name}_run_v({name}_ctx *ctx, int64_t batch, const void *const *inputs, void *const *outputs) {{");
    let _ = writeln!(c, "    if (!ctx) return {up}_ERR_NULL;\n    if (!inputs || !outputs) {{ snprintf(ctx->error, sizeof ctx->error, \"the input or output array is NULL\"); return {up}_ERR_NULL; }}");
    let mut call = vec!["ctx".to_string(), "batch".to_string()];
    for (k, &i) in g.inputs.iter().enumerate() {
        call.push(format!("(const {} *)inputs[{k}]", c_type(g.ty(i).dtype)));
    }
    for (k, &o) in g.outputs.iter().enumerate() {
        call.push(format!("({} *)outputs[{k}]", c_type(g.ty(o).dtype)));
    }
    let _ = writeln!(c, "    return {name}_run({});\n}}", call.join(", "));
    c
}

/// MLIR's async runtime (the calls `convert-async-to-llvm` makes, renamed `NAME_forgec_async_*`
/// by `llvm::compile`), for the one pattern `async-parallel-for` uses: the calling thread hands
/// a kernel's chunks but the first to the pool as tasks (coroutines), runs the first, and waits
/// for the group of their tokens, running queued tasks itself while it waits (so a pool thread
/// that is slow to wake delays nothing). Tokens and groups are reference counted; a token joins
/// at most one group. `NAME_forgec_threads` is the number of threads the running call lends the
/// kernels: the context's pool plus the caller, or 1 (one thread; a slice of a split batch).
const ASYNC_RUNTIME: &str = r#"typedef struct { long refs; } NAME_rc;
typedef struct { NAME_rc rc; long pending, rank, errors; } NAME_group;
typedef struct { NAME_rc rc; int state; NAME_group *grp; } NAME_token;
#define NAME_TOKEN_DONE ((NAME_group *)1)
int64_t NAME_forgec_threads(void) {
    NAME_ctx *ctx = NAME_current;
    return ctx && ctx->intra > 1 ? ctx->intra : 1;
}
int64_t NAME_forgec_async_GetNumWorkerThreads(void) { return NAME_forgec_threads(); }
void NAME_forgec_async_AddRef(void *p, int64_t n) { __atomic_add_fetch(&((NAME_rc *)p)->refs, n, __ATOMIC_RELAXED); }
void NAME_forgec_async_DropRef(void *p, int64_t n) {
    if (__atomic_sub_fetch(&((NAME_rc *)p)->refs, n, __ATOMIC_ACQ_REL) == 0) free(p);
}
void *NAME_forgec_async_CreateToken(void) {
    NAME_token *t = (NAME_token *)calloc(1, sizeof *t);
    if (!t) { NAME_oom(sizeof *t); return NULL; }
    t->rc.refs = 2; /* the caller's, and the task's until it sets the token */
    NAME_last_token = t; /* the task `Execute` is handed next is this token's */
    return t;
}
void *NAME_forgec_async_CreateGroup(int64_t size) {
    NAME_group *g = (NAME_group *)calloc(1, sizeof *g);
    if (!g) { NAME_oom(sizeof *g); return NULL; }
    g->rc.refs = 1;
    g->pending = size;
    return g;
}
static void NAME_group_done(NAME_group *g, int error) {
    if (error) __atomic_add_fetch(&g->errors, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&g->pending, 1, __ATOMIC_ACQ_REL);
    NAME_forgec_async_DropRef(g, 1);
}
int64_t NAME_forgec_async_AddTokenToGroup(NAME_token *t, NAME_group *g) {
    int64_t rank = __atomic_fetch_add(&g->rank, 1, __ATOMIC_RELAXED);
    NAME_forgec_async_AddRef(g, 1);
    NAME_group *none = NULL;
    if (!__atomic_compare_exchange_n(&t->grp, &none, g, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        NAME_group_done(g, __atomic_load_n(&t->state, __ATOMIC_ACQUIRE) == 2); /* set already */
    return rank;
}
static void NAME_token_set(NAME_token *t, int state) {
    __atomic_store_n(&t->state, state, __ATOMIC_RELEASE);
    NAME_group *g = __atomic_exchange_n(&t->grp, NAME_TOKEN_DONE, __ATOMIC_ACQ_REL);
    if (g) NAME_group_done(g, state == 2);
    NAME_forgec_async_DropRef(t, 1);
}
void NAME_forgec_async_EmplaceToken(NAME_token *t) { NAME_token_set(t, 1); }
static void NAME_token_fail(void *t) { NAME_token_set((NAME_token *)t, 2); }
void NAME_forgec_async_SetTokenError(NAME_token *t) { NAME_token_set(t, 2); }
_Bool NAME_forgec_async_IsTokenError(NAME_token *t) { return __atomic_load_n(&t->state, __ATOMIC_ACQUIRE) == 2; }
_Bool NAME_forgec_async_IsGroupError(NAME_group *g) { return __atomic_load_n(&g->errors, __ATOMIC_ACQUIRE) > 0; }
/* Waits until `*v` (a counter or a state) reaches `until`, running the pool's tasks meanwhile. */
static void NAME_wait(long *pending, int *state) {
    NAME_ctx *ctx = NAME_current;
    NAME_pool *pl = ctx ? (NAME_pool *)ctx->pool : NULL;
    NAME_task t;
    for (long spin = 0;; spin++) {
        if (pending ? __atomic_load_n(pending, __ATOMIC_ACQUIRE) <= 0 : __atomic_load_n(state, __ATOMIC_ACQUIRE) != 0) return;
        if (pl && NAME_pool_pop(pl, &t)) { NAME_run_task(pl, t); continue; }
        if (spin > (1L << 12)) sched_yield(); else NAME_relax();
    }
}
void NAME_forgec_async_AwaitAllInGroup(NAME_group *g) { NAME_wait(&g->pending, NULL); }
void NAME_forgec_async_AwaitToken(NAME_token *t) { NAME_wait(NULL, &t->state); }
void NAME_forgec_async_Execute(void *handle, void (*resume)(void *)) {
    NAME_ctx *ctx = NAME_current;
    NAME_pool *pl = ctx ? (NAME_pool *)ctx->pool : NULL;
    NAME_task t = { resume, handle, NAME_last_token, ctx ? &ctx->failed : NULL };
    NAME_last_token = NULL;
    if (!pl) { NAME_run_task(NULL, t); return; } /* one thread makes one chunk: not reached */
    NAME_pool_push(pl, t);
}
"#;

const MEMREF_COPY: &str = r#"#include <string.h>
typedef struct { int64_t rank; void *descriptor; } forgec_unranked;
typedef struct { char *allocated; char *aligned; int64_t offset; int64_t rest[]; } forgec_desc;
void NAME_forgec_memrefCopy(int64_t elem, forgec_unranked *src, forgec_unranked *dst) {
    int64_t rank = src->rank;
    forgec_desc *s = (forgec_desc *)src->descriptor, *d = (forgec_desc *)dst->descriptor;
    const int64_t *sizes = s->rest, *ss = s->rest + rank, *ds = d->rest + rank;
    int64_t n = 1, idx[16] = {0};
    if (rank > 16) return;
    if (rank == 0) { memcpy(d->aligned + d->offset * elem, s->aligned + s->offset * elem, (size_t)elem); return; }
    for (int64_t i = 0; i < rank; i++) n *= sizes[i];
    if (n == 0) return;
    /* The trailing dims that both sides hold contiguously are copied in one memcpy. */
    int64_t last = rank, run = 1;
    while (last > 0 && ss[last - 1] == run && ds[last - 1] == run) run *= sizes[--last];
    for (int64_t k = 0; k < n; k += run) {
        int64_t so = s->offset, dof = d->offset;
        for (int64_t i = 0; i < last; i++) { so += idx[i] * ss[i]; dof += idx[i] * ds[i]; }
        memcpy(d->aligned + dof * elem, s->aligned + so * elem, (size_t)(elem * run));
        for (int64_t i = last - 1; i >= 0; i--) { if (++idx[i] < sizes[i]) break; idx[i] = 0; }
    }
}

"#;

/// The functions of `NAME.h`, each `NAME_` + this: all that `libNAME.so` exports.
pub const API_FUNCTIONS: &[&str] = &[
    "create",
    "destroy",
    "last_error",
    "set_threads",
    "threads",
    "run",
    "run_v",
    "input_shape",
    "output_shape",
    "input_dtype",
    "output_dtype",
];

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "{what}: cannot start {:?}: {e} (is a C compiler installed?)",
            cmd.get_program()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The C compiler and archiver that build a library for `triple` on a machine of triple
/// `host`: `cc` and `ar` for this machine's architecture; for another, a cross compiler on the
/// PATH (Debian's `aarch64-linux-gnu-gcc`, or one named after the triple) and its `ar`. None
/// found: an error that says what to install, or to write the object alone.
pub fn toolchain(triple: &str, host: &str) -> Result<(String, String), String> {
    let arch = |t: &str| {
        t.split('-')
            .next()
            .unwrap_or("")
            .replace("arm64", "aarch64")
    };
    let linux = |t: &str| t.contains("linux");
    if arch(triple) == arch(host) && linux(triple) == linux(host) {
        return Ok(("cc".into(), "ar".into()));
    }
    let a = arch(triple);
    let prefixes = [format!("{a}-linux-gnu"), triple.to_string()];
    let on_path = |exe: &str| -> bool {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(exe).is_file()))
    };
    for p in &prefixes {
        let cc = format!("{p}-gcc");
        if on_path(&cc) {
            let ar = format!("{p}-ar");
            let ar = if on_path(&ar) { ar } else { "ar".into() };
            return Ok((cc, ar));
        }
    }
    let looked: Vec<String> = prefixes.iter().map(|p| format!("{p}-gcc")).collect();
    Err(format!(
        "--target {triple}: a library for another architecture needs a C cross-compiler to \
         build its wrapper and link it, and none is on the PATH (looked for {}); install one \
         (Debian: apt install gcc-{a}-linux-gnu), or write the object file alone with \
         --emit obj and link it with your own toolchain",
        looked.join(", ")
    ))
}

/// Compiles the wrapper with `cc` and links both libraries in `dir` (a scratch dir with the
/// model's `objects`, `wrapper.c` and the header; `ar` makes the static one); the outputs land
/// in `out`.
pub fn link(
    dir: &Path,
    objects: &[String],
    name: &str,
    out: &Path,
    (cc, ar): (&str, &str),
    weights: &Weights,
) -> Result<(), String> {
    // Fixed relative names in the scratch dir keep the objects free of temporary paths.
    let mut objects = objects.to_vec();
    if let Weights::Embedded(w) = weights {
        let write = |n: &str, b: &[u8]| std::fs::write(dir.join(n), b).map_err(|e| e.to_string());
        write("weights.bin", &w.bytes)?;
        write("weights.s", weights_asm(name).as_bytes())?;
        run(
            Command::new(cc)
                .current_dir(dir)
                .args(["-c", "weights.s", "-o", "weights.o"]),
            "assembling the weights",
        )?;
        objects.push("weights.o".into());
    }
    let objects = &objects;
    run(
        Command::new(cc).current_dir(dir).args([
            "-std=c99",
            "-O2",
            "-fPIC",
            "-c",
            "wrapper.c",
            "-o",
            "wrapper.o",
        ]),
        "compiling the C wrapper",
    )?;
    // The tools run in `dir`, so a relative `out` (`-o build`) must be made absolute first.
    let out =
        &std::path::absolute(out).map_err(|e| format!("{}: cannot resolve: {e}", out.display()))?;
    let a = out.join(format!("lib{name}.a"));
    let _ = std::fs::remove_file(&a);
    run(
        Command::new(ar)
            .current_dir(dir)
            .arg("rcsD")
            .arg(&a)
            .args(objects)
            .arg("wrapper.o"),
        "archiving the static library",
    )?;
    // The shared library exports the C API alone: the kernels, the wrapper's helpers and
    // MLIR's entry points stay local, so they can meet nothing else in the process.
    let api: Vec<String> = API_FUNCTIONS
        .iter()
        .map(|f| format!("{name}_{f};"))
        .collect();
    std::fs::write(
        dir.join("exports.map"),
        format!("{{\n  global: {}\n  local: *;\n}};\n", api.join(" ")),
    )
    .map_err(|e| e.to_string())?;
    run(
        Command::new(cc)
            .current_dir(dir)
            .args(["-shared", "-Wl,--version-script=exports.map", "-o"])
            .arg(out.join(format!("lib{name}.so")))
            .args(objects)
            .args(["wrapper.o", "-lm"]),
        "linking the shared library",
    )
}
