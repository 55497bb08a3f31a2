//! Transaction coordinator APIs (RFC 0004 phases 1 and 2): InitProducerId with a transactional
//! id, AddPartitionsToTxn (v0-3 from clients, v4-5 batched and verify-only), AddOffsetsToTxn,
//! EndTxn (v0-4 TV1; v5 TV2: the epoch bump per transaction, the new producer id and epoch in
//! the answer), TxnOffsetCommit (with the group coordinator's member checks; v5 TV2 adds the
//! group to the transaction itself), DescribeTransactions and ListTransactions.
//!
//! Each decodes the request into a `TxnOp` (or a group op), runs it through the broker's
//! [`crate::txn::TxnCoordinator`] (one op per transactional id at a time, applied by the
//! controller) and encodes the answer. Kafka's version-dependent codes are applied here (older
//! clients get INVALID_PRODUCER_EPOCH for PRODUCER_FENCED, INVALID_TXN_STATE for
//! TRANSACTION_ABORTABLE); the codes themselves come from `errors.rs`. Every refusal is logged
//! with its reason (CONCURRENT_TRANSACTIONS, which clients retry while markers are written, at
//! DEBUG).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId, ResponseKind, TopicName,
    TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::image::{MetadataImage, TxnState, TxnStatus};
use skiff_controller::intent::{Answer, GroupOp, ProducerIdAndEpoch, TxnError, TxnOp, TxnPartition, TxnVersion};
use tracing::{debug, info};

