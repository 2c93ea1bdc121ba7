//! The bpf(2) commands the probe needs, by hand: aya 0.14 loads programs
//! only from an object file and keeps its raw instruction loader private;
//! its own helper probe decides by matching verifier strings and counts any
//! other refusal as support, which is exactly what misleads on a hardened
//! kernel. A probe here is a complete, valid program: if it loads, the
//! kernel has what it calls.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `enum bpf_cmd` (uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_prog_type`.
#[derive(Clone, Copy, Debug)]
pub enum ProgType {
    SchedCls = 3,
    Xdp = 6,
}

/// `enum bpf_attach_type`.
pub const BPF_XDP: u32 = 37;
pub const BPF_TCX_INGRESS: u32 = 46;
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// One `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// `dst = imm` (BPF_ALU64 | BPF_MOV | BPF_K).
pub const fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// `dst = src` (BPF_ALU64 | BPF_MOV | BPF_X).
pub const fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// `dst += imm` (BPF_ALU64 | BPF_ADD | BPF_K).
pub const fn add_imm(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// `*(u64 *)(dst + off) = imm` (BPF_ST | BPF_MEM | BPF_DW).
pub const fn store_dw(dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x7a, dst, 0, off, imm)
}
/// `call helper` (BPF_JMP | BPF_CALL).
pub const fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
/// BPF_JMP | BPF_EXIT.
pub const fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}

fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised prefix of union bpf_attr of the
    // size passed; pointers inside it point at live buffers of the sizes
    // given next to them.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<A>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn raw(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Why a load failed: the verifier's last words, else the errno.
#[derive(Debug)]
pub struct Refused {
    pub said: String,
    /// The first attempt's errno: EPERM is "not allowed to ask", not "no".
    pub errno: Option<i32>,
}

/// Loads `insns` as a program of `ty`. On refusal, loads once more with the
/// verifier's log on (a log from the first try could itself fail a valid
/// program with ENOSPC) and returns its last line.
pub fn load(ty: ProgType, insns: &[Insn]) -> Result<OwnedFd, Refused> {
    const LICENSE: &[u8] = b"GPL\0";
    let attr = |log: &mut [u8]| ProgLoad {
        prog_type: ty as u32,
        insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: u32::try_from(log.len()).unwrap_or(0),
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        prog_name: *b"rb_probe\0\0\0\0\0\0\0\0",
        ..ProgLoad::default()
    };
    let first = match bpf(BPF_PROG_LOAD, &mut attr(&mut [])) {
        Ok(fd) => {
            return owned(fd).map_err(|e| Refused {
                said: e.to_string(),
                errno: None,
            })
        }
        Err(e) => e,
    };
    let mut log = vec![0u8; 64 * 1024];
    let _ = bpf(BPF_PROG_LOAD, &mut attr(&mut log));
    let text = String::from_utf8_lossy(&log);
    let text = text.trim_end_matches('\0');
    let said = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        })
        .map_or_else(|| first.to_string(), |l| format!("{l} ({first})"));
    Err(Refused {
        said,
        errno: first.raw_os_error(),
    })
}

#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs `prog` once over `data` with `flags`; returns its return value.
pub fn test_run(prog: BorrowedFd<'_>, data: &[u8], flags: u32) -> io::Result<u32> {
    test_run_sized(prog, data, flags).map(|(retval, _)| retval)
}

/// The same, with the size of what the run hands back (the kernel reports it
/// even without an output buffer).
pub fn test_run_sized(prog: BorrowedFd<'_>, data: &[u8], flags: u32) -> io::Result<(u32, u32)> {
    let mut attr = TestRun {
        prog_fd: raw(prog)?,
        data_size_in: u32::try_from(data.len()).map_err(io::Error::other)?,
        data_in: data.as_ptr() as u64,
        repeat: 1,
        flags,
        ..TestRun::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok((attr.retval, attr.data_size_out))
}

#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    rest: [u64; 2],
}

/// Attaches `prog` to `ifindex` as a bpf link of `attach_type`.
pub fn bpf_link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate {
        prog_fd: raw(prog)?,
        target_ifindex: ifindex,
        attach_type,
        ..LinkCreate::default()
    };
    owned(bpf(BPF_LINK_CREATE, &mut attr)?)
}

#[repr(C)]
#[derive(Default)]
struct LinkDetach {
    link_fd: u32,
}

/// Takes the link's program off its hook now.
pub fn bpf_link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetach {
        link_fd: raw(link)?,
    };
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}
