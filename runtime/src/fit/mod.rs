//! The training loop: Keras's `model.fit` over a library made by `forgec compile --train`,
//! as a library an application calls (`forgec train` is a thin layer over it).
//!
//! [`fit`] runs epochs of compiled training steps on [`Data`] (in memory or memory-mapped
//! `.npy` columns), in a seeded shuffled order, with Keras's learning-rate schedules
//! ([`Schedule`]), [`ReduceLrOnPlateau`], [`EarlyStopping`] (`restore_best_weights`
//! included) and validation after each epoch. It stops on a loss or update that is not finite
//! (TerminateOnNaN), or when the caller's stop flag is raised (after the step it is in).
//!
//! Nothing is lost when a process dies: with [`Checkpointing`], a checkpoint is written
//! atomically after each epoch and every `checkpoint_every` steps ([`checkpoint`]): the
//! library's state (weights, optimizer slots, step count, learning rate, Dropout's seed), the
//! position (epoch, step, the epoch's sums so far), the history and every callback's state.
//! Given back through [`Fit::resume`], it continues the run to exactly the bits of one never
//! stopped (the order of an epoch is a function of the seed and the epoch).
//!
//! What the loop does is reported to [`Callback`]s as [`Event`]s: progress displays, run
//! tracking, ModelCheckpoint's files, logs. A callback may keep a state of its own in the
//! checkpoints ([`Callback::key`]).

pub mod callbacks;
pub mod checkpoint;
pub mod schedule;

pub use callbacks::{Direction, EarlyStopping, ModelCheckpoint, ReduceLrOnPlateau};
pub use schedule::Schedule;

use crate::compiled::{CallError, Trainer};
use crate::{DType, MappedNpy, Tensor};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A column of the training data: a tensor in memory, or rows `start..start + rows` of a
/// memory-mapped `.npy` file (a data set larger than memory trains, its rows copied out batch
/// by batch).
#[derive(Clone, Debug)]
pub enum Column {
    Memory(Tensor),
    Mapped {
        file: Arc<MappedNpy>,
        start: usize,
        rows: usize,
    },
}

impl Column {
    /// A whole mapped `.npy` file as a column.
    pub fn mapped(file: MappedNpy) -> Column {
        let rows = file.shape().first().copied().unwrap_or(0);
        Column::Mapped {
            file: Arc::new(file),
            start: 0,
            rows,
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Column::Memory(t) => t.shape().first().copied().unwrap_or(0),
            Column::Mapped { rows, .. } => *rows,
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Column::Memory(t) => t.dtype(),
            Column::Mapped { file, .. } => file.dtype(),
        }
    }

    /// Rows `rows` (of this column) into `out`, reusing its storage.
    pub fn take_rows_into(&self, rows: &[usize], out: &mut Tensor) {
        match self {
            Column::Memory(t) => t.take_rows_into(rows, out),
            Column::Mapped { file, start: 0, .. } => file.take_rows_into(rows, out),
            Column::Mapped { file, start, .. } => {
                let at: Vec<usize> = rows.iter().map(|r| r + start).collect();
                file.take_rows_into(&at, out)
            }
        }
    }

    pub fn take_rows(&self, rows: &[usize]) -> Tensor {
        let mut t = Tensor::full(self.dtype(), vec![0], 0.0).expect("an empty tensor");
        self.take_rows_into(rows, &mut t);
        t
    }

    /// Rows `from..to`, without copying a mapped file's.
    pub fn range(&self, from: usize, to: usize) -> Column {
        match self {
            Column::Memory(t) => Column::Memory(t.take_rows(&(from..to).collect::<Vec<_>>())),
            Column::Mapped { file, start, .. } => Column::Mapped {
                file: file.clone(),
                start: start + from,
                rows: to - from,
            },
        }
    }
}

