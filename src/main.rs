//! The `flowtrace` command: a thin layer over the library (ripgrep's shape: `main`
//! returns an exit code, `run` returns `anyhow::Result`, a broken pipe is success).

mod cli;

/// See Cargo.toml: cross-thread frees between the reader and the correlation thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Transparent huge pages off: with them (the kernel's default here, `always`)
    // each thread's allocator pages fault in 2 MiB at a time, zeroed whole, so the
    // sharded run's threads held 80-88 MiB against 37-38 MiB without (the small-packet
    // capture, docs/PERFORMANCE.md), and spent more system time zeroing them. A
    // failure (an old kernel) only leaves them on.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) || format!("{err:#}").contains("Broken pipe")
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("flowtrace: error: {}", error_line(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each cause once: a cause whose text the
/// message before it already ends with (a library error that quotes its source) is
/// not repeated.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
