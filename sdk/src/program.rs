//! What program a process runs, by what it is rather than by what it was
//! called.
//!
//! `proc.name` (comm) is the basename of the path given to `execve`, so it is
//! whatever the caller chose: `ln -s /bin/bash /tmp/x; /tmp/x` is comm `x`,
//! `busybox sh` is comm `busybox`, `/lib64/ld-linux-x86-64.so.2 /bin/bash` is
//! comm `ld-linux-x86-6`. Rules that recognise programs (shells, package
//! managers) match [`program`] as well: the executable the kernel actually
//! mapped, or for the two kinds of executables that run another program
//! named in argv, that program:
//!
//! - a multi-call binary (busybox, toybox) runs the applet named by
//!   `basename(argv[0])`, or by `argv[1]` when argv[0] names the binary
//!   itself (`busybox sh -c …`);
//! - the dynamic loader run directly (`ld-linux-x86-64.so.2 [options] FILE`)
//!   runs FILE.

use crate::ProcessOf;
use crate::fields::file_name;

/// Executables that run the applet their argv names (matched by file name).
pub const MULTI_CALL_BINARIES: &[&str] = &["busybox", "toybox"];

/// The dynamic loader's options that take a value (glibc's and musl's),
/// so the program it runs is the first argument after them.
const LOADER_OPTIONS_WITH_VALUE: &[&str] = &[
    "--library-path",
    "--inhibit-rpath",
    "--audit",
    "--preload",
    "--argv0",
    "--glibc-hwcaps-prefix",
    "--glibc-hwcaps-mask",
];

/// Whether an executable's file name is a dynamic loader's: glibc's
/// `ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, `ld-2.31.so`, musl's
/// `ld-musl-x86_64.so.1`, and plain `ld.so`.
pub fn is_dynamic_loader(file: &str) -> bool {
    file == "ld.so" || (file.starts_with("ld-") && file.contains(".so"))
}

/// The program `p` runs (a file name, not a path): the applet of a
/// multi-call binary, the program the dynamic loader was asked to run, or
/// else the executable's own file name. `None` when the event has no
/// executable path and no way to tell.
pub fn program<S: AsRef<str>>(p: &ProcessOf<S>) -> Option<&str> {
    let exe = file_name(p.exe_path.as_ref());
    if exe.is_empty() {
        return None;
    }
    // argv is only looked at (and collected) for the two kinds that need
    // it: this runs in prefilters, for every exec.
    let args = || -> Vec<&str> { p.args.iter().map(AsRef::as_ref).collect() };
    if MULTI_CALL_BINARIES.contains(&exe) {
        return Some(applet(exe, &args()).unwrap_or(exe));
    }
    if is_dynamic_loader(exe) {
        return Some(loaded_program(&args()).map_or(exe, file_name));
    }
    Some(exe)
}

/// The applet a multi-call binary runs: `basename(argv[0])`, unless that is
/// the binary's own name, then `basename(argv[1])`.
fn applet<'a>(exe: &str, args: &[&'a str]) -> Option<&'a str> {
    let first = file_name(args.first()?);
    if first.is_empty() {
        return None;
    }
    if first != exe {
        return Some(first);
    }
    // `busybox --list`, `busybox --install`: the binary itself, not an applet.
    args.get(1)
        .map(|a| file_name(a))
        .filter(|a| !a.is_empty() && !a.starts_with('-'))
}

/// The FILE of `ld.so [options] FILE [args]`, as given.
pub fn loaded_program<'a>(args: &[&'a str]) -> Option<&'a str> {
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        if LOADER_OPTIONS_WITH_VALUE.contains(a) {
            rest.next();
        } else if !a.starts_with("--") {
            return Some(a);
        }
    }
    None
}