/// What a step takes, sample by sample: the model's inputs, then its labels (one per loss),
/// then, optionally, Keras's sample weights (one `[samples]` column per output, of the
/// weights' float type), each a named column with the same rows.
#[derive(Clone, Debug, Default)]
pub struct Data {
    pub columns: Vec<(String, Column)>,
    /// How many of `columns` are the model's inputs, then how many are labels.
    pub inputs: usize,
    pub labels: usize,
}

impl Data {
    /// The data, checked: as many labels as the library has losses, every column with as many
    /// rows as the first.
    pub fn new(
        columns: Vec<(String, Column)>,
        inputs: usize,
        labels: usize,
    ) -> Result<Data, String> {
        if inputs + labels > columns.len() {
            return Err(format!(
                "{} columns for {inputs} inputs and {labels} labels",
                columns.len()
            ));
        }
        let n = columns.first().map_or(0, |(_, c)| c.rows());
        if let Some((name, c)) = columns.iter().find(|(_, c)| c.rows() != n) {
            return Err(format!(
                "`{name}` has {} samples, `{}` {n}: every column needs one row per sample",
                c.rows(),
                columns[0].0
            ));
        }
        Ok(Data {
            columns,
            inputs,
            labels,
        })
    }

    /// The number of samples.
    pub fn samples(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.rows())
    }

    /// The rows `rows` of every column.
    pub fn batch(&self, rows: &[usize]) -> Vec<(String, Tensor)> {
        self.columns
            .iter()
            .map(|(k, d)| (k.clone(), d.take_rows(rows)))
            .collect()
    }

    /// The rows `rows` of every column into `out`, reusing its tensors' storage: the loop
    /// gathers each batch without allocating.
    pub fn batch_into(&self, rows: &[usize], out: &mut Vec<(String, Tensor)>) {
        if out.len() != self.columns.len() {
            *out = self.batch(rows);
            return;
        }
        for ((_, d), (_, o)) in self.columns.iter().zip(out.iter_mut()) {
            d.take_rows_into(rows, o);
        }
    }

    /// Rows `from..to` of every column (a mapped file's are not copied).
    pub fn range(&self, from: usize, to: usize) -> Data {
        Data {
            columns: self
                .columns
                .iter()
                .map(|(k, c)| (k.clone(), c.range(from, to)))
                .collect(),
            inputs: self.inputs,
            labels: self.labels,
        }
    }

    fn split<'a>(&self, b: &'a [(String, Tensor)]) -> [Vec<&'a Tensor>; 3] {
        let refs: Vec<&Tensor> = b.iter().map(|(_, t)| t).collect();
        let (n, l) = (self.inputs, self.labels);
        [
            refs[..n].to_vec(),
            refs[n..n + l].to_vec(),
            refs[n + l..].to_vec(),
        ]
    }

    /// Runs one training step of `lib` on `batch` (rows of this data); the loss and metrics.
    pub fn step(
        &self,
        lib: &Trainer,
        batch: &[(String, Tensor)],
    ) -> Result<(f64, Vec<f64>), CallError> {
        match self.split(batch) {
            [x, y, w] if w.is_empty() => lib.step(&x, &y),
            [x, y, w] => lib.step_weighted(&x, &y, &w),
        }
    }

    /// The loss and metrics of `lib`'s state on every sample, in batches of `batch` in order,
    /// each the batch-size-weighted mean (Keras's `evaluate`).
    pub fn evaluate(&self, lib: &Trainer, batch: usize) -> Result<(f64, Vec<f64>), String> {
        let n = self.samples();
        let (mut sum, mut msum) = (0.0f64, vec![0.0f64; lib.metrics.len()]);
        let rows: Vec<usize> = (0..n).collect();
        for chunk in rows.chunks(batch.max(1)) {
            let b = self.batch(chunk);
            let (loss, ms) = match self.split(&b) {
                [x, y, w] if w.is_empty() => lib.evaluate(&x, &y),
                [x, y, w] => lib.evaluate_weighted(&x, &y, &w),
            }
            .map_err(|e| e.message)?;
            sum += loss * chunk.len() as f64;
            for (acc, m) in msum.iter_mut().zip(ms) {
                *acc += m * chunk.len() as f64;
            }
        }
        let k = n.max(1) as f64;
        Ok((sum / k, msum.iter().map(|m| m / k).collect()))
    }
}

