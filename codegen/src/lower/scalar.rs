//! Scalar code for the bodies of linalg ops: elementwise ops, casts, and the polynomial
//! `exp`, `tanh` and `erf` the activations use (vectorisable at every x86-64 level: no libm
//! calls, multiply-adds that contract into FMAs only where the CPU has them).

use super::*;
use forgec_ir::{Activation, BinaryOp, DType, Op, UnaryOp};

/// A fresh SSA name inside a body.
pub(crate) fn bvar(lines: &[String]) -> String {
    format!("%t{}", lines.len())
}

pub(crate) fn push(lines: &mut Vec<String>, rhs: String) -> String {
    let v = bvar(lines);
    lines.push(format!("{v} = {rhs}"));
    v
}

/// `a * b + c` as a multiply and an add that may contract: one FMA instruction where the CPU
/// has one (x86-64-v3 and up, aarch64: the same bits as `math.fma`), a multiply and an add
/// where it has none (x86-64-v2), never a call to libm's `fmaf`, which `math.fma` becomes
/// there (one call per element, and a loop of calls does not vectorize).
pub(crate) fn mul_add(lines: &mut Vec<String>, a: &str, b: &str, c: &str, t: &str) -> String {
    let m = push(
        lines,
        format!("arith.mulf {a}, {b} fastmath<contract> : {t}"),
    );
    push(
        lines,
        format!("arith.addf {m}, {c} fastmath<contract> : {t}"),
    )
}

/// Scalar code for a unary op on `x` of type `d`.
pub(crate) fn unary_body(lines: &mut Vec<String>, u: UnaryOp, x: &str, d: DType) -> R<String> {
    let t = elem(d);
    let f = d.is_float();
    let c = |lines: &mut Vec<String>, v: f64| push(lines, E::scalar_const(d, v));
    Ok(match u {
        UnaryOp::Neg if f => push(lines, format!("arith.negf {x} : {t}")),
        UnaryOp::Neg => {
            let z = c(lines, 0.0);
            push(lines, format!("arith.subi {z}, {x} : {t}"))
        }
        UnaryOp::Abs if f => push(lines, format!("math.absf {x} : {t}")),
        UnaryOp::Abs => push(lines, format!("math.absi {x} : {t}")),
        UnaryOp::Exp if d == DType::F32 => exp_f32(lines, x),
        UnaryOp::Exp => push(lines, format!("math.exp {x} : {t}")),
        UnaryOp::Log => push(lines, format!("math.log {x} : {t}")),
        UnaryOp::Sqrt => push(lines, format!("math.sqrt {x} : {t}")),
        UnaryOp::Rsqrt => push(lines, format!("math.rsqrt {x} : {t}")),
        UnaryOp::Reciprocal => {
            let one = c(lines, 1.0);
            push(lines, format!("arith.divf {one}, {x} : {t}"))
        }
        UnaryOp::Tanh if d == DType::F32 => tanh_f32(lines, x),
        UnaryOp::Tanh => push(lines, format!("math.tanh {x} : {t}")),
        UnaryOp::Sigmoid => {
            let n = push(lines, format!("arith.negf {x} : {t}"));
            let e = if d == DType::F32 {
                exp_f32(lines, &n)
            } else {
                push(lines, format!("math.exp {n} : {t}"))
            };
            let one = c(lines, 1.0);
            let s = push(lines, format!("arith.addf {one}, {e} : {t}"));
            push(lines, format!("arith.divf {one}, {s} : {t}"))
        }
        UnaryOp::Relu if f => {
            // x < 0 ? 0 : x: NaN and -0 pass (as in TensorFlow), and it is one max instruction.
            let z = c(lines, 0.0);
            let neg = push(lines, format!("arith.cmpf olt, {x}, {z} : {t}"));
            push(lines, format!("arith.select {neg}, {z}, {x} : {t}"))
        }
        UnaryOp::Relu => {
            let z = c(lines, 0.0);
            push(lines, format!("arith.maxsi {x}, {z} : {t}"))
        }
        UnaryOp::Softplus => {
            // max(x, 0) + log1p(exp(-|x|))
            let a = push(lines, format!("math.absf {x} : {t}"));
            let n = push(lines, format!("arith.negf {a} : {t}"));
            let e = push(lines, format!("math.exp {n} : {t}"));
            let l = push(lines, format!("math.log1p {e} : {t}"));
            let z = c(lines, 0.0);
            let m = push(lines, format!("arith.maximumf {x}, {z} : {t}"));
            push(lines, format!("arith.addf {m}, {l} : {t}"))
        }
        UnaryOp::Erf if d == DType::F32 => erf_f32(lines, x),
        UnaryOp::Erf => push(lines, format!("math.erf {x} : {t}")),
        UnaryOp::Sin => push(lines, format!("math.sin {x} : {t}")),
        UnaryOp::Cos => push(lines, format!("math.cos {x} : {t}")),
        UnaryOp::Floor => push(lines, format!("math.floor {x} : {t}")),
        UnaryOp::Ceil => push(lines, format!("math.ceil {x} : {t}")),
        UnaryOp::Round => push(lines, format!("math.roundeven {x} : {t}")),
        UnaryOp::Atan => push(lines, format!("math.atan {x} : {t}")),
        UnaryOp::Sign => {
            let z = c(lines, 0.0);
            let one = c(lines, 1.0);
            let m1 = c(lines, -1.0);
            // Floats keep x itself when neither compare holds (NaN and -0 pass through).
            let (cmp, gt, lt, rest) = if f {
                ("cmpf", "ogt", "olt", x)
            } else {
                ("cmpi", "sgt", "slt", z.as_str())
            };
            let gt = push(lines, format!("arith.{cmp} {gt}, {x}, {z} : {t}"));
            let lt = push(lines, format!("arith.{cmp} {lt}, {x}, {z} : {t}"));
            let a = push(lines, format!("arith.select {lt}, {m1}, {rest} : {t}"));
            push(lines, format!("arith.select {gt}, {one}, {a} : {t}"))
        }
        UnaryOp::Not => {
            let tr = push(lines, "arith.constant true".into());
            push(lines, format!("arith.xori {x}, {tr} : i1"))
        }
        UnaryOp::BitNot => {
            let m = c(lines, -1.0);
            push(lines, format!("arith.xori {x}, {m} : {t}"))
        }
    })
}

