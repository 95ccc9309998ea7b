//! The sandbox's seccomp filter, installed by the agent on itself as its
//! first act, so it holds for everything the agent later starts.
//!
//! runc used to install it, compiling the JSON profile into BPF on every
//! create (about 5 ms of CPU per sandbox). The agent's build compiles the
//! same profile once (`build.rs`); nothing untrusted has run in the sandbox
//! before this point, and the agent serves no request until it succeeds: if
//! it fails the agent exits and the sandbox never starts (fail closed).

/// The allowlist (everything else: ENOSYS) and the deny list (EPERM), as
/// `struct sock_filter` arrays; installed in this order (see `build.rs`).
const PROGRAMS: [(&str, &[u8]); 2] = [
    (
        "allowlist",
        include_bytes!(concat!(env!("OUT_DIR"), "/seccomp-allow.bpf")),
    ),
    (
        "deny list",
        include_bytes!(concat!(env!("OUT_DIR"), "/seccomp-deny.bpf")),
    ),
];

/// Installs both filters on the calling thread; call it while the process
/// has no other thread, so everything started later inherits them.
pub fn install() -> Result<(), String> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) only sets this process's flag
    // (runc sets it too); a filter without CAP_SYS_ADMIN requires it.
    if unsafe { nix::libc::prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    for (name, bytes) in PROGRAMS {
        let program: Vec<nix::libc::sock_filter> = bytes
            .chunks_exact(8)
            .map(|i| nix::libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect();
        let len = u16::try_from(program.len()).map_err(|_| format!("the {name} is too long"))?;
        if len == 0 || bytes.len() % 8 != 0 {
            return Err(format!("the {name} is not a BPF program"));
        }
        let fprog = nix::libc::sock_fprog {
            len,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads `fprog` and the
        // `len` instructions it points to, both alive for the call; the
        // kernel copies the program.
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