/// A permutation of `0..n` from a seed and the epoch (xorshift64*, Fisher-Yates): the order
/// of an epoch's samples when shuffling.
pub fn shuffled(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut s =
        (seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_add(epoch.wrapping_mul(0xBF58_476D_1CE4_E5B9)) | 1;
    let mut next = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// How the loop runs (Keras's `fit` arguments and built-in callbacks).
#[derive(Clone, Debug)]
pub struct Settings {
    pub epochs: usize,
    pub batch_size: usize,
    /// Shuffle each epoch's samples (by `seed` and the epoch); else in order.
    pub shuffle: bool,
    /// The seed of the order and of Dropout's masks.
    pub seed: u64,
    /// A checkpoint every this many steps too (0: after each epoch only).
    pub checkpoint_every: usize,
    /// The learning rate of each step (LearningRateScheduler with a Keras schedule).
    pub schedule: Option<Schedule>,
    pub reduce_lr_on_plateau: Option<ReduceLrOnPlateau>,
    pub early_stopping: Option<EarlyStopping>,
    /// The state tensors (by index in the library's state) that EarlyStopping's
    /// `restore_best_weights` puts back: Keras's model weights (the trainable ones and the
    /// moving statistics), not the optimizer's slots. None: every one. See
    /// [`model_tensors`].
    pub model_tensors: Option<Vec<usize>>,
}

impl Settings {
    /// `epochs` of batches of `batch_size`, shuffled by seed 0, no callbacks.
    pub fn new(epochs: usize, batch_size: usize) -> Settings {
        Settings {
            epochs,
            batch_size,
            shuffle: true,
            seed: 0,
            checkpoint_every: 0,
            schedule: None,
            reduce_lr_on_plateau: None,
            early_stopping: None,
            model_tensors: None,
        }
    }
}

/// The state tensors of `lib` that are the model's weights, by the library's `NAME.json`
/// (`train.weights` and `train.moving_statistics`): what `restore_best_weights` puts
/// back.
pub fn model_tensors(lib: &Trainer, meta: &Value) -> Vec<usize> {
    let t = &meta["train"];
    let names: Vec<&str> = ["weights", "moving_statistics"]
        .iter()
        .flat_map(|k| t[*k].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    lib.state
        .iter()
        .enumerate()
        .filter(|(_, s)| names.contains(&s.name.as_str()))
        .map(|(i, _)| i)
        .collect()
}

/// Where checkpoints go, and what else their header keeps (the caller's own keys, such as
/// the run's arguments and files: read back from [`checkpoint::Checkpoint::meta`]).
#[derive(Clone, Debug)]
pub struct Checkpointing {
    pub dir: PathBuf,
    pub meta: Value,
}

/// The run so far: each step's loss, and each epoch's logs (`epoch` from 1, `loss`, the
/// metrics, `val_*`, `learning_rate`, `seconds`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub batch_loss: Vec<f64>,
    pub epochs: Vec<Value>,
}

/// What the loop tells its callbacks, in this order: `Begin` (or `Resumed`), then for each
/// epoch `EpochBegin`, a `Batch` per step, `Epoch` (its logs), `LrReduced`, `EpochDone` (the
/// history holds the epoch, the callbacks' states are about to be checkpointed), and
/// `EarlyStopped` when EarlyStopping ends the run; `RestoredBest` at the end.
#[derive(Debug)]
pub enum Event<'a> {
    Begin {
        epochs: usize,
        samples: usize,
        validation_samples: usize,
        steps_per_epoch: usize,
    },
    /// A run going on from a checkpoint, at `epoch` (from 0) after `step` steps.
    Resumed {
        epoch: usize,
        step: usize,
    },
    /// `done` of the epoch's steps ran before (a resumed epoch).
    EpochBegin {
        epoch: usize,
        done: usize,
    },
    Batch {
        epoch: usize,
        /// From 1, of `batches`.
        batch: usize,
        batches: usize,
        /// Steps in all, this one included.
        step: usize,
        loss: f64,
        /// The epoch's mean loss so far.
        mean_loss: f64,
        lr: f64,
        /// The step's global gradient norm (before clipping), where the library computes it.
        gradient_norm: Option<f64>,
    },
    Epoch {
        epoch: usize,
        /// Steps in all.
        step: usize,
        logs: &'a Value,
        seconds: f64,
        /// Time in the compiled steps themselves.
        step_seconds: f64,
        /// Samples this process ran of the epoch (a resumed epoch's first part ran before).
        samples: usize,
    },
    LrReduced {
        epoch: usize,
        lr: f64,
    },
    EpochDone {
        epoch: usize,
        step: usize,
        lr: f64,
        logs: &'a Value,
        history: &'a History,
    },
    EarlyStopped {
        epoch: usize,
        best_epoch: usize,
    },
    /// EarlyStopping put back the model weights of `epoch`.
    RestoredBest {
        epoch: usize,
    },
}

/// Something that follows the loop: told each [`Event`], with the library (to read or write
/// its state). An error ends the run with it.
pub trait Callback {
    fn on_event(&mut self, event: &Event<'_>, lib: &Trainer) -> Result<(), String>;
    /// The key of its state in a checkpoint's header (None: it keeps none).
    fn key(&self) -> Option<&'static str> {
        None
    }
    fn state(&self) -> Value {
        Value::Null
    }
    /// Takes back the state a checkpoint kept (false: it does not read back).
    fn restore(&mut self, _state: &Value) -> bool {
        true
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// Every epoch ran.
    Finished,
    /// EarlyStopping ended it after `epoch` (from 0).
    StoppedEarly { epoch: usize, best_epoch: usize },
    /// The stop flag was raised: the checkpoint holds the run after `step`.
    Interrupted { epoch: usize, step: usize },
    /// Step `step` (batch `batch` of epoch `epoch`, from 1 and 0, on samples `rows`) gave a loss
    /// or update that is not finite; the library's state is that after the step before.
    NonFinite {
        epoch: usize,
        batch: usize,
        step: usize,
        rows: Vec<usize>,
        message: String,
    },
}

/// What [`fit`] returns: how it ended, the history, the steps taken and the learning rate now.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub end: End,
    pub history: History,
    pub steps: usize,
    pub lr: f64,
}

/// A run of [`fit`].
pub struct Fit<'a> {
    pub lib: &'a Trainer,
    pub data: &'a Data,
    /// Evaluated after each epoch (`val_loss`, `val_*` in the logs).
    pub validation: Option<&'a Data>,
    pub settings: Settings,
    /// The learning rate the library starts with (its compiled one, unless set since).
    pub lr: f64,
    pub checkpoint: Option<Checkpointing>,
    /// A checkpoint of this run to go on from.
    pub resume: Option<checkpoint::Checkpoint>,
    /// Raised (by a signal handler, another thread), it ends the run after the step it is in,
    /// with a checkpoint there.
    pub stop: Option<&'a AtomicBool>,
}

