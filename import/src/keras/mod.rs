//! Keras import: Keras 3 JSON + `.weights.h5`, `.keras` archives, tf.keras 2 JSON + `.h5`
//! weights and whole-model tf.keras `.h5` files; Sequential and Functional models, nested
//! models, shared layers, several inputs and outputs.

mod activations;
mod build;
mod json;
pub mod layers;
pub mod loss;
pub mod save;
pub mod weights;

use build::Lb;
use forgec_ir::{Dim, Graph, Origin, TensorType, ValueId, Weight};
use forgec_runtime::{DType, Tensor};
use json::*;
use layers::{LayerCx, WSpec};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use weights::{LayerWeightsRef, WeightFile};

/// The file formats forgec reads Keras models from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `model.to_json()` of Keras 3, weights in `.weights.h5`.
    Keras3Json,
    /// A `.keras` archive.
    KerasArchive,
    /// tf.keras 2 `to_json()`, weights from `save_weights` (`.h5`).
    TfKerasJson,
    /// A whole-model tf.keras 2 `.h5`.
    TfKerasH5,
}

/// A top-level layer as `forgec summary` shows it.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub name: String,
    pub class: String,
    pub outputs: Vec<TensorType>,
    pub params: usize,
    pub trainable_params: usize,
    pub non_trainable_params: usize,
    pub trainable_bytes: usize,
    pub non_trainable_bytes: usize,
    /// `dense[0][0]` for each input tensor of each call.
    pub connected: Vec<String>,
    /// The activation applied last (`softmax`, `sigmoid`, `linear`, ...), for `check`.
    pub activation: Option<String>,
    /// The layer's position in the model config (Keras's summary order).
    pub order: usize,
}

/// A model output and the layer that makes it.
#[derive(Clone, Debug)]
pub struct OutputInfo {
    pub name: String,
    pub layer: String,
}

/// An imported Keras model.
#[derive(Debug)]
pub struct KerasModel {
    pub path: PathBuf,
    pub format: Format,
    pub name: String,
    pub class: String,
    pub graph: Graph,
    pub layers: Vec<LayerInfo>,
    pub outputs: Vec<OutputInfo>,
    /// Keras's `compile_config` (or tf.keras's `training_config`), when the file has one.
    pub compile: Option<Value>,
    pub keras_version: Option<String>,
    /// Whether the weights were read (false: `summary`/`check` on a config alone).
    pub has_weights: bool,
    /// Whether Keras's summary of this Functional model has a "Connected to" column.
    pub sequential_like: bool,
    /// Where each weight goes in a Keras 3 `.weights.h5` (what `forgec train` writes).
    pub k3_layout: save::K3Layout,
    /// The model's config as the file holds it (`config.json` of an archive, the JSON, or an
    /// `.h5`'s `model_config`): what a `.keras` archive of the trained model is written with.
    pub config: Value,
}

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// An explicit weights file (otherwise found next to the JSON).
    pub weights: Option<PathBuf>,
    /// Allow a missing weights file (summary and check need only the config).
    pub allow_missing_weights: bool,
    /// Replace the (single) input's non-batch dims, as `--input-shape` does.
    pub input_shape: Option<Vec<usize>>,
}

pub use crate::error::ImportError;

use crate::error::fail;

