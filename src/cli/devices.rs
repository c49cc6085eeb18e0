//! `forgec devices`: the CPU (model, cores, vector extensions, the x86-64 level, what `--cpu
//! native` targets) and every CUDA device the driver reports (name, compute capability, memory,
//! multiprocessors; the driver's CUDA version and the kernel module's). With no usable driver
//! it says exactly what is missing and how to check; that is an answer, not an error (exit 0).

use crate::UserError;
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// One JSON object, for programs
    #[arg(long)]
    pub json: bool,
}

pub fn cmd(a: Args) -> Result<i32, UserError> {
    let cpu = forgec_runtime::device::cpu();
    let native = crate::codegen::llvm::target(None, Some("native")).ok();
    let lanes = native.as_ref().map(crate::codegen::llvm::simd_lanes);
    let cuda = forgec_runtime::device::cuda_driver();
    if a.json {
        let c = match &cuda {
            Ok(d) => json!({
                "available": !d.devices.is_empty(),
                "cuda_version": d.version_text(),
                "kernel_driver": d.kernel_driver,
                "devices": d.devices.iter().map(|g| json!({
                    "ordinal": g.ordinal,
                    "device": format!("cuda:{}", g.ordinal),
                    "name": g.name,
                    "compute_capability": format!("{}.{}", g.compute_capability.0, g.compute_capability.1),
                    "sm": format!("sm_{}{}", g.compute_capability.0, g.compute_capability.1),
                    "memory_bytes": g.memory_bytes,
                    "multiprocessors": g.multiprocessors,
                })).collect::<Vec<Value>>(),
            }),
            Err(why) => json!({"available": false, "error": why, "devices": []}),
        };
        let doc = json!({
            "cpu": {
                "model": cpu.model,
                "arch": cpu.arch,
                "logical_cores": cpu.logical_cores,
                "physical_cores": cpu.physical_cores,
                "extensions": cpu.extensions,
                "x86_64_level": (cpu.x86_64_level > 0).then(|| format!("x86-64-v{}", cpu.x86_64_level)),
                "native": native.as_ref().map(|t| json!({"llvm_cpu": t.cpu, "f32_lanes": lanes})),
            },
            "cuda": c,
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        return Ok(0);
    }
    println!("CPU: {} ({})", cpu.model, cpu.arch);
    match cpu.physical_cores {
        Some(p) => println!(
            "  cores: {} usable by this process, {p} physical",
            cpu.logical_cores
        ),
        None => println!("  cores: {} usable by this process", cpu.logical_cores),
    }
    if !cpu.extensions.is_empty() {
        println!("  extensions: {}", cpu.extensions.join(" "));
    }
    if cpu.x86_64_level > 0 {
        println!(
            "  x86-64 level: v{} (libraries built with --cpu x86-64-v{} or lower run here; the default, --cpu portable, holds v2, v3 and v4 and runs v{} here)",
            cpu.x86_64_level,
            cpu.x86_64_level.max(2),
            cpu.x86_64_level.clamp(2, 4)
        );
    }
    if let (Some(t), Some(l)) = (&native, lanes) {
        println!(
            "  --cpu native targets LLVM's `{}`: f32 vectors of {l} lanes",
            t.cpu
        );
    }
    match &cuda {
        Err(why) => {
            println!("CUDA: none: {why}");
            println!(
                "  (forgec never runs a CUDA request on the CPU: --device cuda stops with this message)"
            );
        }
        Ok(d) => {
            let kd = d
                .kernel_driver
                .as_ref()
                .map(|v| format!(", NVIDIA driver {v}"))
                .unwrap_or_default();
            println!(
                "CUDA: driver for CUDA {}{kd}, {} device{}",
                d.version_text(),
                d.devices.len(),
                if d.devices.len() == 1 { "" } else { "s" }
            );
            for g in &d.devices {
                println!(
                    "  cuda:{}  {}, compute capability {}.{} (sm_{}{}), {:.1} GiB, {} multiprocessors",
                    g.ordinal,
                    g.name,
                    g.compute_capability.0,
                    g.compute_capability.1,
                    g.compute_capability.0,
                    g.compute_capability.1,
                    g.memory_bytes as f64 / (1u64 << 30) as f64,
                    g.multiprocessors
                );
            }
        }
    }
    Ok(0)
}