use super::Handled;
use super::errors::{self, code};
use super::groups::is_coordinator;
use super::offsets::offset_to_store;
use crate::broker::Broker;
use crate::group::{GroupCoordinator, GroupError};
use crate::log::txn::{self as log_txn, TxnRefusal};
use crate::txn::TxnCoordinatorError;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The code of a coordinator failure for a request of `api` at `version` (Kafka's
/// per-version conversions), logged with its reason.
fn refused(api: &str, transactional_id: &str, version: i16, e: &TxnCoordinatorError) -> i16 {
    let key = match api {
        "InitProducerId" => ApiKey::InitProducerId,
        "AddPartitionsToTxn" => ApiKey::AddPartitionsToTxn,
        "AddOffsetsToTxn" => ApiKey::AddOffsetsToTxn,
        "EndTxn" => ApiKey::EndTxn,
        "TxnOffsetCommit" => ApiKey::TxnOffsetCommit,
        _ => ApiKey::DescribeTransactions,
    };
    let c = errors::txn_for_version(key, version, errors::txn_coordinator(e));
    log_refusal(api, transactional_id, c, &e.to_string());
    c
}

fn log_refusal(api: &str, transactional_id: &str, error_code: i16, why: &str) {
    let name = ResponseError::try_from_code(error_code).map(|e| format!("{e:?}")).unwrap_or_default();
    if error_code == code(ResponseError::ConcurrentTransactions) {
        debug!(api, transactional_id, error = %name, "refused a transaction request: {why}");
    } else {
        info!(api, transactional_id, error = %name, "refused a transaction request: {why}");
    }
}

/// InitProducerId with a transactional id (the idempotent case stays in `admin.rs`).
pub async fn init_producer_id(
    broker: &Arc<Broker>,
    req: &InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    let id = req.transactional_id.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    // KIP-360 (v3+): both -1 (a new producer) or both set; anything else is malformed.
    let expected = match (req.producer_id.0, req.producer_epoch) {
        (-1, -1) => None,
        (pid, epoch) if pid != -1 && epoch != -1 => {
            Some(ProducerIdAndEpoch { producer_id: pid, producer_epoch: epoch })
        }
        (pid, epoch) => {
            let c = code(ResponseError::InvalidRequest);
            log_refusal("InitProducerId", &id, c, &format!("producer id {pid} with epoch {epoch}"));
            return base.with_error_code(c);
        }
    };
    let timeout_ms = req.transaction_timeout_ms;
    let answer = broker.txns.submit(&id, |now_ms| TxnOp::InitProducerId { timeout_ms, expected, now_ms }).await;
    match answer {
        Ok(Answer::Producer(p)) => base
            .with_error_code(errors::NONE)
            .with_producer_id(ProducerId(p.producer_id))
            .with_producer_epoch(p.producer_epoch),
        // Fencing an ongoing transaction: the client retries until its abort completes.
        Ok(Answer::Error(e)) => {
            base.with_error_code(refused("InitProducerId", &id, version, &TxnCoordinatorError::Txn(e)))
        }
        Ok(other) => {
            tracing::error!(transactional_id = %id, answer = ?other, "InitProducerId answered without a producer id");
            base.with_error_code(code(ResponseError::UnknownServerError))
        }
        Err(e) => base.with_error_code(refused("InitProducerId", &id, version, &e)),
    }
}

/// The error of an op that only answers NONE or fails.
fn outcome(api: &str, id: &str, version: i16, r: Result<Answer, TxnCoordinatorError>) -> i16 {
    match r {
        Ok(Answer::Ok | Answer::Producer(_)) => errors::NONE,
        Ok(Answer::Error(e)) => refused(api, id, version, &TxnCoordinatorError::Txn(e)),
        Ok(Answer::NoClient) => {
            tracing::error!(api, transactional_id = id, "transaction state machine answered a client op as a timer");
            code(ResponseError::UnknownServerError)
        }
        Err(e) => refused(api, id, version, &e),
    }
}

/// The transaction version a request speaks, decided by its version as Kafka does
/// (`TransactionVersion.transactionVersionForEndTxn` and friends): EndTxn v5+, TxnOffsetCommit
/// v5+ and Produce v12+ come from TV2 clients.
pub fn txn_version(api: ApiKey, version: i16) -> TxnVersion {
    let tv2_since = match api {
        ApiKey::EndTxn | ApiKey::TxnOffsetCommit => 5,
        ApiKey::Produce => 12,
        _ => i16::MAX,
    };
    if version >= tv2_since { TxnVersion::Tv2 } else { TxnVersion::Tv1 }
}

/// EndTxn. TV2 (v5+): the coordinator bumps the epoch (or rotates the producer id at the epoch
/// limit) and the answer carries the producer id and epoch the client continues with; a
/// refusal carries -1/-1, as Kafka's.
pub async fn end_txn(broker: &Arc<Broker>, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let id = req.transactional_id.0.to_string();
    let (producer_id, producer_epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let tv = txn_version(ApiKey::EndTxn, version);
    let r = broker
        .txns
        .submit(&id, |now_ms| TxnOp::EndTxn { producer_id, producer_epoch, commit, version: tv, now_ms })
        .await;
    let next = match &r {
        Ok(Answer::Producer(p)) if tv == TxnVersion::Tv2 => Some(*p),
        _ => None,
    };
    let base = EndTxnResponse::default().with_error_code(outcome("EndTxn", &id, version, r));
    match next {
        Some(p) => base.with_producer_id(ProducerId(p.producer_id)).with_producer_epoch(p.producer_epoch),
        None => base,
    }
}

pub async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    req: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let id = req.transactional_id.0.to_string();
    let (producer_id, producer_epoch) = (req.producer_id.0, req.producer_epoch);
    let group = req.group_id.0.to_string();
    let r = broker
        .txns
        .submit(&id, |now_ms| TxnOp::AddOffsets {
            producer_id,
            producer_epoch,
            group,
            version: TxnVersion::Tv1,
            now_ms,
        })
        .await;
    AddOffsetsToTxnResponse::default().with_error_code(outcome("AddOffsetsToTxn", &id, version, r))
}

/// One transaction of an AddPartitionsToTxn request.
struct TxnPartitions {
    id: String,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: Vec<AddPartitionsToTxnTopic>,
}

/// Per topic, per partition codes, in request order.
type PartitionCodes = Vec<(TopicName, Vec<(i32, i16)>)>;
/// Per topic, each partition with its (topic id, index) if it exists.
type Resolved = Vec<(TopicName, Vec<(i32, Option<TxnPartition>)>)>;
/// Per topic, each partition with the error decided before the controller is asked, if any.
type CommitPlan = Vec<(TopicName, Vec<(i32, Option<i16>)>)>;

pub async fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let topic_result = |codes: PartitionCodes| -> Vec<AddPartitionsToTxnTopicResult> {
        codes
            .into_iter()
            .map(|(name, parts)| {
                let results = parts
                    .into_iter()
                    .map(|(p, c)| {
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(p)
                            .with_partition_error_code(c)
                    })
                    .collect();
                AddPartitionsToTxnTopicResult::default().with_name(name).with_results_by_partition(results)
            })
            .collect()
    };
    if version < 4 {
        let t = TxnPartitions {
            id: req.v3_and_below_transactional_id.0.to_string(),
            producer_id: req.v3_and_below_producer_id.0,
            producer_epoch: req.v3_and_below_producer_epoch,
            verify_only: false,
            topics: req.v3_and_below_topics,
        };
        let codes = one_transaction(broker, t, version).await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topic_result(codes));
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in req.transactions {
        let txn = TxnPartitions {
            id: t.transactional_id.0.to_string(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            verify_only: t.verify_only,
            topics: t.topics,
        };
        let codes = one_transaction(broker, txn, version).await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id)
                .with_topic_results(topic_result(codes)),
        );
    }
    AddPartitionsToTxnResponse::default().with_error_code(errors::NONE).with_results_by_transaction(results)
}

