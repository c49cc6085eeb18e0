//! `.keras` archives (zip: config.json, metadata.json, model.weights.h5).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = forgec_fuzz::file("m.keras", data);
    let _ = forgec_import::keras::load(&p, &forgec_fuzz::opts(true));
});
