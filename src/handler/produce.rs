//! Produce: validate each partition's batches, append them (offsets assigned now, in request
//! order), then answer once every append is durable and committed. acks=0 gets no answer.
//!
//! A bad partition fails alone: CORRUPT_MESSAGE / MESSAGE_TOO_LARGE / INVALID_RECORD for that
//! partition, nothing of it stored, the other partitions of the request unaffected.
//!
//! On a compacted topic (`cleanup.policy` includes `compact`) every record needs a key, as
//! Kafka's `LogValidator.validateKey` requires: the records are decoded (a compressed batch
//! above 64 KiB on a blocking thread, off the async workers) and a keyless one fails the
//! partition with INVALID_RECORD and per-record `record_errors` (v8+). The appended bytes are
//! still the received bytes.
//!
//! OUT_OF_ORDER_SEQUENCE_NUMBER and INVALID_PRODUCER_EPOCH fail the producer's batch for good,
//! so they are given only on producer state from an image confirmed current with the
//! controller; unconfirmed (a broker resumed after a freeze, no controller reachable) the
//! partition gets the retriable NOT_LEADER_OR_FOLLOWER.
//!
//! Transactions (RFC 0004 §6-§7): transactional records need the request's transactional id
//! (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED on every partition, as Kafka); the WAL verifies
//! each transaction's first batch on a partition against the image (`log::txn`), a refusal a
//! lagging image could explain is decided again after `catch_up`, Produce v12 (TV2) adds the
//! partition to the transaction instead, and refusals are logged with the transactional id.
//! TRANSACTION_ABORTABLE exists from v11; older versions get INVALID_TXN_STATE for it.
//!
//! Traced (docs/observability.md) as `kafka.produce`, from the request to its response, with a
//! `produce.append` child per partition; the flush that makes the append durable is a child of
//! the first request it carries (`log::wal`).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::image::{CleanupPolicy, TopicConfig};
use tokio::sync::oneshot;
use tracing::field::Empty;
use tracing::{Instrument, debug, debug_span, info, warn};
use uuid::Uuid;

use super::errors::{self, code};
use super::{Handled, zone_produce};
use crate::broker::batch::{BatchError, BatchHeader};
use crate::broker::dynamic_config::BrokerDefaults;
use crate::broker::{Broker, batch, client_rack, internal_topics, records};
use crate::log::txn::{self, TxnRefusal};
use crate::log::wal::{AppendError, PartitionKey};
use crate::metrics::Direction;

pub(crate) type Ack = oneshot::Receiver<Result<(), AppendError>>;

struct PartitionOutcome {
    response: PartitionProduceResponse,
    ack: Option<Ack>,
    /// The final answer of a partition forwarded to its leader in another zone (RFC 0005).
    forwarded: Option<zone_produce::Forwarded>,
}

pub async fn handle(broker: &Arc<Broker>, req: ProduceRequest, version: i16, client_id: &str) -> Handled {
    handle_on(broker, req, version, client_id, None).await
}

/// [`handle`] for a request that came in on a Kafka listener of this protocol: its
/// NOT_LEADER_OR_FOLLOWER answers name the current leader at its listener of that name (KIP-951).
pub async fn handle_on(
    broker: &Arc<Broker>,
    req: ProduceRequest,
    version: i16,
    client_id: &str,
    listener: Option<crate::security::listener::SecurityProtocol>,
) -> Handled {
    // Lives until the response is ready: the deferred answer below holds it too.
    let span = debug_span!(
        "kafka.produce",
        otel.kind = "server",
        acks = req.acks,
        version,
        topics = Empty,
        partitions = Empty
    );
    if !span.is_disabled() {
        let names: Vec<&str> = req.topic_data.iter().map(|t| t.name.0.as_str()).collect();
        span.record("topics", names.join(",").as_str());
        span.record("partitions", req.topic_data.iter().map(|t| t.partition_data.len()).sum::<usize>());
    }
    let client_rack = client_rack::from_client_id(client_id);
    let bytes: usize =
        req.topic_data.iter().flat_map(|t| &t.partition_data).map(|p| p.records.as_ref().map_or(0, |r| r.len())).sum();
    let broker_rack = broker.settings.rack.as_deref();
    broker.metrics.client_bytes(Direction::In, client_rack.unwrap_or(""), broker_rack, bytes as u64);
    let handled = append_all(broker, req, version, client_rack).instrument(span.clone()).await;
    match (handled, listener) {
        (Handled::Deferred(answer), Some(listener)) => {
            // KIP-951: NOT_LEADER_OR_FOLLOWER answers name the current leader (leader_hints.rs).
            let broker = broker.clone();
            let answer = answer.map(move |r| match r {
                ResponseKind::Produce(p) => {
                    ResponseKind::Produce(super::leader_hints::produce(&broker, p, version, listener))
                }
                other => other,
            });
            Handled::Deferred(answer.instrument(span).boxed())
        }
        (Handled::Deferred(answer), None) => Handled::Deferred(answer.instrument(span).boxed()),
        (other, _) => other,
    }
}

