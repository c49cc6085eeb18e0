//! `--cpu portable`: one library with the model compiled for several x86-64 levels (v2, v3,
//! v4), the best one the CPU has picked when the library is loaded.
//!
//! Each level is a part of the library of its own (`level_part`: its kernels, wrapper and C API
//! under its own prefix, none exported), lowered with that level's vector width (packing,
//! Winograd, tiles) and compiled for that level's instructions; the levels share one weights
//! blob or file, where a constant no level packs is stored once (`capi::weights_files`). The
//! library's own entry points are GNU indirect functions (`dispatcher`): the dynamic loader
//! (or a static program's start-up code) calls a resolver once per entry point, which reads
//! CPUID and XCR0 (the CPU's instructions and what the OS saves) and returns that level's
//! function, as glibc picks its string functions. No call pays for the choice afterwards.

use std::fmt::Write;

/// The x86-64 levels a portable library holds, lowest first.
pub const LEVELS: [u32; 3] = [2, 3, 4];

/// LLVM's name of a level.
pub fn level_cpu(level: u32) -> String {
    format!("x86-64-v{level}")
}

/// The name of one level's part of a portable library's part `part`.
pub fn level_part(part: &str, level: u32) -> String {
    format!("{part}_forgec_v{level}")
}

/// The environment variable that lowers the level a portable library picks.
pub const LEVEL_ENV: &str = "FORGEC_CPU_LEVEL";