/// Kafka's `handleAddPartitionsToTxnRequest` for one transaction: unknown partitions get
/// UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED; otherwise one error for
/// all (or, verify-only, per partition).
async fn one_transaction(broker: &Arc<Broker>, t: TxnPartitions, version: i16) -> PartitionCodes {
    let api = "AddPartitionsToTxn";
    let mut resolved: Resolved = Vec::new();
    broker.metadata.read(|m| {
        for topic in &t.topics {
            let name = topic.name.0.to_string();
            let parts = topic
                .partitions
                .iter()
                .map(|p| (*p, m.partition_by_name(&name, *p).and_then(|_| m.topic(&name)).map(|v| (v.id(), *p))))
                .collect();
            resolved.push((topic.name.clone(), parts));
        }
    });
    let all = |c: i16| -> PartitionCodes {
        resolved.iter().map(|(n, parts)| (n.clone(), parts.iter().map(|(p, _)| (*p, c)).collect())).collect()
    };
    let unknown: Vec<String> = resolved
        .iter()
        .flat_map(|(n, parts)| parts.iter().filter(|(_, r)| r.is_none()).map(move |(p, _)| format!("{}-{p}", n.0)))
        .collect();
    if !unknown.is_empty() {
        let unknown_code = code(ResponseError::UnknownTopicOrPartition);
        log_refusal(api, &t.id, unknown_code, &format!("unknown partitions {unknown:?}"));
        let not_attempted = code(ResponseError::OperationNotAttempted);
        return resolved
            .iter()
            .map(|(n, parts)| {
                let codes =
                    parts.iter().map(|(p, r)| (*p, if r.is_none() { unknown_code } else { not_attempted })).collect();
                (n.clone(), codes)
            })
            .collect();
    }
    let partitions: BTreeSet<TxnPartition> =
        resolved.iter().flat_map(|(_, ps)| ps.iter().filter_map(|(_, r)| *r)).collect();
    let abortable = |c: i16| errors::txn_for_version(ApiKey::AddPartitionsToTxn, version, c);
    if t.verify_only {
        // Answered from the image (RFC 0004 §6): the coordinator's state is replicated.
        let verified = match broker.txns.owned_epoch(&t.id) {
            Err(e) => Err(e),
            Ok(_) => broker.metadata.read(|m| {
                skiff_controller::transactions::verify_partitions(
                    m.transaction(&t.id),
                    t.producer_id,
                    t.producer_epoch,
                    &partitions,
                )
                .map_err(TxnCoordinatorError::Txn)
            }),
        };
        return match verified {
            Err(e) => all(abortable(refused(api, &t.id, version, &e))),
            Ok(per_partition) => {
                let missing: BTreeMap<TxnPartition, i16> =
                    per_partition.into_iter().filter_map(|(p, e)| e.map(|e| (p, abortable(errors::txn(e))))).collect();
                if !missing.is_empty() {
                    log_refusal(
                        api,
                        &t.id,
                        abortable(errors::txn(TxnError::TransactionAbortable)),
                        "verify-only: partitions not in the transaction",
                    );
                }
                resolved
                    .iter()
                    .map(|(n, parts)| {
                        let codes = parts
                            .iter()
                            .map(|(p, r)| (*p, r.and_then(|tp| missing.get(&tp).copied()).unwrap_or(errors::NONE)))
                            .collect();
                        (n.clone(), codes)
                    })
                    .collect()
            }
        };
    }
    let (producer_id, producer_epoch) = (t.producer_id, t.producer_epoch);
    let r = broker
        .txns
        .submit(&t.id, |now_ms| TxnOp::AddPartitions {
            producer_id,
            producer_epoch,
            partitions,
            version: TxnVersion::Tv1,
            now_ms,
        })
        .await;
    all(abortable(outcome(api, &t.id, version, r)))
}

