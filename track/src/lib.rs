//! Run tracking: every training run is a row of `runs` and each of its epochs a row of
//! `epochs`, in an embedded SQLite file or a PostgreSQL database (`db`), written by a
//! background thread (`Tracker`) so that a slow or vanished database never stops or slows a
//! run; `plot` draws runs' curves. No LLVM here: `forgec runs` and applications that drive
//! training link this alone.

mod db;
pub mod plot;
pub mod tensorboard;
pub mod time;

pub use db::{Db, Target, SCHEMA_VERSION, STALE};

use serde_json::Value;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

/// What a run is when it starts.
#[derive(Clone, Debug, Default)]
pub struct NewRun {
    pub model_name: String,
    pub model_path: String,
    pub model_sha256: String,
    /// The SHA-256 of the data files' hashes in argument order (one value for "the data").
    pub data_sha256: String,
    /// Every file the run reads: `[{"path", "sha256"}]`.
    pub files: Value,
    pub optimizer_type: String,
    pub loss: String,
    /// Everything else that decides the result (batch size, seed, learning rate, ...).
    pub hyperparameters: Value,
    pub epochs_planned: i64,
    pub forgec_version: String,
    /// The CPU's model name.
    pub machine: String,
    /// `cpu`, `cuda:0 (NVIDIA H100)`, ...
    pub device: String,
    pub threads: i64,
    pub checkpoint_path: String,
    pub out_dir: String,
}

/// A row of `runs`.
#[derive(Clone, Debug)]
pub struct RunRow {
    pub id: i64,
    pub model_name: String,
    pub model_path: String,
    pub model_sha256: String,
    pub data_sha256: String,
    pub files: Value,
    pub optimizer_type: String,
    pub loss: String,
    pub hyperparameters: Value,
    pub status: String,
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
    pub heartbeat_at: SystemTime,
    pub epochs_planned: i64,
    pub epochs_done: i64,
    pub steps: i64,
    pub final_loss: Option<f64>,
    pub final_accuracy: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub final_val_accuracy: Option<f64>,
    pub forgec_version: String,
    pub host: String,
    pub pid: i64,
    pub machine: String,
    pub device: String,
    pub threads: i64,
    pub checkpoint_path: String,
    pub out_dir: String,
    pub message: Option<String>,
}

/// A row of `epochs`: the named columns for the common logs, `metrics` with all of them
/// (Keras's names: `loss`, `accuracy`, `val_loss`, `out_mae`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRow {
    pub run_id: i64,
    /// From 1.
    pub epoch: i64,
    pub loss: f64,
    pub val_loss: Option<f64>,
    pub accuracy: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub learning_rate: Option<f64>,
    pub seconds: Option<f64>,
    pub metrics: Value,
    pub recorded_at: SystemTime,
}

impl EpochRow {
    /// The row of an epoch's logs (a JSON object of numbers, Keras's names).
    pub fn from_logs(run_id: i64, epoch: i64, logs: &Value) -> EpochRow {
        let get = |k: &str| logs.get(k).and_then(Value::as_f64);
        // Keras names accuracy after the metric it is (`accuracy`, `binary_accuracy`, ...).
        let acc = |prefix: &str| {
            logs.as_object().and_then(|o| {
                o.iter()
                    .filter(|(k, _)| {
                        k.strip_prefix(prefix)
                            .is_some_and(|m| m.ends_with("accuracy") && !m.contains("val_"))
                    })
                    .find_map(|(_, v)| v.as_f64())
            })
        };
        EpochRow {
            run_id,
            epoch,
            loss: get("loss").unwrap_or(f64::NAN),
            val_loss: get("val_loss"),
            accuracy: acc(""),
            val_accuracy: acc("val_"),
            learning_rate: get("learning_rate"),
            seconds: get("seconds"),
            metrics: logs.clone(),
            recorded_at: SystemTime::now(),
        }
    }
}

/// How a run ended (or that it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    Finished,
    StoppedEarly,
    Interrupted,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Finished => "finished",
            Status::StoppedEarly => "stopped_early",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
        }
    }
}

/// This machine's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether process `pid` of this machine lives (true where it cannot be told).
pub fn alive(pid: i64) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    // A zombie (killed, not yet reaped by its parent) is dead for our purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

enum Msg {
    Epoch(EpochRow, i64),
    Finish(Status, Option<String>, SystemTime),
}

/// How often a live run says so.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// The writer of one run's rows. Its thread owns the connection: the training loop only
/// queues rows. A write that fails (the server went away, the file is locked) is kept and
/// tried again, in order, every few seconds, until it succeeds or the run ends.
pub struct Tracker {
    pub id: i64,
    pub target: Target,
    tx: mpsc::Sender<Msg>,
    done: mpsc::Receiver<Report>,
    unwritten: Arc<AtomicUsize>,
    /// The steps done, for the heartbeat.
    steps: Arc<AtomicI64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the writer could not write by the end.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Rows still unwritten when the run ended (the last error with them).
    pub unwritten: usize,
    pub error: Option<String>,
}

