//! An interactive terminal in a sandbox: a shell on a pseudo-terminal, its bytes both ways.

use tokio::sync::mpsc;

/// What goes into a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalInput {
    /// Bytes typed (or pasted) into the terminal.
    Bytes(Vec<u8>),
    /// The terminal's new size, in characters.
    Resize { cols: u16, rows: u16 },
}

/// A running terminal. `output` ends when its shell has exited; dropping `input` ends the
/// terminal: its shell, and everything it started, are killed.
#[derive(Debug)]
pub struct Terminal {
    pub output: mpsc::Receiver<Vec<u8>>,
    pub input: mpsc::Sender<TerminalInput>,
}