/// Whether the process runs one of `names`, by comm or by [`program`].
pub fn runs_one_of<S: AsRef<str>>(p: &ProcessOf<S>, names: &[String]) -> bool {
    let name = p.name.as_ref();
    let program = program(p);
    names
        .iter()
        .any(|n| n == name || program.is_some_and(|p| p == n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Process;

    fn proc(name: &str, exe: &str, args: &[&str]) -> Process {
        Process {
            name: name.into(),
            exe_path: exe.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Process::default()
        }
    }

    #[test]
    fn a_program_is_what_was_mapped() {
        // A symlinked or renamed shell is still the shell.
        assert_eq!(
            program(&proc("x", "/usr/bin/bash", &["/tmp/x", "-i"])),
            Some("bash")
        );
        assert_eq!(program(&proc("sh", "/usr/bin/dash", &["sh"])), Some("dash"));
        assert_eq!(program(&proc("sh", "", &["sh"])), None);
    }

    #[test]
    fn multi_call_binaries_run_their_applet() {
        let bb =
            |name, args: &[&str]| program(&proc(name, "/bin/busybox", args)).map(str::to_string);
        assert_eq!(bb("sh", &["sh", "-c", "id"]).as_deref(), Some("sh"));
        assert_eq!(bb("sh", &["/bin/sh"]).as_deref(), Some("sh"));
        assert_eq!(
            bb("busybox", &["busybox", "sh", "-c", "id"]).as_deref(),
            Some("sh")
        );
        assert_eq!(
            bb("busybox", &["/bin/busybox", "/bin/ash"]).as_deref(),
            Some("ash")
        );
        assert_eq!(
            bb("busybox", &["busybox", "--list"]).as_deref(),
            Some("busybox")
        );
        assert_eq!(bb("busybox", &["busybox"]).as_deref(), Some("busybox"));
        // A renamed copy runs as the name it was called by.
        assert_eq!(bb("x", &["./x"]).as_deref(), Some("x"));
        let toybox = proc("toybox", "/usr/bin/toybox", &["toybox", "sh"]);
        assert_eq!(program(&toybox), Some("sh"));
    }

    #[test]
    fn the_dynamic_loader_runs_its_file() {
        let ld = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        let p = proc("ld-linux-x86-6", ld, &[ld, "/bin/bash", "-i"]);
        assert_eq!(program(&p), Some("bash"));
        let p = proc(
            "ld-linux-x86-6",
            ld,
            &[ld, "--library-path", "/tmp", "--argv0", "x", "/tmp/apt-get"],
        );
        assert_eq!(program(&p), Some("apt-get"));
        let p = proc("ld-linux-x86-6", ld, &[ld, "--list", "/bin/ls"]);
        assert_eq!(program(&p), Some("ls"));
        assert_eq!(
            program(&proc("ld-linux-x86-6", ld, &[ld])),
            Some("ld-linux-x86-64.so.2")
        );
        let musl = "/lib/ld-musl-x86_64.so.1";
        assert_eq!(
            program(&proc("ld-musl-x86_64", musl, &[musl, "/bin/sh"])),
            Some("sh")
        );
        assert!(is_dynamic_loader("ld-2.31.so") && is_dynamic_loader("ld.so"));
        assert!(!is_dynamic_loader("ldconfig") && !is_dynamic_loader("ld"));
    }

    #[test]
    fn matching_by_comm_or_program() {
        let shells: Vec<String> = ["sh", "bash"].map(String::from).to_vec();
        assert!(runs_one_of(&proc("x", "/usr/bin/bash", &["x"]), &shells));
        assert!(runs_one_of(
            &proc("busybox", "/bin/busybox", &["busybox", "sh"]),
            &shells
        ));
        assert!(runs_one_of(&proc("sh", "", &["sh"]), &shells));
        assert!(!runs_one_of(
            &proc("busybox", "/bin/busybox", &["busybox", "ls"]),
            &shells
        ));
        assert!(!runs_one_of(
            &proc("nginx", "/usr/sbin/nginx", &["nginx"]),
            &shells
        ));
    }
}