/// Loads a Keras model from any of the supported files.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<KerasModel, ImportError> {
    let disp = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(format!("{disp}: cannot read: {e}")),
    };
    let (format, config_text, config_disp, store, compile, version) = if bytes.starts_with(b"PK") {
        let (cfg, store, version) = open_archive(path, &bytes, opts)?;
        (
            Format::KerasArchive,
            cfg,
            format!("{disp}:config.json"),
            store,
            None,
            version,
        )
    } else if bytes.starts_with(b"\x89HDF") {
        let wf = WeightFile::open(path, disp.clone()).map_err(ImportError::one)?;
        let cfg = match wf.model_config() {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let Some(cfg) = cfg else {
            return fail(format!(
                "{disp}: this .h5 file holds weights only (no model_config): give forgec the model's JSON \
                 (model.to_json()) and pass this file with --weights"
            ));
        };
        let compile = wf
            .training_config()
            .and_then(|t| serde_json::from_str(&t).ok());
        (
            Format::TfKerasH5,
            cfg,
            format!("{disp}:model_config"),
            Some(wf),
            compile,
            None,
        )
    } else {
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                return fail(format!(
                    "{disp}: not a Keras model file (expected a .keras archive, a .h5 model, or model.to_json() text)"
                ))
            }
        };
        (Format::Keras3Json, text, disp.clone(), None, None, None)
    };
    let root: Value = match serde_json::from_str(&config_text) {
        Ok(v) => v,
        Err(e) => {
            return fail(format!(
                "{config_disp}: malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ))
        }
    };
    // A JSON model's weights lie beside it; looked for once the JSON is known to be JSON.
    // Set when a JSON model's weights file is missing: a model without weights (resizing,
    // reshaping layers) needs none, and each layer that has weights is reported.
    let mut missing_weights = None;
    let store = if format != Format::Keras3Json {
        store
    } else {
        let weights = match &opts.weights {
            Some(w) => Some(w.clone()),
            None => find_weights(path),
        };
        match weights {
            Some(w) if w.exists() || opts.weights.is_some() => {
                Some(WeightFile::open(&w, w.display().to_string()).map_err(ImportError::one)?)
            }
            _ if opts.allow_missing_weights => None,
            _ => {
                let looked: Vec<String> = weight_candidates(path)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                missing_weights = Some(format!(
                    "it has weights, but no weights file was found (looked for {}): pass it with --weights FILE",
                    looked.join(", ")
                ));
                None
            }
        }
    };
    let format = if format == Format::Keras3Json && is_tf_keras(&root) {
        Format::TfKerasJson
    } else {
        format
    };
    let compile = compile.or_else(|| get(&root, "compile_config").cloned());
    let version = version.or_else(|| {
        root.get("keras_version")
            .and_then(|v| v.as_str())
            .map(String::from)
    });
    let legacy = matches!(format, Format::TfKerasJson | Format::TfKerasH5);
    if let Some(s) = &store {
        if legacy != matches!(s.layout(), weights::Layout::TfKeras { .. }) {
            let (cfg_kind, w_kind) = if legacy {
                ("tf.keras 2", "Keras 3")
            } else {
                ("Keras 3", "tf.keras 2")
            };
            return fail(format!(
                "{}: these are {w_kind} weights but {config_disp} is a {cfg_kind} model: pass the weights saved with the same Keras",
                s.display()
            ));
        }
    }
    let mut cx = Importer {
        g: Graph::new(""),
        store: store.as_ref(),
        legacy,
        problems: Vec::new(),
        infos: Vec::new(),
        config_disp: config_disp.clone(),
        input_shape: opts.input_shape.clone(),
        cur: None,
        shape_problems: Vec::new(),
        weight_cache: HashMap::new(),
        missing_weights,
        k3_groups: Vec::new(),
    };
    let class = root
        .get("class_name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let name = get(&root, "config")
        .and_then(|c| c.get("name"))
        .and_then(|v| v.as_str())
        .unwrap_or("model")
        .to_string();
    cx.g.name = name.clone();
    let scope = Scope {
        k3_prefix: String::new(),
        tf_prefix: None,
        json_path: "$".into(),
        depth: 0,
    };
    let result = cx.model(&root, None, &scope);
    let mut problems = std::mem::take(&mut cx.problems);
    let (outs, sequential_like) = match result {
        Ok(r) => r,
        Err(e) => {
            // An empty error means the problems were recorded where they arose.
            if !e.is_empty() {
                problems.push(e);
            }
            (vec![], true)
        }
    };
    if !problems.is_empty() {
        problems.extend(std::mem::take(&mut cx.shape_problems));
        return Err(ImportError::many(problems));
    }
    if !cx.shape_problems.is_empty() {
        return Err(ImportError {
            problems: std::mem::take(&mut cx.shape_problems),
            shape_only: true,
            needs_const: vec![],
        });
    }
    let mut g = cx.g;
    let mut outputs = Vec::new();
    for (i, (v, layer)) in outs.into_iter().enumerate() {
        let oname = if class == "Sequential" {
            format!("output_{i}")
        } else {
            layer.clone()
        };
        outputs.push(OutputInfo { name: oname, layer });
        g.outputs.push(v);
    }
    // Name the graph outputs as Keras does, so `run` writes `<output>.npy`.
    rename_outputs(&mut g, &outputs);
    let errs = forgec_ir::verify::verify(&g);
    if !errs.is_empty() {
        return Err(ImportError {
            shape_only: false,
            needs_const: vec![],
            problems: errs
                .into_iter()
                .map(|e| format!("{disp}: internal error, the imported graph is invalid: {e}"))
                .collect(),
        });
    }
    Ok(KerasModel {
        path: path.to_path_buf(),
        format,
        name: name.clone(),
        class,
        graph: g,
        layers: cx.infos,
        outputs,
        compile,
        keras_version: version,
        has_weights: store.is_some(),
        sequential_like,
        k3_layout: save::K3Layout {
            model: name,
            groups: std::mem::take(&mut cx.k3_groups),
        },
        config: root,
    })
}

fn rename_outputs(g: &mut Graph, outputs: &[OutputInfo]) {
    for (i, o) in outputs.iter().enumerate() {
        let id = g.outputs[i];
        if g.value(id).name == o.name {
            continue;
        }
        // Move a value already holding that name aside.
        if let Some(other) = g.find_value(&o.name) {
            let fresh = g.fresh_name(&format!("{}.inner", o.name));
            g.values[other.0].name = fresh;
        }
        g.values[id.0].name = o.name.clone();
    }
}

fn is_tf_keras(root: &Value) -> bool {
    // tf.keras 2 stamps its version at the top (2.x); Keras 3's to_json has `module` fields and no 2.x version.
    match root.get("keras_version").and_then(|v| v.as_str()) {
        Some(v) => v.starts_with("2."),
        None => {
            let layers = root
                .get("config")
                .and_then(|c| c.get("layers"))
                .and_then(|l| l.as_array());
            layers
                .map(|ls| {
                    ls.iter().any(|l| {
                        l.get("config")
                            .and_then(|c| c.get("batch_input_shape"))
                            .is_some()
                    })
                })
                .unwrap_or(false)
        }
    }
}

fn weight_candidates(json: &Path) -> Vec<PathBuf> {
    let s = json.to_string_lossy();
    let stem = s.strip_suffix(".json").unwrap_or(&s).to_string();
    let mut v = vec![
        PathBuf::from(format!("{stem}.weights.h5")),
        PathBuf::from(format!("{stem}.h5")),
    ];
    if let Some(base) = stem.strip_suffix(".tfkeras") {
        v.push(PathBuf::from(format!("{base}.tfkeras.h5")));
        v.push(PathBuf::from(format!("{base}.weights.h5")));
    }
    v
}

fn find_weights(json: &Path) -> Option<PathBuf> {
    weight_candidates(json).into_iter().find(|p| p.is_file())
}

type Archive = (String, Option<WeightFile>, Option<String>);

/// The largest `.keras` archive member forgec inflates: 8 GiB (the weights), 64 MiB for the
/// JSON members (a config is kilobytes).
const MAX_MEMBER_BYTES: u64 = 8 << 30;
const MAX_JSON_MEMBER_BYTES: u64 = 64 << 20;

fn open_archive(path: &Path, bytes: &[u8], opts: &LoadOptions) -> Result<Archive, ImportError> {
    let disp = path.display().to_string();
    let mut zip = match zip::ZipArchive::new(std::io::Cursor::new(bytes)) {
        Ok(z) => z,
        Err(e) => return fail(format!("{disp}: not a valid .keras archive (zip): {e}")),
    };
    let mut read = |name: &str| -> Result<Option<Vec<u8>>, ImportError> {
        let mut f = match zip.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return fail(format!("{disp}: broken archive member {name}: {e}")),
        };
        // A member is read up to the size it declares, and that size must fit both a stated
        // limit and what its compressed bytes can inflate to (deflate: at most ~1032:1), so a
        // small archive cannot inflate to gigabytes.
        let declared = f.size();
        let limit = if name.ends_with(".json") {
            MAX_JSON_MEMBER_BYTES
        } else {
            MAX_MEMBER_BYTES
        };
        if declared > limit
            || declared
                > f.compressed_size()
                    .saturating_mul(1100)
                    .saturating_add(1 << 20)
        {
            return fail(format!(
                "{disp}: archive member {name} declares {declared} bytes from {} compressed: refused (the limit is {limit} bytes, and deflate cannot inflate that much more)",
                f.compressed_size(),
            ));
        }
        let mut out = Vec::with_capacity(declared as usize);
        if let Err(e) = (&mut f).take(declared + 1).read_to_end(&mut out) {
            return fail(format!("{disp}: cannot read archive member {name}: {e}"));
        }
        if out.len() as u64 != declared {
            return fail(format!(
                "{disp}: archive member {name} inflates to another size than the {declared} bytes it declares: the archive is damaged"
            ));
        }
        Ok(Some(out))
    };
    let Some(cfg) = read("config.json")? else {
        return fail(format!(
            "{disp}: the archive has no config.json: is it a .keras file saved by model.save()?"
        ));
    };
    let version = read("metadata.json")?
        .and_then(|m| serde_json::from_slice::<Value>(&m).ok())
        .and_then(|m| {
            m.get("keras_version")
                .and_then(|v| v.as_str())
                .map(String::from)
        });
    let store = match &opts.weights {
        Some(w) => Some(WeightFile::open(w, w.display().to_string()).map_err(ImportError::one)?),
        None => match read("model.weights.h5")? {
            Some(h5) => Some(
                WeightFile::open_bytes(&h5, format!("{disp}:model.weights.h5"))
                    .map_err(ImportError::one)?,
            ),
            None if opts.allow_missing_weights => None,
            None => return fail(format!("{disp}: the archive has no model.weights.h5")),
        },
    };
    let cfg = String::from_utf8(cfg)
        .map_err(|_| ImportError::one(format!("{disp}:config.json is not UTF-8 text")))?;
    Ok((cfg, store, version))
}

/// Where a (possibly nested) model sits: its weight paths and its place in the JSON.
#[derive(Clone)]
struct Scope {
    /// Keras 3 weight path prefix (`` or `layers/functional/`).
    k3_prefix: String,
    /// tf.keras 2 group holding a nested model's layers (weights of nested models live under
    /// the outer layer's group).
    tf_prefix: Option<String>,
    json_path: String,
    depth: usize,
}

/// The layer being lowered: its weights, consumed in order.
struct CurLayer {
    name: String,
    class: String,
    trainable: bool,
    place: String,
    stored: Option<Vec<weights::StoredWeight>>,
    /// Why the layer's weight group could not be read, if it could not.
    group_note: Option<String>,
    cursor: usize,
    used: Vec<WSpec>,
    /// The weight constants this call made.
    created: Vec<ValueId>,
    params: (usize, usize, usize, usize),
}

struct Importer<'a> {
    g: Graph,
    store: Option<&'a WeightFile>,
    legacy: bool,
    problems: Vec<String>,
    infos: Vec<LayerInfo>,
    config_disp: String,
    input_shape: Option<Vec<usize>>,
    cur: Option<CurLayer>,
    /// Layers called on tensors of another shape than the one they were built for.
    shape_problems: Vec<String>,
    /// The weight constants of each layer already lowered, by its config place: a shared
    /// layer called again reuses them.
    weight_cache: HashMap<String, Vec<ValueId>>,
    /// Why a layer with weights cannot have them (a JSON model with no weights file).
    missing_weights: Option<String>,
    /// Where each layer's weights go in a Keras 3 weights file (for `save`).
    k3_groups: Vec<save::VarGroup>,
}