impl Tracker {
    /// Opens the database (an error here is an error before training) and adds the run.
    pub fn start(target: &Target, run: &NewRun) -> Result<Tracker, String> {
        let mut db = Db::open(target)?;
        let id = db
            .insert_run(run)
            .map_err(|e| format!("{}: {e}", target.describe()))?;
        Ok(Tracker::spawn(db, id))
    }

    /// Takes up run `id` again (`--resume`).
    pub fn resume(target: &Target, id: i64, threads: i64) -> Result<Tracker, String> {
        let mut db = Db::open(target)?;
        db.resume_run(id, threads)
            .map_err(|e| format!("{}: {e}", target.describe()))?;
        Ok(Tracker::spawn(db, id))
    }

    fn spawn(db: Db, id: i64) -> Tracker {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let target = db.target.clone();
        let unwritten = Arc::new(AtomicUsize::new(0));
        let count = unwritten.clone();
        let steps = Arc::new(AtomicI64::new(0));
        let seen = steps.clone();
        let thread = std::thread::Builder::new()
            .name("forgec-track".into())
            .spawn(move || writer(db, id, rx, done_tx, count, seen))
            .expect("a thread");
        Tracker {
            id,
            target,
            tx,
            done,
            unwritten,
            steps,
            thread: Some(thread),
        }
    }

    /// An epoch ended with these logs after `steps` steps in all.
    pub fn epoch(&self, row: EpochRow, steps: i64) {
        let _ = self.tx.send(Msg::Epoch(row, steps));
    }

    /// Progress within an epoch (written with the next heartbeat).
    pub fn steps(&self, steps: i64) {
        // A store, not a message: the loop calls this every step, and the writer reads it
        // at its next heartbeat without being woken.
        self.steps.store(steps, Ordering::Relaxed);
    }

    /// Ends the run and waits up to `wait` for its rows to be written.
    pub fn finish(mut self, status: Status, message: Option<&str>, wait: Duration) -> Report {
        let _ = self.tx.send(Msg::Finish(
            status,
            message.map(String::from),
            SystemTime::now(),
        ));
        let r = self.done.recv_timeout(wait).unwrap_or_else(|_| Report {
            // The end itself is one more row than the count the writer last kept.
            unwritten: self.unwritten.load(Ordering::Relaxed).max(1),
            error: Some("the database did not answer in time".into()),
        });
        if r.unwritten == 0 {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        r
    }
}

fn writer(
    mut db: Db,
    id: i64,
    rx: mpsc::Receiver<Msg>,
    done: mpsc::Sender<Report>,
    unwritten: Arc<AtomicUsize>,
    steps: Arc<AtomicI64>,
) {
    let mut pending: std::collections::VecDeque<Msg> = Default::default();
    let mut last_beat = Instant::now();
    let mut last_error: Option<String> = None;
    let mut warned = false;
    let mut finishing: Option<Instant> = None;
    loop {
        // Wait for work, waking for the heartbeat and to retry what failed.
        let wait = if pending.is_empty() {
            HEARTBEAT.saturating_sub(last_beat.elapsed())
        } else {
            Duration::from_secs(2)
        };
        match rx.recv_timeout(wait) {
            Ok(m) => {
                if matches!(m, Msg::Finish(..)) {
                    finishing = Some(Instant::now());
                }
                pending.push_back(m)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The run's process is ending without finish (a panic): leave the row running;
            // the next open marks it interrupted.
            Err(mpsc::RecvTimeoutError::Disconnected) if finishing.is_none() => return,
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if db.is_closed() {
            if let Err(e) = db.reconnect() {
                last_error = Some(e);
            }
        }
        while let Some(m) = pending.front() {
            let r = match m {
                Msg::Epoch(row, s) => db.log_epoch(row, *s),
                Msg::Finish(status, msg, at) => db.finish(id, *status, msg.as_deref(), *at),
            };
            match r {
                Ok(()) => {
                    pending.pop_front();
                    if warned && pending.is_empty() {
                        eprintln!(
                            "forgec: run tracking: {} answers again; every row is written",
                            db.target.describe()
                        );
                        warned = false;
                    }
                }
                Err(e) => {
                    if !warned {
                        eprintln!(
                            "forgec: run tracking: cannot write to {} ({e}); training goes on, the rows are kept and written when it answers (history.json has them too)",
                            db.target.describe()
                        );
                        warned = true;
                    }
                    last_error = Some(e);
                    let _ = db.reconnect();
                    break;
                }
            }
        }
        if last_beat.elapsed() >= HEARTBEAT
            && pending.is_empty()
            && db.heartbeat(id, steps.load(Ordering::Relaxed)).is_ok()
        {
            last_beat = Instant::now();
        }
        unwritten.store(pending.len(), Ordering::Relaxed);
        if let Some(since) = finishing {
            // Done when everything is written; a caller that stopped waiting gets the count
            // from what it received (the thread keeps trying while the process lives).
            if pending.is_empty() || since.elapsed() > Duration::from_secs(3600) {
                let _ = done.send(Report {
                    unwritten: pending.len(),
                    error: if pending.is_empty() {
                        None
                    } else {
                        last_error.clone()
                    },
                });
                return;
            }
        }
    }
}
