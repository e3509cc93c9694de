//! `SandboxRuntime::open_terminal` against a real engine: a dropped terminal leaves nothing of
//! what was typed into it running, however early it was typed.
//!
//! Each test uses its own instance id and removes its containers when it ends (even by
//! panic). Without an engine the tests print that they skipped; with
//! `SANDKEEPER_REQUIRE_DOCKER=1` they fail instead.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandkeeper_ports::{SandboxRuntime, Terminal, TerminalInput};

/// Polls `check` every 100 ms for up to 20 s; whether it ever held.
async fn within_20s(mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// Reads the terminal's output until it shows `needle`; everything shown up to then.
async fn read_until(terminal: &mut Terminal, needle: &str) -> String {
    let mut shown = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(bytes) = terminal.output.recv().await {
            shown.push_str(&String::from_utf8_lossy(&bytes));
            if shown.contains(needle) {
                return;
            }
        }
    });
    read.await.unwrap_or_else(|_| panic!("`{needle}` not shown within 20 s: {shown:?}"));
    shown
}

#[tokio::test]
async fn a_dropped_terminal_kills_what_was_typed_into_it_before_its_shell_spoke() {
    let Some((engine, id)) = Engine::with_sandbox("terminal_typed_at_once").await else { return };
    // A busy sandbox: its shells start slowly, so what is typed is echoed before they speak.
    let (ok, said) = exec(&id, "for i in 1 2 3 4 5 6 7 8; do (while :; do :; done) & done");
    assert!(ok, "{said}");
    for round in 0..3 {
        let mut terminal = engine.runtime.open_terminal(&id, 80, 24).await.expect("a terminal");
        // Typed at once: the terminal echoes it, possibly before its shell has printed anything.
        // The echo shows `st''arted`; only the command's own output shows `started`.
        let line = format!("sleep 74{round} & (setsid sleep 75{round} &); echo st''arted\n");
        terminal.input.send(TerminalInput::Bytes(line.into_bytes())).await.unwrap();
        let shown = read_until(&mut terminal, "started\r\n").await;
        let header = |line: &str| line.len() == 10 && line.bytes().all(|b| b.is_ascii_digit());
        assert!(
            !shown.split("\r\n").any(header),
            "round {round}: the wrapper's PID header is not shown: {shown:?}"
        );
        let needles = [format!("sleep 74{round}"), format!("sleep 75{round}")];
        let started =
            within_20s(|| needles.iter().all(|n| !processes_matching(&id, n).is_empty())).await;
        assert!(started, "round {round}: both sleeps run");

        drop(terminal);
        let gone =
            within_20s(|| needles.iter().all(|n| processes_matching(&id, n).is_empty())).await;
        let left: Vec<String> = needles.iter().flat_map(|n| processes_matching(&id, n)).collect();
        assert!(gone, "round {round}: left running after the terminal was dropped: {left:?}");
    }
}
