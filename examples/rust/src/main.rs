//! Runs mlp_binary through its C API and prints the outputs, one per line.
use std::os::raw::{c_char, c_int};

#[repr(C)]
struct Ctx {
    _private: [u8; 0],
}

extern "C" {
    fn mlp_binary_create() -> *mut Ctx;
    fn mlp_binary_destroy(ctx: *mut Ctx);
    fn mlp_binary_last_error(ctx: *const Ctx) -> *const c_char;
    fn mlp_binary_run(ctx: *mut Ctx, batch: i64, input: *const f32, output: *mut f32) -> c_int;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (path, batch): (&str, usize) = (&args[1], args[2].parse().expect("a batch size"));
    let bytes = std::fs::read(path).expect("the input file");
    let input: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(input.len(), batch * 32, "mlp_binary takes 32 features per sample");
    let mut output = vec![0f32; batch];
    unsafe {
        let ctx = mlp_binary_create();
        let rc = mlp_binary_run(ctx, batch as i64, input.as_ptr(), output.as_mut_ptr());
        if rc != 0 {
            let msg = std::ffi::CStr::from_ptr(mlp_binary_last_error(ctx));
            panic!("mlp_binary_run failed ({rc}): {}", msg.to_string_lossy());
        }
        mlp_binary_destroy(ctx);
    }
    for v in output {
        println!("{v:.9}");
    }
}
