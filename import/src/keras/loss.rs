//! Keras losses as a model's compile config names them: what `forgec check` tests the output
//! activation and the labels against, and what the training steps will compile.

use super::KerasModel;
use serde_json::Value;

/// What a loss expects of the output and the labels (what `check` tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// Binary cross-entropy (and its focal form): probabilities of one class.
    Binary,
    /// Categorical cross-entropy: one-hot labels over the classes.
    Categorical,
    /// Sparse categorical cross-entropy: integer class ids.
    Sparse,
    /// Any other loss (regression losses, hinge, ...).
    Other,
}

#[derive(Clone, Debug)]
pub struct Loss {
    /// The name the model (or `--loss`) gives it.
    pub name: String,
    /// The Keras function or class it is (`binary_crossentropy`, `CategoricalCrossentropy`):
    /// the name for a loss given as a string, the class of a serialized loss object.
    pub function: String,
    pub kind: LossKind,
    pub from_logits: bool,
    /// A serialized loss object's config (its `delta`, `label_smoothing`, `reduction`, ...).
    pub config: Option<Value>,
}

impl Loss {
    /// A loss by its Keras name (`binary_crossentropy`, `"bce"`, `CategoricalCrossentropy`, ...).
    pub fn named(name: &str) -> Loss {
        Loss {
            name: name.to_string(),
            function: name.to_string(),
            kind: loss_kind(name),
            from_logits: false,
            config: None,
        }
    }
}

/// The family of a Keras loss name, in any of its spellings.
pub fn loss_kind(name: &str) -> LossKind {
    let n: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect();
    match n.as_str() {
        "binarycrossentropy" | "bce" | "binaryfocalcrossentropy" => LossKind::Binary,
        "categoricalcrossentropy" | "cce" | "categoricalfocalcrossentropy" => LossKind::Categorical,
        "sparsecategoricalcrossentropy" | "scce" => LossKind::Sparse,
        _ => LossKind::Other,
    }
}

/// Keras 3's built-in losses, by their function names (the class names and short aliases
/// normalize to these: lower case, no `_`).
const KNOWN: &[&str] = &[
    "binarycrossentropy",
    "bce",
    "binaryfocalcrossentropy",
    "categoricalcrossentropy",
    "cce",
    "categoricalfocalcrossentropy",
    "sparsecategoricalcrossentropy",
    "scce",
    "meansquarederror",
    "mse",
    "meanabsoluteerror",
    "mae",
    "meanabsolutepercentageerror",
    "mape",
    "meansquaredlogarithmicerror",
    "msle",
    "huber",
    "logcosh",
    "hinge",
    "squaredhinge",
    "categoricalhinge",
    "kldivergence",
    "kld",
    "kullbackleiblerdivergence",
    "poisson",
    "cosinesimilarity",
    "ctc",
    "dice",
    "tversky",
    "circle",
    "categoricalgeneralizedcrossentropy",
];

/// Whether `name` is one of Keras's built-in losses, in any of its spellings.
pub fn is_known(name: &str) -> bool {
    let n: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect();
    KNOWN.contains(&n.as_str())
}

/// A loss from its compile-config entry: a name, or a serialized loss object.
pub fn parse_loss(v: &Value) -> Option<Loss> {
    match v {
        Value::String(s) => Some(Loss::named(s)),
        Value::Object(o) if o.contains_key("class_name") => {
            let class = o.get("class_name")?.as_str()?;
            let cfg = o.get("config");
            let name = cfg
                .and_then(|c| c.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or(class);
            let from_logits = cfg
                .and_then(|c| c.get("from_logits"))
                .and_then(|b| b.as_bool())
                .unwrap_or(false);
            Some(Loss {
                name: name.to_string(),
                function: class.to_string(),
                kind: loss_kind(class),
                from_logits,
                config: cfg.cloned(),
            })
        }
        _ => None,
    }
}

/// The loss of each output (by output layer name), from the compile config.
pub fn compiled_losses(m: &KerasModel) -> Vec<(String, Loss)> {
    let Some(cc) = &m.compile else { return vec![] };
    let Some(loss) = cc.get("loss") else {
        return vec![];
    };
    let outs: Vec<String> = m.outputs.iter().map(|o| o.layer.clone()).collect();
    match loss {
        Value::Object(o) if !o.contains_key("class_name") => o
            .iter()
            .filter_map(|(k, v)| parse_loss(v).map(|l| (k.clone(), l)))
            .collect(),
        Value::Array(a) => outs
            .iter()
            .zip(a)
            .filter_map(|(k, v)| parse_loss(v).map(|l| (k.clone(), l)))
            .collect(),
        v => match parse_loss(v) {
            Some(l) => outs.iter().map(|k| (k.clone(), l.clone())).collect(),
            None => vec![],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_parse_in_every_spelling() {
        for (v, name, kind, logits) in [
            (
                r#""binary_crossentropy""#,
                "binary_crossentropy",
                LossKind::Binary,
                false,
            ),
            (r#""bce""#, "bce", LossKind::Binary, false),
            (
                r#""SparseCategoricalCrossentropy""#,
                "SparseCategoricalCrossentropy",
                LossKind::Sparse,
                false,
            ),
            (r#""mse""#, "mse", LossKind::Other, false),
            (
                r#"{"module": "keras.losses", "class_name": "CategoricalCrossentropy", "config": {"name": "cce_main", "from_logits": true}}"#,
                "cce_main",
                LossKind::Categorical,
                true,
            ),
            (
                r#"{"class_name": "BinaryFocalCrossentropy"}"#,
                "BinaryFocalCrossentropy",
                LossKind::Binary,
                false,
            ),
        ] {
            let l = parse_loss(&serde_json::from_str(v).unwrap()).unwrap();
            assert_eq!(
                (l.name.as_str(), l.kind, l.from_logits),
                (name, kind, logits),
                "{v}"
            );
        }
        assert!(parse_loss(&serde_json::json!(3)).is_none());
        assert!(is_known("BinaryCrossentropy") && is_known("mse") && is_known("log_cosh"));
        assert!(!is_known("binary_crossentropyy"));
    }
}
