//! `shipshape exec POD [-c C] [-i] -- CMD…`: a command in a running container through the API
//! server's pods/exec WebSocket (the protocol kubectl speaks), exiting with its exit code.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tungstenite::Message;

use crate::data::{self, Cluster};
use crate::remote::Polled;

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Runs `command` in `pod`; with `stdin`, this process's stdin goes to it.
pub fn run(
    pod: &str,
    container: Option<&str>,
    namespace: Option<&str>,
    stdin: bool,
    command: &[String],
    data_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    if command.is_empty() {
        bail!("no command: shipshape exec POD -- COMMAND [ARGS…]");
    }
    let data_dir = data::data_dir(data_dir)?;
    let remote = match data::connect(&data_dir)? {
        Cluster::Running(remote) => remote,
        Cluster::Stopped(_) => bail!(
            "the cluster in {} is not running: exec needs a running cluster (`shipshape up`)",
            data_dir.display()
        ),
    };
    let namespace = namespace.unwrap_or("default");
    let mut query: Vec<String> = command
        .iter()
        .map(|c| format!("command={}", encode(c)))
        .collect();
    query.extend(["stdout=true".into(), "stderr=true".into()]);
    if stdin {
        query.push("stdin=true".into());
    }
    if let Some(container) = container {
        query.push(format!("container={}", encode(container)));
    }
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/exec?{}",
        encode(namespace),
        encode(pod),
        query.join("&")
    );
    let mut socket = remote.websocket(&path, "v5.channel.k8s.io")?;
    // Short reads, so stdin is forwarded while waiting for output.
    socket
        .get_mut()
        .sock
        .set_read_timeout(Some(Duration::from_millis(20)))?;
    let (input_tx, input_rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
    if stdin {
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buffer) {
                    Ok(0) | Err(_) => {
                        let _ = input_tx.send(None);
                        return;
                    }
                    Ok(n) => {
                        if input_tx.send(Some(buffer[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut status: Option<Value> = None;
    loop {
        while let Ok(chunk) = input_rx.try_recv() {
            let frame = match chunk {
                Some(data) => [vec![0u8], data].concat(),
                // v5: "stdin is closed".
                None => vec![255u8, 0],
            };
            socket.send(Message::Binary(frame.into()))?;
        }
        match crate::remote::poll_read(&mut socket).context("the exec stream broke")? {
            Polled::Message(Message::Binary(bytes)) => {
                let Some((&channel, data)) = bytes.split_first() else {
                    continue;
                };
                match channel {
                    1 => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(data)?;
                        out.flush()?;
                    }
                    2 => {
                        let mut err = std::io::stderr().lock();
                        err.write_all(data)?;
                        err.flush()?;
                    }
                    3 => status = serde_json::from_slice(data).ok(),
                    _ => {}
                }
            }
            Polled::Closed => break,
            Polled::Message(_) | Polled::Nothing => {}
        }
    }
    let status = status.context("the exec stream ended without a status")?;
    if status["status"] == "Success" {
        return Ok(ExitCode::SUCCESS);
    }
    if status["reason"] == "NonZeroExitCode" {
        let code = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse::<u8>().ok())
            .unwrap_or(1);
        return Ok(ExitCode::from(code));
    }
    bail!(
        "{}",
        status["message"].as_str().unwrap_or("the command failed")
    )
}
