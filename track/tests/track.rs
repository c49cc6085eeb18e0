//! Run tracking against real databases: an SQLite file, and a PostgreSQL server where one
//! answers (`scripts/postgres.sh` starts one; FORGEC_TEST_POSTGRES names another; the
//! PostgreSQL tests say why and pass when none answers).

use forgec_track::{Db, EpochRow, NewRun, Status, Target, Tracker};
use serde_json::json;
use std::time::{Duration, SystemTime};

fn new_run(name: &str) -> NewRun {
    NewRun {
        model_name: name.into(),
        model_path: format!("/m/{name}.keras"),
        model_sha256: "ab".repeat(32),
        data_sha256: "cd".repeat(32),
        files: json!([{"path": "/d/x.npy", "sha256": "ef".repeat(32)}]),
        optimizer_type: "adam".into(),
        loss: "binary_crossentropy".into(),
        hyperparameters: json!({"batch_size": 32, "learning_rate": 0.001, "seed": 7}),
        epochs_planned: 3,
        forgec_version: "0.1.0".into(),
        machine: "test cpu".into(),
        device: "cpu".into(),
        threads: 1,
        checkpoint_path: "/o/checkpoint.bin".into(),
        out_dir: "/o".into(),
    }
}

fn logs(e: i64) -> serde_json::Value {
    let l = 1.0 / e as f64;
    json!({"epoch": e, "loss": l, "accuracy": 1.0 - l / 2.0, "val_loss": l * 1.5,
           "val_accuracy": 0.5, "learning_rate": 0.001, "seconds": 0.25})
}

/// The whole life of two runs, through the background writer, read back.
fn lifecycle(target: &Target) {
    let t = Tracker::start(target, &new_run("mlp")).expect("start");
    let other = Tracker::start(target, &new_run("cnn")).expect("start");
    for e in 1..=3 {
        t.epoch(EpochRow::from_logs(t.id, e, &logs(e)), e * 10);
    }
    let id = t.id;
    assert_eq!(
        t.finish(Status::Finished, None, Duration::from_secs(30))
            .unwrap_written(),
        ()
    );
    other.epoch(EpochRow::from_logs(other.id, 1, &logs(1)), 5);
    let oid = other.id;
    let why = "epoch 2, step 7: the loss is NaN";
    other
        .finish(Status::Failed, Some(why), Duration::from_secs(30))
        .unwrap_written();

    let mut db = Db::open(target).expect("open");
    let r = db.run(id).unwrap().expect("the run");
    assert_eq!(
        (r.status.as_str(), r.epochs_done, r.steps),
        ("finished", 3, 30)
    );
    assert_eq!(r.final_loss, Some(1.0 / 3.0));
    assert_eq!(r.final_accuracy, Some(1.0 - 1.0 / 6.0));
    assert_eq!(r.final_val_loss, Some(0.5));
    assert_eq!(r.hyperparameters["seed"], 7);
    assert_eq!(r.host, forgec_track::hostname());
    assert!(r.ended_at.is_some() && r.ended_at.unwrap() >= r.started_at);
    let es = db.epochs(id).unwrap();
    assert_eq!(es.len(), 3);
    assert_eq!(es[1].loss, 0.5);
    assert_eq!(es[1].val_accuracy, Some(0.5));
    assert_eq!(es[2].metrics["learning_rate"], 0.001);
    let o = db.run(oid).unwrap().unwrap();
    assert_eq!(o.status, "failed");
    assert_eq!(o.message.as_deref(), Some(why));
    let ids: Vec<i64> = db.runs().unwrap().iter().map(|r| r.id).collect();
    let (pi, po) = (
        ids.iter().position(|&x| x == id).unwrap(),
        ids.iter().position(|&x| x == oid).unwrap(),
    );
    assert!(po < pi, "newest first: {ids:?}");

    // A resumed run repeats the epochs it logged after its checkpoint: the row is replaced.
    let t = Tracker::resume(target, id, 2).expect("resume");
    let mut again = logs(3);
    again["loss"] = json!(0.125);
    t.epoch(EpochRow::from_logs(id, 3, &again), 30);
    t.finish(Status::StoppedEarly, None, Duration::from_secs(30))
        .unwrap_written();
    let r = db.run(id).unwrap().unwrap();
    assert_eq!((r.status.as_str(), r.threads), ("stopped_early", 2));
    let es = db.epochs(id).unwrap();
    assert_eq!((es.len(), es[2].loss), (3, 0.125));
    assert!(Tracker::resume(target, 987_654_321, 1)
        .err()
        .unwrap()
        .contains("no run 987654321"));
}