/// TxnOffsetCommit (KIP-98/447): checked against the group like OffsetCommit, then stored as
/// offsets pending under the producer's transaction (the controller checks the transaction:
/// RFC 0004 §8).
pub async fn txn_offset_commit(broker: &Arc<Broker>, req: TxnOffsetCommitRequest, version: i16) -> Handled {
    let id = req.transactional_id.0.to_string();
    let group_id = req.group_id.0.to_string();
    let api = "TxnOffsetCommit";
    let verdict = if !is_coordinator(broker, &group_id) {
        Err(errors::group(GroupError::NotCoordinator))
    } else {
        let (member, instance, generation) = if version >= 3 {
            (req.member_id.to_string(), req.group_instance_id.as_ref().map(|i| i.to_string()), req.generation_id)
        } else {
            (String::new(), None, -1)
        };
        broker
            .groups
            .check_txn_offset_commit(group_id.clone(), member, instance, generation)
            .await
            .map_err(errors::group)
    };
    if let Err(c) = verdict {
        log_refusal(api, &id, c, &format!("group {group_id}: the member check failed"));
    }
    let now_ms = broker.clock.now_ms();
    let mut plan: CommitPlan = Vec::new();
    let mut offsets = Vec::new();
    broker.metadata.read(|m| {
        for t in &req.topics {
            let topic = t.name.0.to_string();
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let e = if m.partition_by_name(&topic, p.partition_index).is_none() {
                    Some(code(ResponseError::UnknownTopicOrPartition))
                } else if let Err(c) = verdict {
                    Some(c)
                } else {
                    let leader_epoch = if version >= 2 { p.committed_leader_epoch } else { -1 };
                    let metadata = p.committed_metadata.as_ref();
                    match offset_to_store(&topic, p.partition_index, p.committed_offset, leader_epoch, metadata, now_ms)
                    {
                        Ok(o) => {
                            offsets.push(o);
                            None
                        }
                        Err(c) => Some(c),
                    }
                };
                parts.push((p.partition_index, e));
            }
            plan.push((t.name.clone(), parts));
        }
    });
    let broker = broker.clone();
    let (producer_id, producer_epoch) = (req.producer_id.0, req.producer_epoch);
    Handled::Deferred(
        async move {
            let stored = if offsets.is_empty() {
                Ok(())
            } else if let Err(r) =
                implicit_add_group(&broker, &id, producer_id, producer_epoch, &group_id, version).await
            {
                let c = errors::txn_offset_commit_implicit_add(&r);
                log_refusal(api, &id, c, &format!("group {group_id}: implicit add: {r}"));
                Err(c)
            } else {
                let epoch = GroupCoordinator::coordinator_epoch(&broker.metadata, &group_id);
                let op =
                    GroupOp::TxnOffsetCommit { transactional_id: id.clone(), producer_id, producer_epoch, offsets };
                broker.controller.store_group(group_id.clone(), epoch, op).await.map_err(|e| {
                    let c = errors::txn_for_version(ApiKey::TxnOffsetCommit, version, errors::group_controller(&e));
                    log_refusal(api, &id, c, &format!("group {group_id}: {e}"));
                    c
                })
            };
            let topics = plan
                .into_iter()
                .map(|(name, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(p, e)| {
                            let e = e.unwrap_or_else(|| stored.err().unwrap_or(errors::NONE));
                            TxnOffsetCommitResponsePartition::default().with_partition_index(p).with_error_code(e)
                        })
                        .collect();
                    TxnOffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
                })
                .collect();
            ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics))
        }
        .boxed(),
    )
}