/// Scalar code for a binary op on `x`, `y` of input type `d`.
pub(crate) fn binary_body(
    lines: &mut Vec<String>,
    b: BinaryOp,
    x: &str,
    y: &str,
    d: DType,
) -> R<String> {
    let t = elem(d);
    let f = d.is_float();
    let cmp = |p_f: &str, p_i: &str| {
        if f {
            format!("arith.cmpf {p_f}, {x}, {y} : {t}")
        } else {
            format!("arith.cmpi {p_i}, {x}, {y} : {t}")
        }
    };
    Ok(match b {
        BinaryOp::Add => push(
            lines,
            format!("arith.add{} {x}, {y} : {t}", if f { "f" } else { "i" }),
        ),
        BinaryOp::Sub => push(
            lines,
            format!("arith.sub{} {x}, {y} : {t}", if f { "f" } else { "i" }),
        ),
        BinaryOp::Mul => push(
            lines,
            format!("arith.mul{} {x}, {y} : {t}", if f { "f" } else { "i" }),
        ),
        BinaryOp::Div => push(
            lines,
            format!("arith.div{} {x}, {y} : {t}", if f { "f" } else { "si" }),
        ),
        BinaryOp::Pow if f => push(lines, format!("math.powf {x}, {y} : {t}")),
        BinaryOp::Pow => push(lines, format!("math.ipowi {x}, {y} : {t}")),
        BinaryOp::Max => push(
            lines,
            format!(
                "arith.{} {x}, {y} : {t}",
                if f { "maximumf" } else { "maxsi" }
            ),
        ),
        BinaryOp::Min => push(
            lines,
            format!(
                "arith.{} {x}, {y} : {t}",
                if f { "minimumf" } else { "minsi" }
            ),
        ),
        BinaryOp::Eq => push(lines, cmp("oeq", "eq")),
        BinaryOp::Ne => push(lines, cmp("une", "ne")),
        BinaryOp::Lt => push(lines, cmp("olt", "slt")),
        BinaryOp::Le => push(lines, cmp("ole", "sle")),
        BinaryOp::Gt => push(lines, cmp("ogt", "sgt")),
        BinaryOp::Ge => push(lines, cmp("oge", "sge")),
        BinaryOp::And | BinaryOp::BitAnd => push(lines, format!("arith.andi {x}, {y} : {t}")),
        BinaryOp::Or | BinaryOp::BitOr => push(lines, format!("arith.ori {x}, {y} : {t}")),
        BinaryOp::BitXor => push(lines, format!("arith.xori {x}, {y} : {t}")),
        // Amounts outside 0..width (negative ones compare as huge unsigned): a left shift gives
        // 0, an arithmetic right shift fills with the sign (as the interpreter does; LLVM's
        // shifts would be poison).
        BinaryOp::Shl | BinaryOp::Shr => {
            let bits = match d {
                DType::I8 => 8,
                DType::I32 => 32,
                _ => 64,
            };
            let n = push(lines, format!("arith.constant {bits} : {t}"));
            let ok = push(lines, format!("arith.cmpi ult, {y}, {n} : {t}"));
            if b == BinaryOp::Shl {
                let s = push(lines, format!("arith.shli {x}, {y} : {t}"));
                let z = push(lines, format!("arith.constant 0 : {t}"));
                push(lines, format!("arith.select {ok}, {s}, {z} : {t}"))
            } else {
                let top = push(lines, format!("arith.constant {} : {t}", bits - 1));
                let amount = push(lines, format!("arith.select {ok}, {y}, {top} : {t}"));
                push(lines, format!("arith.shrsi {x}, {amount} : {t}"))
            }
        }
        BinaryOp::Rem => push(
            lines,
            format!("arith.rem{} {x}, {y} : {t}", if f { "f" } else { "si" }),
        ),
        BinaryOp::Mod => {
            // The sign of the divisor: r + y when r and y have opposite signs.
            let r = push(
                lines,
                format!("arith.rem{} {x}, {y} : {t}", if f { "f" } else { "si" }),
            );
            let z = push(lines, E::scalar_const(d, 0.0));
            let (rneg, yneg, rnz) = if f {
                (
                    push(lines, format!("arith.cmpf olt, {r}, {z} : {t}")),
                    push(lines, format!("arith.cmpf olt, {y}, {z} : {t}")),
                    push(lines, format!("arith.cmpf one, {r}, {z} : {t}")),
                )
            } else {
                (
                    push(lines, format!("arith.cmpi slt, {r}, {z} : {t}")),
                    push(lines, format!("arith.cmpi slt, {y}, {z} : {t}")),
                    push(lines, format!("arith.cmpi ne, {r}, {z} : {t}")),
                )
            };
            let diff = push(lines, format!("arith.xori {rneg}, {yneg} : i1"));
            let fix = push(lines, format!("arith.andi {diff}, {rnz} : i1"));
            let s = push(
                lines,
                format!("arith.add{} {r}, {y} : {t}", if f { "f" } else { "i" }),
            );
            push(lines, format!("arith.select {fix}, {s}, {r} : {t}"))
        }
    })
}

