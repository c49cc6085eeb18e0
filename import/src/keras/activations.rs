//! Keras's built-in activations, decomposed into IR ops.

use super::build::{Lb, R};
use forgec_ir::{BinaryOp as B, Op, UnaryOp as U, ValueId};
use serde_json::Value;

/// Every activation name forgec accepts.
pub const NAMES: &[&str] = &[
    "linear",
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "softplus",
    "softsign",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "swish",
    "mish",
    "exponential",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "hard_shrink",
    "soft_shrink",
    "tanh_shrink",
    "leaky_relu",
    "log_sigmoid",
    "sparse_plus",
    "squareplus",
    "glu",
];

/// The activation's name from a layer config value (a string, or a serialized object).
pub fn name_of(spec: Option<&Value>) -> R<String> {
    match spec {
        None | Some(Value::Null) => Ok("linear".into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Object(o)) => {
            // Keras 3 may serialize a function as {"module": "keras.activations", "class_name": "function", "config": "relu"}.
            match o.get("config") {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(format!(
                    "activation {} is a custom object: forgec compiles only the built-in activations ({})",
                    Value::Object(o.clone()),
                    NAMES.join(", ")
                )),
            }
        }
        Some(v) => Err(format!("activation must be a name, got {v}")),
    }
}

/// Applies the named activation to `x`. `legacy` selects tf.keras 2 definitions where they
/// differ from Keras 3 (hard_sigmoid).
pub fn apply(b: &mut Lb, name: &str, x: ValueId, legacy: bool) -> R<ValueId> {
    let last = b.rank(x).saturating_sub(1);
    Ok(match name {
        "linear" | "identity" => x,
        "relu" => b.un(U::Relu, x)?,
        "relu6" => {
            let r = b.un(U::Relu, x)?;
            b.bin_s(B::Min, r, 6.0)?
        }
        "sigmoid" => b.un(U::Sigmoid, x)?,
        "tanh" => b.un(U::Tanh, x)?,
        "softmax" => b.op(
            Op::Softmax {
                axis: last,
                log: false,
            },
            &[x],
            "softmax",
        )?,
        "log_softmax" => b.op(
            Op::Softmax {
                axis: last,
                log: true,
            },
            &[x],
            "log_softmax",
        )?,
        "softplus" => b.un(U::Softplus, x)?,
        "softsign" => {
            let a = b.un(U::Abs, x)?;
            let d = b.bin_s(B::Add, a, 1.0)?;
            b.bin(B::Div, x, d)?
        }
        "elu" => elu(b, x, 1.0)?,
        "selu" => {
            let e = elu(b, x, 1.673_263_242_354_377_3)?;
            b.bin_s(B::Mul, e, 1.050_700_987_355_480_5)?
        }
        "celu" => {
            // max(0, x) + min(0, exp(x) - 1) for alpha = 1.
            let p = b.un(U::Relu, x)?;
            let e = b.un(U::Exp, x)?;
            let em = b.bin_s(B::Sub, e, 1.0)?;
            let n = b.bin_s(B::Min, em, 0.0)?;
            b.bin(B::Add, p, n)?
        }
        "gelu" => {
            // Keras 3's activation `gelu` is the exact form: 0.5 x (1 + erf(x / sqrt 2)).
            let s = b.bin_s(B::Mul, x, std::f64::consts::FRAC_1_SQRT_2)?;
            let e = b.un(U::Erf, s)?;
            let e1 = b.bin_s(B::Add, e, 1.0)?;
            let h = b.bin_s(B::Mul, x, 0.5)?;
            b.bin(B::Mul, h, e1)?
        }
        "silu" | "swish" => {
            let s = b.un(U::Sigmoid, x)?;
            b.bin(B::Mul, x, s)?
        }
        "mish" => {
            let sp = b.un(U::Softplus, x)?;
            let t = b.un(U::Tanh, sp)?;
            b.bin(B::Mul, x, t)?
        }
        "exponential" => b.un(U::Exp, x)?,
        "hard_sigmoid" => hard_sigmoid(b, x, legacy)?,
        "hard_silu" | "hard_swish" => {
            let h = hard_sigmoid(b, x, false)?;
            b.bin(B::Mul, x, h)?
        }
        "hard_tanh" => {
            let lo = b.bin_s(B::Max, x, -1.0)?;
            b.bin_s(B::Min, lo, 1.0)?
        }
        "hard_shrink" => {
            let a = b.un(U::Abs, x)?;
            let c = b.bin_s(B::Gt, a, 0.5)?;
            let z = b.scalar(0.0, x);
            b.select(c, x, z)?
        }
        "soft_shrink" => {
            let hi = b.bin_s(B::Gt, x, 0.5)?;
            let lo = b.bin_s(B::Lt, x, -0.5)?;
            let xm = b.bin_s(B::Sub, x, 0.5)?;
            let xp = b.bin_s(B::Add, x, 0.5)?;
            let z = b.scalar(0.0, x);
            let inner = b.select(lo, xp, z)?;
            b.select(hi, xm, inner)?
        }
        "tanh_shrink" => {
            let t = b.un(U::Tanh, x)?;
            b.bin(B::Sub, x, t)?
        }
        "leaky_relu" => leaky_relu(b, x, 0.2)?,
        "log_sigmoid" => {
            let n = b.un(U::Neg, x)?;
            let sp = b.un(U::Softplus, n)?;
            b.un(U::Neg, sp)?
        }
        "sparse_plus" => {
            // 0 for x <= -1, x for x >= 1, (x + 1)^2 / 4 between.
            let le = b.bin_s(B::Le, x, -1.0)?;
            let ge = b.bin_s(B::Ge, x, 1.0)?;
            let xp = b.bin_s(B::Add, x, 1.0)?;
            let sq = b.bin(B::Mul, xp, xp)?;
            let q = b.bin_s(B::Mul, sq, 0.25)?;
            let z = b.scalar(0.0, x);
            let mid = b.select(ge, x, q)?;
            b.select(le, z, mid)?
        }
        "squareplus" => {
            // (x + sqrt(x^2 + 4)) / 2
            let sq = b.bin(B::Mul, x, x)?;
            let s4 = b.bin_s(B::Add, sq, 4.0)?;
            let r = b.un(U::Sqrt, s4)?;
            let s = b.bin(B::Add, x, r)?;
            b.bin_s(B::Mul, s, 0.5)?
        }
        "glu" => {
            let n = b.g.ty(x).shape[last]
                .known()
                .ok_or("glu needs a known last dim")?;
            if n % 2 != 0 {
                return Err(format!("glu needs an even last dim, got {n}"));
            }
            let h = (n / 2) as i64;
            let a = b.op(
                Op::Slice {
                    axes: vec![last],
                    starts: vec![0],
                    ends: vec![h],
                    steps: vec![1],
                },
                &[x],
                "glu_a",
            )?;
            let g = b.op(
                Op::Slice {
                    axes: vec![last],
                    starts: vec![h],
                    ends: vec![n as i64],
                    steps: vec![1],
                },
                &[x],
                "glu_b",
            )?;
            let s = b.un(U::Sigmoid, g)?;
            b.bin(B::Mul, a, s)?
        }
        other => {
            return Err(format!(
                "unknown activation '{other}' (forgec knows: {})",
                NAMES.join(", ")
            ))
        }
    })
}

