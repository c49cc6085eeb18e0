//! HDF5 weight files: Keras 3 `.weights.h5` beside a fixed model JSON, and whole-model
//! tf.keras `.h5` files (the first byte picks). libhdf5 runs in a child process
//! (`keras::weights`): the child may crash, this process must not.
#![no_main]
const JSON: &[u8] = include_bytes!("../seeds/mlp_binary.json");
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick & 1 == 0 {
        forgec_fuzz::file("m.weights.h5", rest);
        let p = forgec_fuzz::file("m.json", JSON);
        let _ = forgec_import::keras::load(&p, &forgec_fuzz::opts(true));
    } else {
        let p = forgec_fuzz::file("w.h5", rest);
        let _ = forgec_import::keras::load(&p, &forgec_fuzz::opts(true));
    }
});
