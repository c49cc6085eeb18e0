//! The child process that reads an HDF5 file for `WeightFile`, and the parent's end of it.
//!
//! The parent forks (holding hdf5's global lock, so the child inherits it unlocked by no one
//! else), the child opens the file and serves requests on a socket pair until the socket
//! closes. Requests: an op byte, then strings (u32 length, bytes). Answers: a status byte
//! (0 ok, 1 an error string follows), then the op's payload. The child lives under
//! `RLIMIT_AS` (its address space now plus a budget from the file's size); the parent waits
//! for each answer at most a time from the file's size, and reads no length it did not expect.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    F32,
    F64,
    I32,
    I64,
    Bool,
}

impl Kind {
    fn code(self) -> u8 {
        self as u8
    }
    fn from_code(c: u8) -> Option<Kind> {
        [Kind::F32, Kind::F64, Kind::I32, Kind::I64, Kind::Bool]
            .get(c as usize)
            .copied()
    }
    pub fn width(self) -> usize {
        match self {
            Kind::F32 | Kind::I32 => 4,
            Kind::F64 | Kind::I64 => 8,
            Kind::Bool => 1,
        }
    }
}

const EXISTS: u8 = 1;
const HAS_ATTR: u8 = 2;
const STR_ATTR: u8 = 3;
const STR_LIST_ATTR: u8 = 4;
const MEMBERS: u8 = 5;
const INFO: u8 = 6;
const READ: u8 = 7;

/// The parent's handle on a child serving one file.
pub struct Child {
    pid: libc::pid_t,
    sock: Option<UnixStream>,
    /// The most bytes any answer may carry (strings and data both).
    max_answer: u64,
    /// Why the child is gone, once it is.
    dead: Option<String>,
}

