// Links libmlp_binary.a from the directory `forgec compile` wrote.
fn main() {
    let dir = std::env::var("FORGEC_ARTIFACT_DIR").expect("set FORGEC_ARTIFACT_DIR to the `forgec compile -o` directory");
    println!("cargo:rerun-if-env-changed=FORGEC_ARTIFACT_DIR");
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static=mlp_binary");
    println!("cargo:rustc-link-lib=m");
}
