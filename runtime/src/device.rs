//! What CUDA this machine has, found at run time without linking anything of CUDA: the
//! driver library (`libcuda.so.1`) is opened with `dlopen`, initialised, and asked for its
//! version and devices. Absence is an answer with what to check, never a panic (cudarc's
//! loader panics when the driver is missing; this looks first).

/// The CUDA driver and its devices, or why there are none.
#[derive(Clone, Debug, PartialEq)]
pub struct CudaDriver {
    /// The CUDA version the driver implements, e.g. 13000 for 13.0 (`cuDriverGetVersion`).
    pub version: i32,
    /// The NVIDIA kernel driver's version (`/proc/driver/nvidia/version`), where it says.
    pub kernel_driver: Option<String>,
    pub devices: Vec<CudaDevice>,
}

/// A CUDA device as the driver describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct CudaDevice {
    pub ordinal: i32,
    pub name: String,
    /// Compute capability (major, minor): (9, 0) is sm_90.
    pub compute_capability: (i32, i32),
    pub memory_bytes: u64,
    pub multiprocessors: i32,
}

impl CudaDriver {
    /// "13.0".
    pub fn version_text(&self) -> String {
        format!("{}.{}", self.version / 1000, self.version % 1000 / 10)
    }
}

// The driver API's attribute numbers (cuda.h's CUdevice_attribute).
const ATTR_MULTIPROCESSORS: i32 = 16;
const ATTR_CC_MAJOR: i32 = 75;
const ATTR_CC_MINOR: i32 = 76;

/// Opens the driver, starts it and describes its devices.
pub fn cuda_driver() -> Result<CudaDriver, String> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuInt = unsafe extern "C" fn(*mut i32) -> i32;
    type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type CuName = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
    type CuMem = unsafe extern "C" fn(*mut usize, i32) -> i32;
    type CuAttr = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
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
    // SAFETY: each symbol is transmuted to the C signature cuda.h gives it, and called with
    // buffers of the sizes it is told.
    unsafe {
        let init: CuInit = std::mem::transmute(sym(b"cuInit")?);
        let version: CuInt = std::mem::transmute(sym(b"cuDriverGetVersion")?);
        let count: CuInt = std::mem::transmute(sym(b"cuDeviceGetCount")?);
        let rc = init(0);
        if rc != 0 {
            return Err(format!(
                "the CUDA driver does not start (cuInit returned {rc}{}); check `nvidia-smi`",
                match rc {
                    100 => ": no CUDA device",
                    35 => ": the driver is older than the CUDA runtime it was asked for",
                    999 => ": an unknown error, often a driver and kernel module that do not match",
                    _ => "",
                }
            ));
        }
        let (mut v, mut n) = (0, 0);
        if version(&mut v) != 0 || count(&mut n) != 0 {
            return Err("the CUDA driver does not answer for its version or devices".into());
        }
        let get: CuDeviceGet = std::mem::transmute(sym(b"cuDeviceGet")?);
        let name: CuName = std::mem::transmute(sym(b"cuDeviceGetName")?);
        let mem: CuMem = std::mem::transmute(sym(b"cuDeviceTotalMem_v2")?);
        let attr: CuAttr = std::mem::transmute(sym(b"cuDeviceGetAttribute")?);
        let mut devices = Vec::new();
        for i in 0..n.max(0) {
            let mut d = 0;
            let failed = |what: &str, rc: i32| {
                format!("the CUDA driver does not describe device {i}: {what} returned {rc}")
            };
            let rc = get(&mut d, i);
            if rc != 0 {
                return Err(failed("cuDeviceGet", rc));
            }
            let mut buf = [0 as std::ffi::c_char; 256];
            let rc = name(buf.as_mut_ptr(), buf.len() as i32 - 1, d);
            if rc != 0 {
                return Err(failed("cuDeviceGetName", rc));
            }
            let mut bytes = 0usize;
            let rc = mem(&mut bytes, d);
            if rc != 0 {
                return Err(failed("cuDeviceTotalMem", rc));
            }
            let mut a = [0i32; 3];
            for (slot, which) in
                a.iter_mut()
                    .zip([ATTR_CC_MAJOR, ATTR_CC_MINOR, ATTR_MULTIPROCESSORS])
            {
                let rc = attr(slot, which, d);
                if rc != 0 {
                    return Err(failed("cuDeviceGetAttribute", rc));
                }
            }
            devices.push(CudaDevice {
                ordinal: i,
                name: std::ffi::CStr::from_ptr(buf.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
                compute_capability: (a[0], a[1]),
                memory_bytes: bytes as u64,
                multiprocessors: a[2],
            });
        }
        Ok(CudaDriver {
            version: v,
            kernel_driver: kernel_driver_version(),
            devices,
        })
    }
}

