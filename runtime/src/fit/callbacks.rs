//! The training loop's callbacks, with Keras 3's semantics. ReduceLROnPlateau
//! (`keras.callbacks.ReduceLROnPlateau`): `patience` epochs without an improvement of the
//! monitored value multiply the learning rate by `factor` (not below `min_lr`), then
//! `cooldown` epochs pass before it is watched again. EarlyStopping
//! (`keras.callbacks.EarlyStopping`): after each epoch, the monitored log value is compared with
//! the best so far; `patience` epochs without an improvement of more than `min_delta` stop the
//! run, and `restore_best_weights` puts back the weights of the best epoch at the end. Its
//! state goes into every checkpoint, so a resumed run stops where the whole run would.

use serde_json::{json, Value};

/// Which way the monitored value improves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Direction {
    Min,
    Max,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    pub monitor: String,
    pub direction: Direction,
    /// Keras's `min_delta`, signed as Keras uses it (negative when minimising).
    pub min_delta: f64,
    pub patience: usize,
    pub baseline: Option<f64>,
    pub restore_best_weights: bool,
    pub start_from_epoch: usize,
    // The state (Keras's attributes of the same names).
    pub wait: usize,
    pub best: Option<f64>,
    pub best_epoch: usize,
    pub stopped_epoch: usize,
    pub have_best_weights: bool,
}

/// What the run does after an epoch.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Keep the current weights as the best (restore_best_weights).
    pub keep_weights: bool,
    pub stop: bool,
}

