//! One connection to a run database, SQLite or PostgreSQL, behind one set of queries: the SQL
//! is written once with `?N` parameters (PostgreSQL's `$N` are made from them); only the
//! schema's column types differ (TEXT timestamps in SQLite, TIMESTAMPTZ in PostgreSQL).

use crate::time::{iso, parse_iso};
use crate::{EpochRow, NewRun, RunRow, Status};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Where runs are tracked: `sqlite:PATH` (or a path ending in .sqlite/.db) or
/// `postgres://...` / `postgresql://...`.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Target {
    pub fn parse(spec: &str) -> Result<Target, String> {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            return Ok(Target::Postgres(spec.to_string()));
        }
        if let Some(p) = spec.strip_prefix("sqlite:") {
            if p.is_empty() {
                return Err("--track sqlite: names no file: use sqlite:PATH".into());
            }
            return Ok(Target::Sqlite(PathBuf::from(p)));
        }
        if spec.ends_with(".sqlite") || spec.ends_with(".db") {
            return Ok(Target::Sqlite(PathBuf::from(spec)));
        }
        Err(format!(
            "--track {}: use sqlite:PATH or postgres://USER@HOST/DATABASE",
            spec.escape_debug()
        ))
    }

    /// For messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Target::Sqlite(p) => format!("sqlite:{}", p.display()),
            Target::Postgres(url) => redact(url),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(p) => p,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A run marked running whose heartbeat is older than this is taken for dead.
pub const STALE: Duration = Duration::from_secs(60);

/// The schema, one entry per version: (SQLite, PostgreSQL). Applied in order, each in a
/// transaction with its version recorded; never edited once released (add a version).
const MIGRATIONS: &[(&str, &str)] = &[(
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model_name TEXT NOT NULL, model_path TEXT NOT NULL, model_sha256 TEXT NOT NULL,
        data_sha256 TEXT NOT NULL, files TEXT NOT NULL,
        optimizer_type TEXT NOT NULL, loss TEXT NOT NULL, hyperparameters TEXT NOT NULL,
        status TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, heartbeat_at TEXT NOT NULL,
        epochs_planned INTEGER NOT NULL, epochs_done INTEGER NOT NULL DEFAULT 0,
        steps INTEGER NOT NULL DEFAULT 0,
        final_loss REAL, final_accuracy REAL, final_val_loss REAL, final_val_accuracy REAL,
        forgec_version TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
        machine TEXT NOT NULL, device TEXT NOT NULL, threads INTEGER NOT NULL,
        checkpoint_path TEXT NOT NULL, out_dir TEXT NOT NULL, message TEXT);
     CREATE TABLE epochs (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL, loss REAL NOT NULL, val_loss REAL, accuracy REAL,
        val_accuracy REAL, learning_rate REAL, seconds REAL, metrics TEXT NOT NULL,
        recorded_at TEXT NOT NULL, PRIMARY KEY (run_id, epoch));
     CREATE INDEX runs_started ON runs (started_at);",
    "CREATE TABLE runs (
        id BIGSERIAL PRIMARY KEY,
        model_name TEXT NOT NULL, model_path TEXT NOT NULL, model_sha256 TEXT NOT NULL,
        data_sha256 TEXT NOT NULL, files TEXT NOT NULL,
        optimizer_type TEXT NOT NULL, loss TEXT NOT NULL, hyperparameters TEXT NOT NULL,
        status TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ,
        heartbeat_at TIMESTAMPTZ NOT NULL,
        epochs_planned BIGINT NOT NULL, epochs_done BIGINT NOT NULL DEFAULT 0,
        steps BIGINT NOT NULL DEFAULT 0,
        final_loss DOUBLE PRECISION, final_accuracy DOUBLE PRECISION,
        final_val_loss DOUBLE PRECISION, final_val_accuracy DOUBLE PRECISION,
        forgec_version TEXT NOT NULL, host TEXT NOT NULL, pid BIGINT NOT NULL,
        machine TEXT NOT NULL, device TEXT NOT NULL, threads BIGINT NOT NULL,
        checkpoint_path TEXT NOT NULL, out_dir TEXT NOT NULL, message TEXT);
     CREATE TABLE epochs (
        run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        epoch BIGINT NOT NULL, loss DOUBLE PRECISION NOT NULL, val_loss DOUBLE PRECISION,
        accuracy DOUBLE PRECISION, val_accuracy DOUBLE PRECISION,
        learning_rate DOUBLE PRECISION, seconds DOUBLE PRECISION, metrics TEXT NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (run_id, epoch));
     CREATE INDEX runs_started ON runs (started_at);",
)];

