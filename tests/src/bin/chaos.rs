//! `chaos`: the full crash-consistency run of sandkeeper (see `sandkeeper_tests::chaos`).
//! Run it with `cargo xtask chaos [--cycles N] [--chats M] [--seed S]`.

use std::process::{Command, ExitCode};

use sandkeeper_tests::chaos::{self, ChaosConfig};

const USAGE: &str = "\
usage: chaos [--cycles N] [--chats M] [--seed S]

Kills `sandkeeper serve` with SIGKILL at random moments under parallel get-or-create, delete and
cleanup requests, recovers (a restart plus POST /v1/maintenance/sweep, or `sandkeeper maintain`),
and checks that no container is left without a row, no running session without a running
container, no chat with two running sessions, and that foreign containers are untouched.

  --cycles N   kill/recover cycles (default 12, at least 1)
  --chats M    chats the load asks for, two workers each (default 6)
  --seed S     the seed of the kill moments and of every worker's requests (default: fresh,
               printed; SANDKEEPER_CHAOS_SEED also sets it)

Needs a Docker engine with the sandbox image (`cargo xtask image`) and the sandkeeper binary
(SANDKEEPER_BIN, else the `sandkeeper` next to this executable: `cargo build -p sandkeeper-app`).
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let config = match parse(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("chaos: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The harness finds the server through SANDKEEPER_BIN; this process cannot set its own
    // environment safely, so it runs itself again with the variable set.
    if std::env::var_os("SANDKEEPER_BIN").is_none() {
        return rerun_with_sibling_binary(&args);
    }
    if sandkeeper_tests::docker("chaos").is_none() {
        eprintln!("chaos: needs a Docker engine (`docker version` must answer)");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chaos: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(chaos::run(&config)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(violation) => {
            eprintln!("chaos: FAILED: {violation}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<ChaosConfig, String> {
    let mut config = ChaosConfig::full(chaos::seed_from_env());
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |min: u64| match value.parse::<u64>() {
            Ok(number) if number >= min => Ok(number),
            _ => Err(format!("{flag}: `{value}` is not a whole number of at least {min}")),
        };
        match flag.as_str() {
            "--cycles" => config.cycles = number(1)? as usize,
            "--chats" => config.chats = number(1)? as usize,
            "--seed" => config.seed = number(0)?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(config)
}

fn rerun_with_sibling_binary(args: &[String]) -> ExitCode {
    let Ok(exe) = std::env::current_exe() else {
        eprintln!(
            "chaos: cannot find this executable; set SANDKEEPER_BIN to the sandkeeper binary"
        );
        return ExitCode::FAILURE;
    };
    let sibling = exe.with_file_name(format!("sandkeeper{}", std::env::consts::EXE_SUFFIX));
    if !sibling.is_file() {
        eprintln!(
            "chaos: the sandkeeper binary is not at {}: build it with `cargo build -p \
             sandkeeper-app` (cargo xtask chaos does), or set SANDKEEPER_BIN",
            sibling.display()
        );
        return ExitCode::FAILURE;
    }
    match Command::new(&exe).args(args).env("SANDKEEPER_BIN", &sibling).status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(status.code().map_or(1, |code| code as u8)),
        Err(error) => {
            eprintln!("chaos: cannot run {}: {error}", exe.display());
            ExitCode::FAILURE
        }
    }
}