/// Runs whose process died without a word are marked interrupted at the next open: a dead
/// pid on this host at once, any host's after its heartbeat is older than `STALE`.
fn interrupted(target: &Target, raw: &mut dyn FnMut(&str)) {
    let mut db = Db::open(target).unwrap();
    let (a, b, c) = (
        db.insert_run(&new_run("dead-pid")).unwrap(),
        db.insert_run(&new_run("stale")).unwrap(),
        db.insert_run(&new_run("alive")).unwrap(),
    );
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    raw(&format!("UPDATE runs SET pid = {dead} WHERE id = {a}"));
    raw(&format!(
        "UPDATE runs SET host = 'elsewhere' WHERE id = {b}"
    ));
    raw(&format!(
        "UPDATE runs SET host = 'elsewhere' WHERE id = {c}"
    ));
    let old = forgec_track::time::iso(SystemTime::now() - Duration::from_secs(600));
    raw(&format!(
        "UPDATE runs SET heartbeat_at = '{old}' WHERE id = {b}"
    ));
    let marked = Db::open(target).unwrap().mark_interrupted().unwrap();
    // The open itself marked them; a second pass finds nothing new.
    assert!(!marked.contains(&a) && !marked.contains(&b), "{marked:?}");
    let st = |db: &mut Db, id| db.run(id).unwrap().unwrap();
    let ra = st(&mut db, a);
    assert_eq!(ra.status, "interrupted");
    assert!(ra.message.unwrap().contains("--resume"));
    assert_eq!(st(&mut db, b).status, "interrupted");
    // Ended at its last heartbeat, not when it was noticed.
    assert_eq!(
        forgec_track::time::iso(st(&mut db, b).ended_at.unwrap()),
        old
    );
    assert_eq!(st(&mut db, c).status, "running");
    raw(&format!(
        "UPDATE runs SET status = 'finished' WHERE id = {c}"
    ));
}

trait Written {
    fn unwrap_written(self);
}
impl Written for forgec_track::Report {
    fn unwrap_written(self) {
        assert_eq!(self.unwritten, 0, "unwritten rows: {:?}", self.error);
    }
}

#[test]
fn sqlite_lifecycle_and_interrupted_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forgec-runs.sqlite");
    let target = Target::Sqlite(path.clone());
    lifecycle(&target);
    interrupted(&target, &mut |sql| raw_sql(&target, sql).expect(sql));
    // The schema's version is recorded.
    let v = raw_query(&target, "SELECT MAX(version) FROM forgec_schema").unwrap();
    assert_eq!(v, forgec_track::SCHEMA_VERSION.to_string());
}

/// Raw SQL on a database, as another program would run it.
fn raw_sql(target: &Target, sql: &str) -> Result<(), String> {
    match target {
        Target::Sqlite(p) => rusqlite::Connection::open(p)
            .and_then(|c| c.execute_batch(sql))
            .map_err(|e| e.to_string()),
        Target::Postgres(url) => postgres::Client::connect(url, postgres::NoTls)
            .and_then(|mut c| c.batch_execute(sql))
            .map_err(|e| e.to_string()),
    }
}

/// The first column of the first row, as text.
fn raw_query(target: &Target, sql: &str) -> Result<String, String> {
    match target {
        Target::Sqlite(p) => rusqlite::Connection::open(p)
            .and_then(|c| c.query_row(sql, [], |r| r.get::<_, i64>(0)))
            .map(|v| v.to_string())
            .map_err(|e| e.to_string()),
        Target::Postgres(url) => postgres::Client::connect(url, postgres::NoTls)
            .and_then(|mut c| c.query_one(sql, &[]))
            .map(|r| r.get::<_, String>(0))
            .map_err(|e| e.to_string()),
    }
}

/// Another connection holds SQLite's write lock for `d` (a backup, a long query).
fn hold_write_lock(target: &Target, d: Duration) -> std::thread::JoinHandle<()> {
    let Target::Sqlite(p) = target else {
        panic!("SQLite only")
    };
    let c = rusqlite::Connection::open(p).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        c.execute_batch("COMMIT").unwrap();
    })
}

#[test]
fn a_locked_database_delays_rows_but_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::Sqlite(dir.path().join("runs.sqlite"));
    let t = Tracker::start(&target, &new_run("mlp")).unwrap();
    let id = t.id;
    // Another process holds the write lock for a while (a backup, a long query).
    let holder = hold_write_lock(&target, Duration::from_secs(8));
    t.epoch(EpochRow::from_logs(id, 1, &logs(1)), 10);
    t.epoch(EpochRow::from_logs(id, 2, &logs(2)), 20);
    // The training loop never waits: queuing is instant even while the database is locked.
    let start = std::time::Instant::now();
    t.steps(25);
    assert!(start.elapsed() < Duration::from_millis(100));
    let r = t.finish(Status::Finished, None, Duration::from_secs(60));
    holder.join().unwrap();
    r.unwrap_written();
    let mut db = Db::open(&target).unwrap();
    assert_eq!(db.epochs(id).unwrap().len(), 2);
    assert_eq!(db.run(id).unwrap().unwrap().status, "finished");
}