/// Scalar conversion from `from` to `to`.
pub(crate) fn cast_body(lines: &mut Vec<String>, x: &str, from: DType, to: DType) -> String {
    if from == to {
        return x.to_string();
    }
    let (a, b) = (elem(from), elem(to));
    let width = |d: DType| match d {
        DType::F64 | DType::I64 => 64,
        DType::F32 | DType::I32 => 32,
        DType::F16 | DType::BF16 => 16,
        DType::I8 => 8,
        DType::Bool => 1,
    };
    if to == DType::Bool {
        let z = push(lines, E::scalar_const(from, 0.0));
        return if from.is_float() {
            push(lines, format!("arith.cmpf une, {x}, {z} : {a}"))
        } else {
            push(lines, format!("arith.cmpi ne, {x}, {z} : {a}"))
        };
    }
    match (from.is_float(), to.is_float()) {
        (true, true) => {
            if from == DType::BF16 || to == DType::BF16 || from == DType::F16 || to == DType::F16 {
                // Through f32 when one side is a 16-bit float.
                let mid = if width(from) < width(to) {
                    push(lines, format!("arith.extf {x} : {a} to {b}"))
                } else if width(from) > width(to) {
                    push(lines, format!("arith.truncf {x} : {a} to {b}"))
                } else {
                    let w = push(lines, format!("arith.extf {x} : {a} to f32"));
                    push(lines, format!("arith.truncf {w} : f32 to {b}"))
                };
                mid
            } else if width(from) < width(to) {
                push(lines, format!("arith.extf {x} : {a} to {b}"))
            } else {
                push(lines, format!("arith.truncf {x} : {a} to {b}"))
            }
        }
        (false, true) if from == DType::Bool => {
            push(lines, format!("arith.uitofp {x} : {a} to {b}"))
        }
        (false, true) => push(lines, format!("arith.sitofp {x} : {a} to {b}")),
        (true, false) => push(lines, format!("arith.fptosi {x} : {a} to {b}")),
        (false, false) => {
            if from == DType::Bool {
                push(lines, format!("arith.extui {x} : {a} to {b}"))
            } else if width(from) < width(to) {
                push(lines, format!("arith.extsi {x} : {a} to {b}"))
            } else {
                push(lines, format!("arith.trunci {x} : {a} to {b}"))
            }
        }
    }
}