pub fn elu(b: &mut Lb, x: ValueId, alpha: f64) -> R<ValueId> {
    let c = b.bin_s(B::Gt, x, 0.0)?;
    let e = b.un(U::Exp, x)?;
    let em = b.bin_s(B::Sub, e, 1.0)?;
    let n = b.bin_s(B::Mul, em, alpha)?;
    b.select(c, x, n)
}

pub fn leaky_relu(b: &mut Lb, x: ValueId, slope: f64) -> R<ValueId> {
    let c = b.bin_s(B::Ge, x, 0.0)?;
    let n = b.bin_s(B::Mul, x, slope)?;
    b.select(c, x, n)
}

fn hard_sigmoid(b: &mut Lb, x: ValueId, legacy: bool) -> R<ValueId> {
    // Keras 3: relu6(x + 3) / 6. tf.keras 2: clip(0.2 x + 0.5, 0, 1). They differ: a model
    // trained with one and run with the other gives other numbers.
    let (scale, shift) = if legacy { (0.2, 0.5) } else { (1.0 / 6.0, 0.5) };
    let m = b.bin_s(B::Mul, x, scale)?;
    let a = b.bin_s(B::Add, m, shift)?;
    let lo = b.bin_s(B::Max, a, 0.0)?;
    b.bin_s(B::Min, lo, 1.0)
}
