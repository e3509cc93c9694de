//! An interactive terminal in a chat's sandbox: a shell on a pseudo-terminal, entered through
//! [`SandboxAccess`] with [`Operation::Terminal`], which holds one of the sandbox's operation
//! slots for as long as the terminal is open. With sliding expiry, what is typed into it counts
//! as use of the sandbox.

use std::time::{Duration, Instant};

use sandkeeper_domain::ChatId;
use sandkeeper_ports::error_kind;
use sandkeeper_ports::{ExecError, TerminalInput};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::access::{AccessError, Entered, Operation, SandboxAccess};
use crate::telemetry::{record_result, usecase_span};

/// Counter `sandbox.terminal.total{result=ok|error}`: terminals opened, or refused.
const TERMINAL_TOTAL: &str = "sandbox.terminal.total";
/// The largest terminal, in characters each way.
pub const MAX_TERMINAL_SIZE: u16 = 1000;
/// Input counts as use of the sandbox at most this often (a push of the expiry costs the chat's
/// lock and a write; the shortest TTL is a second).
const USE_EVERY: Duration = Duration::from_secs(1);

/// Why a terminal could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminalError {
    /// A size outside `1..=MAX_TERMINAL_SIZE` (nothing was touched).
    #[error("`{field}` {value} is not a whole number from 1 to {MAX_TERMINAL_SIZE}")]
    InvalidSize { field: &'static str, value: u32 },
    #[error(transparent)]
    Access(#[from] AccessError),
}

error_kind!(TerminalError { InvalidSize => "invalid_size" } wraps Access);

/// Opens terminals in the chats' sandboxes.
#[derive(Debug, Clone)]
pub struct SandboxTerminal {
    access: SandboxAccess,
}

/// An open terminal: read its output, write its input. Dropping it closes it: its shell and
/// everything the shell started are killed, and its slot in the sandbox is given back.
#[derive(Debug)]
pub struct OpenTerminal {
    entered: Entered,
    output: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<TerminalInput>,
    last_use: Instant,
}

impl SandboxTerminal {
    /// Give it the same `access` as the other use cases inside sandboxes.
    pub fn new(access: SandboxAccess) -> Self {
        Self { access }
    }

    /// Opens a shell on a terminal of `cols` x `rows` in the chat's sandbox.
    pub async fn open(
        &self,
        chat_id: ChatId,
        cols: u32,
        rows: u32,
    ) -> Result<OpenTerminal, TerminalError> {
        let span = usecase_span!(
            chat: chat_id,
            "usecase.sandbox_terminal",
        );
        let opened: Result<OpenTerminal, TerminalError> = async {
            let cols = size("cols", cols)?;
            let rows = size("rows", rows)?;
            let entered = self.access.enter(chat_id, Operation::Terminal).await?;
            let container = &entered.session().container_id;
            let terminal = entered
                .run(entered.runtime().open_terminal(container, cols, rows))
                .await
                .map_err(|error| match error {
                    ExecError::ContainerNotRunning { .. } => entered.gone(),
                    ExecError::Runtime(error) => AccessError::Runtime(error),
                })?;
            Ok(OpenTerminal {
                entered,
                output: terminal.output,
                input: terminal.input,
                last_use: Instant::now(),
            })
        }
        .instrument(span.clone())
        .await;
        let result = record_result(&span, opened.as_ref(), |_| "ok");
        metrics::counter!(TERMINAL_TOTAL, "result" => result).increment(1);
        opened
    }
}

fn size(field: &'static str, value: u32) -> Result<u16, TerminalError> {
    u16::try_from(value)
        .ok()
        .filter(|value| (1..=MAX_TERMINAL_SIZE).contains(value))
        .ok_or(TerminalError::InvalidSize { field, value })
}

impl OpenTerminal {
    /// The next bytes the terminal shows; `None` once its shell has exited.
    pub async fn output(&mut self) -> Option<Vec<u8>> {
        self.output.recv().await
    }

    /// Types into the terminal, or resizes it; `false` once its shell has gone. Input counts
    /// as use of the sandbox (with sliding expiry, at most every few seconds).
    pub async fn input(&mut self, input: TerminalInput) -> bool {
        if matches!(input, TerminalInput::Bytes(_)) && self.last_use.elapsed() >= USE_EVERY {
            self.last_use = Instant::now();
            self.entered.record_use().await;
        }
        if let TerminalInput::Resize { cols, rows } = input {
            let (Ok(cols), Ok(rows)) = (size("cols", cols.into()), size("rows", rows.into()))
            else {
                return true;
            };
            return self.input.send(TerminalInput::Resize { cols, rows }).await.is_ok();
        }
        self.input.send(input).await.is_ok()
    }
}
