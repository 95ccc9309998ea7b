//! The sandbox's seccomp filter, installed by the agent on itself as its
//! first act, so it holds for everything the agent later starts.
//!
//! runc used to install it, compiling the JSON profile into BPF on every
//! create (about 5 ms of CPU per sandbox). The agent's build compiles the
//! same profile once (`build.rs`); nothing untrusted has run in the sandbox
//! before this point, and the agent serves no request until it succeeds: if
//! it fails the agent exits and the sandbox never starts (fail closed).

/// A compiled program, aligned for the kernel's `struct sock_filter`.
#[repr(C, align(8))]
struct Program<T: ?Sized>(T);

/// The allowlist (everything else: ENOSYS) and the deny list (EPERM), as
/// `struct sock_filter` arrays; installed in this order, then the PID 1
/// filter (see `build.rs`).
/// Used in place, from the binary: a heap copy would stay in the agent's
/// memory for its whole life.
static ALLOWLIST: &Program<[u8]> = &Program(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/seccomp-allow.bpf"
)));
static DENY_LIST: &Program<[u8]> = &Program(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/seccomp-deny.bpf"
)));
/// EPERM for changing PID 1's scheduling, limits or memory placement by
/// naming it (see `build.rs`): what runs in the sandbox has the agent's uid.
static PID1: &Program<[u8]> = &Program(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/seccomp-pid1.bpf"
)));

/// Installs the three filters on the calling thread; call it while the process
/// has no other thread, so everything started later inherits them.
pub fn install() -> Result<(), String> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) only sets this process's flag
    // (runc sets it too); a filter without CAP_SYS_ADMIN requires it.
    if unsafe { nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    for (name, program) in [
        ("allowlist", ALLOWLIST),
        ("deny list", DENY_LIST),
        ("PID 1 filter", PID1),
    ] {
        let bytes = &program.0;
        let size = std::mem::size_of::<nix::libc::sock_filter>();
        let len =
            u16::try_from(bytes.len() / size).map_err(|_| format!("the {name} is too long"))?;
        if len == 0 || bytes.len() % size != 0 {
            return Err(format!("the {name} is not a BPF program"));
        }
        // `sock_filter` is 8 bytes of plain integers (u16, u8, u8, u32, no
        // padding), and `Program` aligns the bytes for it.
        let fprog = nix::libc::sock_fprog {
            len,
            filter: bytes.as_ptr().cast::<nix::libc::sock_filter>().cast_mut(),
        };
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) only reads `fprog` and
        // the `len` instructions it points to (static, aligned, exactly
        // `len` whole instructions as checked above); the kernel copies them.
        let rc = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_seccomp,
                nix::libc::SECCOMP_SET_MODE_FILTER,
                0,
                &raw const fprog,
            )
        };
        if rc != 0 {
            return Err(format!(
                "installing the {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
