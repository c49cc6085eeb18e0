//! `forgec runs list|show|compare|plot`: the runs `forgec train` tracked (`forgec-track`), read
//! from the same database (`--track`, else `FORGEC_TRACK`, else `./forgec-runs.sqlite`).

use crate::UserError;
use forgec_track::time::{human, iso};
use forgec_track::{Db, EpochRow, RunRow, Target};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
    /// The run database: sqlite:PATH or postgres://USER@HOST/DB (default: $FORGEC_TRACK,
    /// else ./forgec-runs.sqlite)
    #[arg(long, global = true)]
    pub track: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Every run, newest first: status, model, optimizer, epochs, final loss and accuracy.
    List {
        /// At most this many runs
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON array instead of the table
        #[arg(long)]
        json: bool,
    },
    /// One run: its settings, files, machine, and every epoch's logs.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Runs side by side: the settings that differ, the final logs, the loss per epoch.
    Compare {
        #[arg(num_args = 2.., required = true)]
        ids: Vec<i64>,
    },
    /// Curves of one or more runs (loss, accuracy or the first metric, learning rate;
    /// training solid, validation dashed) into an .svg or .png.
    Plot {
        #[arg(num_args = 1.., required = true)]
        ids: Vec<i64>,
        /// The picture: FILE.svg or FILE.png
        #[arg(long, short = 'o')]
        out: PathBuf,
        /// Width and height in pixels
        #[arg(long, default_value = "1000x900")]
        size: String,
    },
}

/// The database `--track` (or `$FORGEC_TRACK`) names; `default` when neither does. `none`
/// turns tracking off (None).
pub fn target(flag: Option<&str>, default: &Path) -> Result<Option<Target>, UserError> {
    let spec = flag
        .map(String::from)
        .or_else(|| std::env::var("FORGEC_TRACK").ok().filter(|s| !s.is_empty()));
    match spec.as_deref() {
        Some("none") => Ok(None),
        Some(s) => Target::parse(s).map(Some).map_err(UserError::new),
        None => Ok(Some(Target::Sqlite(default.to_path_buf()))),
    }
}

fn open(flag: Option<&str>) -> Result<Db, UserError> {
    let Some(t) = target(flag, Path::new("forgec-runs.sqlite"))? else {
        return Err(UserError::new(
            "--track none: name a run database (sqlite:PATH or postgres://...)",
        ));
    };
    if let Target::Sqlite(p) = &t {
        if !p.exists() {
            return Err(UserError::new(format!(
                "{}: no run database there: forgec train writes forgec-runs.sqlite in its --out's parent directory; name it with --track sqlite:PATH (or set FORGEC_TRACK)",
                p.display()
            )));
        }
    }
    Db::open(&t).map_err(UserError::new)
}

fn get(db: &mut Db, id: i64) -> Result<(RunRow, Vec<EpochRow>), UserError> {
    let r = db.run(id).map_err(UserError::new)?.ok_or_else(|| {
        UserError::new(format!(
            "{}: no run {id} (forgec runs list shows them)",
            db.target.describe()
        ))
    })?;
    let es = db.epochs(id).map_err(UserError::new)?;
    Ok((r, es))
}

/// A number as the tables show it.
fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e5) => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}"),
    }
}

/// `running (alive 4 s ago)`, `finished`, ...
fn status(r: &RunRow) -> String {
    if r.status == "running" {
        let ago = SystemTime::now()
            .duration_since(r.heartbeat_at)
            .unwrap_or_default();
        return format!("running (alive {} ago)", human(ago));
    }
    r.status.replace('_', " ")
}

fn duration(r: &RunRow) -> String {
    let end = r.ended_at.unwrap_or_else(SystemTime::now);
    human(end.duration_since(r.started_at).unwrap_or_default())
}