/// The NVIDIA kernel module's version, from `/proc/driver/nvidia/version` ("NVRM version:
/// NVIDIA UNIX x86_64 Kernel Module  550.54.15 ...").
fn kernel_driver_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    let line = text.lines().next()?;
    let after = line.split("Kernel Module").nth(1)?;
    after.split_whitespace().next().map(String::from)
}

/// What the CPU forgec runs on is and can do.
#[derive(Clone, Debug, PartialEq)]
pub struct Cpu {
    pub model: String,
    pub arch: &'static str,
    /// Threads the OS lets this process use.
    pub logical_cores: usize,
    /// Physical cores, where /proc/cpuinfo says.
    pub physical_cores: Option<usize>,
    /// The vector and bit-manipulation extensions present, by their usual names.
    pub extensions: Vec<&'static str>,
    /// The highest x86-64 microarchitecture level it meets (1 to 4; 0 elsewhere).
    pub x86_64_level: u8,
}

/// The CPU this process runs on.
pub fn cpu() -> Cpu {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|f| f.trim() == k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name")
        .or_else(|| field("Model"))
        .or_else(|| field("CPU part").map(|p| format!("CPU part {p}")))
        .unwrap_or_else(|| "unknown".into());
    // Physical cores: distinct (physical id, core id) pairs.
    let mut cores = std::collections::BTreeSet::new();
    let (mut phys, mut core) = (None, None);
    for l in info.lines() {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim() {
                "physical id" => phys = Some(v.trim().to_string()),
                "core id" => core = Some(v.trim().to_string()),
                _ => {}
            }
        }
        if l.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                cores.insert((p, c));
            }
        }
    }
    if let (Some(p), Some(c)) = (phys, core) {
        cores.insert((p, c));
    }
    let (extensions, level) = extensions();
    Cpu {
        model,
        arch: std::env::consts::ARCH,
        logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        physical_cores: (!cores.is_empty()).then_some(cores.len()),
        extensions,
        x86_64_level: level,
    }
}

#[cfg(target_arch = "x86_64")]
fn extensions() -> (Vec<&'static str>, u8) {
    macro_rules! has {
        ($($f:tt),*) => { vec![$(($f, std::arch::is_x86_feature_detected!($f))),*] };
    }
    let all: Vec<(&'static str, bool)> = has!(
        "sse2",
        "sse3",
        "ssse3",
        "sse4.1",
        "sse4.2",
        "popcnt",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "bmi1",
        "bmi2",
        "lzcnt",
        "movbe",
        "avx512f",
        "avx512bw",
        "avx512cd",
        "avx512dq",
        "avx512vl",
        "avx512vnni",
        "avx512bf16",
        "avx512fp16"
    );
    let on = |f: &str| all.iter().any(|(n, y)| *n == f && *y);
    let v2 = ["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"]
        .iter()
        .all(|f| on(f));
    let v3 = v2
        && [
            "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "lzcnt", "movbe",
        ]
        .iter()
        .all(|f| on(f));
    let v4 = v3
        && ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
            .iter()
            .all(|f| on(f));
    let names = all.iter().filter(|(_, y)| *y).map(|(n, _)| *n).collect();
    (names, 1 + u8::from(v2) + u8::from(v3) + u8::from(v4))
}

#[cfg(not(target_arch = "x86_64"))]
fn extensions() -> (Vec<&'static str>, u8) {
    (Vec::new(), 0)
}
