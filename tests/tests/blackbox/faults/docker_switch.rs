//! A Docker engine that a test can switch off and on: a Unix socket that forwards to the real
//! engine. Switching it off removes the socket and closes every forwarded connection, including
//! the keep-alive connections the server's Docker client holds, so that the next call really
//! finds no engine, exactly as after the daemon stopped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug)]
pub(crate) struct DockerSwitch {
    socket: PathBuf,
    engine: PathBuf,
    running: Option<Forwarding>,
}

#[derive(Debug)]
struct Forwarding {
    accept: JoinHandle<()>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl DockerSwitch {
    /// Starts forwarding `socket` to `engine`.
    pub(crate) fn on(socket: &Path, engine: PathBuf) -> Self {
        let mut switch = Self { socket: socket.to_owned(), engine, running: None };
        switch.switch_on();
        switch
    }

    /// The `DOCKER_HOST` value that points at the switch.
    pub(crate) fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Docker "comes back": the socket reappears and forwards again.
    pub(crate) fn switch_on(&mut self) {
        assert!(self.running.is_none(), "the Docker switch is already on");
        let _ = std::fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket).expect("bind the Docker switch's socket");
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let shared = Arc::clone(&connections);
        let engine = self.engine.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let engine = engine.clone();
                let mut connections = shared.lock().unwrap();
                // Forget the connections that already ended.
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let Ok(mut outbound) = UnixStream::connect(&engine).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        self.running = Some(Forwarding { accept, connections });
    }

    /// Docker "goes away": no socket any more, and every open connection is closed.
    pub(crate) fn switch_off(&mut self) {
        let forwarding = self.running.take().expect("the Docker switch is already off");
        forwarding.accept.abort();
        forwarding.connections.lock().unwrap().abort_all();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for DockerSwitch {
    fn drop(&mut self) {
        if self.running.is_some() {
            self.switch_off();
        }
    }
}