type TensorKey = (String, usize, usize);

impl LayerCx for Importer<'_> {
    fn legacy(&self) -> bool {
        self.legacy
    }

    fn weights(&mut self, b: &mut Lb, specs: &[WSpec]) -> Result<Vec<ValueId>, String> {
        let cur = self
            .cur
            .as_mut()
            .expect("weights are asked for inside a layer");
        if let Some(cached) = self.weight_cache.get(&cur.place) {
            // A shared layer's later call: the same parameters, counted once.
            let v = cached
                .get(cur.cursor..cur.cursor + specs.len())
                .map(|v| v.to_vec());
            cur.cursor += specs.len();
            return v.ok_or_else(|| {
                "a shared layer asks for other weights on a later call".to_string()
            });
        }
        // Guard against absurd configs before any allocation.
        const MAX_WEIGHT_ELEMS: usize = 1 << 31;
        for s in specs {
            let n = s.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if n.is_none_or(|n| n > MAX_WEIGHT_ELEMS) {
                return Err(format!(
                    "weight `{}` would have shape {:?}, over 2^31 elements: the layer's config is not plausible",
                    s.name, s.shape
                ));
            }
        }
        if let (Some(m), false) = (&self.missing_weights, specs.is_empty()) {
            return Err(m.clone());
        }
        let mut out = Vec::new();
        let mut errs = Vec::new();
        for s in specs {
            let stored = cur.stored.as_ref().and_then(|v| v.get(cur.cursor)).cloned();
            cur.cursor += 1;
            let t = match (&cur.stored, stored) {
                (None, _) => {
                    Tensor::full(DType::F32, s.shape.clone(), 0.0).expect("shape from config")
                }
                (Some(_), None) => {
                    errs.push(match &cur.group_note {
                        Some(note) => {
                            format!("weight `{}` {:?} is missing: {note}", s.name, s.shape)
                        }
                        None => format!(
                            "weight `{}` {:?} is missing from the weights file",
                            s.name, s.shape
                        ),
                    });
                    Tensor::full(DType::F32, s.shape.clone(), 0.0).expect("shape from config")
                }
                (Some(_), Some(w)) => {
                    // The shape is checked before the data is read: a file that declares a
                    // huge dataset for a small layer costs nothing.
                    let read = match self.store {
                        Some(st) if w.shape == s.shape => Some(st.read(&w)),
                        _ => None,
                    };
                    if let Some(Err(e)) = read {
                        errs.push(e);
                        Tensor::full(DType::F32, s.shape.clone(), 0.0).expect("shape from config")
                    } else if let Some(Ok(t)) = read {
                        t
                    } else {
                        let store = self
                            .store
                            .map(|s| s.display().to_string())
                            .unwrap_or_default();
                        errs.push(format!(
                            "weight `{}` at {store}:{} has shape {:?} but the layer's config needs {:?}: the weights do not belong to this model (or the config changed since they were saved)",
                            s.name,
                            w.path,
                            w.shape,
                            s.shape
                        ));
                        Tensor::full(DType::F32, s.shape.clone(), 0.0).expect("shape from config")
                    }
                }
            };
            let trainable = s.trainable && cur.trainable;
            let bytes = t.size_bytes();
            let n = t.numel();
            if trainable {
                cur.params.0 += n;
                cur.params.2 += bytes;
            } else {
                cur.params.1 += n;
                cur.params.3 += bytes;
            }
            // Weights keep the model's float type: a float64 file feeding a float32 model is cast.
            let t = if t.dtype().is_float() && t.dtype() != DType::F32 && s.name != "count" {
                t.cast(DType::F32)
            } else {
                t
            };
            let name = format!("{}/{}", cur.name, s.name);
            let id =
                b.g.add_const(t, Some(Weight { trainable }), &name, &b.origin.clone());
            out.push(id);
            cur.created.push(id);
            cur.used.push(s.clone());
        }
        // Record weight problems and go on with zeros, so every layer of the model is checked.
        for e in errs {
            let msg = format!(
                "{}: {}: {} `{}`: {e}",
                self.config_disp, cur.place, cur.class, cur.name
            );
            self.problems.push(msg);
        }
        Ok(out)
    }
}

