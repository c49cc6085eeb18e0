//! What the fuzz targets share: a scratch directory per process, where each input is written
//! under the file name the importer expects (the importers read paths, as the CLI does).

use std::path::PathBuf;
use std::sync::OnceLock;

pub fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch directory"))
        .path()
}

/// Writes `data` as `name` in the scratch directory and returns its path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, data).expect("the scratch directory is writable");
    p
}

/// The load options of `forgec summary` (weights optional) and of `run` (weights required).
pub fn opts(need_weights: bool) -> forgec_import::keras::LoadOptions {
    forgec_import::keras::LoadOptions {
        weights: None,
        allow_missing_weights: !need_weights,
        input_shape: None,
    }
}