/// Scalar code for one elementwise op on the scalars `a`, of types `tys`.
pub(crate) fn scalar_op(lines: &mut Vec<String>, op: &Op, a: &[S], tys: &[DType]) -> R<S> {
    match op {
        Op::Unary(u) => unary_body(lines, *u, &a[0], tys[0]),
        Op::Binary(b) => binary_body(lines, *b, &a[0], &a[1], tys[0]),
        Op::Select => Ok(push(
            lines,
            format!(
                "arith.select {}, {}, {} : {}",
                a[0],
                a[1],
                a[2],
                elem(tys[1])
            ),
        )),
        Op::Cast { to } => Ok(cast_body(lines, &a[0], tys[0], *to)),
        other => Err(format!(
            "internal error: `{}` is not elementwise",
            other.name()
        )),
    }
}

/// Scalar code for a recurrent cell's activation.
/// The f32 polynomial with `coeffs` (highest degree first) at `x`, by Horner's rule with FMAs.
pub(crate) fn horner(lines: &mut Vec<String>, x: &str, coeffs: &[f64]) -> String {
    let mut y = push(lines, E::scalar_const(DType::F32, coeffs[0]));
    for &k in &coeffs[1..] {
        let kc = push(lines, E::scalar_const(DType::F32, k));
        y = mul_add(lines, &y, x, &kc, "f32");
    }
    y
}