/// The schema version this forgec writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A query parameter.
#[derive(Clone, Debug)]
pub(crate) enum P {
    I(i64),
    F(Option<f64>),
    T(Option<String>),
    Time(Option<SystemTime>),
}

/// A result cell.
#[derive(Clone, Debug)]
pub(crate) enum Cell {
    Null,
    I(i64),
    F(f64),
    T(String),
    Time(SystemTime),
}

impl Cell {
    fn i(&self) -> i64 {
        match self {
            Cell::I(v) => *v,
            Cell::F(v) => *v as i64,
            _ => 0,
        }
    }
    fn f(&self) -> Option<f64> {
        match self {
            Cell::F(v) => Some(*v),
            Cell::I(v) => Some(*v as f64),
            _ => None,
        }
    }
    fn t(&self) -> String {
        match self {
            Cell::T(s) => s.clone(),
            _ => String::new(),
        }
    }
    fn opt_t(&self) -> Option<String> {
        match self {
            Cell::T(s) => Some(s.clone()),
            _ => None,
        }
    }
    fn time(&self) -> Option<SystemTime> {
        match self {
            Cell::Time(t) => Some(*t),
            Cell::T(s) => parse_iso(s),
            _ => None,
        }
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.t()).unwrap_or(Value::Null)
    }
}

enum Conn {
    Lite(rusqlite::Connection),
    Pg(Box<postgres::Client>),
}

/// An open run database, its schema current.
pub struct Db {
    conn: Conn,
    pub target: Target,
}

const RUN_COLUMNS: &str = "id, model_name, model_path, model_sha256, data_sha256, files, \
    optimizer_type, loss, hyperparameters, status, started_at, ended_at, heartbeat_at, \
    epochs_planned, epochs_done, steps, final_loss, final_accuracy, final_val_loss, \
    final_val_accuracy, forgec_version, host, pid, machine, device, threads, checkpoint_path, \
    out_dir, message";

const EPOCH_COLUMNS: &str = "run_id, epoch, loss, val_loss, accuracy, val_accuracy, \
    learning_rate, seconds, metrics, recorded_at";

impl Db {
    /// Connects (a SQLite file is created, with its directory's existence checked), brings
    /// the schema to this version, and marks the runs that died without saying so as
    /// interrupted.
    pub fn open(target: &Target) -> Result<Db, String> {
        let conn = connect(target)?;
        let mut db = Db {
            conn,
            target: target.clone(),
        };
        db.migrate()
            .map_err(|e| format!("{}: {e}", target.describe()))?;
        db.mark_interrupted()
            .map_err(|e| format!("{}: {e}", target.describe()))?;
        Ok(db)
    }

    /// Connects again after an error (PostgreSQL's server went away and came back).
    pub fn reconnect(&mut self) -> Result<(), String> {
        self.conn = connect(&self.target)?;
        Ok(())
    }

    /// Whether the connection is known to be broken (PostgreSQL only).
    pub fn is_closed(&self) -> bool {
        match &self.conn {
            Conn::Lite(_) => false,
            Conn::Pg(c) => c.is_closed(),
        }
    }

    /// Runs SQL statements as they are (no parameters): for administration and tests.
    pub fn execute_batch(&mut self, sql: &str) -> Result<(), String> {
        match &mut self.conn {
            Conn::Lite(c) => c.execute_batch(sql).map_err(|e| e.to_string()),
            Conn::Pg(c) => c.batch_execute(sql).map_err(pg_error),
        }
    }

    fn sql(&self, sql: &str) -> String {
        match self.conn {
            Conn::Lite(_) => sql.to_string(),
            // `?N` → `$N` (no `?` appears in forgec's SQL otherwise).
            Conn::Pg(_) => sql.replace('?', "$"),
        }
    }