impl Child {
    /// Forks a child that opens `path`; its first answer says whether it could.
    pub fn spawn(path: &Path) -> Result<Child, String> {
        let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("cannot make a socket: {e}"))?;
        // SAFETY: the child only calls libhdf5 and plain Rust code on its own memory, then
        // `_exit`s; holding hdf5's lock across fork() means no other thread holds it then,
        // and `with_hdf5` that no other thread waits for it (see `HDF5_GUARD`).
        let pid = super::with_hdf5(|| hdf5::sync::sync(|| unsafe { libc::fork() }));
        if pid < 0 {
            return Err(format!(
                "cannot start the HDF5 reader process: {}",
                std::io::Error::last_os_error()
            ));
        }
        if pid == 0 {
            // The child never outlives its parent (a parent that exits without dropping its
            // Child, while libhdf5 loops here, would leave it spinning), nor uses more CPU time
            // than the parent would wait for.
            // SAFETY: plain syscalls on this process.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() == 1 {
                    libc::_exit(102);
                }
            }
            limit_cpu(cpu_seconds(size));
            drop(ours);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                close_other_fds(std::os::fd::AsRawFd::as_raw_fd(&theirs));
                limit_memory(size);
                serve(theirs, path)
            }))
            .map_or(101, |()| 0);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        drop(theirs);
        let secs = cpu_seconds(size);
        let _ = ours.set_read_timeout(Some(Duration::from_secs(secs)));
        let mut c = Child {
            pid,
            sock: Some(ours),
            max_answer: size.saturating_mul(2).saturating_add(1 << 20),
            dead: None,
        };
        c.answer()?;
        Ok(c)
    }

    fn request(&mut self, op: u8, args: &[&str]) -> Result<(), String> {
        if let Some(d) = &self.dead {
            return Err(d.clone());
        }
        let mut buf = vec![op];
        for a in args {
            buf.extend_from_slice(&(a.len() as u32).to_le_bytes());
            buf.extend_from_slice(a.as_bytes());
        }
        let sock = self.sock.as_mut().expect("alive");
        if sock.write_all(&buf).is_err() {
            return Err(self.died());
        }
        self.answer()
    }

    /// Reads the status of an answer: Ok, or the child's error.
    fn answer(&mut self) -> Result<(), String> {
        match self.u8()? {
            0 => Ok(()),
            _ => {
                let e = self.string()?;
                Err(e)
            }
        }
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, String> {
        if n > self.max_answer {
            return Err(self.fail(format!(
                "the HDF5 reader answered with {n} bytes, more than the file can hold"
            )));
        }
        let mut v = vec![0u8; n as usize];
        let sock = self.sock.as_mut().ok_or("the HDF5 reader is gone")?;
        match sock.read_exact(&mut v) {
            Ok(()) => Ok(v),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(self.fail("libhdf5 did not answer in time: the file is malformed (or far larger than it says)".into()))
            }
            Err(_) => Err(self.died()),
        }
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as u64;
        Ok(String::from_utf8_lossy(&self.bytes(n)?).into_owned())
    }
    fn strings(&mut self) -> Result<Vec<String>, String> {
        let n = self.u32()?;
        (0..n).map(|_| self.string()).collect()
    }

    /// Kills the child (if still there) and remembers why it is gone.
    fn fail(&mut self, why: String) -> String {
        self.reap();
        self.dead = Some(why.clone());
        why
    }

    /// The child closed its end: say how it died.
    fn died(&mut self) -> String {
        let mut status = 0;
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.pid = 0;
        self.sock = None;
        let why = if r > 0 && libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGXCPU {
            "libhdf5 did not answer in time (it looped on this file past its CPU time limit): the file is malformed".to_string()
        } else if r > 0 && libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            let name = match sig {
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGKILL => " (SIGKILL: out of memory?)",
                _ => "",
            };
            format!("libhdf5 crashed on this file with signal {sig}{name}: the file is malformed; forgec read it in a separate process and is unharmed (re-save the weights with model.save_weights())")
        } else {
            "the HDF5 reader stopped: the file is malformed or needs more memory than it can hold"
                .into()
        };
        self.dead = Some(why.clone());
        why
    }

    fn reap(&mut self) {
        self.sock = None;
        if self.pid > 0 {
            // SAFETY: our own child; reaped right after.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            self.pid = 0;
        }
    }

    pub fn exists(&mut self, path: &str) -> Result<bool, String> {
        self.request(EXISTS, &[path])?;
        Ok(self.u8()? != 0)
    }

    pub fn has_attr(&mut self, loc: &str, name: &str) -> Result<bool, String> {
        self.request(HAS_ATTR, &[loc, name])?;
        Ok(self.u8()? != 0)
    }

    pub fn str_attr(&mut self, loc: &str, name: &str) -> Result<Option<String>, String> {
        self.request(STR_ATTR, &[loc, name])?;
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.string()?),
        })
    }

    pub fn str_list_attr(&mut self, loc: &str, name: &str) -> Result<Option<Vec<String>>, String> {
        self.request(STR_LIST_ATTR, &[loc, name])?;
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.strings()?),
        })
    }

    pub fn members(&mut self, group: &str) -> Result<Vec<String>, String> {
        self.request(MEMBERS, &[group])?;
        self.strings()
    }

    pub fn info(&mut self, path: &str) -> Result<(Vec<usize>, Kind), String> {
        self.request(INFO, &[path])?;
        let kind = Kind::from_code(self.u8()?).ok_or("a bad element type")?;
        let rank = self.u32()?;
        if rank > 32 {
            return Err(format!("a dataset of rank {rank}"));
        }
        let dims = (0..rank)
            .map(|_| self.u64().map(|d| d as usize))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((dims, kind))
    }

    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, String> {
        self.request(READ, &[path])?;
        let n = self.u64()?;
        self.bytes(n)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.reap();
    }
}

/// How long the parent waits for one answer, and the child's CPU time in all: generous for a
/// healthy file, 30 s plus 1 s per 20 MB of it.
fn cpu_seconds(file_size: u64) -> u64 {
    30 + file_size / 20_000_000
}