/// f32 `exp` without a libm call, so that loops of it vectorize: Cody-Waite range reduction
/// (`x = n ln2 + r`), a degree-7 polynomial for `exp(r)` (Cephes' coefficients) and `2^n` built
/// in the exponent bits, as two factors so that neither leaves the normal range (results down
/// to the subnormals come out right). At most 1.4 ulp from the exact value over the normal
/// range (measured on 3M points); `+inf` above 88.7228, `0` below -103.97, NaN stays NaN.
pub(crate) fn exp_f32(lines: &mut Vec<String>, x: &str) -> String {
    let c = |lines: &mut Vec<String>, v: f64| push(lines, E::scalar_const(DType::F32, v));
    let (lo, hi) = (c(lines, -103.972), c(lines, 88.722_839_05));
    let a = push(lines, format!("arith.maximumf {x}, {lo} : f32"));
    let a = push(lines, format!("arith.minimumf {a}, {hi} : f32"));
    let (log2e, half) = (c(lines, std::f64::consts::LOG2_E), c(lines, 0.5));
    let m = push(lines, format!("arith.mulf {a}, {log2e} : f32"));
    let m = push(lines, format!("arith.addf {m}, {half} : f32"));
    let n = push(lines, format!("math.floor {m} : f32"));
    let (c1, c2) = (c(lines, -0.693_359_375), c(lines, 2.121_944_4e-4));
    let r = mul_add(lines, &n, &c1, &a, "f32");
    let r = mul_add(lines, &n, &c2, &r, "f32");
    let y = horner(
        lines,
        &r,
        &[
            1.987_569_15e-4,
            1.398_199_950_7e-3,
            8.333_451_907_3e-3,
            4.166_579_589_4e-2,
            1.666_666_545_9e-1,
            5.000_000_120_1e-1,
        ],
    );
    let r2 = push(lines, format!("arith.mulf {r}, {r} : f32"));
    let one = c(lines, 1.0);
    let r1 = push(lines, format!("arith.addf {r}, {one} : f32"));
    let y = mul_add(lines, &y, &r2, &r1, "f32");
    // 2^n = 2^(n >> 1) * 2^(n - (n >> 1)), each factor (k + 127) << 23 as the bits of an f32.
    let ni = push(lines, format!("arith.fptosi {n} : f32 to i32"));
    let (bias, shift, one_i) = (
        push(lines, "arith.constant 127 : i32".into()),
        push(lines, "arith.constant 23 : i32".into()),
        push(lines, "arith.constant 1 : i32".into()),
    );
    let n1 = push(lines, format!("arith.shrsi {ni}, {one_i} : i32"));
    let n2 = push(lines, format!("arith.subi {ni}, {n1} : i32"));
    let mut v = y;
    for k in [n1, n2] {
        let kb = push(lines, format!("arith.addi {k}, {bias} : i32"));
        let bits = push(lines, format!("arith.shli {kb}, {shift} : i32"));
        let p2 = push(lines, format!("arith.bitcast {bits} : i32 to f32"));
        v = push(lines, format!("arith.mulf {v}, {p2} : f32"));
    }
    let (inf_at, zero_at) = (c(lines, 88.722_839_05), c(lines, -103.972));
    let (inf, zero) = (c(lines, f64::INFINITY), c(lines, 0.0));
    let big = push(lines, format!("arith.cmpf ogt, {x}, {inf_at} : f32"));
    let v = push(lines, format!("arith.select {big}, {inf}, {v} : f32"));
    let small = push(lines, format!("arith.cmpf olt, {x}, {zero_at} : f32"));
    let v = push(lines, format!("arith.select {small}, {zero}, {v} : f32"));
    let nan = push(lines, format!("arith.cmpf uno, {x}, {x} : f32"));
    push(lines, format!("arith.select {nan}, {x}, {v} : f32"))
}

/// `a P(a^2) / Q(a^2)` with `a` = `x` clamped to `[-bound, bound]`: the odd rational
/// approximations tanh and erf are made of (coefficients highest degree first).
fn odd_rational(lines: &mut Vec<String>, x: &str, bound: f64, p: &[f64], q: &[f64]) -> String {
    let c = |lines: &mut Vec<String>, v: f64| push(lines, E::scalar_const(DType::F32, v));
    let (lo, hi) = (c(lines, -bound), c(lines, bound));
    let a = push(lines, format!("arith.maximumf {x}, {lo} : f32"));
    let a = push(lines, format!("arith.minimumf {a}, {hi} : f32"));
    let x2 = push(lines, format!("arith.mulf {a}, {a} : f32"));
    let p = horner(lines, &x2, p);
    let p = push(lines, format!("arith.mulf {a}, {p} : f32"));
    let q = horner(lines, &x2, q);
    push(lines, format!("arith.divf {p}, {q} : f32"))
}

