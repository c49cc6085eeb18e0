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
            | Op::PoolGrad(_)
            | Op::Col2Im { .. }
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
    let _ = writeln!(h, "/* The CPU the running code was compiled for: an LLVM CPU name, or, in a library built with\n * --cpu portable (the default), the x86-64 level picked for this machine when the library was\n * loaded (x86-64-v2, -v3 or -v4; FORGEC_CPU_LEVEL=x86-64-v2 or -v3 in the environment picks a\n * lower one, never a higher). */\nconst char *{name}_cpu(void);\n");
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
#[derive(Clone)]
pub struct WeightsFile {
    /// The whole file; the levels of a portable library share one (`weights_files`).
    pub bytes: std::sync::Arc<Vec<u8>>,
    /// (offset, dims) of each constant, in the entry function's argument order.
    pub blocks: Vec<(usize, Vec<usize>)>,
}

pub fn weights_file(ws: &[crate::lower::ExternalWeight]) -> WeightsFile {
    weights_files(&[ws]).pop().expect("one list, one file")
}

/// One weights file for several lists of constants (the levels of a portable library: the same
/// model lowered for x86-64-v2, v3 and v4), one `WeightsFile` per list, all with the same bytes
/// and each with its own blocks. A constant of a later list equal to one already stored (the
/// weights no level packs for its vector width) is stored once; the first list's blocks are laid
/// out as `weights_file` lays them out alone.
pub fn weights_files(lists: &[&[crate::lower::ExternalWeight]]) -> Vec<WeightsFile> {
    use sha2::{Digest, Sha256};
    let mut data = Vec::new();
    let mut stored: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    let mut all = Vec::new();
    for (k, ws) in lists.iter().enumerate() {
        let mut blocks = Vec::new();
        for w in ws.iter() {
            if k > 0 {
                if let Some(&at) = stored.get(w.bytes.as_slice()) {
                    blocks.push((at, w.dims.clone()));
                    continue;
                }
            }
            while data.len() % 64 != 0 {
                data.push(0);
            }
            let at = 64 + data.len();
            blocks.push((at, w.dims.clone()));
            stored.entry(w.bytes.as_slice()).or_insert(at);
            data.extend_from_slice(&w.bytes);
        }
        all.push(blocks);
    }
    let mut bytes = b"FORGECW1".to_vec();
    bytes.extend_from_slice(&((64 + data.len()) as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(&data));
    bytes.extend_from_slice(&checksum64(&data).to_le_bytes());
    bytes.resize(64, 0);
    bytes.extend_from_slice(&data);
    let bytes = std::sync::Arc::new(bytes);
    all.into_iter()
        .map(|blocks| WeightsFile {
            bytes: bytes.clone(),
            blocks,
        })
        .collect()
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
    /// In the library: the blob `NAME_forgec_weights` (see `blob_asm`).
    Embedded(&'a WeightsFile),
    /// In `NAME.weights`, mapped when the library is loaded (`--weights external`).
    External(&'a WeightsFile),
}

/// An assembly file that puts `bin` (the bytes of a `WeightsFile`, written beside it) into
/// the library's read-only data as the hidden symbol `SYMBOL`, 64-byte aligned. The assembler
/// copies the bytes (`.incbin`): the weights never pass through MLIR or LLVM, whose constants
/// cost several copies of them in memory and most of a big model's compile time. (The empty
/// `.note.GNU-stack` keeps the stack of a program that links it non-executable.)
fn blob_asm(symbols: &[String], bin: &str) -> String {
    let first = &symbols[0];
    let mut s = format!("\t.section .rodata.{first},\"a\"\n\t.balign 64\n");
    for symbol in symbols {
        let _ = write!(s, "\t.globl {symbol}\n\t.hidden {symbol}\n{symbol}:\n");
    }
    let _ = write!(
        s,
        "\t.incbin \"{bin}\"\n\t.section .note.GNU-stack,\"\",%progbits\n"
    );
    s
}

/// The wrapper's C, a template (`wrapper.c` beside this file) that `wrapper` fills.
const TEMPLATE: &str = include_str!("wrapper.c");

/// A section of the template (the lines after its `//@ name` line, up to the next one),
/// without the template's own `//` notes.
fn section(template: &str, name: &str) -> String {
    let mut lines = template.lines();
    let marker = format!("//@ {name}");
    if !lines.any(|l| l == marker) {
        panic!("the C template has no section `{name}`");
    }
    lines
        .take_while(|l| !l.starts_with("//@ "))
        .filter(|l| !l.starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A section filled in one pass: `UPNAME` and `NAME` become `name` upper-cased and as it is,
/// `@key@` becomes its value in `vars` (a line that is only `@key@` becomes the value alone,
/// which holds whole lines or none). Text that replaces is never scanned again.
fn fill(name: &str, up: &str, sec: &str, vars: &[(&str, &str)]) -> String {
    fill_from(TEMPLATE, name, up, sec, vars)
}

/// `fill` on a section of another template (the training API's `train.c`).
pub(crate) fn fill_from(
    template: &str,
    name: &str,
    up: &str,
    sec: &str,
    vars: &[(&str, &str)],
) -> String {
    let text = section(template, sec);
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if let Some(v) = bare
            .strip_prefix('@')
            .and_then(|k| k.strip_suffix('@'))
            .and_then(|k| vars.iter().find(|(n, _)| *n == k))
        {
            out.push_str(v.1);
            continue;
        }
        let mut rest = line;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("UPNAME") {
                out.push_str(up);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("NAME") {
                out.push_str(name);
                rest = r;
            } else if let Some((k, v)) = rest.strip_prefix('@').and_then(|r| {
                let end = r.find('@')?;
                vars.iter()
                    .find(|(n, _)| *n == &r[..end])
                    .map(|&(_, v)| (end, v))
            }) {
                out.push_str(v);
                rest = &rest[k + 2..];
            } else {
                let c = rest.chars().next().unwrap();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// Who a wrapper is: the CPU its kernels were compiled for (what `NAME_cpu` says) and the
/// library it is part of (`NAME.weights` and `NAME_WEIGHTS` are the library's names). A level
/// of a portable library is one part of it, named apart (`level_part`); its weights mapping is
/// then not a constructor but called by the library's dispatcher for the level it picks.
#[derive(Clone, Copy)]
pub struct Role<'a> {
    pub cpu: &'a str,
    pub library: &'a str,
    pub level: bool,
}

/// The C wrapper of a model: `wrapper.c` filled with the model's buffers, weights and
/// threading, and the per-model lists (descriptor types, shape tables, argument checks).
pub fn wrapper(
    g: &Graph,
    name: &str,
    entry: &str,
    weights: Weights,
    threads: usize,
    role: Role,
) -> String {
    let (file, external) = match weights {
        Weights::None => (None, false),
        Weights::Embedded(w) => (Some(w), false),
        Weights::External(w) => (Some(w), true),
    };
    let up = name.to_uppercase();
    let fill = |sec: &str, vars: &[(&str, &str)]| fill(name, &up, sec, vars);
    let mut c = String::new();
    if external {
        c.push_str(&fill("external_includes", &[]));
    }
    c.push_str(&fill("includes", &[]));
    // One memref descriptor type per rank the entry's arguments have.
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
    c.push_str(&fill(
        "entry",
        &[("entry", entry), ("args", &args.join(", "))],
    ));
    match weights {
        Weights::None => {}
        Weights::Embedded(_) => c.push_str(&fill("embedded_weights", &[])),
        Weights::External(w) => {
            let hash: Vec<String> = w.bytes[16..32]
                .iter()
                .map(|b| format!("0x{b:02x}"))
                .collect();
            let file = format!("{}.weights", role.library);
            let env = format!("{}_WEIGHTS", role.library.to_uppercase());
            c.push_str(&fill(
                "external_weights",
                &[
                    ("hash", &hash.join(", ")),
                    ("total", &w.bytes.len().to_string()),
                    ("wfile", &file),
                    ("wenv", &env),
                    (
                        "wmap",
                        if role.level {
                            "void"
                        } else {
                            "__attribute__((constructor)) static void"
                        },
                    ),
                ],
            ));
        }
    }
    c.push_str(&fill("runtime", &[("cpu", &c_escape(role.cpu))]));
    // Shapes and dtypes.
    for (what, list) in [("input", &g.inputs), ("output", &g.outputs)] {
        let mut shapes = String::new();
        let mut dtypes = String::new();
        for (k, &v) in list.iter().enumerate() {
            let d = dims_expr(&g.ty(v).shape);
            let sets: String = d
                .iter()
                .enumerate()
                .map(|(j, e)| format!("dims[{j}] = {e}; "))
                .collect();
            let _ = writeln!(shapes, "    case {k}: {sets}return {};", d.len());
            let _ = writeln!(
                dtypes,
                "    case {k}: return {};",
                dtype_code(g.ty(v).dtype)
            );
        }
        c.push_str(&fill(
            "io",
            &[
                ("what", what),
                ("shape_cases", &shapes),
                ("dtype_cases", &dtypes),
            ],
        ));
    }
    // `NAME_call`: one call of the kernels on buffers already checked.
    let params = run_params(g, name, &wrapper_names(g)).join(", ");
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
    checks.push_str(&index_checks(g, &up));
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
    // One loop over a table (a model's step can have hundreds of buffers: checks spelled out
    // pair by pair made tens of megabytes of C).
    if ios.len() > nin && ios.len() > 1 {
        let n = ios.len();
        let ptrs: Vec<String> = (0..n).map(|k| format!("(const char *)io{k}")).collect();
        let sizes: Vec<String> = ios.iter().map(|&v| bytes(v)).collect();
        let names: Vec<String> = ios
            .iter()
            .map(|&v| format!("\"{}\"", c_escape(&g.value(v).name)))
            .collect();
        let _ = writeln!(
            checks,
            "    {{\n        const char *const p[{n}] = {{ {} }};\n        const size_t s[{n}] = {{ {} }};\n        static const char *const nm[{n}] = {{ {} }};\n        for (int k = {nin}; k < {n}; k++)\n            for (int j = 0; j < k; j++)\n                if (s[k] && s[j] && p[k] < p[j] + s[j] && p[j] < p[k] + s[k]) {{\n                    snprintf(ctx->error, sizeof ctx->error, \"output %d (`%s`) overlaps %s %d (`%s`): give each output a buffer of its own\", k - {nin}, nm[k], j < {nin} ? \"input\" : \"output\", j < {nin} ? j : j - {nin}, nm[j]);\n                    return {up}_ERR_ARG;\n                }}\n    }}",
            ptrs.join(", "),
            sizes.join(", "),
            names.join(", ")
        );
    }
    let list = |v: &[usize]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (j, (off, dims)) in wblocks.iter().enumerate() {
        let r = dims.len();
        let mut strides = vec![1usize; r];
        for i in (0..r.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1];
        }
        let _ = writeln!(
            body,
            "    memref_{r} w{j} = {{ (void *)({name}_weights + {off}), (void *)({name}_weights + {off}), 0, {{ {} }}, {{ {} }} }};",
            list(dims),
            list(&strides)
        );
        descs.push(format!("&w{j}"));
    }
    let batch_used = g
        .inputs
        .iter()
        .chain(&g.outputs)
        .any(|&v| g.ty(v).shape.iter().any(|d| d.known().is_none()));
    c.push_str(&fill(
        "call",
        &[
            ("params", &params),
            ("descriptors", &body),
            (
                "unused_batch",
                if batch_used { "" } else { "    (void)batch;\n" },
            ),
            ("entry", entry),
            ("descs", &descs.join(", ")),
        ],
    ));
    // Threads: the batch is cut into slices, each run by `NAME_call` with the taking thread's
    // own context. Elements per sample of each buffer (the batch is the leading dim of every
    // one, when the batch is split; the numbers are unused otherwise, and a scalar has none).
    let args = wrapper_names(g);
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
    let params_v = run_params(g, name, &args);
    let fields: String = params_v[2..].iter().map(|p| format!(" {p};")).collect();
    let slices = |base: &str| -> String {
        args.iter()
            .zip(&per)
            .map(|(a, p)| format!("{base}{a} + b0 * {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    c.push_str(&fill(
        "pool",
        &[
            ("fields", fields.trim_start()),
            ("slice_args", &slices("w->")),
        ],
    ));
    c.push_str(&fill("async", &[]));
    c.push_str(&fill("threads", &[]));
    if threads > 1 {
        c.push_str(&fill(
            "create_threads",
            &[("threads", &threads.to_string())],
        ));
    }
    c.push_str(&fill("create_end", &[]));
    c.push_str(&fill("run", &[("params", &params), ("checks", &checks)]));
    if external {
        c.push_str(&fill("weights_missing", &[]));
    }
    let args_list = args.join(", ");
    // Whether the batch may be cut across threads (see `batch_split_obstacle`).
    if batch_split_obstacle(g).is_none() {
        let slice = cache_slice(g).to_string();
        let whole: Vec<String> = args
            .iter()
            .map(|a| format!("pl->whole.{a} = {a};"))
            .collect();
        c.push_str(&fill(
            "split",
            &[
                ("min_rows", &min_slice(g).to_string()),
                ("slice", &slice),
                ("whole", &whole.join(" ")),
                ("args", &args_list),
            ],
        ));
        if cache_slice(g) < 1 << 30 {
            c.push_str(&fill(
                "slices",
                &[("slice", &slice), ("slice_args", &slices(""))],
            ));
        }
    }
    let mut call = vec!["ctx".to_string(), "batch".to_string()];
    for (k, &i) in g.inputs.iter().enumerate() {
        call.push(format!("(const {} *)inputs[{k}]", c_type(g.ty(i).dtype)));
    }
    for (k, &o) in g.outputs.iter().enumerate() {
        call.push(format!("({} *)outputs[{k}]", c_type(g.ty(o).dtype)));
    }
    c.push_str(&fill(
        "run_end",
        &[
            ("args", &args_list),
            ("params", &params),
            ("call_v", &call.join(", ")),
        ],
    ));
    c
}

/// The functions of `NAME.h`, each `NAME_` + this: all that `libNAME.so` exports.
pub const API_FUNCTIONS: &[&str] = &[
    "cpu",
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

/// One model's code in a library: its kernels' objects (in the scratch dir), its wrapper's
/// C file there, and where its weights live. A training library links four (the model, its
/// step, evaluation and prediction); `tag` keeps their files apart ("" for the model's own,
/// whose files keep the names they always had).
pub struct LinkPart<'a> {
    pub name: String,
    pub tag: String,
    pub objects: Vec<String>,
    pub wrapper: String,
    pub weights: Weights<'a>,
}

/// Compiles the wrapper with `cc` and links both libraries in `dir` (a scratch dir with the
/// model's `objects`, `wrapper.c` and the header; `ar` makes the static one); the outputs land
/// in `out`.
pub fn link(
    dir: &Path,
    objects: &[String],
    name: &str,
    out: &Path,
    tools: (&str, &str),
    weights: &Weights,
) -> Result<(), String> {
    let part = LinkPart {
        name: name.into(),
        tag: String::new(),
        objects: objects.to_vec(),
        wrapper: "wrapper.c".into(),
        weights: *weights,
    };
    let api: Vec<String> = API_FUNCTIONS
        .iter()
        .map(|f| format!("{name}_{f}"))
        .collect();
    link_parts(dir, &[part], &[], name, out, tools, &api)
}

/// `link` for a library of several parts and extra C files (`extra`: (C file, blobs it
/// refers to as (symbol, bin file))); the shared library exports `exports` alone.
pub fn link_parts<'a>(
    dir: &Path,
    parts: &[LinkPart<'a>],
    extra: &[(String, Vec<(String, String)>)],
    name: &str,
    out: &Path,
    (cc, ar): (&str, &str),
    exports: &[String],
) -> Result<(), String> {
    let write = |n: &str, b: &[u8]| std::fs::write(dir.join(n), b).map_err(|e| e.to_string());
    let assemble =
        |symbols: &[String], bin: &str, objects: &mut Vec<String>| -> Result<(), String> {
            let stem = bin.trim_end_matches(".bin");
            write(&format!("{stem}.s"), blob_asm(symbols, bin).as_bytes())?;
            run(
                Command::new(cc).current_dir(dir).args([
                    "-c",
                    &format!("{stem}.s"),
                    "-o",
                    &format!("{stem}.o"),
                ]),
                "assembling the weights",
            )?;
            objects.push(format!("{stem}.o"));
            Ok(())
        };
    let compile_c = |c: &str, objects: &mut Vec<String>| -> Result<(), String> {
        let o = format!("{}.o", c.trim_end_matches(".c"));
        run(
            Command::new(cc)
                .current_dir(dir)
                .args(["-std=c99", "-O2", "-fPIC", "-c", c, "-o", &o]),
            "compiling the C wrapper",
        )?;
        objects.push(o);
        Ok(())
    };
    // Fixed relative names in the scratch dir keep the objects free of temporary paths.
    let mut objects = Vec::new();
    // Parts with the same weights (the levels of a portable library) share one blob, under
    // each part's symbol, assembled after the first of them.
    let symbol = |p: &LinkPart| format!("{}_forgec_weights", p.name);
    let bytes = |p: &LinkPart<'a>| match p.weights {
        Weights::Embedded(w) => Some(w.bytes.clone()),
        _ => None,
    };
    for (k, p) in parts.iter().enumerate() {
        objects.extend(p.objects.iter().cloned());
        let Some(mine) = bytes(p) else { continue };
        let same = |q: &LinkPart<'a>| bytes(q).is_some_and(|b| std::sync::Arc::ptr_eq(&b, &mine));
        if parts[..k].iter().any(same) {
            continue;
        }
        let bin = if p.tag.is_empty() {
            "weights.bin".to_string()
        } else {
            format!("weights_{}.bin", p.tag)
        };
        write(&bin, &mine)?;
        let symbols: Vec<String> = parts[k..].iter().filter(|q| same(q)).map(symbol).collect();
        assemble(&symbols, &bin, &mut objects)?;
    }
    let mut wrappers = Vec::new();
    for p in parts {
        compile_c(&p.wrapper, &mut wrappers)?;
    }
    for (c, blobs) in extra {
        for (symbol, bin) in blobs {
            assemble(std::slice::from_ref(symbol), bin, &mut objects)?;
        }
        compile_c(c, &mut wrappers)?;
    }
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
            .args(&objects)
            .args(&wrappers),
        "archiving the static library",
    )?;
    // The shared library exports the C API alone: the kernels, the wrapper's helpers and
    // MLIR's entry points stay local, so they can meet nothing else in the process.
    let api: Vec<String> = exports.iter().map(|f| format!("{f};")).collect();
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
            .args(&objects)
            .args(&wrappers)
            .arg("-lm"),
        "linking the shared library",
    )
}