    pub(crate) fn exec(&mut self, sql: &str, ps: &[P]) -> Result<u64, String> {
        let sql = self.sql(sql);
        match &mut self.conn {
            Conn::Lite(c) => {
                let vals: Vec<rusqlite::types::Value> = ps.iter().map(lite_param).collect();
                c.execute(&sql, rusqlite::params_from_iter(vals))
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string())
            }
            Conn::Pg(c) => {
                let vals = pg_params(ps);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    vals.iter().map(|b| b.as_ref()).collect();
                c.execute(sql.as_str(), &refs).map_err(pg_error)
            }
        }
    }

    pub(crate) fn query(&mut self, sql: &str, ps: &[P]) -> Result<Vec<Vec<Cell>>, String> {
        let sql = self.sql(sql);
        match &mut self.conn {
            Conn::Lite(c) => {
                let vals: Vec<rusqlite::types::Value> = ps.iter().map(lite_param).collect();
                let mut st = c.prepare(&sql).map_err(|e| e.to_string())?;
                let n = st.column_count();
                let rows = st
                    .query_map(rusqlite::params_from_iter(vals), |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => Cell::Null,
                                    rusqlite::types::ValueRef::Integer(v) => Cell::I(v),
                                    rusqlite::types::ValueRef::Real(v) => Cell::F(v),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        Cell::T(String::from_utf8_lossy(t).into_owned())
                                    }
                                    rusqlite::types::ValueRef::Blob(_) => Cell::Null,
                                })
                            })
                            .collect::<Result<Vec<Cell>, rusqlite::Error>>()
                    })
                    .map_err(|e| e.to_string())?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
            }
            Conn::Pg(c) => {
                let vals = pg_params(ps);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    vals.iter().map(|b| b.as_ref()).collect();
                let rows = c.query(sql.as_str(), &refs).map_err(pg_error)?;
                use postgres::types::Type;
                let mut out = Vec::new();
                for r in rows {
                    let mut cells = Vec::new();
                    for (i, col) in r.columns().iter().enumerate() {
                        let t = col.type_();
                        let cell = if *t == Type::INT8 {
                            r.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::I))
                        } else if *t == Type::INT4 {
                            r.try_get::<_, Option<i32>>(i)
                                .map(|v| v.map(|v| Cell::I(v.into())))
                        } else if *t == Type::FLOAT8 {
                            r.try_get::<_, Option<f64>>(i).map(|v| v.map(Cell::F))
                        } else if *t == Type::TIMESTAMPTZ {
                            r.try_get::<_, Option<SystemTime>>(i)
                                .map(|v| v.map(Cell::Time))
                        } else {
                            r.try_get::<_, Option<String>>(i).map(|v| v.map(Cell::T))
                        };
                        cells.push(cell.map_err(pg_error)?.unwrap_or(Cell::Null));
                    }
                    out.push(cells);
                }
                Ok(out)
            }
        }
    }

    /// Runs `f` in a transaction (rolled back on error).
    fn transaction(&mut self, f: impl FnOnce(&mut Db) -> Result<(), String>) -> Result<(), String> {
        // SQLite: take the write lock at once (a deferred one can deadlock on upgrade).
        let begin = match self.conn {
            Conn::Lite(_) => "BEGIN IMMEDIATE",
            Conn::Pg(_) => "BEGIN",
        };
        self.exec(begin, &[])?;
        match f(self) {
            Ok(()) => self.exec("COMMIT", &[]).map(|_| ()),
            Err(e) => {
                let _ = self.exec("ROLLBACK", &[]);
                Err(e)
            }
        }
    }

    fn migrate(&mut self) -> Result<(), String> {
        self.exec(
            "CREATE TABLE IF NOT EXISTS forgec_schema (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
            &[],
        )?;
        let pg = matches!(self.conn, Conn::Pg(_));
        self.transaction(|db| {
            if pg {
                // Two runs starting at once: one migrates, the other waits for it.
                db.exec("SELECT pg_advisory_xact_lock(7306242390)", &[])?;
            }
            let have = db.query("SELECT MAX(version) FROM forgec_schema", &[])?;
            let have = have.first().and_then(|r| r.first()).map_or(0, Cell::i);
            if have > SCHEMA_VERSION {
                return Err(format!(
                    "the run database has schema version {have}, written by a newer forgec (this one knows up to {SCHEMA_VERSION}): use that forgec, or another --track"
                ));
            }
            for (v, (lite, pgsql)) in MIGRATIONS.iter().enumerate().skip(have as usize) {
                let script = if pg { pgsql } else { lite };
                for stmt in script.split(';').filter(|s| !s.trim().is_empty()) {
                    db.exec(stmt, &[])?;
                }
                db.exec(
                    "INSERT INTO forgec_schema (version, applied_at) VALUES (?1, ?2)",
                    &[P::I(v as i64 + 1), P::T(Some(iso(SystemTime::now())))],
                )?;
            }
            Ok(())
        })
    }

    /// Runs still marked running whose process is gone (same host, no such pid) or whose
    /// heartbeat is older than `STALE` become `interrupted`, ended at their last heartbeat.
    /// Returns their ids.
    pub fn mark_interrupted(&mut self) -> Result<Vec<i64>, String> {
        let host = crate::hostname();
        let rows = self.query(
            "SELECT id, host, pid, heartbeat_at FROM runs WHERE status = 'running'",
            &[],
        )?;
        let now = SystemTime::now();
        let mut dead = Vec::new();
        for r in rows {
            let (id, h, pid) = (r[0].i(), r[1].t(), r[2].i());
            let beat = r[3].time().unwrap_or(now);
            let age = now.duration_since(beat).unwrap_or_default();
            let gone = h == host && pid != i64::from(std::process::id()) && !crate::alive(pid);
            if gone || age > STALE {
                dead.push((id, beat));
            }
        }
        for (id, beat) in &dead {
            let why = "interrupted: the process stopped without ending its run (killed, or the machine went down); its last checkpoint can be resumed with forgec train --resume";
            // Only if still running: another process may have marked it meanwhile.
            let ended = self.time(*beat);
            self.exec(
                "UPDATE runs SET status = 'interrupted', ended_at = ?1, message = ?2 WHERE id = ?3 AND status = 'running'",
                &[ended, P::T(Some(why.into())), P::I(*id)],
            )?;
        }
        Ok(dead.into_iter().map(|(id, _)| id).collect())
    }

    /// A timestamp parameter as this database keeps them.
    fn time(&self, t: SystemTime) -> P {
        match self.conn {
            Conn::Lite(_) => P::T(Some(iso(t))),
            Conn::Pg(_) => P::Time(Some(t)),
        }
    }

    /// A new row of `runs`, status running; returns its id.
    pub fn insert_run(&mut self, r: &NewRun) -> Result<i64, String> {
        let now = self.time(SystemTime::now());
        let rows = self.query(
            "INSERT INTO runs (model_name, model_path, model_sha256, data_sha256, files,
                optimizer_type, loss, hyperparameters, status, started_at, heartbeat_at,
                epochs_planned, forgec_version, host, pid, machine, device, threads,
                checkpoint_path, out_dir)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', ?9, ?9, ?10, ?11, ?12, ?13, ?14,
                ?15, ?16, ?17, ?18) RETURNING id",
            &[
                P::T(Some(r.model_name.clone())),
                P::T(Some(r.model_path.clone())),
                P::T(Some(r.model_sha256.clone())),
                P::T(Some(r.data_sha256.clone())),
                P::T(Some(r.files.to_string())),
                P::T(Some(r.optimizer_type.clone())),
                P::T(Some(r.loss.clone())),
                P::T(Some(r.hyperparameters.to_string())),
                now,
                P::I(r.epochs_planned),
                P::T(Some(r.forgec_version.clone())),
                P::T(Some(crate::hostname())),
                P::I(i64::from(std::process::id())),
                P::T(Some(r.machine.clone())),
                P::T(Some(r.device.clone())),
                P::I(r.threads),
                P::T(Some(r.checkpoint_path.clone())),
                P::T(Some(r.out_dir.clone())),
            ],
        )?;
        rows.first()
            .and_then(|r| r.first())
            .map(Cell::i)
            .ok_or_else(|| "the new run got no id".to_string())
    }

    /// A run taken up again (`--resume`): running, in this process, on this machine.
    pub fn resume_run(&mut self, id: i64, threads: i64) -> Result<(), String> {
        let now = self.time(SystemTime::now());
        let n = self.exec(
            "UPDATE runs SET status = 'running', ended_at = NULL, message = NULL,
                heartbeat_at = ?1, host = ?2, pid = ?3, threads = ?4 WHERE id = ?5",
            &[
                now,
                P::T(Some(crate::hostname())),
                P::I(i64::from(std::process::id())),
                P::I(threads),
                P::I(id),
            ],
        )?;
        if n == 0 {
            return Err(format!("it has no run {id}"));
        }
        Ok(())
    }

    pub fn heartbeat(&mut self, id: i64, steps: i64) -> Result<(), String> {
        let now = self.time(SystemTime::now());
        self.exec(
            "UPDATE runs SET heartbeat_at = ?1, steps = ?2 WHERE id = ?3",
            &[now, P::I(steps), P::I(id)],
        )
        .map(|_| ())
    }

    /// An epoch's row (written again if it is there: a resumed run repeats what it logged
    /// after its last checkpoint), and the run's progress with it.
    pub fn log_epoch(&mut self, e: &EpochRow, steps: i64) -> Result<(), String> {
        let at = self.time(e.recorded_at);
        let now = self.time(SystemTime::now());
        self.transaction(|db| {
            db.exec(
                "INSERT INTO epochs (run_id, epoch, loss, val_loss, accuracy, val_accuracy,
                    learning_rate, seconds, metrics, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (run_id, epoch) DO UPDATE SET loss = excluded.loss,
                    val_loss = excluded.val_loss, accuracy = excluded.accuracy,
                    val_accuracy = excluded.val_accuracy, learning_rate = excluded.learning_rate,
                    seconds = excluded.seconds, metrics = excluded.metrics,
                    recorded_at = excluded.recorded_at",
                &[
                    P::I(e.run_id),
                    P::I(e.epoch),
                    P::F(Some(e.loss)),
                    P::F(e.val_loss),
                    P::F(e.accuracy),
                    P::F(e.val_accuracy),
                    P::F(e.learning_rate),
                    P::F(e.seconds),
                    P::T(Some(e.metrics.to_string())),
                    at,
                ],
            )?;
            db.exec(
                "UPDATE runs SET epochs_done = ?1, steps = ?2, heartbeat_at = ?3,
                    final_loss = ?4, final_accuracy = ?5, final_val_loss = ?6,
                    final_val_accuracy = ?7 WHERE id = ?8",
                &[
                    P::I(e.epoch),
                    P::I(steps),
                    now,
                    P::F(Some(e.loss)),
                    P::F(e.accuracy),
                    P::F(e.val_loss),
                    P::F(e.val_accuracy),
                    P::I(e.run_id),
                ],
            )
            .map(|_| ())
        })
    }

    /// The run's end: its status and, for a failure, why.
    pub fn finish(
        &mut self,
        id: i64,
        status: Status,
        message: Option<&str>,
        at: SystemTime,
    ) -> Result<(), String> {
        let at = self.time(at);
        self.exec(
            "UPDATE runs SET status = ?1, ended_at = ?2, heartbeat_at = ?2, message = ?3 WHERE id = ?4",
            &[
                P::T(Some(status.as_str().into())),
                at,
                P::T(message.map(String::from)),
                P::I(id),
            ],
        )
        .map(|_| ())
    }

    /// Every run, newest first.
    pub fn runs(&mut self) -> Result<Vec<RunRow>, String> {
        let rows = self.query(
            &format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC"),
            &[],
        )?;
        Ok(rows.iter().map(|r| run_row(r)).collect())
    }

    pub fn run(&mut self, id: i64) -> Result<Option<RunRow>, String> {
        let rows = self.query(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
            &[P::I(id)],
        )?;
        Ok(rows.first().map(|r| run_row(r)))
    }

    pub fn epochs(&mut self, id: i64) -> Result<Vec<EpochRow>, String> {
        let rows = self.query(
            &format!("SELECT {EPOCH_COLUMNS} FROM epochs WHERE run_id = ?1 ORDER BY epoch"),
            &[P::I(id)],
        )?;
        Ok(rows
            .iter()
            .map(|r| EpochRow {
                run_id: r[0].i(),
                epoch: r[1].i(),
                loss: r[2].f().unwrap_or(f64::NAN),
                val_loss: r[3].f(),
                accuracy: r[4].f(),
                val_accuracy: r[5].f(),
                learning_rate: r[6].f(),
                seconds: r[7].f(),
                metrics: r[8].json(),
                recorded_at: r[9].time().unwrap_or(SystemTime::UNIX_EPOCH),
            })
            .collect())
    }
}