#[test]
fn unreachable_databases_are_errors_before_anything_runs() {
    let e = Tracker::start(
        &Target::Sqlite("/nonexistent-dir/runs.sqlite".into()),
        &new_run("x"),
    )
    .err()
    .unwrap();
    assert!(e.contains("/nonexistent-dir does not exist"), "{e}");
    // Nothing listens on port 1.
    let e = Db::open(&Target::Postgres(
        "postgres://u:secret@127.0.0.1:1/db?connect_timeout=2".into(),
    ))
    .err()
    .unwrap();
    assert!(e.contains("cannot connect") && !e.contains("secret"), "{e}");
}

/// The PostgreSQL server the tests use, or None (said) when none answers.
fn postgres() -> Option<String> {
    let url = std::env::var("FORGEC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://forgec:forgec@127.0.0.1:5432/forgec_test".into());
    match raw_sql(&Target::Postgres(url.clone()), "SELECT 1") {
        Ok(()) => Some(url),
        Err(e) => {
            eprintln!(
                "skipped: no PostgreSQL server answers at {} ({e}); scripts/postgres.sh starts one, FORGEC_TEST_POSTGRES names another",
                Target::Postgres(url).describe()
            );
            None
        }
    }
}

#[test]
fn postgres_lifecycle_and_interrupted_runs() {
    let Some(url) = postgres() else { return };
    // A schema of its own: the test starts from an empty database and leaves nothing behind.
    let schema = format!(
        "forgec_test_{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let admin = Target::Postgres(url.clone());
    raw_sql(&admin, &format!("CREATE SCHEMA {schema}")).unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let target = Target::Postgres(format!("{url}{sep}options=-csearch_path%3D{schema}"));
    let result = std::panic::catch_unwind(|| {
        lifecycle(&target);
        interrupted(&target, &mut |sql| raw_sql(&target, sql).expect(sql));
        assert_eq!(
            raw_query(&target, "SELECT MAX(version)::text FROM forgec_schema").unwrap(),
            forgec_track::SCHEMA_VERSION.to_string()
        );
        // The tables are where search_path put them, not in public.
        assert_eq!(
            raw_query(
                &admin,
                &format!("SELECT count(*)::text FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name IN ('runs', 'epochs')")
            )
            .unwrap(),
            "2"
        );
    });
    raw_sql(&admin, &format!("DROP SCHEMA {schema} CASCADE")).unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn plots_of_runs() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::Sqlite(dir.path().join("runs.sqlite"));
    let mut runs = Vec::new();
    for (k, opt) in ["sgd", "adam"].iter().enumerate() {
        let mut r = new_run("mlp");
        r.optimizer_type = opt.to_string();
        let t = Tracker::start(&target, &r).unwrap();
        for e in 1..=5 {
            let mut l = logs(e);
            l["loss"] = json!(1.0 / (e + k as i64) as f64);
            l["learning_rate"] = json!(0.01 * 0.5f64.powi(e as i32));
            t.epoch(EpochRow::from_logs(t.id, e, &l), e);
        }
        runs.push(t.id);
        t.finish(Status::Finished, None, Duration::from_secs(30))
            .unwrap_written();
    }
    let mut db = Db::open(&target).unwrap();
    let data: Vec<_> = runs
        .iter()
        .map(|&id| (db.run(id).unwrap().unwrap(), db.epochs(id).unwrap()))
        .collect();
    let svg = dir.path().join("curves.svg");
    forgec_track::plot::plot(&data, &svg, (900, 900)).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    for label in [
        format!("run {} loss", runs[0]),
        format!("run {} val_loss", runs[1]),
        format!("run {} accuracy", runs[1]),
        format!("run {} learning_rate", runs[0]),
        "epoch".into(),
    ] {
        assert!(text.contains(&label), "{label} not in the SVG");
    }
    let png = dir.path().join("curves.png");
    forgec_track::plot::plot(&data[..1], &png, (800, 600)).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let e = forgec_track::plot::plot(&data, &dir.path().join("c.pdf"), (8, 8)).unwrap_err();
    assert!(e.contains(".svg or a .png"), "{e}");
    if std::env::var("FORGEC_KEEP_PLOTS").is_ok() {
        std::fs::copy(&svg, "/tmp/forgec-curves.svg").unwrap();
        std::fs::copy(&png, "/tmp/forgec-curves.png").unwrap();
    }
}