fn limit_cpu(secs: u64) {
    let lim = libc::rlimit {
        rlim_cur: secs,
        rlim_max: secs + 1,
    };
    // SAFETY: sets this (child) process's own limit.
    unsafe { libc::setrlimit(libc::RLIMIT_CPU, &lim) };
}

/// The child keeps its socket and the standard streams only: another reader's socket end,
/// inherited from a fork on another thread, would keep that reader from seeing its child die.
fn close_other_fds(keep: i32) {
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && fd != keep {
            // SAFETY: this child owns its copies of the descriptors and uses none of these.
            unsafe { libc::close(fd) };
        }
    }
}

/// The child's address space may grow by a budget from the file's size: a file that declares
/// far more data than it holds makes libhdf5's allocations fail, not the machine swap.
fn limit_memory(file_size: u64) {
    let page = 4096u64;
    let now = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |p| p * page);
    if now == 0 {
        return;
    }
    let budget = (1u64 << 30).saturating_add(file_size.saturating_mul(4));
    let lim = libc::rlimit {
        rlim_cur: now.saturating_add(budget),
        rlim_max: now.saturating_add(budget),
    };
    // SAFETY: sets this (child) process's own limit.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
}

// ---- the child's side ----

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

fn read_arg(sock: &mut UnixStream) -> Option<String> {
    let mut n = [0u8; 4];
    sock.read_exact(&mut n).ok()?;
    let n = u32::from_le_bytes(n) as usize;
    if n > 1 << 20 {
        return None;
    }
    let mut b = vec![0u8; n];
    sock.read_exact(&mut b).ok()?;
    String::from_utf8(b).ok()
}

fn serve(mut sock: UnixStream, path: &Path) {
    let file_size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let file = match hdf5::File::open(path) {
        Ok(f) => {
            let _ = sock.write_all(&[0]);
            f
        }
        Err(e) => {
            let mut o = Out(vec![1]);
            o.string(&e.to_string());
            let _ = sock.write_all(&o.0);
            return;
        }
    };
    loop {
        let mut op = [0u8; 1];
        if sock.read_exact(&mut op).is_err() {
            return;
        }
        let nargs = match op[0] {
            EXISTS | MEMBERS | INFO | READ => 1,
            HAS_ATTR | STR_ATTR | STR_LIST_ATTR => 2,
            _ => return,
        };
        let mut args = Vec::new();
        for _ in 0..nargs {
            match read_arg(&mut sock) {
                Some(a) => args.push(a),
                None => return,
            }
        }
        let mut o = Out(vec![0]);
        let r = answer(&file, file_size, op[0], &args, &mut o);
        let o = match r {
            Ok(()) => o,
            Err(e) => {
                let mut o = Out(vec![1]);
                o.string(&e);
                o
            }
        };
        if sock.write_all(&o.0).is_err() {
            return;
        }
    }
}

fn location(file: &hdf5::File, loc: &str) -> Result<hdf5::Group, String> {
    if loc.is_empty() {
        file.group("/").map_err(|e| e.to_string())
    } else {
        file.group(loc).map_err(|e| e.to_string())
    }
}

