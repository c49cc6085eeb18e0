//! `forgec devices` and `--device cuda` against the machine's CPU (its /proc/cpuinfo flags)
//! and against a stand-in CUDA driver (`tests/c/fake_libcuda.c`, built as `libcuda.so.1` and
//! found through LD_LIBRARY_PATH): the driver API's answers as forgec reports them, and the
//! refusals with no driver, a driver that does not start, and a device that is not there.

use crate::common::*;

fn forgec_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_forgec"));
    c.args(args).env_remove("FORGEC_TRACK");
    for (k, v) in env {
        c.env(k, v);
    }
    out_of(c.output().unwrap())
}

#[test]
fn devices_reports_the_cpu_as_cpuinfo_does() {
    let o = forgec(&["devices", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let cpu = &v["cpu"];
    assert_eq!(cpu["arch"], std::env::consts::ARCH);
    assert_eq!(
        cpu["logical_cores"].as_u64().unwrap() as usize,
        std::thread::available_parallelism().unwrap().get()
    );
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split_once(':').unwrap().1.trim());
    if let Some(m) = model {
        assert_eq!(cpu["model"], m);
    }
    if std::env::consts::ARCH == "x86_64" {
        let flags: Vec<&str> = info
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap()
            .split_once(':')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ext: Vec<&str> = cpu["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        // The kernel's names for the same extensions.
        for (ours, kernel) in [
            ("avx", "avx"),
            ("avx2", "avx2"),
            ("fma", "fma"),
            ("avx512f", "avx512f"),
            ("avx512bw", "avx512bw"),
            ("sse4.2", "sse4_2"),
            ("bmi2", "bmi2"),
        ] {
            assert_eq!(ext.contains(&ours), flags.contains(&kernel), "{ours}");
        }
        let level = if ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
            .iter()
            .all(|f| flags.contains(f))
            && flags.contains(&"avx2")
        {
            "x86-64-v4"
        } else if ["avx2", "fma", "bmi1", "bmi2", "movbe", "f16c"]
            .iter()
            .all(|f| flags.contains(f))
        {
            "x86-64-v3"
        } else {
            "x86-64-v2"
        };
        assert_eq!(cpu["x86_64_level"], level);
        let lanes = cpu["native"]["f32_lanes"].as_u64().unwrap();
        let want = if flags.contains(&"avx512f") {
            16
        } else if flags.contains(&"avx2") {
            8
        } else {
            4
        };
        assert_eq!(lanes, want);
    }
    let text = forgec(&["devices"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.starts_with("CPU: "), "{}", text.stdout);
    assert!(
        text.stdout.contains("--cpu native targets LLVM's `"),
        "{}",
        text.stdout
    );
}

#[test]
fn devices_and_cuda_requests_follow_the_driver() {
    let dir = scratch("fake_cuda");
    let so = dir.join("libcuda.so.1");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cc = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&so)
        .arg(root.join("tests/c/fake_libcuda.c"))
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let lp = dir.to_str().unwrap();
    let fake = [("LD_LIBRARY_PATH", lp)];
    // Two devices, as the driver API describes them.
    let o = forgec_env(&["devices"], &fake);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("CUDA: driver for CUDA 13.0"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(
            "  cuda:0  Fake H100 80GB HBM3, compute capability 9.0 (sm_90), 80.0 GiB, 132 multiprocessors"
        ) && o.stdout.contains(
            "  cuda:1  Fake A100-SXM4-40GB, compute capability 8.0 (sm_80), 40.0 GiB, 108 multiprocessors"
        ),
        "{}",
        o.stdout
    );
    let j = forgec_env(&["devices", "--json"], &fake);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["cuda"]["available"], true);
    assert_eq!(v["cuda"]["cuda_version"], "13.0");
    assert_eq!(v["cuda"]["devices"][1]["sm"], "sm_80");
    assert_eq!(
        v["cuda"]["devices"][0]["memory_bytes"].as_u64(),
        Some(80u64 << 30)
    );
    // --device cuda: never a CPU run; a device that is not there is named.
    let f = fixtures().join("training");
    let m = model_file("mlp_binary.json");
    let x = f.join("mlp_binary.train_x.npy");
    let y = f.join("mlp_binary.train_y.npy");
    let out = dir.join("out");
    let train = |device: &str, env: &[(&str, &str)]| {
        forgec_env(
            &[
                "train",
                m.to_str().unwrap(),
                "--x",
                x.to_str().unwrap(),
                "--y",
                y.to_str().unwrap(),
                "--device",
                device,
                "--track",
                "none",
                "--out",
                out.to_str().unwrap(),
            ],
            env,
        )
    };
    let o = train("cuda:1", &fake);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("sees 2 device(s) (cuda:0 Fake H100 80GB HBM3, cuda:1 Fake A100-SXM4-40GB), but forgec's CUDA target does not compile training steps yet")
            && o.stderr.contains("forgec never falls back to the CPU by itself"),
        "{}",
        o.stderr
    );
    let o = train("cuda:2", &fake);
    assert!(
        o.stderr
            .contains("sees 2 device(s), cuda:0 to cuda:1 (`forgec devices` lists them)"),
        "{}",
        o.stderr
    );
    assert!(!out.join("history.json").exists());
    // A driver that does not start (cuInit: no device).
    let down = [("LD_LIBRARY_PATH", lp), ("FAKE_CUDA_INIT", "100")];
    let o = forgec_env(&["devices"], &down);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout
            .contains("CUDA: none: the CUDA driver does not start (cuInit returned 100: no CUDA device); check `nvidia-smi`"),
        "{}",
        o.stdout
    );
    let o = train("cuda", &down);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("cuInit returned 100"), "{}", o.stderr);
    // No driver at all (where this machine has none of its own).
    if forgec_runtime::device::cuda_driver().is_err() {
        let o = forgec(&["devices"]);
        assert!(
            o.stdout
                .contains("CUDA: none: no CUDA driver: libcuda.so.1 cannot be loaded"),
            "{}",
            o.stdout
        );
    } else {
        eprintln!("this machine has a CUDA driver: the no-driver message is not checked here");
    }
}