fn snake_case(class: &str) -> String {
    // Keras's naming.to_snake_case: "(.)([A-Z][a-z]+)" -> "\1_\2", then "([a-z])([A-Z])" -> "\1_\2".
    let c: Vec<char> = class
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let mut s1 = String::new();
    for i in 0..c.len() {
        if i > 0
            && c[i].is_ascii_uppercase()
            && c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase())
        {
            s1.push('_');
        }
        s1.push(c[i]);
    }
    let c: Vec<char> = s1.chars().collect();
    let mut s2 = String::new();
    for i in 0..c.len() {
        if i > 0 && c[i].is_ascii_uppercase() && c[i - 1].is_ascii_lowercase() {
            s2.push('_');
        }
        s2.push(c[i]);
    }
    s2.to_lowercase()
}

/// Keras 3 names each layer's weight group by its class, uniquified in layer order.
struct K3Names(HashMap<String, usize>);

impl K3Names {
    fn next(&mut self, class: &str) -> String {
        // keras.layers.GroupQueryAttention is saved under that name, its group under its
        // Python class's, GroupedQueryAttention.
        let class = match class {
            "GroupQueryAttention" => "GroupedQueryAttention",
            c => c,
        };
        let base = snake_case(class);
        match self.0.get_mut(&base) {
            Some(n) => {
                *n += 1;
                format!("{base}_{n}")
            }
            None => {
                self.0.insert(base.clone(), 0);
                base
            }
        }
    }
}

fn is_model_class(c: &str) -> bool {
    matches!(c, "Sequential" | "Functional" | "Model")
}

fn layer_name(l: &Value) -> String {
    l.get("config")
        .and_then(|c| c.get("name"))
        .or_else(|| l.get("name"))
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string()
}

