//! ONNX ModelProto bytes (protobuf), through import and its constant folding.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = forgec_fuzz::file("m.onnx", data);
    let _ = forgec_import::onnx::load(&p);
});