/// f32 `tanh` without a libm call: Eigen's rational approximation (odd degree-13 over even
/// degree-6 polynomial) on `[-7.9053, 7.9053]`, `x` itself below 0.0004 in magnitude, `±1`
/// beyond. At most 4e-7 relative error (measured on 2M points in [-10, 10]).
pub(crate) fn tanh_f32(lines: &mut Vec<String>, x: &str) -> String {
    let c = |lines: &mut Vec<String>, v: f64| push(lines, E::scalar_const(DType::F32, v));
    let t = odd_rational(
        lines,
        x,
        7.905_311_107_635_498,
        &[
            -2.760_768_477_423_55e-16,
            2.000_187_904_824_77e-13,
            -8.604_671_522_137_35e-11,
            5.122_297_090_371_14e-8,
            1.485_722_357_179_79e-5,
            6.372_619_288_754_36e-4,
            4.893_524_558_917_86e-3,
        ],
        &[
            1.198_258_394_667_02e-6,
            1.185_347_056_866_54e-4,
            2.268_434_632_439e-3,
            4.893_525_185_543_85e-3,
        ],
    );
    let small_at = c(lines, 0.0004);
    let ax = push(lines, format!("math.absf {x} : f32"));
    let small = push(lines, format!("arith.cmpf olt, {ax}, {small_at} : f32"));
    let t = push(lines, format!("arith.select {small}, {x}, {t} : f32"));
    let nan = push(lines, format!("arith.cmpf uno, {x}, {x} : f32"));
    push(lines, format!("arith.select {nan}, {x}, {t} : f32"))
}

/// f32 `erf` without a libm call (the exact GELU's): the rational approximation Eigen and
/// XLA use for float, an odd degree-13 over an even degree-8 polynomial on `[-4, 4]`, `±1`
/// beyond (to f32 precision). Within 2.4e-7 relative of the f64 interpreter's erf over a sweep
/// of [-90, 90] (`compiled_transcendentals_are_accurate_and_vectorisable`).
pub(crate) fn erf_f32(lines: &mut Vec<String>, x: &str) -> String {
    let r = odd_rational(
        lines,
        x,
        4.0,
        &[
            -2.726_142_258_013_06e-10,
            2.770_681_424_959_02e-8,
            -2.101_024_020_825_08e-6,
            -5.692_506_394_623_46e-5,
            -7.349_906_303_268_55e-4,
            -2.954_599_808_540_25e-3,
            -1.609_603_332_624_15e-2,
        ],
        &[
            -1.456_607_184_649_96e-5,
            -2.133_740_552_789_05e-4,
            -1.682_826_974_382_03e-3,
            -7.373_329_167_204_68e-3,
            -1.426_473_905_141_89e-2,
        ],
    );
    let nan = push(lines, format!("arith.cmpf uno, {x}, {x} : f32"));
    push(lines, format!("arith.select {nan}, {x}, {r} : f32"))
}

pub(crate) fn act_body(lines: &mut Vec<String>, a: Activation, x: &str, d: DType) -> String {
    let t = elem(d);
    match a {
        Activation::Linear => x.to_string(),
        Activation::Tanh => unary_body(lines, UnaryOp::Tanh, x, d).unwrap_or_default(),
        Activation::Sigmoid => unary_body(lines, UnaryOp::Sigmoid, x, d).unwrap_or_default(),
        Activation::Relu => unary_body(lines, UnaryOp::Relu, x, d).unwrap_or_default(),
        Activation::HardSigmoid => {
            // relu6(x + 3) / 6
            let three = push(lines, E::scalar_const(d, 3.0));
            let six = push(lines, E::scalar_const(d, 6.0));
            let zero = push(lines, E::scalar_const(d, 0.0));
            let s = push(lines, format!("arith.addf {x}, {three} : {t}"));
            let lo = push(lines, format!("arith.maximumf {s}, {zero} : {t}"));
            let hi = push(lines, format!("arith.minimumf {lo}, {six} : {t}"));
            push(lines, format!("arith.divf {hi}, {six} : {t}"))
        }
    }
}
