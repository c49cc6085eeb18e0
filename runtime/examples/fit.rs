//! Training a model from an application with forgec's runtime (no compiler, no LLVM, no
//! Python): the library made by `forgec compile MODEL --train -o DIR --name NAME`, the data
//! as `.npy` files (the inputs memory-mapped), Keras's `fit` with EarlyStopping, a checkpoint
//! after each epoch in OUT, and a run that goes on from OUT's checkpoint when one is there.
//!
//! ```text
//! forgec compile tests/fixtures/models/mlp_binary.json --train -o build --name mb
//! cargo run -p forgec-runtime --example fit -- build mb \
//!     tests/fixtures/training/mlp_binary.train_x.npy \
//!     tests/fixtures/training/mlp_binary.train_y.npy 3 32 out
//! ```
//!
//! It prints each epoch's logs as JSON, one line each, and the state's file at the end.

use forgec_runtime::compiled::Trainer;
use forgec_runtime::fit::{self, Column, Data, End, Event, Settings};
use std::path::{Path, PathBuf};

/// Prints each epoch's logs.
struct Print;

impl fit::Callback for Print {
    fn on_event(&mut self, ev: &Event<'_>, _lib: &Trainer) -> Result<(), String> {
        match ev {
            Event::Resumed { epoch, step } => {
                eprintln!("resuming at epoch {}, step {step}", epoch + 1)
            }
            Event::Epoch { logs, .. } => println!("{logs}"),
            Event::EarlyStopped { epoch, best_epoch } => {
                eprintln!(
                    "stopped early after epoch {} (best: {})",
                    epoch + 1,
                    best_epoch + 1
                )
            }
            _ => {}
        }
        Ok(())
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, name, x, y, epochs, batch, out] = &args[..] else {
        return Err("usage: fit LIB_DIR NAME X.npy Y.npy EPOCHS BATCH OUT_DIR".into());
    };
    let dir = Path::new(dir);
    let lib = Trainer::load(&dir.join(format!("lib{name}.so")), name)?;
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.json"))).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    // The inputs mapped (a data set larger than memory trains), the labels read.
    let x = match forgec_runtime::map_npy(Path::new(x)).map_err(|e| e.0)? {
        Some(m) => Column::mapped(m),
        None => Column::Memory(forgec_runtime::read_npy(Path::new(x)).map_err(|e| e.0)?),
    };
    let y = Column::Memory(forgec_runtime::read_npy(Path::new(y)).map_err(|e| e.0)?);
    let data = Data::new(vec![("x".into(), x), ("y".into(), y)], 1, 1)?;
    let parse = |s: &str| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
    let settings = Settings {
        early_stopping: Some(fit::EarlyStopping::parse(
            "monitor=loss,patience=2,restore_best_weights=true",
            &fit::log_names(&lib, false),
            &|_| None,
        )?),
        model_tensors: Some(fit::model_tensors(&lib, &meta)),
        ..Settings::new(parse(epochs)?, parse(batch)?)
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let lr = meta["train"]["optimizer"]["learning_rate"]
        .as_f64()
        .ok_or("NAME.json has no learning rate: was the library compiled with --train?")?;
    let mut run = fit::Fit::new(&lib, &data, settings, lr);
    run.checkpoint = Some(fit::Checkpointing {
        dir: out.clone(),
        meta: serde_json::json!({"model": name}),
    });
    if out.join(fit::checkpoint::FILE).exists() {
        run.resume = Some(fit::checkpoint::read(&out)?);
    }
    let o = fit::fit(run, &mut [&mut Print])?;
    if let End::NonFinite { message, step, .. } = &o.end {
        return Err(format!("step {step}: {message}"));
    }
    // The trained state, as NAME_train_set_state (and `fit`'s resume) take it back.
    let state = out.join("state.bin");
    std::fs::write(&state, lib.get_state().map_err(|e| e.message)?).map_err(|e| e.to_string())?;
    eprintln!("{} steps; {}", o.steps, state.display());
    Ok(())
}