fn sanitize_sym(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl Importer<'_> {
    fn problem(&mut self, msg: String) {
        self.problems.push(msg);
    }

    /// Imports a model (top level or nested). `inputs`: the tensors a nested model is called
    /// on. Returns the outputs with the names of the layers making them, and whether Keras
    /// would print its summary without a "Connected to" column.
    fn model(
        &mut self,
        root: &Value,
        inputs: Option<Vec<ValueId>>,
        scope: &Scope,
    ) -> Result<(Vec<(ValueId, String)>, bool), String> {
        let class = root
            .get("class_name")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let cfg = get(root, "config")
            .ok_or_else(|| format!("{}: {}: no `config`", self.config_disp, scope.json_path))?;
        match class {
            "Sequential" => self.sequential(cfg, inputs, scope).map(|o| (o, true)),
            "Functional" | "Model" => self.functional(cfg, inputs, scope),
            "" => Err(format!("{}: {}: no `class_name`: is this a Keras model config?", self.config_disp, scope.json_path)),
            other => Err(format!(
                "{}: {}: the model class `{other}` is a subclassed model: forgec can only compile Sequential and Functional models. Rebuild it with the Functional API (keras.Model(inputs, outputs)) and save again.",
                self.config_disp, scope.json_path
            )),
        }
    }

    fn input_type(
        &mut self,
        layer_cfg: &Value,
        name: &str,
        place: &str,
    ) -> Result<TensorType, String> {
        let shape_v = get(layer_cfg, "batch_shape")
            .or_else(|| get(layer_cfg, "batch_input_shape"))
            .cloned()
            .or_else(|| {
                get(layer_cfg, "shape").map(|s| {
                    let mut v = vec![Value::Null];
                    v.extend(s.as_array().cloned().unwrap_or_default());
                    Value::Array(v)
                })
            });
        let Some(shape_v) = shape_v else {
            return Err(format!(
                "{place}: input `{name}` has no shape: give one with --input-shape"
            ));
        };
        let shape = shape_list(&shape_v, "batch_shape").map_err(|e| format!("{place}: {e}"))?;
        let dtype_s = match get(layer_cfg, "dtype") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v
                .get("config")
                .and_then(|c| c.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or("float32")
                .to_string(),
            None => "float32".into(),
        };
        let dtype = DType::from_numpy_name(&dtype_s)
            .ok_or_else(|| format!("{place}: input `{name}` has unsupported dtype '{dtype_s}'"))?;
        let mut dims: Vec<Dim> = shape
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Some(n) => Dim::Known(*n),
                None if i == 0 => Dim::Sym("batch".into()),
                None => Dim::Sym(format!("{}_{i}", sanitize_sym(name))),
            })
            .collect();
        if let Some(over) = self.input_shape.take() {
            dims = vec![Dim::Sym("batch".into())];
            dims.extend(over.into_iter().map(Dim::Known));
        }
        Ok(TensorType::new(dtype, dims))
    }

    fn sequential(
        &mut self,
        cfg: &Value,
        inputs: Option<Vec<ValueId>>,
        scope: &Scope,
    ) -> Result<Vec<(ValueId, String)>, String> {
        let layers = match cfg {
            Value::Array(a) => a.clone(), // very old tf.keras: config is the layer list
            _ => get(cfg, "layers")
                .and_then(|l| l.as_array())
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "{}: {}.config: no `layers` list",
                        self.config_disp, scope.json_path
                    )
                })?,
        };
        let lpath = |i: usize| format!("{}.config.layers[{i}]", scope.json_path);
        let mut x = match inputs {
            Some(v) => {
                if v.len() != 1 {
                    return Err(format!(
                        "{}: {}: a Sequential model takes one input, got {}",
                        self.config_disp,
                        scope.json_path,
                        v.len()
                    ));
                }
                Some(v[0])
            }
            None => None,
        };
        let mut names = K3Names(HashMap::new());
        let mut last_layer = String::new();
        let mut start = 0;
        if let Some(first) = layers.first() {
            let is_input = first.get("class_name").and_then(|c| c.as_str()) == Some("InputLayer");
            let fcfg = first.get("config").cloned().unwrap_or(Value::Null);
            let has_shape =
                get(&fcfg, "batch_input_shape").is_some() || get(&fcfg, "batch_shape").is_some();
            if x.is_none() {
                if !is_input && !has_shape && self.input_shape.is_none() {
                    return Err(format!(
                        "{}: {}: the Sequential model has no input shape (no InputLayer): give one with --input-shape",
                        self.config_disp,
                        lpath(0)
                    ));
                }
                let name = if is_input {
                    layer_name(first)
                } else {
                    "input_layer".to_string()
                };
                let place = format!("{}: {}", self.config_disp, lpath(0));
                let ty = if !is_input && !has_shape {
                    let over = self.input_shape.clone().unwrap_or_default();
                    self.input_shape = None;
                    let mut d = vec![Dim::Sym("batch".into())];
                    d.extend(over.into_iter().map(Dim::Known));
                    TensorType::new(DType::F32, d)
                } else {
                    self.input_type(&fcfg, &name, &place)?
                };
                x = Some(self.g.add_input(&name, ty));
            }
            if is_input {
                start = 1;
            }
        }
        let mut x = x.ok_or_else(|| {
            format!(
                "{}: {}: the model has no layers",
                self.config_disp, scope.json_path
            )
        })?;
        let mut poisoned = false;
        for (i, l) in layers.iter().enumerate().skip(start) {
            let class = l
                .get("class_name")
                .and_then(|c| c.as_str())
                .unwrap_or("?")
                .to_string();
            let k3 = names.next(&class);
            if class == "InputLayer" {
                continue;
            }
            let name = layer_name(l);
            last_layer = name.clone();
            if poisoned {
                // Still report unsupported layers further down.
                self.check_supported(l, &lpath(i));
                continue;
            }
            let prev = self.g.value(x).name.clone();
            match self.call_layer(l, &[x], &k3, scope, &lpath(i), vec![prev], i) {
                Some(out) if out.len() == 1 => x = out[0],
                _ => poisoned = true,
            }
        }
        if poisoned {
            // The problems are recorded already.
            return Err(String::new());
        }
        Ok(vec![(x, last_layer)])
    }

    /// Compares the tensors a layer is called on with the input shape it was built for
    /// (`build_config.input_shape`), the way Keras would complain at call time.
    fn check_build_shape(
        &self,
        l: &Value,
        class: &str,
        name: &str,
        ins: &[ValueId],
    ) -> Option<String> {
        let want = l.get("build_config").and_then(|b| get(b, "input_shape"))?;
        let wants: Vec<Vec<Option<usize>>> = match want.as_array() {
            Some(a) if a.first().is_some_and(|x| x.is_array()) => a
                .iter()
                .filter_map(|x| shape_list(x, "input_shape").ok())
                .collect(),
            Some(_) => vec![shape_list(want, "input_shape").ok()?],
            None => return None,
        };
        if wants.len() != ins.len() {
            return None;
        }
        for (w, &v) in wants.iter().zip(ins) {
            let got = self.g.ty(v);
            let fits = w.len() == got.rank()
                && w.iter().zip(&got.shape).skip(1).all(|(a, b)| match (a, b) {
                    (Some(a), Dim::Known(b)) => a == b,
                    _ => true,
                });
            if !fits {
                let ws: Vec<Dim> = w
                    .iter()
                    .map(|d| d.map(Dim::Known).unwrap_or(Dim::Sym("?".into())))
                    .collect();
                let want_s = forgec_ir::keras_shape(&ws);
                let got_s = got.keras_shape();
                let hint = if got.rank() > w.len() {
                    "flatten the input or fix input_shape"
                } else if got.rank() < w.len() {
                    "reshape the input (add the missing axis) or fix input_shape"
                } else {
                    "fix input_shape, or the layer before it, so the shapes agree"
                };
                return Some(format!(
                    "{class} `{name}` expects {want_s} but gets {got_s}: {hint}"
                ));
            }
        }
        None
    }

    /// tf.keras numbers the calls of a nested model that was built on its own Input from 1:
    /// its construction call is node 0 and is left out of the config.
    fn node_offset(&self, l: &Value) -> usize {
        if !self.legacy {
            return 0;
        }
        match l.get("class_name").and_then(|c| c.as_str()) {
            Some("Functional" | "Model") => 1,
            Some("Sequential") => {
                let first = l
                    .get("config")
                    .and_then(|c| c.get("layers"))
                    .and_then(|ls| ls.get(0))
                    .and_then(|f| f.get("class_name"))
                    .and_then(|c| c.as_str());
                usize::from(first == Some("InputLayer"))
            }
            _ => 0,
        }
    }

    /// Adds an empty Keras 3 `vars` group (once: a shared layer's later calls add nothing).
    fn k3_group(&mut self, path: String, name: &str) -> usize {
        if let Some(i) = self.k3_groups.iter().position(|g| g.path == path) {
            return i;
        }
        self.k3_groups.push(save::VarGroup {
            path,
            name: name.to_string(),
            vars: Vec::new(),
        });
        self.k3_groups.len() - 1
    }

    /// Records where the weights `cur` made go in a Keras 3 weights file: where the file
    /// read had them when it was a Keras 3 file, else by the layer's groups (a recurrent
    /// layer's weights live in its cell's group, a Bidirectional's halves in its two layers').
    fn record_k3(&mut self, cur: &CurLayer, class: &str, cfg: &Value, k3_path: &str) {
        // Keras's names for the groups: a recurrent cell is `<snake_case(class)>_cell`, a
        // Bidirectional's layers `forward_<name>` and `backward_<name>`, a wrapped layer its own.
        let inner = cfg.get("layer");
        let inner_class = inner
            .and_then(|l| l.get("class_name"))
            .and_then(|c| c.as_str())
            .unwrap_or(class);
        let inner_name = inner
            .and_then(|l| get(l, "config"))
            .and_then(|c| c.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or(&cur.name);
        let group_name = |g: &str| {
            if g.ends_with("cell/vars") {
                format!("{}_cell", snake_case(inner_class))
            } else if g.starts_with("forward_layer") {
                format!("forward_{inner_name}")
            } else if g.starts_with("backward_layer") {
                format!("backward_{inner_name}")
            } else if g.starts_with("layer/") {
                inner_name.to_string()
            } else {
                cur.name.clone()
            }
        };
        let all = layers::k3_groups(class, cfg);
        let groups: Vec<usize> = all
            .iter()
            .map(|g| self.k3_group(format!("{k3_path}/{g}"), &group_name(g)))
            .collect();
        let cells: Vec<usize> = groups
            .iter()
            .zip(&all)
            .filter(|(_, g)| g.ends_with("cell/vars"))
            .map(|(&i, _)| i)
            .collect();
        let keras3 = self
            .store
            .is_some_and(|s| s.layout() == weights::Layout::Keras3);
        let n = cur.created.len();
        for (i, &id) in cur.created.iter().enumerate() {
            let from_file = cur
                .stored
                .as_ref()
                .and_then(|st| st.get(i))
                .filter(|_| keras3)
                .and_then(|w| w.path.rsplit_once('/').map(|(g, _)| g.to_string()))
                .and_then(|p| {
                    groups
                        .iter()
                        .copied()
                        .find(|&g| self.k3_groups[g].path == p)
                });
            let gi = from_file.unwrap_or(if class == "Bidirectional" && cells.len() == 2 {
                cells[usize::from(i >= n / 2)]
            } else if let Some(&c) = cells.first() {
                c
            } else {
                *groups.last().expect("every layer has a vars group")
            });
            let name = self.g.value(id).name.clone();
            self.k3_groups[gi].vars.push(name);
        }
    }

    /// Reports an unsupported layer without lowering it (after an earlier failure).
    fn check_supported(&mut self, l: &Value, place: &str) {
        let class = l.get("class_name").and_then(|c| c.as_str()).unwrap_or("?");
        if !is_model_class(class) && class != "InputLayer" && !layers::SUPPORTED.contains(&class) {
            let name = layer_name(l);
            self.problem(unsupported_msg(&self.config_disp, place, class, &name));
        }
    }

    /// Lowers one call of a layer; records problems and returns None on failure.
    #[allow(clippy::too_many_arguments)]
    fn call_layer(
        &mut self,
        l: &Value,
        ins: &[ValueId],
        k3: &str,
        scope: &Scope,
        place: &str,
        connected: Vec<String>,
        order: usize,
    ) -> Option<Vec<ValueId>> {
        let class = match l.get("class_name").and_then(|c| c.as_str()).unwrap_or("?") {
            // Saved under keras.layers' name; Keras's summary shows the Python class's.
            "GroupQueryAttention" => "GroupedQueryAttention",
            c => c,
        }
        .to_string();
        let name = layer_name(l);
        let cfg = l.get("config").cloned().unwrap_or(Value::Null);
        let outputs_before = self.g.values.len();
        if is_model_class(&class) {
            // A model used as a layer: import it inline, its weights below its own group.
            self.k3_group(format!("{}layers/{k3}/vars", scope.k3_prefix), &name);
            let inner = Scope {
                k3_prefix: format!("{}layers/{k3}/", scope.k3_prefix),
                tf_prefix: Some(
                    scope
                        .tf_prefix
                        .clone()
                        .map(|p| format!("{p}/{name}"))
                        .unwrap_or(name.clone()),
                ),
                json_path: place.to_string(),
                depth: scope.depth + 1,
            };
            let infos_before = self.infos.len();
            let res = self.model(l, Some(ins.to_vec()), &inner);
            // The nested model's own layers do not appear in the outer summary; add them up.
            let nested: Vec<LayerInfo> = self.infos.drain(infos_before..).collect();
            match res {
                Ok((outs, _)) => {
                    if scope.depth == 0 {
                        let sum = |f: fn(&LayerInfo) -> usize| nested.iter().map(f).sum::<usize>();
                        self.infos.push(LayerInfo {
                            name: name.clone(),
                            class: class.clone(),
                            outputs: outs.iter().map(|(v, _)| self.g.ty(*v).clone()).collect(),
                            params: sum(|i| i.params),
                            trainable_params: sum(|i| i.trainable_params),
                            non_trainable_params: sum(|i| i.non_trainable_params),
                            trainable_bytes: sum(|i| i.trainable_bytes),
                            non_trainable_bytes: sum(|i| i.non_trainable_bytes),
                            connected,
                            activation: nested.last().and_then(|i| i.activation.clone()),
                            order,
                        });
                    } else {
                        self.infos.extend(nested);
                    }
                    return Some(outs.into_iter().map(|(v, _)| v).collect());
                }
                Err(e) => {
                    if !e.is_empty() {
                        self.problem(e);
                    }
                    return None;
                }
            }
        }
        if !layers::SUPPORTED.contains(&class.as_str()) {
            self.problem(unsupported_msg(&self.config_disp, place, &class, &name));
            return None;
        }
        if let Some(msg) = self.check_build_shape(l, &class, &name, ins) {
            self.shape_problems
                .push(format!("{}: {place}: {msg}", self.config_disp));
            return None;
        }
        let stored = match self.store {
            None => (None, None),
            Some(s) => {
                let r = LayerWeightsRef {
                    k3_path: format!("{}layers/{k3}", scope.k3_prefix),
                    k3_groups: layers::k3_groups(&class, &cfg),
                    tf_name: match &scope.tf_prefix {
                        Some(p) => p.clone(),
                        None => name.clone(),
                    },
                };
                match s.layer_weights(&r) {
                    Ok(mut v) => {
                        if self.legacy && scope.tf_prefix.is_some() {
                            // tf.keras stores a nested model's weights in its one group: keep this layer's.
                            v.retain(|w| w.path.contains(&format!("/{name}/")));
                        }
                        (Some(v), None)
                    }
                    // A layer without weights may have no group at all; one with weights reports it.
                    Err(e) => (Some(Vec::new()), Some(e)),
                }
            }
        };
        let (stored, group_note) = stored;
        let trainable = bool_or(&cfg, "trainable", true).unwrap_or(true);
        self.cur = Some(CurLayer {
            name: name.clone(),
            class: class.clone(),
            trainable,
            place: place.to_string(),
            stored,
            group_note,
            cursor: 0,
            used: Vec::new(),
            created: Vec::new(),
            params: (0, 0, 0, 0),
        });
        let mut b_graph = std::mem::take(&mut self.g);
        let res = {
            let mut b = Lb {
                g: &mut b_graph,
                origin: Origin::keras(&class, &name),
                base: name.clone(),
            };
            layers::lower(self, &mut b, &class, &cfg, ins)
        };
        self.g = b_graph;
        let cur = self.cur.take().expect("set above");
        self.record_k3(
            &cur,
            &class,
            &cfg,
            &format!("{}layers/{k3}", scope.k3_prefix),
        );
        if !cur.created.is_empty() {
            self.weight_cache
                .insert(cur.place.clone(), cur.created.clone());
        }
        let res = res.and_then(|outs| {
            // Every stored weight must have been used: extra weights mean a config mismatch.
            if let (Some(st), true) = (&cur.stored, cur.created.len() == cur.cursor) {
                if st.len() > cur.cursor {
                    let extra: Vec<&str> = st[cur.cursor..].iter().map(|w| w.path.as_str()).collect();
                    return Err(format!(
                        "the weights file has {} weights for this layer but its config uses {} ({}): extra {}",
                        st.len(),
                        cur.cursor,
                        cur.used.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", "),
                        extra.join(", ")
                    ));
                }
            }
            Ok(outs)
        });
        match res {
            Ok(outs) => {
                // Name the layer's outputs after the layer.
                for (k, &o) in outs.iter().enumerate() {
                    if o.0 >= outputs_before {
                        let want = if outs.len() == 1 {
                            name.clone()
                        } else {
                            format!("{name}.{k}")
                        };
                        if self.g.find_value(&want).is_none() {
                            self.g.values[o.0].name = want;
                        }
                    }
                }
                {
                    let activation = match class.as_str() {
                        "Activation" | "Dense" | "Conv1D" | "Conv2D" | "Conv3D"
                        | "SeparableConv2D" | "DepthwiseConv2D" => {
                            activations::name_of(cfg.get("activation")).ok()
                        }
                        "Softmax" => Some("softmax".into()),
                        "ReLU" => Some("relu".into()),
                        _ => None,
                    };
                    let (t, nt, tb, ntb) = cur.params;
                    let outputs: Vec<TensorType> =
                        outs.iter().map(|&v| self.g.ty(v).clone()).collect();
                    // A shared layer is one row: its connections from every call, the shape of the last.
                    if let Some(prev) = self
                        .infos
                        .iter_mut()
                        .find(|i| i.order == order && i.name == name)
                    {
                        prev.connected.extend(connected);
                        prev.outputs = outputs;
                        return Some(outs);
                    }
                    self.infos.push(LayerInfo {
                        name: name.clone(),
                        class: class.clone(),
                        outputs,
                        params: t + nt,
                        trainable_params: t,
                        non_trainable_params: nt,
                        trainable_bytes: tb,
                        non_trainable_bytes: ntb,
                        connected,
                        activation,
                        order,
                    });
                }
                Some(outs)
            }
            Err(e) => {
                self.problem(format!(
                    "{}: {}: {class} `{name}`: {e}",
                    self.config_disp, cur.place
                ));
                None
            }
        }
    }

    fn functional(
        &mut self,
        cfg: &Value,
        inputs: Option<Vec<ValueId>>,
        scope: &Scope,
    ) -> Result<(Vec<(ValueId, String)>, bool), String> {
        let disp = self.config_disp.clone();
        let layers = get(cfg, "layers")
            .and_then(|l| l.as_array())
            .cloned()
            .ok_or_else(|| format!("{disp}: {}.config: no `layers` list", scope.json_path))?;
        let input_refs = refs_list(get(cfg, "input_layers"))
            .map_err(|e| format!("{disp}: {}.config.input_layers: {e}", scope.json_path))?;
        let output_refs = refs_list(get(cfg, "output_layers"))
            .map_err(|e| format!("{disp}: {}.config.output_layers: {e}", scope.json_path))?;
        let mut tensors: HashMap<TensorKey, Option<ValueId>> = HashMap::new();
        if let Some(given) = &inputs {
            if given.len() != input_refs.len() {
                return Err(format!(
                    "{disp}: {}: the nested model takes {} inputs but is called on {}",
                    scope.json_path,
                    input_refs.len(),
                    given.len()
                ));
            }
        }
        let mut names = K3Names(HashMap::new());
        let k3: Vec<String> = layers
            .iter()
            .map(|l| names.next(l.get("class_name").and_then(|c| c.as_str()).unwrap_or("?")))
            .collect();
        // Inputs first, in input_layers order (Keras's order of a model's inputs, which the
        // config's layer list need not follow), then any other InputLayer in list order.
        let mut input_layers: Vec<(usize, &Value)> = layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.get("class_name").and_then(|c| c.as_str()) == Some("InputLayer"))
            .collect();
        input_layers.sort_by_key(|(i, l)| {
            let name = layer_name(l);
            (
                input_refs
                    .iter()
                    .position(|r| r.0 == name)
                    .unwrap_or(usize::MAX),
                *i,
            )
        });
        for (i, l) in input_layers {
            let name = layer_name(l);
            let place = format!("{disp}: {}.config.layers[{i}]", scope.json_path);
            let pos = input_refs.iter().position(|r| r.0 == name);
            let v = match (&inputs, pos) {
                (Some(given), Some(p)) => given[p],
                _ => {
                    let lcfg = l.get("config").cloned().unwrap_or(Value::Null);
                    let ty = self.input_type(&lcfg, &name, &place)?;
                    self.g.add_input(&name, ty)
                }
            };
            tensors.insert((name.clone(), 0, 0), Some(v));
            // Keras 3 gives a Functional model's inputs (layers too) empty groups.
            self.k3_group(format!("{}layers/{}/vars", scope.k3_prefix, k3[i]), &name);
            if scope.depth == 0 {
                let ty = self.g.ty(v).clone();
                self.infos.push(LayerInfo {
                    name: name.clone(),
                    class: "InputLayer".into(),
                    outputs: vec![ty],
                    params: 0,
                    trainable_params: 0,
                    non_trainable_params: 0,
                    trainable_bytes: 0,
                    non_trainable_bytes: 0,
                    connected: vec![],
                    activation: None,
                    order: i,
                });
            }
        }
        // Each layer's calls, resolved as their inputs become available (config order is not
        // always a topological order when layers are shared).
        let mut calls: Vec<(usize, usize, Vec<TensorKey>, Option<Value>)> = Vec::new();
        let mut sequential_like = true;
        for (i, l) in layers.iter().enumerate() {
            if l.get("class_name").and_then(|c| c.as_str()) == Some("InputLayer") {
                continue;
            }
            let nodes = l
                .get("inbound_nodes")
                .and_then(|n| n.as_array())
                .cloned()
                .unwrap_or_default();
            if nodes.len() > 1 {
                sequential_like = false;
            }
            for (ni, node) in nodes.iter().enumerate() {
                let refs = node_inputs(node).map_err(|e| {
                    format!(
                        "{disp}: {}.config.layers[{i}].inbound_nodes[{ni}]: {e}",
                        scope.json_path
                    )
                })?;
                if refs.len() > 1 {
                    sequential_like = false;
                }
                // A call's options that are not tensors (MultiHeadAttention's
                // `use_causal_mask`) reach the layer as its config's `call_kwargs`.
                let kwargs = node
                    .get("kwargs")
                    .filter(|k| k.as_object().is_some_and(|o| !o.is_empty()))
                    .cloned();
                calls.push((i, ni + self.node_offset(l), refs, kwargs));
            }
        }
        if input_refs.len() > 1 || output_refs.len() > 1 {
            sequential_like = false;
        }
        let mut done = vec![false; calls.len()];
        loop {
            let mut progress = false;
            for (c, (li, ni, refs, kwargs)) in calls.iter().enumerate() {
                if done[c] || !refs.iter().all(|r| tensors.contains_key(r)) {
                    continue;
                }
                done[c] = true;
                progress = true;
                let with_kwargs;
                let l = match kwargs {
                    Some(k) if layers[*li].get("config").is_some_and(|c| c.is_object()) => {
                        let mut l = layers[*li].clone();
                        l["config"]["call_kwargs"] = k.clone();
                        with_kwargs = l;
                        &with_kwargs
                    }
                    _ => &layers[*li],
                };
                let name = layer_name(l);
                let ins: Option<Vec<ValueId>> = refs.iter().map(|r| tensors[r]).collect();
                let place = format!("{}.config.layers[{li}]", scope.json_path);
                let outs = match ins {
                    Some(ins) => {
                        let connected = refs
                            .iter()
                            .map(|r| format!("{}[{}][{}]", r.0, r.1, r.2))
                            .collect();
                        self.call_layer(l, &ins, &k3[*li], scope, &place, connected, *li)
                    }
                    None => {
                        self.check_supported(l, &place);
                        None
                    }
                };
                match outs {
                    Some(outs) => {
                        for (k, o) in outs.into_iter().enumerate() {
                            tensors.insert((name.clone(), *ni, k), Some(o));
                        }
                    }
                    None => {
                        // Poison every tensor this call could make.
                        for k in 0..8 {
                            tensors.insert((name.clone(), *ni, k), None);
                        }
                    }
                }
            }
            if !progress {
                break;
            }
        }
        for (c, (li, ni, refs, _)) in calls.iter().enumerate() {
            if !done[c] {
                let missing: Vec<String> = refs
                    .iter()
                    .filter(|r| !tensors.contains_key(*r))
                    .map(|r| format!("{}[{}][{}]", r.0, r.1, r.2))
                    .collect();
                self.problem(format!(
                    "{disp}: {}.config.layers[{li}].inbound_nodes[{}]: layer `{}` reads {} which no layer makes",
                    scope.json_path,
                    ni - self.node_offset(&layers[*li]),
                    layer_name(&layers[*li]),
                    missing.join(", ")
                ));
            }
        }
        let mut outs = Vec::new();
        let mut ok = true;
        for r in &output_refs {
            match tensors.get(r) {
                Some(Some(v)) => outs.push((*v, r.0.clone())),
                Some(None) => ok = false,
                None => {
                    self.problem(format!("{disp}: {}.config.output_layers: output {}[{}][{}] is not made by any layer", scope.json_path, r.0, r.1, r.2));
                    ok = false;
                }
            }
        }
        if !ok {
            return Err(String::new());
        }
        if scope.depth == 0 {
            self.infos.sort_by_key(|i| i.order);
        }
        Ok((outs, sequential_like))
    }
}