/// TV2 (TxnOffsetCommit v5+): the group joins the transaction without AddOffsetsToTxn. TV1
/// clients must have added it, else the commit is refused (TRANSACTION_ABORTABLE).
async fn implicit_add_group(
    broker: &Arc<Broker>,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    group_id: &str,
    version: i16,
) -> Result<(), TxnRefusal> {
    if txn_version(ApiKey::TxnOffsetCommit, version) != TxnVersion::Tv2 {
        return Ok(());
    }
    log_txn::retry_while_completing(&broker.clock, |now_ms| {
        log_txn::add_group(&broker.controller, id, producer_id, producer_epoch, group_id, now_ms)
    })
    .await
}

/// DescribeTransactions: the coordinator's view of each id (Kafka's
/// `TransactionCoordinator.handleDescribeTransactions`).
pub fn describe_transactions(broker: &Arc<Broker>, req: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let txn_id = id.0.to_string();
            let out = TransactionState::default().with_transactional_id(id).with_producer_id(ProducerId(-1));
            if let Err(e) = broker.txns.owned_epoch(&txn_id) {
                let c = errors::txn_coordinator(&e);
                log_refusal("DescribeTransactions", &txn_id, c, &e.to_string());
                return out.with_error_code(c);
            }
            broker.metadata.read(|m| match m.transaction(&txn_id) {
                None => {
                    let c = errors::txn(TxnError::TransactionalIdNotFound);
                    log_refusal("DescribeTransactions", &txn_id, c, "no such transactional id");
                    out.with_error_code(c)
                }
                Some(t) => out
                    .with_error_code(errors::NONE)
                    .with_transaction_state(s(t.state.name()))
                    .with_transaction_timeout_ms(t.timeout_ms)
                    .with_transaction_start_time_ms(t.start_ms)
                    .with_producer_id(ProducerId(t.producer_id))
                    .with_producer_epoch(t.producer_epoch)
                    .with_topics(topics_of(m, t)),
            })
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// A transaction's partitions by topic name (deleted topics left out).
fn topics_of(m: &MetadataImage, t: &TxnState) -> Vec<TopicData> {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic_id, p) in &t.partitions {
        if let Some(topic) = m.topic_by_id(topic_id) {
            by_topic.entry(topic.name().to_string()).or_default().push(*p);
        }
    }
    by_topic
        .into_iter()
        .map(|(name, partitions)| TopicData::default().with_topic(TopicName(s(name))).with_partitions(partitions))
        .collect()
}

/// ListTransactions: the transactions of the shards this broker coordinates, filtered by state,
/// producer id and (v1) duration (Kafka's `TransactionStateManager.listTransactionStates`).
pub fn list_transactions(broker: &Arc<Broker>, req: ListTransactionsRequest, version: i16) -> ListTransactionsResponse {
    let states = [
        TxnStatus::Empty,
        TxnStatus::Ongoing,
        TxnStatus::PrepareCommit,
        TxnStatus::PrepareAbort,
        TxnStatus::CompleteCommit,
        TxnStatus::CompleteAbort,
        TxnStatus::PrepareEpochFence,
        TxnStatus::Dead,
    ];
    let mut wanted = BTreeSet::new();
    let mut unknown = Vec::new();
    for f in &req.state_filters {
        match states.iter().find(|s| s.name() == f.as_str()) {
            Some(s) => {
                wanted.insert(s.name());
            }
            None => unknown.push(f.clone()),
        }
    }
    let pids: BTreeSet<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let duration = if version >= 1 { req.duration_filter } else { -1 };
    let now = broker.clock.now_ms();
    let node_id = broker.settings.node_id;
    let listed = broker.metadata.read(|m| {
        m.transactions()
            .filter(|(id, _)| m.txn_coordinator(id).is_none_or(|c| c.broker_id == node_id))
            .filter(|(_, t)| t.state != TxnStatus::Dead)
            .filter(|(_, t)| pids.is_empty() || pids.contains(&t.producer_id))
            .filter(|(_, t)| wanted.is_empty() || wanted.contains(t.state.name()))
            .filter(|(_, t)| duration < 0 || now.saturating_sub(t.start_ms) > duration)
            .map(|(id, t)| {
                ListedTransaction::default()
                    .with_transactional_id(TransactionalId(s(id)))
                    .with_producer_id(ProducerId(t.producer_id))
                    .with_transaction_state(s(t.state.name()))
            })
            .collect()
    });
    ListTransactionsResponse::default()
        .with_error_code(errors::NONE)
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