async fn append_all(broker: &Arc<Broker>, req: ProduceRequest, version: i16, client_rack: Option<&str>) -> Handled {
    let acks = req.acks;
    // Partitions forwarded to their leader in another zone: (topic, outcome) positions.
    let mut staged: Vec<zone_produce::Staged> = Vec::new();
    let mut staged_at: Vec<(usize, usize)> = Vec::new();
    if req.transactional_id.is_none() && has_transactional_records(&req) {
        // Kafka's `KafkaApis.handleProduceRequest`: transactional records need the request's
        // transactional id (it is what is authorized); without it every partition gets
        // TRANSACTIONAL_ID_AUTHORIZATION_FAILED and nothing is appended.
        info!("produce refused: transactional records without a transactional id");
        let refusal = code(ResponseError::TransactionalIdAuthorizationFailed);
        let responses = req
            .topic_data
            .into_iter()
            .map(|t| {
                let parts = t.partition_data.iter().map(|p| error(p.index, refusal, None).response).collect();
                TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(parts)
            })
            .collect();
        if acks == 0 {
            return Handled::NoResponse;
        }
        let response = ProduceResponse::default().with_responses(responses);
        return Handled::Deferred(async move { ResponseKind::Produce(response) }.boxed());
    }
    let mut topics: Vec<(TopicProduceResponse, Vec<PartitionOutcome>)> = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        if internal_topics::is_internal(&name) {
            // Kafka's ReplicaManager refuses appends to internal topics from clients.
            info!(topic = %name, "produce refused: clients cannot append to an internal topic");
            let message = format!("Cannot append to internal topic {name}");
            let outcomes = topic
                .partition_data
                .iter()
                .map(|p| error(p.index, code(ResponseError::InvalidTopicException), Some(message.clone())))
                .collect();
            topics
                .push((TopicProduceResponse::default().with_name(topic.name).with_topic_id(topic.topic_id), outcomes));
            continue;
        }
        let found = broker.metadata.read(|m| m.topic(&name).map(|t| (t.id(), *t.config(), t.partition_count())));
        let mut outcomes = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let outcome = match &found {
                None => error(p.index, code(ResponseError::UnknownTopicOrPartition), None),
                Some((_, _, count)) if p.index < 0 || p.index as usize >= *count => {
                    error(p.index, code(ResponseError::UnknownTopicOrPartition), None)
                }
                Some((topic_id, config, _)) => {
                    let records = p.records.unwrap_or_default();
                    let txn_id = req.transactional_id.as_ref().map(|t| t.0.as_str());
                    match zone_produce::forward_target(broker, client_rack, *topic_id, p.index) {
                        Some(target) => match check_forwarded(broker, config, &records, version) {
                            Ok(slots) => {
                                staged_at.push((topics.len(), outcomes.len()));
                                staged.push(zone_produce::Staged {
                                    topic_id: *topic_id,
                                    partition: p.index,
                                    records,
                                    slots,
                                    target,
                                });
                                error(p.index, errors::NONE, None)
                            }
                            Err(e) => {
                                warn!(topic = %name, partition = p.index, error = %e, "produce refused");
                                error(p.index, errors::batch(&e), Some(e.to_string()))
                            }
                        },
                        None => {
                            append_partition(broker, &name, *topic_id, config, p.index, records, version, txn_id).await
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }
        topics.push((TopicProduceResponse::default().with_name(topic.name).with_topic_id(topic.topic_id), outcomes));
    }
    if !staged.is_empty() {
        // Admitted at the leaders before the next request on this connection is read, so
        // appends keep the connection's order (idempotent sequences depend on it).
        let timeout = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0).clamp(1_000, 30_000));
        let txn_id = req.transactional_id.as_ref().map(|t| t.0.as_str());
        let answers = zone_produce::forward_all(broker, staged, txn_id, version, timeout).await;
        for ((t, o), answer) in staged_at.into_iter().zip(answers) {
            topics[t].1[o].forwarded = Some(answer);
        }
    }
    if acks == 0 {
        // No answer, but the data is still written: failures are only logged.
        for (_, outcomes) in topics {
            for o in outcomes {
                if let Some(answer) = o.forwarded {
                    // Detached: reads the leader's final answer (bounded by the forward's
                    // timeout) and only logs.
                    tokio::spawn(async move {
                        let r = answer.await;
                        if r.error_code != errors::NONE {
                            warn!(code = r.error_code, "acks=0 forwarded produce failed");
                        }
                    });
                }
                if let Some(ack) = o.ack {
                    // Detached: it only logs; the WAL resolves (or drops, at shutdown) every ack,
                    // so it ends with the flush it waits on.
                    tokio::spawn(async move {
                        if let Ok(Err(e)) = ack.await {
                            warn!(error = %e, "acks=0 produce failed");
                        }
                    });
                }
            }
        }
        return Handled::NoResponse;
    }
    Handled::Deferred(
        async move {
            let mut responses = Vec::with_capacity(topics.len());
            for (topic, outcomes) in topics {
                let mut parts = Vec::with_capacity(outcomes.len());
                for o in outcomes {
                    let mut r = o.response;
                    if let Some(answer) = o.forwarded {
                        r = answer.await;
                    }
                    if let Some(ack) = o.ack {
                        let result = ack.await.unwrap_or(Err(AppendError::ShuttingDown));
                        if let Err(e) = result {
                            r = r
                                .with_error_code(errors::produce_append(&e, version))
                                .with_error_message(Some(StrBytes::from_string(e.to_string())))
                                .with_base_offset(-1);
                        }
                    }
                    parts.push(r);
                }
                responses.push(topic.with_partition_responses(parts));
            }
            ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
        }
        .boxed(),
    )
}

