//! The importers' one error type: every problem found in a model file, each naming the file
//! and the place in it (a JSON path, an HDF5 dataset, a layer or node).

/// All the problems found while importing, each naming the file and the place in it.
#[derive(Debug)]
pub struct ImportError {
    pub problems: Vec<String>,
    /// True when every problem is a layer fed a shape it was not built for (the data's
    /// shape, for `check`), not a broken or unsupported file.
    pub shape_only: bool,
    /// ONNX: graph inputs the importer needs as constants (shapes, axes, RNN weights fed as
    /// data); binding them (`onnx::load_with`) makes the model importable.
    pub needs_const: Vec<String>,
}

impl ImportError {
    /// One problem (of a broken or unsupported file).
    pub fn one(msg: String) -> ImportError {
        ImportError {
            problems: vec![msg],
            shape_only: false,
            needs_const: vec![],
        }
    }
}

impl ImportError {
    /// Several problems (of a broken or unsupported file).
    pub fn many(problems: Vec<String>) -> ImportError {
        ImportError {
            problems,
            shape_only: false,
            needs_const: vec![],
        }
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ImportError {}

/// An import that fails with one problem.
pub(crate) fn fail<T>(msg: String) -> Result<T, ImportError> {
    Err(ImportError::one(msg))
}