fn unsupported_msg(disp: &str, place: &str, class: &str, name: &str) -> String {
    let why = match class {
        "Lambda" => "a Lambda layer holds Python code, which forgec cannot compile: replace it with built-in layers".to_string(),
        "TFOpLambda" | "SlicingOpLambda" => "a raw TensorFlow op recorded by tf.keras, which forgec cannot compile: express it with Keras layers".to_string(),
        _ => format!("forgec does not support the layer class `{class}` (a custom layer, or one not lowered yet); forgec supports: {}", layers::SUPPORTED.join(", ")),
    };
    format!("{disp}: {place}: {class} `{name}`: {why}")
}

/// `[["a", 0, 0], ["b", 0, 0]]` or a single `["a", 0, 0]`.
fn refs_list(v: Option<&Value>) -> Result<Vec<TensorKey>, String> {
    let v = v.ok_or("missing")?;
    let a = v.as_array().ok_or("must be a list")?;
    if a.first().is_some_and(|x| x.is_string()) {
        return Ok(vec![tensor_ref(v)?]);
    }
    a.iter().map(tensor_ref).collect()
}

fn tensor_ref(v: &Value) -> Result<TensorKey, String> {
    let a = v
        .as_array()
        .ok_or_else(|| format!("{v} is not a [layer, node, tensor] reference"))?;
    let name = a
        .first()
        .and_then(|x| x.as_str())
        .ok_or_else(|| format!("{v} has no layer name"))?;
    let node = a.get(1).and_then(|x| x.as_u64()).unwrap_or(0) as usize;
    let t = a.get(2).and_then(|x| x.as_u64()).unwrap_or(0) as usize;
    Ok((name.to_string(), node, t))
}

