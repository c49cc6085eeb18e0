//! The CPU target: the kernels the shared lowering asks for first (a register-tiled matmul
//! that convolutions, Winograd's 3x3 convolutions and recurrent steps share, vectorised
//! windows for depthwise convolutions and pools), the layout they store constant weights in,
//! the MLIR/LLVM pipeline to native code (`llvm`), the CPUs it knows (`cpus`), and the host
//! wrapper with its thread pool and the link of the libraries (`capi`).
//!
//! Its kernels reach the target's state (`Cpu`) from the emitter with `simd(e)` and
//! `packed_of(e, v)`.

use crate::lower::{Target, E, R};
use forgec_ir::{Graph, Node, Op, Tensor, TensorType, ValueId};
use std::collections::HashMap;

pub mod capi;
mod conv;
pub(crate) mod cpus;
pub mod llvm;
mod matmul;
pub mod portable;
pub mod train;
mod winograd;

use conv::*;
use matmul::*;

/// The CPU target for one graph.
pub struct Cpu {
    /// f32 lanes of the target's vector registers (4: SSE / NEON, 8: AVX2, 16: AVX-512),
    /// which size the kernels' register tiles.
    simd: usize,
    /// Constant weights stored in the layout their kernel reads (see `Pack`).
    packed: HashMap<ValueId, Pack>,
}

impl Cpu {
    /// The target for `g` on a CPU whose vectors hold `simd` f32 lanes.
    pub fn new(g: &Graph, simd: usize) -> Cpu {
        Cpu {
            simd,
            packed: packable_weights(g, simd),
        }
    }
}

/// The CPU target an emitter works for (the CPU's kernels run under no other).
fn of<'a>(e: &E<'a>) -> &'a Cpu {
    e.target
        .as_any()
        .downcast_ref::<Cpu>()
        .expect("internal error: a CPU kernel under another target")
}

/// The f32 lanes of the target CPU's vectors.
pub(crate) fn simd(e: &E) -> usize {
    of(e).simd
}

impl Target for Cpu {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn stored(&self, v: ValueId, value: &Tensor) -> Option<Tensor> {
        let w = 2 * self.simd;
        match self.packed.get(&v)? {
            Pack::Panels => pack_panels(value, w),
            Pack::Winograd => winograd::weights(value, w),
        }
    }

    fn stored_ty(&self, v: ValueId, t: &TensorType) -> Option<String> {
        let w = 2 * self.simd;
        match (self.packed.get(&v), t.known_shape()) {
            (Some(Pack::Panels), Some(s)) if s.len() >= 2 => {
                let (k, n) = (s[..s.len() - 1].iter().product::<usize>(), s[s.len() - 1]);
                Some(packed_ty(k, n, w))
            }
            (Some(Pack::Winograd), Some(s)) if s.len() == 4 => {
                Some(winograd::weights_ty(s[2], s[3], w))
            }
            _ => None,
        }
    }

    fn takes_epilogue(&self, g: &Graph, n: &Node) -> bool {
        match &n.op {
            Op::MatMul => {
                fast_matmul_fits(g.ty(n.inputs[0]), g.ty(n.inputs[1]), g.ty(n.outputs[0])).is_some()
            }
            Op::Conv(c) => {
                let (x, w, o) = (g.ty(n.inputs[0]), g.ty(n.inputs[1]), g.ty(n.outputs[0]));
                fast_conv_fits(x, w, c, o) || depthwise_fits(x, w, c, o)
            }
            _ => false,
        }
    }

    fn kernel(
        &self,
        e: &mut E,
        node: &Node,
        ins: &[(String, TensorType)],
        outs: &[TensorType],
    ) -> R<Option<Vec<String>>> {
        let ot = &outs[0];
        let packed = node.inputs.get(1).and_then(|w| self.packed.get(w)).copied();
        let v = match &node.op {
            // [M, K] x [K, N] (constant B packed); [.., M, K] x [K, N] as one [.. M, K] matrix
            // (a Dense layer over a sequence); [B, M, K] x [B, K, N] item by item.
            Op::MatMul => match fast_matmul(e, ins, ot, packed == Some(Pack::Panels))? {
                Some(v) => Some(v),
                None => match mm_any(e, ins, ot)? {
                    Some(v) => Some(v),
                    None => batched_mm(e, ins, ot)?,
                },
            },
            Op::Conv(c) if packed == Some(Pack::Winograd) => {
                Some(winograd::conv(e, &ins[0], &ins[1], c, ot)?)
            }
            Op::Conv(c) => {
                match fast_conv(e, &ins[0], &ins[1], c, ot, packed == Some(Pack::Panels))? {
                    Some(v) => Some(v),
                    None => depthwise(e, &ins[0], &ins[1], c, ot)?,
                }
            }
            Op::Pool(p) => fast_pool(e, &ins[0], p, ot)?,
            Op::PoolGrad(p) => max_pool_grad(e, ins, p, ot)?,
            Op::Col2Im { conv, kernel, .. } => col2im(e, &ins[0], conv, kernel, ot)?,
            Op::ConvKernelGrad { conv, kernel } => conv_kernel_grad(e, ins, conv, kernel, ot)?,
            _ => None,
        };
        Ok(v.map(|v| vec![v]))
    }

    fn matmul(
        &self,
        e: &mut E,
        ins: &[(String, TensorType)],
        ot: &TensorType,
    ) -> R<Option<String>> {
        mm_any(e, ins, ot)
    }

    fn runtime(&self, body: &str) -> String {
        let mut runtime = if body.contains("bf16") {
            TRUNC_BF16
        } else {
            ""
        }
        .to_string();
        if body.contains("@forgec_threads") {
            // The threads the calling context lends the kernels (the C wrapper defines it).
            runtime.push_str("  func.func private @forgec_threads() -> index\n");
        }
        runtime
    }
}

/// LLVM computes bf16 arithmetic in f32 and rounds every result back with a call of
/// `__truncsfbf2`, which compiler-rt has but Debian 12's libgcc has not: the library carries its
/// own (round to nearest even, NaN kept quiet), weak and hidden so that it does not clash with
/// another model's or the toolchain's.
pub(crate) const TRUNC_BF16: &str = r#"  llvm.func weak hidden @__truncsfbf2(%x: f32) -> bf16 {
    %c1 = llvm.mlir.constant(1 : i32) : i32
    %c16 = llvm.mlir.constant(16 : i32) : i32
    %c7fff = llvm.mlir.constant(32767 : i32) : i32
    %quiet = llvm.mlir.constant(64 : i16) : i16
    %u = llvm.bitcast %x : f32 to i32
    %hi = llvm.lshr %u, %c16 : i32
    %lsb = llvm.and %hi, %c1 : i32
    %b = llvm.add %u, %c7fff : i32
    %r = llvm.add %b, %lsb : i32
    %s = llvm.lshr %r, %c16 : i32
    %t = llvm.trunc %s : i32 to i16
    %h16 = llvm.trunc %hi : i32 to i16
    %q = llvm.or %h16, %quiet : i16
    %nan = llvm.fcmp "uno" %x, %x : f32
    %sel = llvm.select %nan, %q, %t : i1, i16
    %res = llvm.bitcast %sel : i16 to bf16
    llvm.return %res : bf16
  }
"#;