fn answer(
    file: &hdf5::File,
    file_size: u64,
    op: u8,
    a: &[String],
    o: &mut Out,
) -> Result<(), String> {
    use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
    match op {
        EXISTS => o.u8(file.link_exists(&a[0]) as u8),
        HAS_ATTR => o.u8(location(file, &a[0]).is_ok_and(|g| g.attr(&a[1]).is_ok()) as u8),
        STR_ATTR => match location(file, &a[0])
            .ok()
            .and_then(|g| read_string_attr(&g, &a[1]))
        {
            Some(s) => {
                o.u8(1);
                o.string(&s);
            }
            None => o.u8(0),
        },
        STR_LIST_ATTR => match location(file, &a[0])
            .ok()
            .and_then(|g| read_string_list_attr(&g, &a[1]))
        {
            Some(v) => {
                o.u8(1);
                o.u32(v.len() as u32);
                for s in &v {
                    o.string(s);
                }
            }
            None => o.u8(0),
        },
        MEMBERS => {
            let names = file
                .group(&a[0])
                .and_then(|g| g.member_names())
                .map_err(|e| e.to_string())?;
            o.u32(names.len() as u32);
            for n in &names {
                o.string(n);
            }
        }
        INFO | READ => {
            let ds = file.dataset(&a[0]).map_err(|e| e.to_string())?;
            let shape = ds.shape();
            let desc = ds
                .dtype()
                .and_then(|t| t.to_descriptor())
                .map_err(|e| e.to_string())?;
            let kind = match desc {
                TypeDescriptor::Float(FloatSize::U4) => Kind::F32,
                TypeDescriptor::Float(FloatSize::U8) => Kind::F64,
                TypeDescriptor::Integer(IntSize::U8) | TypeDescriptor::Unsigned(IntSize::U8) => {
                    Kind::I64
                }
                TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => Kind::I32,
                TypeDescriptor::Boolean => Kind::Bool,
                other => return Err(format!("unsupported element type {other:?}")),
            };
            let logical = shape
                .iter()
                .try_fold(kind.width() as u64, |a, &d| a.checked_mul(d as u64))
                .ok_or_else(|| format!("shape {shape:?} overflows"))?;
            // What the file actually stores: a dataset cannot hold more than the file, and
            // one that declares data it never wrote (all fill values) is not a weight.
            let stored = ds.storage_size();
            if op == INFO {
                o.u8(kind.code());
                o.u32(shape.len() as u32);
                for &d in &shape {
                    o.u64(d as u64);
                }
                return Ok(());
            }
            if logical > 0 && stored == 0 {
                return Err(format!("declares shape {shape:?} but stores no data"));
            }
            if stored > file_size || logical > stored.saturating_mul(1100).saturating_add(1 << 20) {
                return Err(format!(
                    "declares shape {shape:?} ({logical} bytes) but the file holds {stored} bytes of it: the file is malformed"
                ));
            }
            {
                let bad = |e: hdf5::Error| e.to_string();
                let bytes: Vec<u8> = match kind {
                    Kind::F32 => ds
                        .read_raw::<f32>()
                        .map_err(bad)?
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                    Kind::F64 => ds
                        .read_raw::<f64>()
                        .map_err(bad)?
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                    Kind::I64 => ds
                        .read_raw::<i64>()
                        .map_err(bad)?
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                    Kind::I32 => ds
                        .read_raw::<i32>()
                        .map_err(bad)?
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                    Kind::Bool => ds
                        .read_raw::<bool>()
                        .map_err(bad)?
                        .iter()
                        .map(|&b| b as u8)
                        .collect(),
                };
                o.u64(bytes.len() as u64);
                o.0.extend_from_slice(&bytes);
            }
        }
        _ => return Err("unknown request".into()),
    }
    Ok(())
}

fn read_string_attr(loc: &hdf5::Location, name: &str) -> Option<String> {
    let a = loc.attr(name).ok()?;
    if let Ok(s) = a.read_scalar::<hdf5::types::VarLenUnicode>() {
        return Some(s.as_str().to_string());
    }
    if let Ok(s) = a.read_scalar::<hdf5::types::VarLenAscii>() {
        return Some(s.as_str().to_string());
    }
    // Fixed-length strings: read the raw bytes.
    let bytes: Vec<u8> = a.read_raw::<u8>().ok()?;
    Some(
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .to_string(),
    )
}

fn read_string_list_attr(loc: &hdf5::Location, name: &str) -> Option<Vec<String>> {
    let a = loc.attr(name).ok()?;
    if let Ok(v) = a.read_raw::<hdf5::types::VarLenUnicode>() {
        return Some(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    if let Ok(v) = a.read_raw::<hdf5::types::VarLenAscii>() {
        return Some(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    None
}