/// The input tensors of one call, from a Keras 3 `{args, kwargs}` node or a tf.keras
/// `[[layer, node, tensor, kwargs], ...]` node.
fn node_inputs(node: &Value) -> Result<Vec<TensorKey>, String> {
    fn collect(v: &Value, out: &mut Vec<TensorKey>) -> Result<(), String> {
        match v {
            Value::Object(o)
                if o.get("class_name").and_then(|c| c.as_str()) == Some("__keras_tensor__") =>
            {
                let h = o
                    .get("config")
                    .and_then(|c| c.get("keras_history"))
                    .ok_or("a keras tensor without keras_history")?;
                out.push(tensor_ref(h)?);
            }
            Value::Array(a) => {
                for x in a {
                    collect(x, out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut out = Vec::new();
    if let Some(args) = node.get("args") {
        collect(args, &mut out)?;
        if let Some(kw) = node.get("kwargs").and_then(|k| k.as_object()) {
            for (k, v) in kw {
                let mut extra = Vec::new();
                collect(v, &mut extra)?;
                if !extra.is_empty() {
                    return Err(format!(
                        "a tensor passed as keyword `{k}` is not supported yet"
                    ));
                }
            }
        }
    } else if let Value::Array(entries) = node {
        for e in entries {
            out.push(tensor_ref(e)?);
        }
    } else {
        return Err(format!("unrecognized inbound node {node}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake_case_matches_keras() {
        for (c, want) in [
            ("Dense", "dense"),
            ("ReLU", "re_lu"),
            ("Conv2D", "conv2d"),
            ("DepthwiseConv2D", "depthwise_conv2d"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("BatchNormalization", "batch_normalization"),
            ("LSTM", "lstm"),
            ("ZeroPadding2D", "zero_padding2d"),
            ("PReLU", "p_re_lu"),
        ] {
            assert_eq!(snake_case(c), want);
        }
    }
}
