//! `.npy` and `.npz` inputs (the first byte picks).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick & 1 == 0 {
        let _ = forgec_runtime::read_npy_bytes(rest);
    } else {
        let p = forgec_fuzz::file("x.npz", rest);
        let _ = forgec_runtime::read_npz(&p);
    }
});
