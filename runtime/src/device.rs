//! What CUDA this machine has, found at run time without linking anything of CUDA: the
//! driver library (`libcuda.so.1`) is opened with `dlopen`, initialised, and asked for its
//! version and devices. Absence is an answer with what to check, never a panic (cudarc's
//! loader panics when the driver is missing; this looks first).

/// The CUDA driver and its devices, or why there are none.
#[derive(Clone, Debug, PartialEq)]
pub struct CudaDriver {
    /// The driver's CUDA version, e.g. 13000 for 13.0.
    pub version: i32,
    pub devices: i32,
}

/// Opens the driver and counts its devices.
pub fn cuda_driver() -> Result<CudaDriver, String> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuVersion = unsafe extern "C" fn(*mut i32) -> i32;
    type CuCount = unsafe extern "C" fn(*mut i32) -> i32;
    // SAFETY: loading the system's CUDA driver runs its initialisers, as any CUDA program does.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }.map_err(|e| {
        format!(
            "no CUDA driver: libcuda.so.1 cannot be loaded ({e}); install the NVIDIA driver, and check with `nvidia-smi`"
        )
    })?;
    let sym = |name: &[u8]| -> Result<*const (), String> {
        // SAFETY: the symbols are read as the driver API declares them.
        unsafe { lib.get::<*const ()>(name) }
            .map(|s| *s)
            .map_err(|e| format!("libcuda.so.1 has no {}: {e}", String::from_utf8_lossy(name)))
    };
    // SAFETY: cuInit, cuDriverGetVersion and cuDeviceGetCount have these C signatures.
    unsafe {
        let init: CuInit = std::mem::transmute(sym(b"cuInit")?);
        let version: CuVersion = std::mem::transmute(sym(b"cuDriverGetVersion")?);
        let count: CuCount = std::mem::transmute(sym(b"cuDeviceGetCount")?);
        let rc = init(0);
        if rc != 0 {
            return Err(format!(
                "the CUDA driver does not start (cuInit returned {rc}{}); check `nvidia-smi`",
                if rc == 100 { ": no CUDA device" } else { "" }
            ));
        }
        let (mut v, mut n) = (0, 0);
        if version(&mut v) != 0 || count(&mut n) != 0 {
            return Err("the CUDA driver does not answer for its version or devices".into());
        }
        Ok(CudaDriver {
            version: v,
            devices: n,
        })
    }
}