impl EarlyStopping {
    /// `--early-stopping monitor=val_loss,patience=2,min_delta=0.01,mode=auto,baseline=0.5,
    /// restore_best_weights=true,start_from_epoch=0` (every key optional; Keras's defaults).
    /// `logs` are the names an epoch's logs will have; `up` tells whether a metric improves
    /// upwards (None: unknown, as for Keras's `mode="auto"`).
    pub fn parse(
        spec: &str,
        logs: &[String],
        up: &dyn Fn(&str) -> Option<bool>,
    ) -> Result<EarlyStopping, String> {
        let mut es = EarlyStopping {
            monitor: "val_loss".into(),
            direction: Direction::Min,
            min_delta: 0.0,
            patience: 0,
            baseline: None,
            restore_best_weights: false,
            start_from_epoch: 0,
            wait: 0,
            best: None,
            best_epoch: 0,
            stopped_epoch: 0,
            have_best_weights: false,
        };
        let mut mode = "auto".to_string();
        let bad = |k: &str, v: &str, want: &str| format!("--early-stopping {k}={v}: {want}");
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("--early-stopping `{part}`: write KEY=VALUE (monitor=val_loss,patience=3)")
            })?;
            let (k, v) = (k.trim(), v.trim());
            let num = |want: &str| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(k, v, want))
            };
            let count = || {
                v.parse::<usize>()
                    .map_err(|_| bad(k, v, "a whole number of epochs"))
            };
            match k {
                "monitor" => es.monitor = v.to_string(),
                "min_delta" => es.min_delta = num("a number")?.abs(),
                "patience" => es.patience = count()?,
                "mode" => {
                    if !["auto", "min", "max"].contains(&v) {
                        return Err(bad(k, v, "auto, min or max"));
                    }
                    mode = v.to_string();
                }
                "baseline" => es.baseline = Some(num("a number")?),
                "restore_best_weights" => {
                    es.restore_best_weights =
                        parse_bool(v).ok_or_else(|| bad(k, v, "true or false"))?
                }
                "start_from_epoch" => es.start_from_epoch = count()?,
                _ => {
                    return Err(format!(
                        "--early-stopping: Keras's EarlyStopping has no setting `{k}` (monitor, min_delta, patience, mode, baseline, restore_best_weights, start_from_epoch)"
                    ))
                }
            }
        }
        // A monitored value the logs will not have would never stop the run: said now.
        check_monitor("--early-stopping", &es.monitor, logs)?;
        es.direction = match mode.as_str() {
            "min" => Direction::Min,
            "max" => Direction::Max,
            _ => {
                let name = es.monitor.strip_prefix("val_").unwrap_or(&es.monitor);
                match (name == "loss", up(name)) {
                    (true, _) | (_, Some(false)) => Direction::Min,
                    (_, Some(true)) => Direction::Max,
                    _ => {
                        return Err(format!(
                            "--early-stopping monitor={}: whether it should go up or down is not known; add mode=min or mode=max",
                            es.monitor
                        ))
                    }
                }
            }
        };
        if es.direction == Direction::Min {
            es.min_delta = -es.min_delta;
        }
        Ok(es)
    }

    fn improves(&self, value: f64, reference: Option<f64>) -> bool {
        match (reference, self.direction) {
            (None, _) => true,
            (Some(r), Direction::Min) => value - self.min_delta < r,
            (Some(r), Direction::Max) => value - self.min_delta > r,
        }
    }

    /// Keras's `on_epoch_end` (`epoch` from 0) given the epoch's logs.
    pub fn on_epoch_end(&mut self, epoch: usize, logs: &Value) -> Outcome {
        let mut out = Outcome::default();
        let Some(current) = logs[&self.monitor].as_f64() else {
            return out;
        };
        if epoch < self.start_from_epoch {
            return out;
        }
        if self.restore_best_weights && !self.have_best_weights {
            // Weights never kept: the current ones are the best.
            out.keep_weights = true;
            self.have_best_weights = true;
            self.best_epoch = epoch;
        }
        self.wait += 1;
        if self.improves(current, self.best) {
            self.best = Some(current);
            self.best_epoch = epoch;
            out.keep_weights |= self.restore_best_weights;
            // The wait restarts only past both the baseline and the previous best.
            if self.baseline.is_none() || self.improves(current, self.baseline) {
                self.wait = 0;
            }
            return out;
        }
        if self.wait >= self.patience && epoch > 0 {
            self.stopped_epoch = epoch;
            out.stop = true;
        }
        out
    }

    /// The state a checkpoint keeps.
    pub fn state(&self) -> Value {
        json!({
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "have_best_weights": self.have_best_weights,
        })
    }

    /// Takes back a checkpoint's state; false if it does not read.
    pub fn restore(&mut self, v: &Value) -> bool {
        let (Some(wait), Some(be), Some(se), Some(h)) = (
            v["wait"].as_u64(),
            v["best_epoch"].as_u64(),
            v["stopped_epoch"].as_u64(),
            v["have_best_weights"].as_bool(),
        ) else {
            return false;
        };
        (self.wait, self.best_epoch, self.stopped_epoch) =
            (wait as usize, be as usize, se as usize);
        self.best = v["best"].as_f64();
        self.have_best_weights = h;
        true
    }
}

/// A callback's monitored value must be one the epochs' logs will have (Keras warns and goes
/// on; a callback that can never act is refused here).
fn check_monitor(flag: &str, monitor: &str, logs: &[String]) -> Result<(), String> {
    if logs.iter().any(|l| l == monitor) {
        return Ok(());
    }
    let hint = if monitor.starts_with("val_") {
        " (validation values need --validation-split or --val-x/--val-y)"
    } else {
        ""
    };
    Err(format!(
        "{flag} monitor={monitor}: the epochs' logs will have {}{hint}",
        logs.join(", ")
    ))
}

/// A setting's true or false, as Python or a shell writes it.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "1" => Some(true),
        "false" | "False" | "0" => Some(false),
        _ => None,
    }
}

/// Parses `KEY=VALUE,...` for `flag`.
fn settings(flag: &str, spec: &str) -> Result<Vec<(String, String)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            part.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("{flag} `{part}`: write KEY=VALUE"))
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReduceLrOnPlateau {
    pub monitor: String,
    pub factor: f64,
    pub patience: usize,
    pub min_delta: f64,
    pub cooldown: usize,
    pub min_lr: f64,
    /// Whether larger is better (Keras's mode, `auto`: when the name holds "acc").
    pub max: bool,
    // The state (Keras's attributes of the same names).
    pub best: f64,
    pub wait: usize,
    pub cooldown_counter: usize,
}

