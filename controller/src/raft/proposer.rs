//! Batches concurrent [`Command`]s into one Raft entry (group commit above openraft).
//!
//! Why: openraft 0.9's core waits for each log append to be fsynced before it handles the next
//! client write, so one write = one fsync and throughput is capped at 1 / fsync latency no matter
//! how many brokers submit at once. Submitting every command queued meanwhile as one
//! [`CommandBatch`] entry amortizes that fsync over the batch.
//!
//! Invariants:
//! * commands reach the log in the order they were queued: batches are formed in queue order and
//!   handed to openraft (`client_write_ff`) sequentially by the one proposer task; a batch's
//!   commands apply in order, each with its own result;
//! * at most [`MAX_IN_FLIGHT`] batches await their commit, and the queue is bounded
//!   ([`QUEUE`]), so submitters feel back-pressure instead of growing memory;
//! * a command's reply is sent exactly once, or dropped (the submitter sees `Closed`) if the
//!   controller stops first.

use std::sync::Arc;

use openraft::Raft;
use openraft::error::{ClientWriteError, Fatal};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::ControllerError;
use crate::metadata::{Command, CommandResult};
use crate::raft::TypeConfig;

/// Bound on queued (not yet proposed) commands.
pub(crate) const QUEUE: usize = 4096;
/// Bound on commands per Raft entry, so one entry stays a few MiB at most.
const MAX_BATCH: usize = 256;
/// Batches proposed but not yet applied. Beyond the first, they only help when openraft can
/// pipeline (replication to followers); on a lone voter they wait in openraft's queue.
const MAX_IN_FLIGHT: usize = 4;

/// The Raft log's application data: commands proposed together, applied in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct CommandBatch(pub(crate) Vec<Command>);

/// One queued command and where its result goes.
pub(crate) struct Proposal {
    pub(crate) cmd: Command,
    /// The command's result and the log index of the entry that carried it.
    pub(crate) reply: oneshot::Sender<Result<(CommandResult, u64), ControllerError>>,
}

/// Runs until `stop` is cancelled: takes queued proposals, proposes them in batches.
pub(crate) async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::Receiver<Proposal>, stop: CancellationToken) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let first = tokio::select! {
            p = rx.recv() => p,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        let permit = tokio::select! {
            p = in_flight.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        // Take what queued up while waiting for the permit: that is the group commit.
        let mut proposals = vec![first];
        while proposals.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => proposals.push(p),
                Err(_) => break,
            }
        }
        let (cmds, replies): (Vec<Command>, Vec<_>) = proposals.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        let n = cmds.len();
        let response = match raft.client_write_ff(CommandBatch(cmds)).await {
            Ok(response) => response,
            Err(fatal) => {
                for reply in replies {
                    let _ = reply.send(Err(fatal_error(&fatal)));
                }
                continue;
            }
        };
        // Detached, bounded by the in-flight permit it holds: it only forwards openraft's answer
        // to the callers, and ends when openraft answers or drops the response at stop.
        tokio::spawn(async move {
            let _permit = permit;
            match response.await {
                Ok(Ok(written)) if written.data.len() == n => {
                    let index = written.log_id.index;
                    for (reply, result) in replies.into_iter().zip(written.data) {
                        let _ = reply.send(Ok((result, index)));
                    }
                }
                Ok(Ok(written)) => {
                    let msg = format!("batch of {n} commands applied with {} results", written.data.len());
                    tracing::error!("{msg}");
                    for reply in replies {
                        let _ = reply.send(Err(ControllerError::Raft(msg.clone())));
                    }
                }
                Ok(Err(e)) => {
                    for reply in replies {
                        let _ = reply.send(Err(write_error(&e)));
                    }
                }
                // openraft dropped the responder: it is shutting down.
                Err(_) => {
                    for reply in replies {
                        let _ = reply.send(Err(ControllerError::Closed));
                    }
                }
            }
        });
    }
    tracing::debug!("controller proposer stopped");
}

fn fatal_error(e: &Fatal<u64>) -> ControllerError {
    match e {
        Fatal::Stopped => ControllerError::Closed,
        e => ControllerError::Raft(e.to_string()),
    }
}

fn write_error(e: &ClientWriteError<u64, openraft::BasicNode>) -> ControllerError {
    match e {
        ClientWriteError::ForwardToLeader(f) => ControllerError::NotLeader { leader: f.leader_id },
        e => ControllerError::Raft(e.to_string()),
    }
}