/// Kafka's `RequestUtils.hasTransactionalRecords`: the transactional bit of any partition's first
/// batch (unparsable records are refused per partition later).
fn has_transactional_records(req: &ProduceRequest) -> bool {
    req.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .any(|p| p.records.as_ref().and_then(|r| batch::parse_header(r).ok()).is_some_and(|h| h.is_transactional()))
}

/// What an append to a topic with typed configs `config` checks and does: its
/// `max.message.bytes`, whether it stamps batches with the broker's clock, and whether every
/// record needs a key (the topic is compacted).
fn append_limits(defaults: &BrokerDefaults<'_>, config: &TopicConfig) -> (usize, bool, bool) {
    let effective = defaults.effective(config);
    let compacted = matches!(effective.cleanup_policy, CleanupPolicy::Compact | CleanupPolicy::CompactDelete);
    (effective.max_message_bytes, effective.log_append_time(), compacted)
}

/// Compressed batches above this size are decoded on a blocking thread: inflating one can take
/// milliseconds, which would stall every other connection served by the same async worker.
const INLINE_DECODE_BYTES: usize = 64 << 10;

/// Kafka's `LogValidator.validateKey`: on a compacted topic every record needs a key. Returns
/// the keyless records' indexes in the first batch that has any.
async fn check_keys(records: &Bytes, headers: &[BatchHeader]) -> Result<(), BatchError> {
    let mut pos = 0;
    for h in headers {
        let batch = records.slice(pos..pos + h.size);
        pos += h.size;
        let keyless = if h.compression() != 0 && h.size > INLINE_DECODE_BYTES {
            tokio::task::spawn_blocking(move || records::keyless_records(&batch))
                .await
                .map_err(|e| BatchError::Invalid(format!("record key check did not finish: {e}")))??
        } else {
            records::keyless_records(&batch)?
        };
        if !keyless.is_empty() {
            return Err(BatchError::KeylessRecords { records: keyless });
        }
    }
    Ok(())
}

/// The answer to a refused batch. Keyless records on a compacted topic get Kafka's
/// `RecordValidationException` answer: one record error per keyless record and the summary
/// `LogValidator.processRecordErrors` writes (both v8+).
fn refused(topic: &str, partition: i32, e: &BatchError) -> PartitionOutcome {
    let BatchError::KeylessRecords { records } = e else {
        return error(partition, errors::batch(e), Some(e.to_string()));
    };
    let message = format!("Compacted topic cannot accept message without key in topic partition {topic}-{partition}.");
    let shown: Vec<String> =
        records.iter().take(3).map(|i| format!("RecordError(batchIndex={i}, message='{message}')")).collect();
    let summary = format!(
        "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
        records.len(),
        shown.join(", ")
    );
    let mut outcome = error(partition, errors::batch(e), Some(summary));
    outcome.response.record_errors = records
        .iter()
        .map(|&i| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(i32::try_from(i).unwrap_or(i32::MAX))
                .with_batch_index_error_message(Some(StrBytes::from_string(message.clone())))
        })
        .collect();
    outcome
}