impl ReduceLrOnPlateau {
    /// `--reduce-lr-on-plateau monitor=val_loss,factor=0.1,patience=10,mode=auto,
    /// min_delta=0.0001,cooldown=0,min_lr=0` (Keras's defaults for what is left out).
    pub fn parse(spec: &str, logs: &[String]) -> Result<ReduceLrOnPlateau, String> {
        let flag = "--reduce-lr-on-plateau";
        let mut r = ReduceLrOnPlateau {
            monitor: "val_loss".into(),
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            max: false,
            best: f64::INFINITY,
            wait: 0,
            cooldown_counter: 0,
        };
        let mut mode = "auto".to_string();
        for (k, v) in settings(flag, spec)? {
            let bad = |want: &str| format!("{flag} {k}={v}: {want}");
            let num = || {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad("a number"))
            };
            let count = || {
                v.parse::<usize>()
                    .map_err(|_| bad("a whole number of epochs"))
            };
            match k.as_str() {
                "monitor" => r.monitor = v.clone(),
                "factor" => {
                    r.factor = num()?;
                    // Keras refuses a factor that would not reduce.
                    if !(r.factor > 0.0 && r.factor < 1.0) {
                        return Err(bad("a factor between 0 and 1 (Keras refuses >= 1)"));
                    }
                }
                "patience" => r.patience = count()?,
                "min_delta" => r.min_delta = num()?,
                "cooldown" => r.cooldown = count()?,
                "min_lr" => r.min_lr = num()?.max(0.0),
                "mode" => {
                    if !["auto", "min", "max"].contains(&v.as_str()) {
                        return Err(bad("auto, min or max"));
                    }
                    mode = v.clone();
                }
                _ => {
                    return Err(format!(
                        "{flag}: Keras's ReduceLROnPlateau has no setting `{}` (monitor, factor, patience, mode, min_delta, cooldown, min_lr)",
                        k.escape_debug()
                    ))
                }
            }
        }
        check_monitor(flag, &r.monitor, logs)?;
        r.max = mode == "max" || (mode == "auto" && r.monitor.contains("acc"));
        r.best = if r.max {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        Ok(r)
    }

    fn improves(&self, current: f64) -> bool {
        if self.max {
            current > self.best + self.min_delta
        } else {
            current < self.best - self.min_delta
        }
    }

    /// Keras's `on_epoch_end` with the epoch's logs and the learning rate now (as float32
    /// keeps it); returns the new rate when it is reduced (rounded to float32, as Keras's
    /// variable stores it).
    pub fn on_epoch_end(&mut self, logs: &Value, lr: f64) -> Option<f64> {
        let current = logs[&self.monitor].as_f64()?;
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if self.improves(current) {
            self.best = current;
            self.wait = 0;
            return None;
        }
        // Keras asks again after counting down: the cooldown's last epoch already counts.
        if self.cooldown_counter > 0 {
            return None;
        }
        self.wait += 1;
        if self.wait < self.patience {
            return None;
        }
        if lr > f64::from(self.min_lr as f32) {
            let new = (lr * self.factor).max(self.min_lr);
            self.cooldown_counter = self.cooldown;
            self.wait = 0;
            return Some(f64::from(new as f32));
        }
        None
    }

    /// The state a checkpoint keeps (an infinite best as null).
    pub fn state(&self) -> Value {
        json!({
            "best": self.best.is_finite().then_some(self.best),
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
        })
    }