fn run_row(r: &[Cell]) -> RunRow {
    let epoch0 = SystemTime::UNIX_EPOCH;
    RunRow {
        id: r[0].i(),
        model_name: r[1].t(),
        model_path: r[2].t(),
        model_sha256: r[3].t(),
        data_sha256: r[4].t(),
        files: r[5].json(),
        optimizer_type: r[6].t(),
        loss: r[7].t(),
        hyperparameters: r[8].json(),
        status: r[9].t(),
        started_at: r[10].time().unwrap_or(epoch0),
        ended_at: r[11].time(),
        heartbeat_at: r[12].time().unwrap_or(epoch0),
        epochs_planned: r[13].i(),
        epochs_done: r[14].i(),
        steps: r[15].i(),
        final_loss: r[16].f(),
        final_accuracy: r[17].f(),
        final_val_loss: r[18].f(),
        final_val_accuracy: r[19].f(),
        forgec_version: r[20].t(),
        host: r[21].t(),
        pid: r[22].i(),
        machine: r[23].t(),
        device: r[24].t(),
        threads: r[25].i(),
        checkpoint_path: r[26].t(),
        out_dir: r[27].t(),
        message: r[28].opt_t(),
    }
}

fn connect(target: &Target) -> Result<Conn, String> {
    match target {
        Target::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(format!(
                        "sqlite:{}: the directory {} does not exist",
                        path.display(),
                        dir.display()
                    ));
                }
            }
            let c = rusqlite::Connection::open(path)
                .map_err(|e| format!("sqlite:{}: cannot open: {e}", path.display()))?;
            // Several processes may write one file (runs side by side): wait for each other,
            // and keep readers off the writers' way.
            c.busy_timeout(Duration::from_secs(5))
                .and_then(|_| c.pragma_update(None, "foreign_keys", "ON"))
                .and_then(|_| c.pragma_update(None, "journal_mode", "WAL"))
                .map_err(|e| format!("sqlite:{}: {e}", path.display()))?;
            Ok(Conn::Lite(c))
        }
        Target::Postgres(url) => {
            let mut cfg: postgres::Config = url
                .parse()
                .map_err(|e| format!("{}: not a PostgreSQL URL: {e}", redact(url)))?;
            if cfg.get_connect_timeout().is_none() {
                cfg.connect_timeout(Duration::from_secs(5));
            }
            let c = cfg
                .connect(postgres::NoTls)
                .map_err(|e| format!("{}: cannot connect: {}", redact(url), pg_error(e)))?;
            Ok(Conn::Pg(Box::new(c)))
        }
    }
}

