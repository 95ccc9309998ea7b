//! Compiles the sandbox seccomp profile into the BPF programs the agent
//! installs on itself before it serves anything (see `seccomp.rs`).
//!
//! The profile is `corral-runtime/seccomp/profile.json`, the same data runc
//! is given for a bundle whose PID 1 is not the agent; compiling it here
//! once, instead of runc compiling it on every create, took about 5 ms of
//! CPU off each sandbox start. The profile has three outcomes (allow, EPERM
//! for the reviewed deny list, ENOSYS for everything else), and a
//! `seccompiler` filter has one match and one mismatch action, so it
//! becomes two filters: the allowlist (mismatch: the default errno), then
//! the deny list (match: its errno). The kernel runs both and, among
//! errnos, answers with the newest filter's: the deny list's.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a build script reports a profile it cannot compile by failing the build"
)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde_json::Value;

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dir = manifest.join("../corral-runtime/seccomp");
    let profile_path = dir.join("profile.json");
    let numbers_path = dir.join("syscalls_x86_64.txt");
    println!("cargo::rerun-if-changed={}", profile_path.display());
    println!("cargo::rerun-if-changed={}", numbers_path.display());

    let numbers: HashMap<String, i64> = std::fs::read_to_string(&numbers_path)
        .expect("seccomp/syscalls_x86_64.txt")
        .lines()
        .filter_map(|line| {
            let (name, number) = line.split_once(' ')?;
            Some((name.to_owned(), number.parse().expect("a syscall number")))
        })
        .collect();
    let profile: Value = serde_json::from_str(
        &std::fs::read_to_string(&profile_path).expect("seccomp/profile.json"),
    )
    .expect("profile.json is JSON");
    assert_eq!(
        profile["defaultAction"], "SCMP_ACT_ERRNO",
        "unsupported default action"
    );
    assert_eq!(
        profile["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64"]),
        "the agent's filter is for x86_64 only"
    );
    let default_errno = errno(&profile["defaultErrnoRet"]);

    let mut allow = Rules::new();
    // Syscalls allowed whatever their arguments: no conditional rule may
    // narrow them (an empty rule list matches on the number alone).
    let mut unconditional = Vec::new();
    let mut deny = Rules::new();
    let mut deny_errno = None;
    for entry in profile["syscalls"].as_array().expect("syscalls") {
        let conditions: Vec<SeccompCondition> = entry["args"]
            .as_array()
            .map(|args| args.iter().map(condition).collect())
            .unwrap_or_default();
        let names = entry["names"].as_array().expect("names");
        let action = entry["action"].as_str().expect("action");
        for name in names.iter().map(|n| n.as_str().expect("a name")) {
            let Some(&number) = numbers.get(name) else {
                // A refused syscall newer than the headers: it has no
                // number here, and outside the allowlist it is refused
                // anyway (ENOSYS). An allowed one must be known.
                assert_ne!(
                    action, "SCMP_ACT_ALLOW",
                    "`{name}` is not in syscalls_x86_64.txt"
                );
                continue;
            };
            match action {
                "SCMP_ACT_ALLOW" if conditions.is_empty() => {
                    unconditional.push(number);
                    allow.insert(number, Vec::new());
                }
                "SCMP_ACT_ALLOW" => {
                    if !unconditional.contains(&number) {
                        let rule = SeccompRule::new(conditions.clone()).expect("a rule");
                        allow.entry(number).or_default().push(rule);
                    }
                }
                "SCMP_ACT_ERRNO" => {
                    assert!(conditions.is_empty(), "`{name}`: conditional errno rules");
                    let code = errno(&entry["errnoRet"]);
                    if code == default_errno {
                        // What every syscall outside the allowlist gets.
                        assert!(
                            !allow.contains_key(&number),
                            "`{name}` both allowed and refused"
                        );
                        continue;
                    }
                    assert!(
                        deny_errno.is_none_or(|e| e == code),
                        "more than one errno besides the default"
                    );
                    deny_errno = Some(code);
                    deny.insert(number, Vec::new());
                }
                other => panic!("`{name}`: unsupported action {other}"),
            }
        }
    }
    for number in deny.keys() {
        assert!(
            !allow.contains_key(number),
            "syscall {number} both allowed and refused"
        );
    }

    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let allowlist = SeccompFilter::new(
        allow,
        SeccompAction::Errno(default_errno),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .expect("the allowlist filter");
    write(&out.join("seccomp-allow.bpf"), allowlist);
    let denylist = SeccompFilter::new(
        deny,
        SeccompAction::Allow,
        SeccompAction::Errno(deny_errno.unwrap_or(default_errno)),
        TargetArch::x86_64,
    )
    .expect("the deny-list filter");
    write(&out.join("seccomp-deny.bpf"), denylist);
    write(&out.join("seccomp-pid1.bpf"), pid1_filter(&numbers));
}