impl<'a> Fit<'a> {
    pub fn new(lib: &'a Trainer, data: &'a Data, settings: Settings, lr: f64) -> Fit<'a> {
        Fit {
            lib,
            data,
            validation: None,
            settings,
            lr,
            checkpoint: None,
            resume: None,
            stop: None,
        }
    }
}

/// The log names the epochs of a run on `lib` will have: `loss`, the metrics, and with
/// validation `val_loss` and `val_*` (what callbacks' `monitor` can name).
pub fn log_names(lib: &Trainer, validation: bool) -> Vec<String> {
    let mut logs = vec!["loss".to_string()];
    logs.extend(lib.metrics.iter().cloned());
    if validation {
        logs.push("val_loss".into());
        logs.extend(lib.metrics.iter().map(|m| format!("val_{m}")));
    }
    logs
}

/// The epoch's sums so far: loss and metrics weighted by batch size, and the samples.
#[derive(Default)]
struct Sums {
    loss: f64,
    count: usize,
    metrics: Vec<f64>,
}

impl Sums {
    fn zero(metrics: usize) -> Sums {
        Sums {
            metrics: vec![0.0; metrics],
            ..Sums::default()
        }
    }
}

/// Runs the training loop (see the module's doc). Errors (a library call that fails, a
/// checkpoint that cannot be written, a callback's error) end it with their message; the last
/// checkpoint written stays.
pub fn fit(mut f: Fit<'_>, callbacks: &mut [&mut dyn Callback]) -> Result<Outcome, String> {
    let lib = f.lib;
    let s = &f.settings;
    if s.batch_size == 0 {
        return Err("the batch size is 0: use at least 1".into());
    }
    for (what, d) in [
        ("the data", Some(f.data)),
        ("the validation data", f.validation),
    ] {
        if let Some(d) = d.filter(|d| d.inputs + d.labels > d.columns.len()) {
            return Err(format!(
                "{what} has {} columns for {} inputs and {} labels",
                d.columns.len(),
                d.inputs,
                d.labels
            ));
        }
    }
    if f.data.samples() == 0 {
        return Err("the data has no samples".into());
    }
    if f.data.labels != lib.num_labels {
        return Err(format!(
            "the library takes {} labels, the data has {}",
            lib.num_labels, f.data.labels
        ));
    }
    if s.schedule.is_some() && s.reduce_lr_on_plateau.is_some() {
        return Err(
            "ReduceLROnPlateau sets the learning rate itself: it cannot follow a learning-rate schedule too (Keras refuses the same); drop one".into(),
        );
    }
    let n = f.data.samples();
    let metrics = lib.metrics.len();
    let steps_per_epoch = n.div_ceil(s.batch_size);
    let mut es = s.early_stopping.clone();
    let mut plateau = s.reduce_lr_on_plateau.clone();
    let mut best_state: Option<Vec<u8>> = None;
    let mut history = History::default();
    let mut lr = f.lr;
    let (mut t, mut first_epoch, mut skip) = (0usize, 0usize, 0usize);
    let mut partial = Sums::zero(metrics);
    // Dropout's masks draw from the run's seed (a resumed state holds it too).
    lib.set_seed(s.seed).map_err(|e| e.message)?;
    lib.set_lr(lr).map_err(|e| e.message)?;
    if let Some(ck) = f.resume.take() {
        let m = &ck.meta;
        let bad = || {
            let at = f
                .checkpoint
                .as_ref()
                .map(|c| c.dir.join(checkpoint::FILE).display().to_string())
                .unwrap_or_else(|| "the checkpoint".into());
            format!("{at}: damaged: its position does not read back")
        };
        let num = |k: &str| m[k].as_u64().map(|v| v as usize).ok_or_else(bad);
        let floats = |v: &Value| -> Result<Vec<f64>, String> {
            v.as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|x| x.as_f64().ok_or_else(bad))
                .collect()
        };
        (t, first_epoch, skip) = (num("step")?, num("epoch")?, num("done_in_epoch")?);
        history.batch_loss = floats(&m["batch_loss"])?;
        history.epochs = m["epochs"].as_array().ok_or_else(bad)?.clone();
        partial = Sums {
            loss: m["sum"].as_f64().ok_or_else(bad)?,
            count: num("count")?,
            metrics: floats(&m["msum"])?,
        };
        if history.batch_loss.len() != t || partial.metrics.len() != metrics {
            return Err(bad());
        }
        if let Some(es) = &mut es {
            if !es.restore(&m["early_stopping"]) {
                return Err(bad());
            }
            best_state = ck.blobs.get(1).cloned();
        }
        if let Some(p) = &mut plateau {
            if !p.restore(&m["reduce_lr_on_plateau"]) {
                return Err(bad());
            }
        }
        for cb in callbacks.iter_mut() {
            if let Some(k) = cb.key() {
                if !cb.restore(&m[k]) {
                    return Err(bad());
                }
            }
        }
        lr = m["lr"].as_f64().unwrap_or(lr);
        lib.set_state(&ck.blobs[0]).map_err(|e| {
            format!(
                "the checkpoint's state does not fit this training library: {}",
                e.message
            )
        })?;
        for cb in callbacks.iter_mut() {
            cb.on_event(
                &Event::Resumed {
                    epoch: first_epoch,
                    step: t,
                },
                lib,
            )?;
        }
    }
    let validation_samples = f.validation.map_or(0, Data::samples);
    for cb in callbacks.iter_mut() {
        cb.on_event(
            &Event::Begin {
                epochs: s.epochs,
                samples: n,
                validation_samples,
                steps_per_epoch,
            },
            lib,
        )?;
    }
    // A checkpoint at epoch `e` after `done` of its steps, with the epoch's sums.
    let write_checkpoint = |e: usize,
                            done: usize,
                            t: usize,
                            sums: &Sums,
                            history: &History,
                            es: &Option<EarlyStopping>,
                            plateau: &Option<ReduceLrOnPlateau>,
                            lr: f64,
                            best: &Option<Vec<u8>>,
                            callbacks: &[&mut dyn Callback]|
     -> Result<(), String> {
        let Some(ck) = &f.checkpoint else {
            return Ok(());
        };
        let state = lib.get_state().map_err(|e| e.message)?;
        let mut meta = json!({
            "format": 1,
            "forgec": env!("CARGO_PKG_VERSION"),
            "epoch": e,
            "done_in_epoch": done,
            "step": t,
            "sum": sums.loss,
            "count": sums.count,
            "msum": sums.metrics,
            "batch_loss": history.batch_loss,
            "epochs": history.epochs,
            "early_stopping": es.as_ref().map(|s| s.state()),
            "reduce_lr_on_plateau": plateau.as_ref().map(|p| p.state()),
            "lr": lr,
        });
        for cb in callbacks {
            if let Some(k) = cb.key() {
                meta[k] = cb.state();
            }
        }
        if let Some(extra) = ck.meta.as_object() {
            for (k, v) in extra {
                meta[k.as_str()] = v.clone();
            }
        }
        let mut blobs: Vec<&[u8]> = vec![&state];
        blobs.extend(best.as_deref());
        checkpoint::write(&ck.dir, &meta, &blobs)
    };
    let mut batch: Vec<(String, Tensor)> = Vec::new();
    let mut stopped_early = None;
    for epoch in first_epoch..s.epochs {
        let order: Vec<usize> = if s.shuffle {
            shuffled(n, s.seed, epoch as u64)
        } else {
            (0..n).collect()
        };
        let start = std::time::Instant::now();
        let mut in_steps = 0.0f64;
        let mut sums = if epoch == first_epoch {
            std::mem::take(&mut partial)
        } else {
            Sums::zero(metrics)
        };
        let done_before = if epoch == first_epoch { skip } else { 0 };
        skip = 0;
        let count_before = sums.count;
        for cb in callbacks.iter_mut() {
            cb.on_event(
                &Event::EpochBegin {
                    epoch,
                    done: done_before,
                },
                lib,
            )?;
        }
        for (i, rows) in order.chunks(s.batch_size).enumerate().skip(done_before) {
            if let Some(sc) = &s.schedule {
                // Keras's rate of the update after `t` earlier ones.
                let next = sc.at(t as u64);
                if next != lr {
                    lib.set_lr(next).map_err(|e| e.message)?;
                    lr = next;
                }
            }
            t += 1;
            f.data.batch_into(rows, &mut batch);
            let t_step = std::time::Instant::now();
            let l = f.data.step(lib, &batch);
            in_steps += t_step.elapsed().as_secs_f64();
            let (l, ms) = match l {
                Ok(l) => l,
                Err(e) if e.code == CallError::NONFINITE => {
                    return Ok(Outcome {
                        end: End::NonFinite {
                            epoch,
                            batch: i + 1,
                            step: t,
                            rows: rows.to_vec(),
                            message: e.message,
                        },
                        history,
                        steps: t - 1,
                        lr,
                    });
                }
                Err(e) => return Err(e.message),
            };
            history.batch_loss.push(l);
            sums.loss += l * rows.len() as f64;
            sums.count += rows.len();
            for (acc, m) in sums.metrics.iter_mut().zip(ms) {
                *acc += m * rows.len() as f64;
            }
            let ev = Event::Batch {
                epoch,
                batch: i + 1,
                batches: steps_per_epoch,
                step: t,
                loss: l,
                mean_loss: sums.loss / sums.count.max(1) as f64,
                lr,
                gradient_norm: lib.gradient_norm(),
            };
            for cb in callbacks.iter_mut() {
                cb.on_event(&ev, lib)?;
            }
            let stopping = f.stop.is_some_and(|s| s.load(Ordering::SeqCst));
            if stopping || (s.checkpoint_every > 0 && t % s.checkpoint_every == 0) {
                write_checkpoint(
                    epoch,
                    i + 1,
                    t,
                    &sums,
                    &history,
                    &es,
                    &plateau,
                    lr,
                    &best_state,
                    callbacks,
                )?;
            }
            if stopping {
                return Ok(Outcome {
                    end: End::Interrupted { epoch, step: t },
                    history,
                    steps: t,
                    lr,
                });
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let k = sums.count.max(1) as f64;
        // Each metric as Keras's logs give it: the batch-size-weighted mean over the epoch.
        let mut logs = json!({"epoch": epoch + 1, "loss": sums.loss / k, "seconds": secs});
        for (name, m) in lib.metrics.iter().zip(&sums.metrics) {
            logs[name] = json!(m / k);
        }
        if let Some(v) = f.validation.filter(|v| v.samples() > 0) {
            let (vl, vms) = v
                .evaluate(lib, s.batch_size)
                .map_err(|e| format!("validation: {e}"))?;
            logs["val_loss"] = json!(vl);
            for (name, m) in lib.metrics.iter().zip(vms) {
                logs[format!("val_{name}")] = json!(m);
            }
        }
        logs["learning_rate"] = json!(lr);
        let ev = Event::Epoch {
            epoch,
            step: t,
            logs: &logs,
            seconds: secs,
            step_seconds: in_steps,
            samples: sums.count - count_before,
        };
        for cb in callbacks.iter_mut() {
            cb.on_event(&ev, lib)?;
        }
        // ReduceLROnPlateau: the next epoch's rate.
        if let Some(p) = &mut plateau {
            if let Some(new) = p.on_epoch_end(&logs, lr) {
                lib.set_lr(new).map_err(|e| e.message)?;
                lr = new;
                for cb in callbacks.iter_mut() {
                    cb.on_event(&Event::LrReduced { epoch, lr }, lib)?;
                }
            }
        }
        let mut stop = false;
        if let Some(es) = &mut es {
            let o = es.on_epoch_end(epoch, &logs);
            if o.keep_weights {
                best_state = Some(lib.get_state().map_err(|e| e.message)?);
            }
            stop = o.stop;
        }
        history.epochs.push(logs.clone());
        let ev = Event::EpochDone {
            epoch,
            step: t,
            lr,
            logs: &logs,
            history: &history,
        };
        for cb in callbacks.iter_mut() {
            cb.on_event(&ev, lib)?;
        }
        // A run stopped early checkpoints as finished: its resume has nothing left to run.
        let next = if stop { s.epochs } else { epoch + 1 };
        let zero = Sums::zero(metrics);
        write_checkpoint(
            next,
            0,
            t,
            &zero,
            &history,
            &es,
            &plateau,
            lr,
            &best_state,
            callbacks,
        )?;
        if stop {
            let best_epoch = es.as_ref().map_or(0, |s| s.best_epoch);
            for cb in callbacks.iter_mut() {
                cb.on_event(&Event::EarlyStopped { epoch, best_epoch }, lib)?;
            }
            stopped_early = Some((epoch, best_epoch));
            break;
        }
    }
    // A resumed run that had stopped early ends as it did.
    if stopped_early.is_none() {
        if let Some(e) = es.as_ref().filter(|e| e.stopped_epoch > 0) {
            stopped_early = Some((e.stopped_epoch, e.best_epoch));
        }
    }
    // restore_best_weights: the model's weights and statistics of the best epoch (the
    // optimizer's state stays the last epoch's, as Keras's set_weights leaves it).
    if let (Some(e), Some(best)) = (&es, &best_state) {
        if e.restore_best_weights {
            let mut now = lib.get_state().map_err(|e| e.message)?;
            let all: Vec<usize> = (0..lib.state.len()).collect();
            for &i in s.model_tensors.as_ref().unwrap_or(&all) {
                let st = lib.state.get(i).ok_or("no such state tensor")?;
                let len = st.shape.iter().product::<usize>() * st.dtype.size_bytes();
                let r = st.offset..st.offset + len;
                if r.end > now.len() || r.end > best.len() {
                    return Err("the best state is shorter than the library's".into());
                }
                now[r.clone()].copy_from_slice(&best[r]);
            }
            lib.set_state(&now).map_err(|e| e.message)?;
            for cb in callbacks.iter_mut() {
                cb.on_event(
                    &Event::RestoredBest {
                        epoch: e.best_epoch,
                    },
                    lib,
                )?;
            }
        }
    }
    Ok(Outcome {
        end: match stopped_early {
            Some((epoch, best_epoch)) => End::StoppedEarly { epoch, best_epoch },
            None => End::Finished,
        },
        history,
        steps: t,
        lr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(v: &[f32], rows: usize) -> Column {
        let per = v.len() / rows;
        let shape = if per == 1 {
            vec![rows]
        } else {
            vec![rows, per]
        };
        let vals: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        Column::Memory(Tensor::from_f64_values(DType::F32, shape, &vals).unwrap())
    }

    #[test]
    fn shuffles_are_seeded_permutations() {
        let a = shuffled(100, 7, 0);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shuffled(100, 7, 0));
        assert_ne!(a, shuffled(100, 7, 1));
        assert_ne!(a, shuffled(100, 8, 0));
        assert_eq!(shuffled(0, 1, 1), Vec::<usize>::new());
    }

    #[test]
    fn data_is_checked_and_batched() {
        let x = col(&[0., 1., 2., 3., 4., 5.], 3);
        let y = col(&[10., 11., 12.], 3);
        let d = Data::new(vec![("x".into(), x), ("y".into(), y.clone())], 1, 1).unwrap();
        assert_eq!(d.samples(), 3);
        let b = d.batch(&[2, 0]);
        assert_eq!(b[0].1.to_f64_vec(), vec![4., 5., 0., 1.]);
        assert_eq!(b[1].1.to_f64_vec(), vec![12., 10.]);
        let mut out = Vec::new();
        d.range(1, 3).batch_into(&[1], &mut out);
        assert_eq!(out[0].1.to_f64_vec(), vec![4., 5.]);
        let short = col(&[1., 2.], 2);
        let e = Data::new(vec![("x".into(), y), ("w".into(), short)], 1, 0).unwrap_err();
        assert!(e.contains("`w` has 2 samples, `x` 3"), "{e}");
        let e = Data::new(vec![], 1, 1).unwrap_err();
        assert!(e.contains("0 columns for 1 inputs and 1 labels"), "{e}");
    }
}