fn error(index: i32, error_code: i16, message: Option<String>) -> PartitionOutcome {
    PartitionOutcome {
        response: PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(error_code)
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1)
            .with_error_message(message.map(StrBytes::from_string)),
        ack: None,
        forwarded: None,
    }
}

/// TV2's implicit add of the partition to the transaction of the request's first transactional
/// batch (RFC 0004 §6; `log::txn::add_partition`).
async fn implicit_add(
    broker: &Arc<Broker>,
    key: PartitionKey,
    headers: &[BatchHeader],
    transactional_id: Option<&str>,
) -> Result<(), TxnRefusal> {
    let (Some(id), Some(h)) = (transactional_id, headers.iter().find(|h| h.is_transactional())) else {
        return Err(TxnRefusal::NotInTransaction);
    };
    let partition = (key.topic_id, key.partition);
    txn::retry_while_completing(&broker.clock, |now_ms| {
        txn::add_partition(&broker.controller, id, h.producer_id, h.producer_epoch, partition, now_ms)
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn append_partition(
    broker: &Arc<Broker>,
    topic: &str,
    topic_id: Uuid,
    config: &TopicConfig,
    partition: i32,
    records: Bytes,
    version: i16,
    transactional_id: Option<&str>,
) -> PartitionOutcome {
    // The topic's configs over the dynamic broker defaults (`broker/dynamic_config.rs`), all
    // parsed when they were applied: no string parsing per produce.
    let (max, log_append_time, keys_required) = broker.metadata.read(|m| append_limits(&broker.defaults(m), config));
    let headers = match batch::validate_produce(&records, max)
        .and_then(|h| batch::check_codec_for_version(&h, version).map(|()| h))
    {
        Ok(h) => h,
        Err(e) => {
            warn!(topic, partition, error = %e, "produce refused");
            return error(partition, errors::batch(&e), Some(e.to_string()));
        }
    };
    if keys_required && let Err(e) = check_keys(&records, &headers).await {
        info!(topic, partition, error = %e, "produce refused");
        return refused(topic, partition, &e);
    }
    let log_append_time = log_append_time.then(|| broker.clock.now_ms());
    let key = PartitionKey { topic_id, partition };
    let span = debug_span!(
        "produce.append",
        topic,
        partition,
        bytes = records.len(),
        batches = headers.len(),
        records = Empty,
        base_offset = Empty
    );
    if !span.is_disabled() {
        span.record("records", headers.iter().map(|h| i64::from(h.records_count)).sum::<i64>());
    }
    let append =
        || broker.wal.append(key, &records, &headers, log_append_time, transactional_id).instrument(span.clone());
    let mut appended = append().await;
    let not_added = matches!(
        appended,
        Err(AppendError::Txn(TxnRefusal::NotInTransaction | TxnRefusal::Unverifiable(txn::CONCURRENT_TRANSACTIONS)))
    );
    if version >= 12 && not_added {
        // TV2 (Produce v12, KIP-890 part 2): the first batch of a transaction on a partition
        // adds the partition itself (Kafka's `addPartition` path), waiting a little while the
        // previous transaction of the producer completes (a TV2 producer starts the next one
        // right after EndTxn, before its markers are written); the append after it is verified
        // again from the image.
        appended = match implicit_add(broker, key, &headers, transactional_id).await {
            Ok(()) => append().await,
            Err(r) => Err(AppendError::Txn(r)),
        };
    }
    let stale = |e: &AppendError| match e {
        AppendError::OutOfOrderSequence | AppendError::ProducerFenced => true,
        AppendError::Txn(r) => r.may_be_stale(),
        _ => false,
    };
    if let Err(e) = &appended
        && stale(e)
    {
        // Fatal for the producer, and decided on producer state from this broker's image, which
        // may be seconds old after a freeze (still "leading" in an epoch that moved on), or may
        // not show yet the AddPartitionsToTxn the coordinator applied (RFC 0004 §6): decide
        // again on an image confirmed current, or let the producer retry.
        appended = match broker.controller.catch_up().await {
            Ok(()) => append().await,
            Err(c) => {
                warn!(topic, partition, error = %c, refusal = %e, "produce refused on an unconfirmed image; answering NOT_LEADER_OR_FOLLOWER");
                Err(AppendError::NotLeader)
            }
        };
    }
    if matches!(appended, Err(AppendError::NotLeader)) {
        // During a failover a client may learn that this broker leads from a broker whose image
        // applied the fence first; bounced back, it must refresh metadata, which some clients do
        // only after a floor (franz-go: MetadataMinAge, 5 s). Decide again on an image
        // confirmed current (one ReadIndex, shared by concurrent checks).
        if broker.controller.catch_up().await.is_ok() {
            appended = append().await;
        }
    }
    if let Ok((a, _)) = &appended {
        span.record("base_offset", a.base_offset);
    }
    match appended {
        Ok((appended, ack)) => {
            broker.metrics.produced_bytes.fetch_add(records.len() as u64, Relaxed);
            broker.metrics.produced_batches.fetch_add(headers.len() as u64, Relaxed);
            let log_start =
                broker.metadata.read(|m| m.partition(&topic_id, partition).map(|p| p.log_start_offset())).unwrap_or(-1);
            PartitionOutcome {
                response: PartitionProduceResponse::default()
                    .with_index(partition)
                    .with_error_code(errors::NONE)
                    .with_base_offset(appended.base_offset)
                    .with_log_append_time_ms(appended.log_append_time)
                    .with_log_start_offset(log_start),
                ack,
                forwarded: None,
            }
        }
        Err(e @ AppendError::Txn(_)) => {
            // Clear errors (#13): the client gets the protocol's code, the broker log says why.
            info!(topic, partition, transactional_id, error = %e, "transactional produce refused");
            error(partition, errors::produce_append(&e, version), Some(e.to_string()))
        }
        Err(e) => {
            debug!(topic, partition, error = %e, "append refused");
            error(partition, errors::produce_append(&e, version), Some(e.to_string()))
        }
    }
}

/// What a broker forwarding a partition to its leader in another zone checks first (RFC 0005):
/// the framing, size and codec checks of [`append_partition`], so no malformed bytes are staged.
/// The leader checks everything again on the bytes it reads back. Returns the batches' offset
/// slots (records by their last offset deltas).
fn check_forwarded(broker: &Broker, config: &TopicConfig, records: &Bytes, version: i16) -> Result<i64, BatchError> {
    let (max, _, _) = broker.metadata.read(|m| append_limits(&broker.defaults(m), config));
    let headers = batch::validate_produce(records, max)?;
    batch::check_codec_for_version(&headers, version)?;
    Ok(headers.iter().map(|h| i64::from(h.last_offset_delta) + 1).sum())
}

/// The leader's append of a partition another broker forwarded (RFC 0005): exactly a client's
/// produce of `records` to this broker, returned before it is durable (with the receiver that
/// says when, as for a client's produce).
pub(crate) async fn append_forwarded(
    broker: &Arc<Broker>,
    topic_id: Uuid,
    partition: i32,
    records: Bytes,
    version: i16,
    transactional_id: Option<&str>,
) -> (PartitionProduceResponse, Option<Ack>) {
    let found = broker
        .metadata
        .read(|m| m.topic_by_id(&topic_id).map(|t| (t.name().to_string(), *t.config(), t.partition_count())));
    let outcome = match found {
        Some((name, config, count)) if partition >= 0 && (partition as usize) < count => {
            append_partition(broker, &name, topic_id, &config, partition, records, version, transactional_id).await
        }
        _ => error(partition, code(ResponseError::UnknownTopicOrPartition), None),
    };
    (outcome.response, outcome.ack)
}

/// `response` once `ack` (the append's durability) resolves: unchanged on success, the append
/// error's code otherwise, as the answer to a client's produce is built.
pub(crate) async fn settle(
    response: PartitionProduceResponse,
    ack: Option<Ack>,
    version: i16,
) -> PartitionProduceResponse {
    let Some(ack) = ack else { return response };
    match ack.await.unwrap_or(Err(AppendError::ShuttingDown)) {
        Ok(()) => response,
        Err(e) => response
            .with_error_code(errors::produce_append(&e, version))
            .with_error_message(Some(StrBytes::from_string(e.to_string())))
            .with_base_offset(-1),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use skiff_controller::image::ImageFixture;
    use skiff_controller::intent::{BrokerRegistration, ConfigChange, ConfigResource, CreateTopic};
    use uuid::Uuid;

    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Produce acts on the typed configs the image parsed when the topic was created, over
    /// the typed dynamic broker defaults.
    #[test]
    fn append_limits_read_the_typed_topic_config() {
        let topic = |name: &str, configs| CreateTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(name.len() as u128), // "set" and "unset": distinct ids
            partitions: 1,
            configs,
            assignments: Vec::new(),
        };
        let image = ImageFixture::new("c")
            .register_broker(BrokerRegistration {
                broker_id: 1,
                incarnation: Uuid::nil(),
                host: "h".into(),
                port: 1,
                rack: None,
                fenced: false,
                listeners: Vec::new(),
            })
            .create_topic(topic(
                "set",
                map(&[("max.message.bytes", "700"), ("message.timestamp.type", "LogAppendTime")]),
            ))
            .create_topic(topic("unset", BTreeMap::new()))
            .create_topic(topic("compacted", map(&[("cleanup.policy", "compact,delete")])))
            .set_configs(ConfigChange {
                resource: ConfigResource::Broker(String::new()),
                configs: map(&[("message.max.bytes", "900")]),
            })
            .build();
        let defaults = BrokerDefaults::new(image.dynamic_configs(), 1, 2000);
        let set = image.topic("set").expect("created");
        assert_eq!(set.config().max_message_bytes, Some(700));
        assert_eq!(append_limits(&defaults, set.config()), (700, true, false));
        let unset = image.topic("unset").expect("created");
        assert_eq!(append_limits(&defaults, unset.config()), (900, false, false));
        let compacted = image.topic("compacted").expect("created");
        assert_eq!(append_limits(&defaults, compacted.config()), (900, false, true), "compact,delete needs keys");
    }

    /// Kafka's answer to keyless records on a compacted topic: INVALID_RECORD, one record error
    /// per keyless record of the first batch that has any, and `processRecordErrors`' summary.
    #[tokio::test]
    async fn keyless_records_fail_the_partition_as_kafka_does() {
        use kafka_protocol::records::Compression;

        use crate::broker::records::tests::encode;

        let keyed = encode(0, Compression::Gzip, -1, &[(Some(b"k"), Some(b"v"), 1, &[])]);
        let headers = batch::validate_produce(&keyed, 1 << 20).expect("valid");
        check_keys(&keyed, &headers).await.expect("every record has a key");

        let keyless = encode(
            0,
            Compression::None,
            -1,
            &[
                (Some(b"k"), Some(b"v"), 1, &[]),
                (None, Some(b"v"), 1, &[]),
                (None, None, 1, &[]),
                (None, None, 1, &[]),
                (None, None, 1, &[]),
            ],
        );
        let both = Bytes::from([&keyed[..], &keyless[..]].concat());
        let headers = batch::validate_produce(&both, 1 << 20).expect("valid");
        let e = check_keys(&both, &headers).await.expect_err("keyless records");
        assert_eq!(e, BatchError::KeylessRecords { records: vec![1, 2, 3, 4] });

        let r = refused("orders", 3, &e).response;
        let message = "Compacted topic cannot accept message without key in topic partition orders-3.";
        assert_eq!((r.index, r.error_code, r.base_offset), (3, 87, -1));
        let indexes: Vec<i32> = r.record_errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4]);
        assert!(r.record_errors.iter().all(|e| e.batch_index_error_message.as_deref() == Some(message)));
        let shown = [1, 2, 3].map(|i| format!("RecordError(batchIndex={i}, message='{message}')")).join(", ");
        assert_eq!(
            r.error_message.as_deref(),
            Some(
                format!(
                    "One or more records have been rejected due to 4 record errors in total, and only showing the first three errors at most: [{shown}]"
                )
                .as_str()
            )
        );

        // A large compressed batch is decoded on a blocking thread, with the same answer.
        let mut x = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..200 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let large = encode(0, Compression::Lz4, -1, &[(Some(b"k"), Some(&noise), 1, &[]), (None, Some(b"v"), 1, &[])]);
        assert!(large.len() > INLINE_DECODE_BYTES);
        let headers = batch::validate_produce(&large, 1 << 20).expect("valid");
        assert_eq!(check_keys(&large, &headers).await, Err(BatchError::KeylessRecords { records: vec![1] }));

        // Other refusals keep their codes and messages.
        let r = refused("orders", 0, &BatchError::Corrupt("x".into())).response;
        assert_eq!((r.error_code, r.record_errors.len()), (2, 0));
    }
}