/// The third filter: nothing may change PID 1's (the agent's) scheduling,
/// resource limits or memory placement by naming it (EPERM). Programs run
/// with the agent's uid, which the kernel lets change a process's nice
/// value, CPU affinity, I/O priority and limits; and a reused sandbox
/// would carry such a change into the next run. By PID 1, its process
/// group 1, or every process of a user (which includes the agent, so it is
/// refused whole). Comparisons are on the low 32 bits: the kernel reads
/// these arguments as `int`. The agent itself names itself as 0.
fn pid1_filter(numbers: &HashMap<String, i64>) -> SeccompFilter {
    let is = |index: u8, value: u64| {
        SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .expect("a condition")
    };
    let rule = |conditions: Vec<SeccompCondition>| SeccompRule::new(conditions).expect("a rule");
    let number = |name: &str| {
        *numbers
            .get(name)
            .unwrap_or_else(|| panic!("`{name}` has no number"))
    };
    let mut rules = Rules::new();
    // setpriority(which, who, prio): PRIO_PROCESS 0, PRIO_PGRP 1, PRIO_USER 2.
    rules.insert(
        number("setpriority"),
        vec![
            rule(vec![is(0, 0), is(1, 1)]),
            rule(vec![is(0, 1), is(1, 1)]),
            rule(vec![is(0, 2)]),
        ],
    );
    // ioprio_set(which, who, prio): IOPRIO_WHO_PROCESS 1, _PGRP 2, _USER 3.
    rules.insert(
        number("ioprio_set"),
        vec![
            rule(vec![is(0, 1), is(1, 1)]),
            rule(vec![is(0, 2), is(1, 1)]),
            rule(vec![is(0, 3)]),
        ],
    );
    // The pid is the first argument of each of these.
    for name in [
        "sched_setaffinity",
        "sched_setscheduler",
        "sched_setparam",
        "sched_setattr",
        "prlimit64",
        "migrate_pages",
        "move_pages",
    ] {
        rules.insert(number(name), vec![rule(vec![is(0, 1)])]);
    }
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(1), // EPERM
        TargetArch::x86_64,
    )
    .expect("the PID 1 filter")
}

fn errno(value: &Value) -> u32 {
    u32::try_from(value.as_u64().expect("an errno")).expect("a small errno")
}

/// One OCI argument comparison (64-bit, as libseccomp compares on x86_64).
fn condition(arg: &Value) -> SeccompCondition {
    let index = u8::try_from(arg["index"].as_u64().expect("index")).expect("index < 6");
    let value = arg["value"].as_u64().expect("value");
    let two = arg["valueTwo"].as_u64().unwrap_or(0);
    let (op, datum) = match arg["op"].as_str().expect("op") {
        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, value),
        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, value),
        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, value),
        "SCMP_CMP_LE" => (SeccompCmpOp::Le, value),
        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, value),
        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, value),
        // OCI: (arg & value) == valueTwo.
        "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(value), two),
        other => panic!("unsupported comparison {other}"),
    };
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, datum).expect("a condition")
}

/// The program as the kernel's `struct sock_filter` array, native endian.
fn write(path: &std::path::Path, filter: SeccompFilter) {
    let program = BpfProgram::try_from(filter).expect("a BPF program");
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in &program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    std::fs::write(path, bytes).expect("writing the BPF program");
}
