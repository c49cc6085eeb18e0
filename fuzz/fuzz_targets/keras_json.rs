//! Keras `model.to_json()` text (Sequential and Functional configs): any bytes import to a
//! model or to an error, never a panic or an unbounded allocation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = forgec_fuzz::file("m.json", data);
    let _ = forgec_import::keras::load(&p, &forgec_fuzz::opts(false));
});