    pub fn restore(&mut self, v: &Value) -> bool {
        let (Some(wait), Some(cc)) = (v["wait"].as_u64(), v["cooldown_counter"].as_u64()) else {
            return false;
        };
        (self.wait, self.cooldown_counter) = (wait as usize, cc as usize);
        self.best = v["best"].as_f64().unwrap_or(if self.max {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
        true
    }
}

/// Keras's ModelCheckpoint (`save_freq="epoch"`): after each epoch the model (`.keras`) or its
/// weights (`.weights.h5`) are written to `filepath`, formatted with the epoch (from 1) and
/// the logs as Python's `str.format` (`{epoch:02d}`, `{val_loss:.4f}`); with
/// `save_best_only`, only when the monitored value beats the best so far.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCheckpoint {
    pub filepath: String,
    pub monitor: String,
    pub save_best_only: bool,
    pub weights_only: bool,
    pub max: bool,
    pub best: f64,
}

impl ModelCheckpoint {
    /// `--model-checkpoint filepath=best.keras,monitor=val_loss,save_best_only=true,
    /// mode=auto,initial_value_threshold=X`.
    pub fn parse(spec: &str, logs: &[String]) -> Result<ModelCheckpoint, String> {
        let flag = "--model-checkpoint";
        let mut m = ModelCheckpoint {
            filepath: String::new(),
            monitor: "val_loss".into(),
            save_best_only: false,
            weights_only: false,
            max: false,
            best: f64::INFINITY,
        };
        let (mut mode, mut threshold) = ("auto".to_string(), None);
        for (k, v) in settings(flag, spec)? {
            let bad = |want: &str| format!("{flag} {k}={v}: {want}");
            match k.as_str() {
                "filepath" => m.filepath = v.clone(),
                "monitor" => m.monitor = v.clone(),
                "save_best_only" => {
                    m.save_best_only = parse_bool(&v).ok_or_else(|| bad("true or false"))?
                }
                "mode" => {
                    if !["auto", "min", "max"].contains(&v.as_str()) {
                        return Err(bad("auto, min or max"));
                    }
                    mode = v.clone();
                }
                "initial_value_threshold" => {
                    threshold = Some(
                        v.parse::<f64>()
                            .ok()
                            .filter(|x| x.is_finite())
                            .ok_or_else(|| bad("a number"))?,
                    )
                }
                _ => {
                    return Err(format!(
                        "{flag}: forgec's ModelCheckpoint has no setting `{}` (filepath, monitor, save_best_only, mode, initial_value_threshold; it saves every epoch)",
                        k.escape_debug()
                    ))
                }
            }
        }
        // Keras 3's rule: the file's name says what is saved.
        if m.filepath.ends_with(".weights.h5") {
            m.weights_only = true;
        } else if !m.filepath.ends_with(".keras") {
            return Err(format!(
                "{flag} filepath={}: name a .keras file (the model) or a .weights.h5 file (its weights), as Keras 3 asks",
                m.filepath.escape_debug()
            ));
        }
        if m.save_best_only {
            check_monitor(flag, &m.monitor, logs)?;
        }
        // The template must format with the logs an epoch will have.
        let probe: serde_json::Map<String, Value> =
            logs.iter().map(|l| (l.clone(), json!(0.5))).collect();
        format_path(&m.filepath, 1, &Value::Object(probe))
            .map_err(|e| format!("{flag} filepath: {e}"))?;
        m.max = mode == "max"
            || (mode == "auto" && (m.monitor.contains("acc") || m.monitor.starts_with("fmeasure")));
        m.best = threshold.unwrap_or(if m.max {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
        Ok(m)
    }

    /// Keras's `on_epoch_end` (`epoch` from 0): the file to write now, if any.
    pub fn on_epoch_end(&mut self, epoch: usize, logs: &Value) -> Result<Option<String>, String> {
        if self.save_best_only {
            let Some(current) = logs[&self.monitor].as_f64() else {
                return Ok(None);
            };
            let better = if self.max {
                current > self.best
            } else {
                current < self.best
            };
            if !better {
                return Ok(None);
            }
            self.best = current;
        }
        format_path(&self.filepath, epoch + 1, logs).map(Some)
    }

    pub fn state(&self) -> Value {
        json!({ "best": self.best.is_finite().then_some(self.best) })
    }

    pub fn restore(&mut self, v: &Value) {
        if let Some(b) = v["best"].as_f64() {
            self.best = b;
        }
    }
}

/// Python's `str.format` of a path with `epoch` and the logs: `{name}`, `{name:02d}`,
/// `{name:.4f}`, `{name:.2e}` (and `{{`, `}}`).
pub fn format_path(template: &str, epoch: usize, logs: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => field.push(c),
                        None => return Err(format!("`{template}`: a `{{` is not closed")),
                    }
                }
                let (name, spec) = field.split_once(':').unwrap_or((&field, ""));
                let v = if name == "epoch" {
                    epoch as f64
                } else {
                    logs.get(name).and_then(Value::as_f64).ok_or_else(|| {
                        format!("`{{{name}}}` is not a log the epochs will have (epoch, or one of the logs)")
                    })?
                };
                out.push_str(&format_number(v, spec).ok_or_else(|| {
                    format!("`{{{field}}}`: forgec formats d, .Nf and .Ne (e.g. {{epoch:02d}}, {{val_loss:.4f}})")
                })?);
            }
            '}' => return Err(format!("`{template}`: a lone `}}`")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A number by a Python format spec of the forms forgec knows.
fn format_number(v: f64, spec: &str) -> Option<String> {
    if spec.is_empty() {
        return Some(if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{}", v as i64)
        } else {
            format!("{v}")
        });
    }
    if let Some(w) = spec.strip_suffix('d') {
        let n = v as i64;
        return match w.strip_prefix('0') {
            Some(w) if !w.is_empty() => Some(format!("{n:0width$}", width = w.parse().ok()?)),
            _ if w.is_empty() => Some(n.to_string()),
            _ => Some(format!("{n:width$}", width = w.parse().ok()?)),
        };
    }
    let p: usize = spec
        .strip_prefix('.')?
        .get(..spec.len() - 2)?
        .parse()
        .ok()?;
    match spec.chars().last()? {
        'f' => Some(format!("{v:.p$}")),
        'e' => {
            let s = format!("{v:.p$e}");
            let (m, e) = s.split_once('e')?;
            let e: i32 = e.parse().ok()?;
            Some(format!(
                "{m}e{}{:02}",
                if e < 0 { '-' } else { '+' },
                e.abs()
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: &str, values: &[f64]) -> (Option<usize>, usize, Vec<usize>) {
        let logs = vec!["loss".to_string(), "val_loss".into(), "val_accuracy".into()];
        let mut es =
            EarlyStopping::parse(spec, &logs, &|m| (m == "accuracy").then_some(true)).unwrap();
        let mut kept = Vec::new();
        for (e, v) in values.iter().enumerate() {
            let key = es.monitor.clone();
            let o = es.on_epoch_end(e, &json!({ key: v }));
            if o.keep_weights {
                kept.push(e);
            }
            if o.stop {
                return (Some(e), es.best_epoch, kept);
            }
        }
        (None, es.best_epoch, kept)
    }

    /// Sequences worked by hand through Keras 3.15's `EarlyStopping.on_epoch_end`.
    #[test]
    fn early_stopping_follows_keras() {
        // patience 0: the first epoch without improvement stops (not epoch 0).
        assert_eq!(run("", &[1.0, 0.9, 0.95, 0.8]), (Some(2), 1, vec![]));
        // patience 2: the wait counts every epoch since the best; the second without an
        // improvement makes it 2, which stops.
        assert_eq!(
            run("patience=2", &[1.0, 0.9, 0.95, 0.92, 0.91]),
            (Some(3), 1, vec![])
        );
        // min_delta 0.1: 1.0 -> 0.85 improves by more than it, 0.85 -> 0.8 does not.
        assert_eq!(
            run("min_delta=0.1,patience=1", &[1.0, 0.85, 0.8]),
            (Some(2), 1, vec![])
        );
        // restore_best_weights: kept at the first epoch and at each improvement.
        assert_eq!(
            run(
                "patience=1,restore_best_weights=true",
                &[1.0, 0.9, 0.95, 0.97]
            ),
            (Some(2), 1, vec![0, 1])
        );
        // mode auto on accuracy: up is better.
        assert_eq!(
            run("monitor=val_accuracy,patience=1", &[0.5, 0.6, 0.55, 0.58]),
            (Some(2), 1, vec![])
        );
        // start_from_epoch: epochs before it are not looked at.
        assert_eq!(
            run("start_from_epoch=2", &[1.0, 2.0, 3.0, 4.0]),
            (Some(3), 2, vec![])
        );
        // baseline: an improvement that does not beat it does not restart the wait, but an
        // improvement returns before the wait is looked at: steady progress never stops.
        assert_eq!(
            run("baseline=0.5,patience=2", &[1.0, 0.9, 0.8, 0.7]),
            (None, 3, vec![])
        );
        // ...while a stall after the wait grew stops at once.
        assert_eq!(
            run("baseline=0.5,patience=2", &[1.0, 0.9, 0.95]),
            (Some(2), 1, vec![])
        );
    }

    /// A checkpoint's state brings back the same decisions.
    #[test]
    fn early_stopping_state_round_trips() {
        let logs = vec!["loss".to_string()];
        let spec = "monitor=loss,patience=2,restore_best_weights=true";
        let mut a = EarlyStopping::parse(spec, &logs, &|_| None).unwrap();
        for (e, v) in [1.0, 0.8, 0.9].iter().enumerate() {
            a.on_epoch_end(e, &json!({ "loss": v }));
        }
        let mut b = EarlyStopping::parse(spec, &logs, &|_| None).unwrap();
        assert!(b.restore(&a.state()));
        assert_eq!(a, b);
        assert!(!b.restore(&json!({})));
    }

    #[test]
    fn early_stopping_refuses_what_would_never_stop() {
        let logs = vec!["loss".to_string(), "accuracy".into()];
        let up = |m: &str| (m == "accuracy").then_some(true);
        let e = EarlyStopping::parse("monitor=val_loss", &logs, &up).unwrap_err();
        assert!(e.contains("--validation-split"), "{e}");
        let e = EarlyStopping::parse("patience=x", &logs, &up).unwrap_err();
        assert!(e.contains("patience=x"), "{e}");
        let e = EarlyStopping::parse("monitor=loss,verbose=1", &logs, &up).unwrap_err();
        assert!(e.contains("no setting `verbose`"), "{e}");
        let logs = vec!["loss".to_string(), "auc".into()];
        let e = EarlyStopping::parse("monitor=auc", &logs, &|_| None).unwrap_err();
        assert!(e.contains("mode=min or mode=max"), "{e}");
    }

    /// A sequence worked by hand through Keras 3.15's `ReduceLROnPlateau.on_epoch_end`.
    #[test]
    fn reduce_lr_on_plateau_follows_keras() {
        let logs = vec!["loss".to_string(), "val_loss".into(), "val_accuracy".into()];
        let mut r = ReduceLrOnPlateau::parse("factor=0.5,patience=2,cooldown=1,min_lr=0.02", &logs)
            .unwrap();
        let mut lr = 0.1;
        let mut got = Vec::new();
        // 1.0 best; 1.0 (not better by min_delta) wait 1; 0.99 better; 1.2 wait 1; 1.1 wait 2
        // → 0.05, cooldown 1; 1.3: the cooldown counts down to 0 and resets the wait, and
        // Keras, asking again, counts this epoch: wait 1; 1.4 wait 2 → 0.025; 1.5 wait 1; 2.0
        // wait 2 → max(0.0125, 0.02) = 0.02; then at min_lr nothing more.
        for v in [
            1.0, 1.0, 0.99, 1.2, 1.1, 1.3, 1.4, 1.5, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5,
        ] {
            if let Some(new) = r.on_epoch_end(&json!({ "val_loss": v }), lr) {
                lr = new;
            }
            got.push(lr);
        }
        let f = |x: f32| f64::from(x);
        assert_eq!(
            got,
            vec![
                0.1,
                0.1,
                0.1,
                0.1,
                f(0.05),
                f(0.05),
                f(0.025),
                f(0.025),
                f(0.02),
                f(0.02),
                f(0.02),
                f(0.02),
                f(0.02),
                f(0.02)
            ]
        );
        // mode auto: a name with "acc" goes up.
        let mut a = ReduceLrOnPlateau::parse("monitor=val_accuracy,patience=1", &logs).unwrap();
        assert!(a.max);
        assert_eq!(a.on_epoch_end(&json!({"val_accuracy": 0.5}), 0.1), None);
        assert_eq!(a.on_epoch_end(&json!({"val_accuracy": 0.6}), 0.1), None);
        assert_eq!(
            a.on_epoch_end(&json!({"val_accuracy": 0.55}), 0.1),
            Some(f64::from(0.01f32))
        );
        // The state survives a checkpoint.
        let mut b = ReduceLrOnPlateau::parse("monitor=val_accuracy,patience=1", &logs).unwrap();
        assert!(b.restore(&a.state()));
        assert_eq!(a, b);
        for (spec, says) in [
            ("factor=1", "between 0 and 1"),
            ("monitor=loss,verbose=1", "no setting `verbose`"),
            ("monitor=val_mae", "logs will have"),
            ("patience=-1", "whole number"),
        ] {
            let e = ReduceLrOnPlateau::parse(spec, &logs).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn model_checkpoint_follows_keras() {
        let logs = vec!["loss".to_string(), "val_loss".into(), "val_accuracy".into()];
        let mut m = ModelCheckpoint::parse(
            "filepath=out/ck-{epoch:02d}-{val_loss:.3f}.weights.h5,save_best_only=true",
            &logs,
        )
        .unwrap();
        assert!(m.weights_only && !m.max);
        let mut saved = Vec::new();
        for (e, v) in [0.9, 0.8, 0.85, 0.8, 0.7].iter().enumerate() {
            if let Some(p) = m.on_epoch_end(e, &json!({ "val_loss": v })).unwrap() {
                saved.push(p);
            }
        }
        // Strictly better only (0.8 again is not).
        assert_eq!(
            saved,
            [
                "out/ck-01-0.900.weights.h5",
                "out/ck-02-0.800.weights.h5",
                "out/ck-05-0.700.weights.h5"
            ]
        );
        let mut a = ModelCheckpoint::parse(
            "filepath=best.keras,monitor=val_accuracy,save_best_only=true",
            &logs,
        )
        .unwrap();
        assert!(a.max && !a.weights_only);
        assert_eq!(
            a.on_epoch_end(0, &json!({"val_accuracy": 0.5}))
                .unwrap()
                .as_deref(),
            Some("best.keras")
        );
        assert_eq!(
            a.on_epoch_end(1, &json!({"val_accuracy": 0.4})).unwrap(),
            None
        );
        let mut every = ModelCheckpoint::parse("filepath=e{epoch}.keras", &logs).unwrap();
        assert_eq!(
            every.on_epoch_end(2, &json!({})).unwrap().as_deref(),
            Some("e3.keras")
        );
        assert_eq!(
            format_path("{{x}}-{loss:.1e}", 1, &json!({"loss": 0.00012})).unwrap(),
            "{x}-1.2e-04"
        );
        for (spec, says) in [
            ("filepath=x.h5", "name a .keras file"),
            ("filepath=x-{lss}.keras", "not a log"),
            ("filepath=x-{loss:>8}.keras", "formats d"),
            ("filepath=x.keras,save_freq=10", "no setting `save_freq`"),
            (
                "filepath=x.keras,save_best_only=true,monitor=val_mae",
                "logs will have",
            ),
        ] {
            let e = ModelCheckpoint::parse(spec, &logs).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }
}
