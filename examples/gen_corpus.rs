//! Writes the synthetic benchmark corpus (see `benches/support/synthetic.rs`).
//!
//! ```text
//! cargo run --release --example gen_corpus -- <out dir> [--scale x10|small]
//! ```

#[path = "../benches/support/synthetic.rs"]
mod synthetic;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: gen_corpus <out dir> [--scale x10|small]";

fn main() -> ExitCode {
    let mut dir: Option<PathBuf> = None;
    let mut scale = synthetic::Scale::k8s_io_x10();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--scale") => match args.next().as_deref().and_then(|s| s.to_str()) {
                Some("x10") => scale = synthetic::Scale::k8s_io_x10(),
                Some("small") => scale = synthetic::Scale::small(),
                _ => {
                    eprintln!("--scale takes x10 or small\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => {
                eprintln!("unexpected argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };

    let started = Instant::now();
    match synthetic::generate(&dir, &scale) {
        Ok(stats) => {
            println!("{stats}");
            println!("elapsed            {:.2?}", started.elapsed());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_corpus: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
