#!/usr/bin/env python3
"""Writes seccomp/profile.json, the syscall allowlist of every sandbox.

The allowlist is every x86_64 system call the kernel headers name
(/usr/include/x86_64-linux-gnu/asm/unistd_64.h), minus DENIED below. A
syscall newer than those headers is refused (ENOSYS), so new kernel attack
surface is opt-in. Only the x86_64 ABI is allowed: x32 and i386 entry points
are refused wholesale. A few syscalls are allowed only with safe arguments.

Run it again after reviewing DENIED; commit the result. The file is data the
runtime embeds and a test checks, not generated at build time.

`generate.py --syscalls > syscalls_x86_64.txt` writes the header's names and
numbers: the agent's build compiles the profile into BPF itself (see
corral-agent's build.rs) and needs the numbers libseccomp knows for runc.
"""
import json
import re
import sys

HEADER = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"

# Refused outright (EPERM): kernel attack surface a sandboxed program has no
# business with, namespace and mount manipulation, tracing other processes,
# and the privileged calls capabilities already refuse.
DENIED = {
    # io_uring: a large, fast-moving kernel surface with a history of escapes.
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # Namespaces and mounts.
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "mount_setattr", "open_tree_attr",
    # eBPF, perf, keyrings, userfaultfd.
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
    # Kernel and module loading, rebooting, swapping, accounting, clocks.
    "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "create_module", "reboot", "swapon", "swapoff", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "syslog", "quotactl", "quotactl_fd", "nfsservctl", "vhangup", "uselib",
    "_sysctl", "lookup_dcookie", "iopl", "ioperm", "get_kernel_syms",
    "query_module", "sysfs", "ustat",
    # Other processes' memory and file handles.
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "open_by_handle_at", "name_to_handle_at", "pidfd_getfd",
    # Fanotify, NUMA page moving, personality tricks handled below.
    "fanotify_init", "move_pages", "migrate_pages", "mbind",
    # Allowed below only with safe arguments.
    "clone", "clone3", "ioctl", "personality", "socket",
}
CONDITIONAL = {"clone", "clone3", "ioctl", "personality", "socket"}

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x10000000, 0x20000000, 0x40000000
NAMESPACE_FLAGS = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
                   | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
AF_VSOCK = 40


def aligned_blocks(start, end):
    """[start, end) as aligned power-of-two blocks: (mask, value) pairs."""
    blocks = []
    while start < end:
        size = start & -start if start else 1 << 64
        while start + size > end:
            size //= 2
        blocks.append((~(size - 1) & 0xFFFFFFFFFFFFFFFF, start))
        start += size
    return blocks


def ioctl_rules():
    """ALLOW rules for ioctl covering every request but TIOCSTI and TIOCLINUX.

    The kernel reads the request as 32 bits while seccomp sees all 64, so
    a rule like "greater than TIOCLINUX" would let TIOCSTI | 1 << 32 through.
    Requests above TIOCLINUX are therefore allowed only up to 2**32, spelled
    as masked comparisons of aligned blocks, plus sign-extended negative
    requests (bit 31 set, which neither refused request has)."""
    def rule(op, value, two=None):
        arg = {"index": 1, "value": value, "op": op}
        if two is not None:
            arg["valueTwo"] = two
        return {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [arg]}
    rules = [rule("SCMP_CMP_LT", TIOCSTI)]
    rules += [rule("SCMP_CMP_EQ", v) for v in range(TIOCSTI + 1, TIOCLINUX)]
    rules += [rule("SCMP_CMP_MASKED_EQ", mask, value)
              for mask, value in aligned_blocks(TIOCLINUX + 1, 1 << 32)]
    rules.append(rule("SCMP_CMP_MASKED_EQ", 0xFFFFFFFF80000000, 0xFFFFFFFF80000000))
    return rules


def socket_rules():
    """ALLOW rules for socket covering every address family but AF_VSOCK.

    AF_VSOCK reaches the hypervisor (CID 2) and other VMs' services, past
    the sandbox's network namespace. The kernel reads the family as a 32-bit
    int, so the rules compare only the low 32 bits (a family of
    AF_VSOCK | 1 << 32 is still AF_VSOCK): aligned blocks of [0, AF_VSOCK)
    and (AF_VSOCK, 2**32), each mask limited to the low half."""
    return [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": mask & 0xFFFFFFFF, "valueTwo": value,
                       "op": "SCMP_CMP_MASKED_EQ"}]}
            for start, end in ((0, AF_VSOCK), (AF_VSOCK + 1, 1 << 32))
            for mask, value in aligned_blocks(start, end)]


def main():
    if sys.argv[1:] == ["--syscalls"]:
        numbers = {m.group(1): int(m.group(2))
                   for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", open(HEADER).read())}
        for name, number in sorted(numbers.items(), key=lambda item: item[1]):
            print(name, number)
        return
    names = sorted({m.group(1) for m in re.finditer(r"#define __NR_(\w+)\s+\d+", open(HEADER).read())})
    allowed = [n for n in names if n not in DENIED]
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,  # ENOSYS: "not here", so programs fall back
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {"names": sorted(DENIED - CONDITIONAL),
             "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            # clone without any namespace flag (threads and fork stay fine).
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            # clone3 passes its flags in memory seccomp cannot read: refuse
            # with ENOSYS so libc falls back to clone, which is checked.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            # ioctl, except pushing input into a terminal (TIOCSTI) and the
            # Linux console's TIOCLINUX. libseccomp honours one comparison
            # per argument in a rule, so "neither value" is spelled as
            # rules that together cover every other request number.
            *ioctl_rules(),
            # personality: only querying and the plain Linux personality.
            *({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
              for v in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)),
            # socket, except AF_VSOCK (ENOSYS, as outside the allowlist).
            *socket_rules(),
        ],
    }
    json.dump(profile, sys.stdout, indent=1)
    sys.stdout.write("\n")


main()