/// Prints rows as columns, each as wide as its widest cell.
fn table(rows: &[Vec<String>]) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let w: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = w[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn run_json(r: &RunRow, es: Option<&[EpochRow]>) -> Value {
    let mut v = json!({
        "id": r.id,
        "status": r.status,
        "model_name": r.model_name,
        "model_path": r.model_path,
        "model_sha256": r.model_sha256,
        "data_sha256": r.data_sha256,
        "files": r.files,
        "optimizer_type": r.optimizer_type,
        "loss": r.loss,
        "hyperparameters": r.hyperparameters,
        "started_at": iso(r.started_at),
        "ended_at": r.ended_at.map(iso),
        "heartbeat_at": iso(r.heartbeat_at),
        "epochs_planned": r.epochs_planned,
        "epochs_done": r.epochs_done,
        "steps": r.steps,
        "final_loss": r.final_loss,
        "final_accuracy": r.final_accuracy,
        "final_val_loss": r.final_val_loss,
        "final_val_accuracy": r.final_val_accuracy,
        "forgec_version": r.forgec_version,
        "host": r.host,
        "pid": r.pid,
        "machine": r.machine,
        "device": r.device,
        "threads": r.threads,
        "checkpoint_path": r.checkpoint_path,
        "out_dir": r.out_dir,
        "message": r.message,
    });
    if let Some(es) = es {
        v["epochs"] = es.iter().map(|e| e.metrics.clone()).collect();
    }
    v
}

/// Every log name the epochs have, in a stable order: loss first, then the others as they
/// first appear, validation after training.
fn log_names(es: &[EpochRow]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for e in es {
        if let Some(o) = e.metrics.as_object() {
            for k in o.keys() {
                if k != "epoch" && !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
    }
    let rank = |k: &str| match k {
        "loss" => 0,
        "seconds" => 4,
        "learning_rate" => 3,
        k if k.starts_with("val_") => 2,
        _ => 1,
    };
    names.sort_by_key(|k| rank(k));
    names
}

pub fn cmd(a: Args) -> Result<i32, UserError> {
    let mut db = open(a.track.as_deref())?;
    match a.what {
        What::List { limit, json } => {
            let runs: Vec<RunRow> = db
                .runs()
                .map_err(UserError::new)?
                .into_iter()
                .take(limit)
                .collect();
            if json {
                let v: Vec<Value> = runs.iter().map(|r| run_json(r, None)).collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap());
                return Ok(0);
            }
            if runs.is_empty() {
                println!("{}: no runs yet", db.target.describe());
                return Ok(0);
            }
            let mut rows = vec![[
                "ID",
                "STATUS",
                "MODEL",
                "OPTIMIZER",
                "EPOCHS",
                "LOSS",
                "ACCURACY",
                "VAL LOSS",
                "VAL ACC",
                "STARTED (UTC)",
                "TOOK",
            ]
            .map(String::from)
            .to_vec()];
            for r in &runs {
                rows.push(vec![
                    r.id.to_string(),
                    status(r),
                    r.model_name.escape_debug().to_string(),
                    r.optimizer_type.clone(),
                    format!("{}/{}", r.epochs_done, r.epochs_planned),
                    num(r.final_loss),
                    num(r.final_accuracy),
                    num(r.final_val_loss),
                    num(r.final_val_accuracy),
                    iso(r.started_at)[..19].replace('T', " "),
                    duration(r),
                ]);
            }
            table(&rows);
            Ok(0)
        }
        What::Show { id, json } => {
            let (r, es) = get(&mut db, id)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&run_json(&r, Some(&es))).unwrap()
                );
                return Ok(0);
            }
            let mut kv: Vec<Vec<String>> = vec![
                vec!["run".into(), r.id.to_string()],
                vec!["status".into(), status(&r)],
                vec!["model".into(), r.model_path.escape_debug().to_string()],
                vec!["model sha256".into(), r.model_sha256.clone()],
                vec!["data sha256".into(), r.data_sha256.clone()],
                vec!["loss".into(), r.loss.escape_debug().to_string()],
                vec!["optimizer".into(), r.optimizer_type.clone()],
            ];
            if let Some(o) = r.hyperparameters.as_object() {
                for (k, v) in o {
                    kv.push(vec![format!("  {k}"), v.to_string()]);
                }
            }
            kv.extend([
                vec![
                    "epochs".into(),
                    format!(
                        "{} of {} ({} steps)",
                        r.epochs_done, r.epochs_planned, r.steps
                    ),
                ],
                vec!["started (UTC)".into(), iso(r.started_at)],
                vec!["ended (UTC)".into(), r.ended_at.map_or("-".into(), iso)],
                vec!["took".into(), duration(&r)],
                vec!["machine".into(), format!("{} ({})", r.host, r.machine)],
                vec![
                    "device".into(),
                    format!(
                        "{}, {} thread{}",
                        r.device,
                        r.threads,
                        if r.threads == 1 { "" } else { "s" }
                    ),
                ],
                vec!["forgec".into(), r.forgec_version.clone()],
                vec!["output".into(), r.out_dir.clone()],
                vec!["checkpoint".into(), r.checkpoint_path.clone()],
            ]);
            if let Some(m) = &r.message {
                kv.push(vec!["message".into(), m.clone()]);
            }
            table(&kv);
            if !es.is_empty() {
                println!();
                let names = log_names(&es);
                let mut rows = vec![std::iter::once("epoch".to_string())
                    .chain(names.iter().cloned())
                    .collect::<Vec<_>>()];
                for e in &es {
                    let mut row = vec![e.epoch.to_string()];
                    for n in &names {
                        row.push(num(e.metrics.get(n).and_then(Value::as_f64)));
                    }
                    rows.push(row);
                }
                table(&rows);
            }
            Ok(0)
        }
        What::Compare { ids } => {
            let runs: Vec<(RunRow, Vec<EpochRow>)> = ids
                .iter()
                .map(|&id| get(&mut db, id))
                .collect::<Result<_, _>>()?;
            let head = std::iter::once(String::new())
                .chain(runs.iter().map(|(r, _)| format!("run {}", r.id)))
                .collect::<Vec<_>>();
            // Settings: those that differ marked with `*`.
            let mut keys: Vec<String> = vec![
                "model".into(),
                "model sha256".into(),
                "data sha256".into(),
                "loss".into(),
                "optimizer".into(),
            ];
            for (r, _) in &runs {
                if let Some(o) = r.hyperparameters.as_object() {
                    for k in o.keys() {
                        if !keys.contains(k) {
                            keys.push(k.clone());
                        }
                    }
                }
            }
            keys.extend(["device", "threads", "forgec", "status"].map(String::from));
            let value = |r: &RunRow, k: &str| -> String {
                match k {
                    "model" => r.model_name.escape_debug().to_string(),
                    "model sha256" => r.model_sha256.chars().take(12).collect(),
                    "data sha256" => r.data_sha256.chars().take(12).collect(),
                    "loss" => r.loss.escape_debug().to_string(),
                    "optimizer" => r.optimizer_type.clone(),
                    "device" => r.device.clone(),
                    "threads" => r.threads.to_string(),
                    "forgec" => r.forgec_version.clone(),
                    "status" => r.status.replace('_', " "),
                    k => r
                        .hyperparameters
                        .get(k)
                        .map_or("-".into(), |v| v.to_string()),
                }
            };
            let mut rows = vec![head.clone()];
            for k in &keys {
                let vals: Vec<String> = runs.iter().map(|(r, _)| value(r, k)).collect();
                let differ = vals.windows(2).any(|w| w[0] != w[1]);
                let mut row = vec![if differ {
                    format!("* {k}")
                } else {
                    format!("  {k}")
                }];
                row.extend(vals);
                rows.push(row);
            }
            // The final logs, every one any run has.
            let mut names: Vec<String> = Vec::new();
            for (_, es) in &runs {
                for n in log_names(es) {
                    if !names.contains(&n) && n != "seconds" {
                        names.push(n);
                    }
                }
            }
            rows.push(vec![]);
            let mut last = vec!["final".to_string()];
            last.extend(runs.iter().map(|(r, _)| format!("epoch {}", r.epochs_done)));
            rows.push(last);
            for n in &names {
                let mut row = vec![format!("  {n}")];
                row.extend(runs.iter().map(|(_, es)| {
                    num(es
                        .last()
                        .and_then(|e| e.metrics.get(n))
                        .and_then(Value::as_f64))
                }));
                rows.push(row);
            }
            // Loss per epoch, side by side.
            let most = runs.iter().map(|(_, es)| es.len()).max().unwrap_or(0);
            if most > 0 {
                rows.push(vec![]);
                rows.push(
                    std::iter::once("loss by epoch".to_string())
                        .chain(runs.iter().map(|_| String::new()))
                        .collect(),
                );
                for i in 0..most {
                    let mut row = vec![format!("  {}", i + 1)];
                    row.extend(runs.iter().map(|(_, es)| num(es.get(i).map(|e| e.loss))));
                    rows.push(row);
                }
            }
            table(&rows);
            println!("(* marks settings that differ)");
            Ok(0)
        }
        What::Plot { ids, out, size } => {
            let bad = || {
                UserError::new(format!(
                    "--size {size}: use WIDTHxHEIGHT in pixels, each 200 to 8000 (e.g. 1000x900)"
                ))
            };
            let (w, h) = size.split_once('x').ok_or_else(bad)?;
            let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
            if !(200..=8000).contains(&w) || !(200..=8000).contains(&h) {
                return Err(bad());
            }
            let runs: Vec<(RunRow, Vec<EpochRow>)> = ids
                .iter()
                .map(|&id| get(&mut db, id))
                .collect::<Result<_, _>>()?;
            forgec_track::plot::plot(&runs, &out, (w, h)).map_err(UserError::new)?;
            println!("{}", out.display());
            Ok(0)
        }
    }
}