/// The dispatcher's C: each of `parts`' functions (`PART_FUNCTION`) an indirect function that
/// resolves to the picked level's (`level_part(PART)_FUNCTION`). With `map_weights`, a
/// constructor maps the library's weights file through the picked level's wrapper (its
/// `NAME_map_weights`, not a constructor in a level).
pub fn dispatcher(library: &str, parts: &[(String, Vec<String>)], map_weights: bool) -> String {
    let n = library;
    let mut c = String::new();
    let _ = write!(
        c,
        r#"/* {n}: the library's entry points, each resolved once, when the library is loaded, to the
 * code of the best x86-64 level this CPU runs (GNU indirect functions). {env}=x86-64-v2
 * (or -v3) in the environment picks a lower level than the CPU has, never a higher one. */
#include <cpuid.h>
#include <stdint.h>

/* The level the CPU and the OS support: 4 (AVX-512 F, BW, CD, DQ, VL, with the OS saving the
 * opmask and ZMM state), 3 (AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE, with the OS saving YMM),
 * 2 (SSE4.2, SSSE3, POPCNT, CMPXCHG16B, LAHF), else 1. */
static int {n}_level_cpu(void) {{
    unsigned a, b, c, d, ea = 0, eb = 0, ec = 0, ed = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 1;
    __get_cpuid(0x80000001u, &ea, &eb, &ec, &ed);
    const unsigned v2 = 1u << 0 | 1u << 9 | 1u << 13 | 1u << 19 | 1u << 20 | 1u << 23;
    if ((c & v2) != v2 || !(ec & 1u)) return 1;
    const unsigned v3 = 1u << 12 | 1u << 22 | 1u << 26 | 1u << 27 | 1u << 28 | 1u << 29;
    if ((c & v3) != v3 || !(ec & 1u << 5)) return 2;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    unsigned a7, b7, c7, d7;
    if ((lo & 6u) != 6u || !__get_cpuid_count(7, 0, &a7, &b7, &c7, &d7)) return 2;
    const unsigned v3b = 1u << 3 | 1u << 5 | 1u << 8;
    if ((b7 & v3b) != v3b) return 2;
    const unsigned v4 = 1u << 16 | 1u << 17 | 1u << 28 | 1u << 30 | 1u << 31;
    if ((b7 & v4) != v4 || (lo & 0xe6u) != 0xe6u) return 3;
    return 4;
}}

/* {env}: 2, 3 or 4 from "x86-64-vN" or "vN"; 0 when unset or anything else. Read from
 * /proc/self/environ (the environment the process started with) by system calls alone:
 * resolvers may run before the C library has set up `environ` (a program linking the static
 * library, or bound at load) and must call nothing that needs relocating. */
static long {n}_sys(long nr, long a, long b, long c) {{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}}
static int {n}_level_value(const char *s) {{
    static const char x[] = "x86-64-";
    int i = 0;
    while (x[i] && s[i] == x[i]) i++;
    if (!x[i]) s += i;
    return s[0] == 'v' && s[1] >= '2' && s[1] <= '4' && !s[2] ? s[1] - '0' : 0;
}}
static int {n}_level_asked(void) {{
    static const char key[] = "{env}=";
    static const char path[] = "/proc/self/environ";
    char buf[4096], val[16];
    long fd = {n}_sys(2 /* open */, (long)path, 0 /* O_RDONLY */, 0), got;
    int at = 0, nv = -1, level = 0;
    if (fd < 0) return 0;
    /* at: the key's characters matched at the start of this variable (-1: not it);
     * nv: the value's characters, once the key matched. */
    while (nv < 17 && (got = {n}_sys(0 /* read */, fd, (long)buf, sizeof buf)) > 0) {{
        for (long i = 0; i < got && nv < 17; i++) {{
            char ch = buf[i];
            if (nv >= 0) {{
                if (ch == 0) {{ val[nv] = 0; level = {n}_level_value(val); nv = 17; }}
                else if (nv < 15) val[nv++] = ch;
                else nv = 17;
            }} else if (ch == 0) at = 0;
            else if (at >= 0 && ch == key[at]) {{ if (!key[++at]) nv = 0; }}
            else at = -1;
        }}
    }}
    if (nv >= 0 && nv < 16) {{ val[nv] = 0; level = {n}_level_value(val); }}
    {n}_sys(3 /* close */, fd, 0, 0);
    return level;
}}

/* The level to run: the CPU's, or a lower one asked for; a CPU below x86-64-v2 gets v2's code,
 * as a library built for x86-64-v2 alone would. */
static int {n}_level(void) {{
    static volatile int level;
    if (!level) {{
        int have = {n}_level_cpu(), want = {n}_level_asked();
        if (want && want < have) have = want;
        level = have < 2 ? 2 : have;
    }}
    return level;
}}

typedef void {n}_fn(void);
"#,
        env = LEVEL_ENV,
    );
    let pick = |c: &mut String, f: &str, target: &dyn Fn(u32) -> String| {
        let decls: Vec<String> = LEVELS.iter().map(|&l| target(l)).collect();
        let _ = writeln!(c, "extern {n}_fn {};", decls.join(", "));
        let _ = writeln!(c, "static {n}_fn *{n}_pick_{f}(void) {{");
        let _ = writeln!(c, "    switch ({n}_level()) {{");
        for (&l, d) in LEVELS.iter().zip(&decls).rev() {
            if l == LEVELS[0] {
                let _ = writeln!(c, "    default: return {d};");
            } else {
                let _ = writeln!(c, "    case {l}: return {d};");
            }
        }
        let _ = writeln!(c, "    }}\n}}");
    };
    for (part, functions) in parts {
        for f in functions {
            let local = format!("{part}_{f}");
            pick(&mut c, &local, &|l| format!("{}_{f}", level_part(part, l)));
            let _ = writeln!(
                c,
                "void {local}(void) __attribute__((ifunc(\"{n}_pick_{local}\")));\n"
            );
        }
    }
    if map_weights {
        pick(&mut c, "map_weights", &|l| {
            format!("{}_map_weights", level_part(library, l))
        });
        let _ = writeln!(
            c,
            "/* The picked level's wrapper maps the weights file (and keeps why it could not). */\n__attribute__((constructor)) static void {n}_map_weights(void) {{ {n}_pick_map_weights()(); }}"
        );
    }
    c
}