fn lite_param(p: &P) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match p {
        P::I(v) => V::Integer(*v),
        P::F(Some(v)) => V::Real(*v),
        P::T(Some(s)) => V::Text(s.clone()),
        P::Time(Some(t)) => V::Text(iso(*t)),
        P::F(None) | P::T(None) | P::Time(None) => V::Null,
    }
}

fn pg_params(ps: &[P]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    ps.iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
            match p {
                P::I(v) => Box::new(*v),
                P::F(v) => Box::new(*v),
                P::T(v) => Box::new(v.clone()),
                P::Time(v) => Box::new(*v),
            }
        })
        .collect()
}

/// The server's own message where there is one (the driver's `db error` says little).
fn pg_error(e: postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("sqlite:runs/x.sqlite"),
            Ok(Target::Sqlite("runs/x.sqlite".into()))
        );
        assert_eq!(Target::parse("a.db"), Ok(Target::Sqlite("a.db".into())));
        assert!(Target::parse("postgresql://u@h/d").is_ok());
        assert!(Target::parse("mysql://x")
            .unwrap_err()
            .contains("sqlite:PATH"));
        assert!(Target::parse("sqlite:").is_err());
        assert_eq!(
            Target::parse("postgres://me:hunter2@db:5432/runs")
                .unwrap()
                .describe(),
            "postgres://me:***@db:5432/runs"
        );
    }
}
