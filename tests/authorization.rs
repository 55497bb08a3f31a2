//! Authorization (docs/security.md "Authorization"): every served API refuses an unauthorized
//! principal with Kafka's code, ACLs grant and deny as Kafka's do, and Kafka's own
//! `kafka-acls.sh` manages them.
//!
//! The matrix test enumerates the APIs the broker advertises in ApiVersions, so an API added
//! later without an entry in [`probe`] (and so, most likely, without an authorization check)
//! fails it. Brokers run with a SASL_PLAINTEXT listener (so `allow.everyone.if.no.acl.found`
//! defaults to false), the bootstrap user `admin` as the only super user, and users created
//! through AlterUserScramCredentials. Every wait is bounded.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::SkiffProcess;
use support::client::{Client, TestRecord, encode_batch, topic_name};
use support::cluster::{http_get, prometheus_value};
use support::kafka_cli;
use support::slot::Slot;

const ADMIN: (&str, &str) = ("admin", "admin-secret-77a1");
const MALLORY: (&str, &str) = ("mallory", "mallory-secret-3b2c");
const ALICE: (&str, &str) = ("alice", "alice-secret-9f0d");
const LISTENERS: &str = "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0";

fn start(extra: &[(&str, &str)]) -> SkiffProcess {
    let mut env: Vec<(String, String)> = vec![
        ("SKIFF_SASL_MECHANISMS".into(), "PLAIN,SCRAM-SHA-512".into()),
        ("SKIFF_SCRAM_BOOTSTRAP_USER".into(), format!("{}={}", ADMIN.0, ADMIN.1)),
        ("SKIFF_SUPER_USERS".into(), format!("User:{}", ADMIN.0)),
        // These tests read /metrics without credentials; with a SASL listener the HTTP
        // listener would ask for them (tests/http_auth.rs covers that).
        ("SKIFF_HTTP_METRICS_OPEN".into(), "true".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    SkiffProcess::start_with_listeners(LISTENERS, None, env)
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A connection authenticated with SASL PLAIN.
async fn login(addr: &str, (user, password): (&str, &str)) -> anyhow::Result<Client> {
    let mut c = Client::connect(addr).await?;
    let h = c.send(&SaslHandshakeRequest::default().with_mechanism(sb("PLAIN")), 1).await?;
    anyhow::ensure!(h.error_code == 0, "handshake: {}", h.error_code);
    let token = Bytes::from(format!("\0{user}\0{password}").into_bytes());
    let r = c.send(&SaslAuthenticateRequest::default().with_auth_bytes(token), 2).await?;
    anyhow::ensure!(r.error_code == 0, "login as {user}: {} {:?}", r.error_code, r.error_message);
    Ok(c)
}

/// Creates `user` with a SCRAM-SHA-512 credential (which PLAIN checks too).
async fn create_user(admin: &mut Client, (user, password): (&str, &str)) -> anyhow::Result<()> {
    use alter_user_scram_credentials_request::ScramCredentialUpsertion;
    let salt = b"authorization-test-salt";
    let salted = skiff::security::sasl::scram::salted_password(
        skiff_controller::scram::ScramMechanism::ScramSha512,
        password.as_bytes(),
        salt,
        4096,
    );
    let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(sb(user))
            .with_mechanism(2)
            .with_iterations(4096)
            .with_salt(Bytes::from_static(salt))
            .with_salted_password(Bytes::from(salted)),
    ]);
    let r = admin.send(&req, 0).await?;
    anyhow::ensure!(r.results.iter().all(|r| r.error_code == 0), "creating {user}: {:?}", r.results);
    Ok(())
}

/// One ACL binding for CreateAcls: (resource type, name, pattern, principal, operation,
/// permission) with Kafka's codes, host `*`.
fn acl(rt: i8, name: &str, pattern: i8, principal: &str, op: i8, perm: i8) -> create_acls_request::AclCreation {
    create_acls_request::AclCreation::default()
        .with_resource_type(rt)
        .with_resource_name(sb(name))
        .with_resource_pattern_type(pattern)
        .with_principal(sb(principal))
        .with_host(sb("*"))
        .with_operation(op)
        .with_permission_type(perm)
}

// Kafka's codes (ResourceType, PatternType, AclOperation, AclPermissionType).
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const TXN_ID: i8 = 5;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const ALL: i8 = 2;
const READ: i8 = 3;
const WRITE: i8 = 4;
const DESCRIBE: i8 = 8;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

async fn create_acls(admin: &mut Client, acls: Vec<create_acls_request::AclCreation>) -> anyhow::Result<()> {
    let r = admin.send(&CreateAclsRequest::default().with_creations(acls), 3).await?;
    anyhow::ensure!(r.results.iter().all(|r| r.error_code == 0), "CreateAcls: {:?}", r.results);
    Ok(())
}

fn batch() -> Bytes {
    encode_batch(
        &[TestRecord::new(&b"k"[..], &b"v"[..], 1_700_000_000_000)],
        kafka_protocol::records::Compression::None,
        None,
    )
}

/// What a probe found.
enum Verdict {
    /// Not authorized in Kafka either (part of connecting).
    Exempt,
    /// (what, error code got, code expected).
    Codes(Vec<(String, i16, i16)>),
    /// (what, whether the unauthorized principal saw nothing it may not).
    Hidden(Vec<(String, bool)>),
}

fn codes(list: &[(&str, i16, i16)]) -> Verdict {
    Verdict::Codes(list.iter().map(|(w, g, e)| (w.to_string(), *g, *e)).collect())
}

const T29: i16 = 29; // TOPIC_AUTHORIZATION_FAILED
const G30: i16 = 30; // GROUP_AUTHORIZATION_FAILED
const C31: i16 = 31; // CLUSTER_AUTHORIZATION_FAILED
const X53: i16 = 53; // TRANSACTIONAL_ID_AUTHORIZATION_FAILED

/// Sends `key` at `version` as the unauthorized principal on `c`: the expectation table.
/// `None`: the API has no entry.
async fn probe(c: &mut Client, key: ApiKey, v: i16) -> anyhow::Result<Option<Verdict>> {
    let t = "secret";
    let g = "secret-group";
    let x = "secret-txn";
    let first = |codes: &[i16]| codes.first().copied().unwrap_or(-1);
    Ok(Some(match key {
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => Verdict::Exempt,
        ApiKey::Produce => {
            let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
                produce_request::TopicProduceData::default().with_name(topic_name(t)).with_partition_data(vec![
                    produce_request::PartitionProduceData::default().with_index(0).with_records(Some(batch())),
                ]),
            ]);
            let r = c.send(&req, v).await?;
            let got: Vec<i16> =
                r.responses.iter().flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)).collect();
            let tx = req.clone().with_transactional_id(Some(TransactionalId(sb(x))));
            let rt = c.send(&tx, v).await?;
            let got_tx: Vec<i16> =
                rt.responses.iter().flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)).collect();
            codes(&[("Produce to topic", first(&got), T29), ("transactional Produce", first(&got_tx), X53)])
        }
        ApiKey::Fetch => {
            let req = FetchRequest::default().with_max_wait_ms(5000).with_max_bytes(1 << 20).with_topics(vec![
                fetch_request::FetchTopic::default().with_topic(topic_name(t)).with_partitions(vec![
                    fetch_request::FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20),
                ]),
            ]);
            let r = c.send(&req, v).await?;
            let got: Vec<i16> = r.responses.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
            codes(&[("Fetch", first(&got), T29)])
        }
        ApiKey::ListOffsets => {
            let req = ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default().with_name(topic_name(t)).with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1),
                ]),
            ]);
            let r = c.send(&req, v).await?;
            let got: Vec<i16> = r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
            codes(&[("ListOffsets", first(&got), T29)])
        }
        ApiKey::Metadata => {
            let one = MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(t))),
            ]));
            let r = c.send(&one, v).await?;
            let got = r.topics.first().map_or(-1, |t| t.error_code);
            let all = c.send(&MetadataRequest::default().with_topics(None), v).await?;
            let listed: Vec<String> =
                all.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect();
            let mut v = vec![("Metadata of a named topic".to_string(), got == T29)];
            v.push((format!("Metadata of all topics lists nothing (listed {listed:?})"), listed.is_empty()));
            Verdict::Hidden(v)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let req = OffsetForLeaderEpochRequest::default().with_replica_id((-1).into()).with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(topic_name(t))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_leader_epoch(0)
                            .with_current_leader_epoch(-1),
                    ]),
            ]);
            let r = c.send(&req, v).await?;
            let got: Vec<i16> = r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
            codes(&[("OffsetForLeaderEpoch", first(&got), T29)])
        }
        ApiKey::CreateTopics => {
            let req = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic_name("new-topic"))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]);
            let r = c.send(&req, v).await?;
            codes(&[("CreateTopics", r.topics.first().map_or(-1, |t| t.error_code), T29)])
        }
        ApiKey::DeleteTopics => {
            let req = if v >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    delete_topics_request::DeleteTopicState::default().with_name(Some(topic_name(t))),
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![topic_name(t)])
            };
            let r = c.send(&req.with_timeout_ms(5000), v).await?;
            codes(&[("DeleteTopics", r.responses.first().map_or(-1, |t| t.error_code), T29)])
        }
        ApiKey::DeleteRecords => {
            let req = DeleteRecordsRequest::default().with_timeout_ms(5000).with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default().with_name(topic_name(t)).with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default().with_partition_index(0).with_offset(0),
                ]),
            ]);
            let r = c.send(&req, v).await?;
            let got: Vec<i16> = r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
            codes(&[("DeleteRecords", first(&got), T29)])
        }
        ApiKey::InitProducerId => {
            let tx = InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(sb(x))))
                .with_transaction_timeout_ms(10_000)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1);
            let a = c.send(&tx, v).await?.error_code;
            let idempotent = InitProducerIdRequest::default()
                .with_transaction_timeout_ms(-1)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1);
            let b = c.send(&idempotent, v).await?.error_code;
            codes(&[("transactional InitProducerId", a, X53), ("idempotent InitProducerId", b, C31)])
        }
        ApiKey::DescribeCluster => {
            // Kafka answers everyone; without DESCRIBE on the cluster the operations are 0.
            let r =
                c.send(&DescribeClusterRequest::default().with_include_cluster_authorized_operations(true), v).await?;
            Verdict::Hidden(vec![(
                format!(
                    "DescribeCluster: error {}, cluster_authorized_operations {}",
                    r.error_code, r.cluster_authorized_operations
                ),
                r.error_code == 0 && r.cluster_authorized_operations == 0,
            )])
        }
        ApiKey::DescribeTopicPartitions => {
            let req = DescribeTopicPartitionsRequest::default()
                .with_response_partition_limit(100)
                .with_topics(vec![describe_topic_partitions_request::TopicRequest::default().with_name(topic_name(t))]);
            let r = c.send(&req, v).await?;
            let all = c.send(&DescribeTopicPartitionsRequest::default().with_response_partition_limit(100), v).await?;
            Verdict::Hidden(vec![
                (
                    "DescribeTopicPartitions of a named topic".into(),
                    r.topics.first().map(|t| t.error_code) == Some(T29),
                ),
                (
                    format!("DescribeTopicPartitions of all topics lists nothing ({})", all.topics.len()),
                    all.topics.is_empty(),
                ),
            ])
        }
        ApiKey::DescribeConfigs => {
            let res = |rt: i8, name: &str| {
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(rt)
                    .with_resource_name(sb(name))
            };
            let r = c
                .send(&DescribeConfigsRequest::default().with_resources(vec![res(2, t), res(4, "1"), res(32, g)]), v)
                .await?;
            let code = |rt: i8| r.results.iter().find(|x| x.resource_type == rt).map_or(-1, |x| x.error_code);
            codes(&[
                ("DescribeConfigs topic", code(2), T29),
                ("DescribeConfigs broker", code(4), C31),
                ("DescribeConfigs group", code(32), G30),
            ])
        }
        ApiKey::AlterConfigs => {
            let res = |rt: i8, name: &str| {
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(rt)
                    .with_resource_name(sb(name))
            };
            let r = c.send(&AlterConfigsRequest::default().with_resources(vec![res(2, t), res(4, "1")]), v).await?;
            let code = |rt: i8| r.responses.iter().find(|x| x.resource_type == rt).map_or(-1, |x| x.error_code);
            codes(&[("AlterConfigs topic", code(2), T29), ("AlterConfigs broker", code(4), C31)])
        }
        ApiKey::IncrementalAlterConfigs => {
            let res = |rt: i8, name: &str| {
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(rt)
                    .with_resource_name(sb(name))
            };
            let r = c
                .send(
                    &IncrementalAlterConfigsRequest::default().with_resources(vec![res(2, t), res(4, "1"), res(32, g)]),
                    v,
                )
                .await?;
            let code = |rt: i8| r.responses.iter().find(|x| x.resource_type == rt).map_or(-1, |x| x.error_code);
            codes(&[
                ("IncrementalAlterConfigs topic", code(2), T29),
                ("IncrementalAlterConfigs broker", code(4), C31),
                ("IncrementalAlterConfigs group", code(32), G30),
            ])
        }
        ApiKey::CreatePartitions => {
            let req = CreatePartitionsRequest::default().with_timeout_ms(5000).with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default().with_name(topic_name(t)).with_count(3),
            ]);
            let r = c.send(&req, v).await?;
            codes(&[("CreatePartitions", r.results.first().map_or(-1, |t| t.error_code), T29)])
        }
        ApiKey::DescribeLogDirs => {
            let r = c.send(&DescribeLogDirsRequest::default().with_topics(None), v).await?;
            let mut v = vec![("DescribeLogDirs lists no dirs".to_string(), r.results.is_empty())];
            v.push((format!("DescribeLogDirs error {}", r.error_code), r.error_code == C31));
            Verdict::Hidden(v)
        }
        ApiKey::DescribeQuorum => {
            let r = c.send(&DescribeQuorumRequest::default(), v).await?;
            codes(&[("DescribeQuorum", r.error_code, C31)])
        }
        ApiKey::UpdateFeatures => {
            let r = c.send(&UpdateFeaturesRequest::default().with_timeout_ms(5000), v).await?;
            codes(&[("UpdateFeatures", r.error_code, C31)])
        }
        ApiKey::ElectLeaders => {
            let req = ElectLeadersRequest::default().with_timeout_ms(5000).with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default().with_topic(topic_name(t)).with_partitions(vec![0]),
            ]));
            let r = c.send(&req, v).await?;
            codes(&[("ElectLeaders", r.error_code, C31)])
        }
        ApiKey::DescribeProducers => {
            let req = DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic_name(t))
                    .with_partition_indexes(vec![0]),
            ]);
            let r = c.send(&req, v).await?;
            let got: Vec<i16> = r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
            codes(&[("DescribeProducers", first(&got), T29)])
        }
        ApiKey::AlterPartitionReassignments => {
            let r = c.send(&AlterPartitionReassignmentsRequest::default().with_timeout_ms(5000), v).await?;
            codes(&[("AlterPartitionReassignments", r.error_code, C31)])
        }
        ApiKey::ListPartitionReassignments => {
            let r = c.send(&ListPartitionReassignmentsRequest::default().with_timeout_ms(5000), v).await?;
            codes(&[("ListPartitionReassignments", r.error_code, C31)])
        }
        ApiKey::UnregisterBroker => {
            let r = c.send(&UnregisterBrokerRequest::default().with_broker_id(9.into()), v).await?;
            codes(&[("UnregisterBroker", r.error_code, C31)])
        }
        ApiKey::FindCoordinator => {
            let (a, b) = if v >= 4 {
                let ga = c
                    .send(&FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(vec![sb(g)]), v)
                    .await?;
                let xa = c
                    .send(&FindCoordinatorRequest::default().with_key_type(1).with_coordinator_keys(vec![sb(x)]), v)
                    .await?;
                (
                    ga.coordinators.first().map_or(-1, |c| c.error_code),
                    xa.coordinators.first().map_or(-1, |c| c.error_code),
                )
            } else {
                let ga = c.send(&FindCoordinatorRequest::default().with_key_type(0).with_key(sb(g)), v).await?;
                let xa = c.send(&FindCoordinatorRequest::default().with_key_type(1).with_key(sb(x)), v).await?;
                (ga.error_code, xa.error_code)
            };
            codes(&[("FindCoordinator group", a, G30), ("FindCoordinator transaction", b, X53)])
        }
        ApiKey::JoinGroup => {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(sb(g)))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(sb("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default().with_name(sb("range"))]);
            codes(&[("JoinGroup", c.send(&req, v).await?.error_code, G30)])
        }
        ApiKey::SyncGroup => {
            let req =
                SyncGroupRequest::default().with_group_id(GroupId(sb(g))).with_generation_id(1).with_member_id(sb("m"));
            codes(&[("SyncGroup", c.send(&req, v).await?.error_code, G30)])
        }
        ApiKey::Heartbeat => {
            let req =
                HeartbeatRequest::default().with_group_id(GroupId(sb(g))).with_generation_id(1).with_member_id(sb("m"));
            codes(&[("Heartbeat", c.send(&req, v).await?.error_code, G30)])
        }
        ApiKey::LeaveGroup => {
            let req = LeaveGroupRequest::default().with_group_id(GroupId(sb(g)));
            let req = if v >= 3 {
                req.with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(sb("m"))])
            } else {
                req.with_member_id(sb("m"))
            };
            codes(&[("LeaveGroup", c.send(&req, v).await?.error_code, G30)])
        }
        ApiKey::DescribeGroups => {
            let r = c.send(&DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(g))]), v).await?;
            codes(&[("DescribeGroups", r.groups.first().map_or(-1, |g| g.error_code), G30)])
        }
        ApiKey::ListGroups => {
            let r = c.send(&ListGroupsRequest::default(), v).await?;
            let listed: Vec<String> = r.groups.iter().map(|g| g.group_id.0.to_string()).collect();
            Verdict::Hidden(vec![(
                format!("ListGroups lists nothing (listed {listed:?}, error {})", r.error_code),
                listed.is_empty() && r.error_code == 0,
            )])
        }
        ApiKey::DeleteGroups => {
            let r = c.send(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb(g))]), v).await?;
            codes(&[("DeleteGroups", r.results.first().map_or(-1, |g| g.error_code), G30)])
        }
        ApiKey::OffsetCommit => {
            let req = OffsetCommitRequest::default()
                .with_group_id(GroupId(sb(g)))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(0),
                        ]),
                ]);
            let r = c.send(&req, v).await?;
            let got: Vec<i16> = r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
            codes(&[("OffsetCommit", first(&got), G30)])
        }
        ApiKey::OffsetFetch => {
            let got = if v >= 8 {
                let req = OffsetFetchRequest::default().with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(sb(g)))
                        .with_topics(None),
                ]);
                c.send(&req, v).await?.groups.first().map_or(-1, |g| g.error_code)
            } else {
                c.send(&OffsetFetchRequest::default().with_group_id(GroupId(sb(g))).with_topics(None), v)
                    .await?
                    .error_code
            };
            codes(&[("OffsetFetch", got, G30)])
        }
        ApiKey::OffsetDelete => {
            let req = OffsetDeleteRequest::default().with_group_id(GroupId(sb(g))).with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default().with_name(topic_name(t)).with_partitions(
                    vec![offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0)],
                ),
            ]);
            codes(&[("OffsetDelete", c.send(&req, v).await?.error_code, G30)])
        }
        ApiKey::ConsumerGroupHeartbeat => {
            let req = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(sb(g)))
                .with_member_id(sb("m-consumer-1"))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(10_000)
                .with_subscribed_topic_names(Some(vec![topic_name(t)]))
                .with_topic_partitions(Some(vec![]));
            codes(&[("ConsumerGroupHeartbeat", c.send(&req, v).await?.error_code, G30)])
        }
        ApiKey::ConsumerGroupDescribe => {
            let r = c.send(&ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(sb(g))]), v).await?;
            codes(&[("ConsumerGroupDescribe", r.groups.first().map_or(-1, |g| g.error_code), G30)])
        }
        ApiKey::AddPartitionsToTxn => {
            // v0-3 are the producers' (WRITE on the id); v4+ the brokers' (CLUSTER_ACTION).
            let topics = vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic_name(t))
                    .with_partitions(vec![0]),
            ];
            let client = AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(sb(x)))
                .with_v3_and_below_producer_id(1.into())
                .with_v3_and_below_producer_epoch(0)
                .with_v3_and_below_topics(topics.clone());
            let r = c.send(&client, v.min(3)).await?;
            let got: Vec<i16> = r
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| t.results_by_partition.iter().map(|p| p.partition_error_code))
                .collect();
            let mut list = vec![("AddPartitionsToTxn v3".to_string(), first(&got), X53)];
            if v >= 4 {
                let broker = AddPartitionsToTxnRequest::default().with_transactions(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(TransactionalId(sb(x)))
                        .with_producer_id(1.into())
                        .with_producer_epoch(0)
                        .with_verify_only(true)
                        .with_topics(topics),
                ]);
                list.push((format!("AddPartitionsToTxn v{v}"), c.send(&broker, v).await?.error_code, C31));
            }
            Verdict::Codes(list)
        }
        ApiKey::AddOffsetsToTxn => {
            let req = AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(sb(x)))
                .with_producer_id(1.into())
                .with_group_id(GroupId(sb(g)));
            codes(&[("AddOffsetsToTxn", c.send(&req, v).await?.error_code, X53)])
        }
        ApiKey::EndTxn => {
            let req = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(sb(x)))
                .with_producer_id(1.into())
                .with_committed(true);
            codes(&[("EndTxn", c.send(&req, v).await?.error_code, X53)])
        }
        ApiKey::TxnOffsetCommit => {
            let req = TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(sb(x)))
                .with_group_id(GroupId(sb(g)))
                .with_producer_id(1.into())
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ]);
            let r = c.send(&req, v).await?;
            let got: Vec<i16> = r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
            codes(&[("TxnOffsetCommit", first(&got), X53)])
        }
        ApiKey::DescribeTransactions => {
            let r = c
                .send(&DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(sb(x))]), v)
                .await?;
            codes(&[("DescribeTransactions", r.transaction_states.first().map_or(-1, |t| t.error_code), X53)])
        }
        ApiKey::ListTransactions => {
            let r = c.send(&ListTransactionsRequest::default(), v).await?;
            let listed: Vec<String> = r.transaction_states.iter().map(|t| t.transactional_id.0.to_string()).collect();
            Verdict::Hidden(vec![(format!("ListTransactions lists nothing (listed {listed:?})"), listed.is_empty())])
        }
        ApiKey::DescribeUserScramCredentials => codes(&[(
            "DescribeUserScramCredentials",
            c.send(&DescribeUserScramCredentialsRequest::default(), v).await?.error_code,
            C31,
        )]),
        ApiKey::AlterUserScramCredentials => {
            let req = AlterUserScramCredentialsRequest::default().with_deletions(vec![
                alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                    .with_name(sb(ALICE.0))
                    .with_mechanism(2),
            ]);
            let r = c.send(&req, v).await?;
            codes(&[("AlterUserScramCredentials", r.results.first().map_or(-1, |r| r.error_code), C31)])
        }
        ApiKey::CreateAcls => {
            let r = c
                .send(
                    &CreateAclsRequest::default().with_creations(vec![acl(
                        TOPIC,
                        t,
                        LITERAL,
                        "User:mallory",
                        ALL,
                        ALLOW,
                    )]),
                    v,
                )
                .await?;
            codes(&[("CreateAcls", r.results.first().map_or(-1, |r| r.error_code), C31)])
        }
        ApiKey::DescribeAcls => {
            let req = DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1);
            codes(&[("DescribeAcls", c.send(&req, v).await?.error_code, C31)])
        }
        ApiKey::DeleteAcls => {
            let req = DeleteAclsRequest::default().with_filters(vec![
                delete_acls_request::DeleteAclsFilter::default()
                    .with_resource_type_filter(1)
                    .with_pattern_type_filter(1)
                    .with_operation(1)
                    .with_permission_type(1),
            ]);
            let r = c.send(&req, v).await?;
            codes(&[("DeleteAcls", r.filter_results.first().map_or(-1, |r| r.error_code), C31)])
        }
        ApiKey::DescribeClientQuotas => {
            let r = c.send(&DescribeClientQuotasRequest::default(), v).await?;
            codes(&[("DescribeClientQuotas", r.error_code, C31)])
        }
        ApiKey::AlterClientQuotas => {
            use alter_client_quotas_request::*;
            let entry = EntryData::default()
                .with_entity(vec![
                    EntityData::default().with_entity_type(sb("user")).with_entity_name(Some(sb("mallory"))),
                ])
                .with_ops(vec![OpData::default().with_key(sb("producer_byte_rate")).with_value(1024.0)]);
            let r = c.send(&AlterClientQuotasRequest::default().with_entries(vec![entry]), v).await?;
            codes(&[("AlterClientQuotas", r.entries.first().map_or(-1, |e| e.error_code), C31)])
        }
        _ => return Ok(None),
    }))
}

/// Every API the broker advertises, sent by a principal with no ACL, is refused with Kafka's
/// code for its resource (or, for listings, shows nothing); an advertised API without an entry
/// in [`probe`] fails the test by name. Denials are counted in `/metrics`.
#[test]
fn every_served_api_refuses_an_unauthorized_principal() {
    let _slot = Slot::acquire();
    let broker = start(&[]);
    let addr = broker.listener("SASL_PLAINTEXT").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let failures = rt.block_on(async {
        let mut admin = login(&addr, ADMIN).await.expect("admin login");
        admin.create_topic_ok("secret", 1).await.expect("create topic");
        admin.produce_ok("secret", 0, batch()).await.expect("admin produces");
        // A group with a committed offset, for ListGroups to hide.
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(sb("secret-group")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default().with_name(topic_name("secret")).with_partitions(
                vec![offset_commit_request::OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(1)],
            )]);
        let r = admin.send(&commit, 8).await.expect("commit");
        assert_eq!(r.topics[0].partitions[0].error_code, 0, "admin commits an offset");
        let groups = admin.send(&ListGroupsRequest::default(), 4).await.expect("list groups");
        assert!(groups.groups.iter().any(|g| g.group_id.0.as_str() == "secret-group"), "the super user sees the group");
        create_user(&mut admin, MALLORY).await.expect("create mallory");

        let mut c = login(&addr, MALLORY).await.expect("mallory login");
        let versions = c.send(&ApiVersionsRequest::default(), 3).await.expect("api versions");
        assert!(versions.api_keys.len() >= 40, "{} APIs advertised", versions.api_keys.len());
        let mut failures = Vec::new();
        for k in &versions.api_keys {
            let Ok(key) = ApiKey::try_from(k.api_key) else {
                failures.push(format!("API key {} is advertised but unknown to the test's protocol crate", k.api_key));
                continue;
            };
            // The newest version both sides know.
            let v = k.max_version.min(key.valid_versions().max);
            match probe(&mut c, key, v).await {
                Err(e) => failures.push(format!("{key:?} v{v}: {e:#}")),
                Ok(None) => failures.push(format!(
                    "{key:?} (key {}) is served but has no entry in the authorization matrix (tests/authorization.rs `probe`): add its Kafka operation/resource check to src/handler/authorize.rs and an entry here",
                    k.api_key
                )),
                Ok(Some(Verdict::Exempt)) => {}
                Ok(Some(Verdict::Codes(list))) => {
                    for (what, got, want) in list {
                        if got != want {
                            failures.push(format!("{key:?} v{v}: {what}: error {got}, expected {want}"));
                        }
                    }
                }
                Ok(Some(Verdict::Hidden(list))) => {
                    for (what, held) in list {
                        if !held {
                            failures.push(format!("{key:?} v{v}: {what}"));
                        }
                    }
                }
            }
            // A refused request leaves the connection usable (c.send above would fail otherwise).
        }
        failures
    });
    assert!(failures.is_empty(), "authorization matrix failures:\n{}", failures.join("\n"));
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    let produce_denials = metrics
        .lines()
        .find(|l| l.starts_with("skiff_authorization_denied_total{api=\"Produce\",resource_type=\"TOPIC\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(produce_denials.is_some_and(|n| n >= 1.0), "{metrics}");
    let log = std::fs::read_to_string(broker.stderr_path()).expect("stderr");
    assert!(
        log.lines().any(|l| l.contains("authorization denied") && l.contains("User:mallory") && l.contains("secret")),
        "denials are logged with the principal and resource"
    );
}

/// ACLs as Kafka's: literal and prefixed grants, DENY over ALLOW, User:* and hosts, Metadata
/// hiding what may not be described, super users, DescribeAcls / DeleteAcls filters (MATCH,
/// ANY), and ACLs survive a restart (controller state).
#[test]
fn acls_grant_deny_prefix_hide_and_survive_a_restart() {
    let _slot = Slot::acquire();
    let mut broker = start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let addr = broker.listener("SASL_PLAINTEXT").to_string();
        let mut admin = login(&addr, ADMIN).await.expect("admin login");
        for t in ["orders", "pay-eu", "pay-us", "payroll", "hidden"] {
            admin.create_topic_ok(t, 1).await.expect("create");
        }
        create_user(&mut admin, ALICE).await.expect("alice");
        create_acls(
            &mut admin,
            vec![
                acl(TOPIC, "orders", LITERAL, "User:alice", READ, ALLOW),
                acl(TOPIC, "pay-", PREFIXED, "User:alice", ALL, ALLOW),
                acl(TOPIC, "pay-us", LITERAL, "User:alice", WRITE, DENY),
                acl(TOPIC, "payroll", LITERAL, "User:*", DESCRIBE, ALLOW),
            ],
        )
        .await
        .expect("acls");
        let mut alice = login(&addr, ALICE).await.expect("alice login");
        let code = |r: anyhow::Result<kafka_protocol::messages::produce_response::PartitionProduceResponse>| {
            r.expect("produce").error_code
        };
        assert_eq!(code(alice.produce("pay-eu", 0, batch()).await), 0, "prefixed ALL grants WRITE");
        assert_eq!(code(alice.produce("pay-us", 0, batch()).await), 29, "DENY WRITE overrides the prefixed ALLOW");
        assert_eq!(code(alice.produce("orders", 0, batch()).await), 29, "READ does not grant WRITE");
        assert_eq!(code(alice.produce("hidden", 0, batch()).await), 29, "no ACL, allow.everyone false");
        // Metadata of every topic: what alice may describe (READ and ALL imply DESCRIBE).
        let all = alice.metadata(None).await.expect("metadata");
        let mut names: Vec<String> =
            all.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect();
        names.sort();
        assert_eq!(names, ["orders", "pay-eu", "pay-us", "payroll"], "hidden is not listed");
        // Topic authorized operations (KIP-430): READ (3) and DESCRIBE (8) on orders.
        let m = alice
            .send(
                &MetadataRequest::default()
                    .with_topics(Some(vec![
                        metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name("orders"))),
                    ]))
                    .with_include_topic_authorized_operations(true),
                12,
            )
            .await
            .expect("metadata");
        assert_eq!(m.topics[0].topic_authorized_operations, (1 << 3) | (1 << 8));
        // Fetch: granted on orders.
        let f = alice.fetch("orders", 0, 0, 100, 1).await.expect("fetch");
        assert_eq!(f.error_code, 0, "READ on orders allows Fetch");

        // DescribeAcls with a MATCH filter on pay-us: the literal and the prefixed binding.
        let matching = DescribeAclsRequest::default()
            .with_resource_type_filter(TOPIC)
            .with_resource_name_filter(Some(sb("pay-us")))
            .with_pattern_type_filter(2)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(1)
            .with_permission_type(1);
        let d = admin.send(&matching, 3).await.expect("describe acls");
        assert_eq!(d.error_code, 0);
        let mut found: Vec<(String, i8)> =
            d.resources.iter().map(|r| (r.resource_name.to_string(), r.pattern_type)).collect();
        found.sort();
        assert_eq!(found, [("pay-".to_string(), PREFIXED), ("pay-us".to_string(), LITERAL)]);
        // DeleteAcls of the DENY: alice may write pay-us.
        let del = DeleteAclsRequest::default().with_filters(vec![
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(TOPIC)
                .with_resource_name_filter(Some(sb("pay-us")))
                .with_pattern_type_filter(LITERAL)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_operation(1)
                .with_permission_type(DENY),
        ]);
        let r = admin.send(&del, 3).await.expect("delete acls");
        assert_eq!(r.filter_results[0].matching_acls.len(), 1, "{r:?}");
        assert_eq!(code(alice.produce("pay-us", 0, batch()).await), 0, "the DENY is gone");
        // An invalid binding: INVALID_REQUEST with Kafka's message.
        let bad = admin
            .send(
                &CreateAclsRequest::default().with_creations(vec![acl(
                    CLUSTER,
                    "other",
                    LITERAL,
                    "User:alice",
                    ALL,
                    ALLOW,
                )]),
                3,
            )
            .await
            .expect("create acls");
        assert_eq!(bad.results[0].error_code, 42);
        // Groups and transactional ids: granted by prefix.
        create_acls(
            &mut admin,
            vec![
                acl(GROUP, "team-", PREFIXED, "User:alice", READ, ALLOW),
                acl(TXN_ID, "tx-", PREFIXED, "User:alice", WRITE, ALLOW),
            ],
        )
        .await
        .expect("acls");
        let fc = alice
            .send(
                &FindCoordinatorRequest::default()
                    .with_key_type(0)
                    .with_coordinator_keys(vec![sb("team-a"), sb("other")]),
                4,
            )
            .await
            .expect("find coordinator");
        let mut by_key: Vec<(String, i16)> =
            fc.coordinators.iter().map(|c| (c.key.to_string(), c.error_code)).collect();
        by_key.sort();
        assert_eq!(by_key, [("other".to_string(), 30), ("team-a".to_string(), 0)]);
    });
    // ACLs are controller state: they survive a restart.
    broker.restart();
    rt.block_on(async {
        let addr = broker.listener("SASL_PLAINTEXT").to_string();
        let mut alice = login(&addr, ALICE).await.expect("alice login after restart");
        assert_eq!(alice.produce("pay-eu", 0, batch()).await.expect("produce").error_code, 0);
        assert_eq!(alice.produce("hidden", 0, batch()).await.expect("produce").error_code, 29);
    });
}

/// A PLAINTEXT-only broker keeps working without ACLs (allow.everyone.if.no.acl.found defaults
/// to true there), and User:ANONYMOUS is refused once an ACL exists on the resource.
#[test]
fn plaintext_dev_setups_stay_open_until_an_acl_names_the_resource() {
    let _slot = Slot::acquire();
    let broker = SkiffProcess::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut c = Client::connect(broker.bootstrap()).await.expect("connect");
        c.create_topic_ok("open", 1).await.expect("create");
        c.produce_ok("open", 0, batch()).await.expect("produce without ACLs");
        create_acls(&mut c, vec![acl(TOPIC, "open", LITERAL, "User:someone", WRITE, ALLOW)]).await.expect("acls");
        let r = c.produce("open", 0, batch()).await.expect("produce");
        assert_eq!(r.error_code, 29, "an ACL on the topic for someone else refuses User:ANONYMOUS");
    });
}

fn properties(dir: &std::path::Path, name: &str, (user, password): (&str, &str)) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{user}\" password=\"{password}\";\n"
        ),
    )
    .expect("write properties");
    path.display().to_string()
}

/// Kafka's tools: `kafka-acls --add / --list / --remove` as the super user; with the ACLs the
/// console producer and a console consumer in a group (offsets committed) and a transactional
/// ProducerPerformance run as alice; without them, alice is refused.
#[test]
fn kafka_acls_cli_and_java_clients_with_acls() {
    let _slot = Slot::acquire();
    let broker = start(&[]);
    let addr = broker.listener("SASL_PLAINTEXT").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = properties(dir.path(), "admin.properties", ADMIN);
    let alice = properties(dir.path(), "alice.properties", ALICE);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut a = login(&addr, ADMIN).await.expect("admin login");
        a.create_topic_ok("events", 1).await.expect("create");
        create_user(&mut a, ALICE).await.expect("alice");
    });
    let acls = |args: &[&str]| {
        let mut all = vec!["--bootstrap-server", &addr, "--command-config", &admin];
        all.extend_from_slice(args);
        kafka_cli::run(kafka_cli::ACL_COMMAND, &all).expect("run kafka-acls").ok("kafka-acls").expect("kafka-acls")
    };
    acls(&["--add", "--allow-principal", "User:alice", "--producer", "--topic", "events"]);
    acls(&["--add", "--allow-principal", "User:alice", "--consumer", "--topic", "events", "--group", "readers"]);
    acls(&[
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Write",
        "--operation",
        "Describe",
        "--transactional-id",
        "tx-",
        "--resource-pattern-type",
        "prefixed",
    ]);
    let listed = acls(&["--list", "--topic", "events"]);
    assert!(listed.contains("User:alice") && listed.contains("WRITE") && listed.contains("READ"), "{listed}");

    let out = kafka_cli::run(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic",
            "events",
            "--num-records",
            "200",
            "--record-size",
            "50",
            "--throughput",
            "-1",
            "--producer-props",
            &format!("bootstrap.servers={addr}"),
            "acks=all",
            "--producer.config",
            &alice,
            "--transactional-id",
            "tx-perf",
            "--transaction-duration-ms",
            "500",
        ],
    )
    .expect("run ProducerPerformance")
    .ok("transactional ProducerPerformance as alice")
    .expect("produce");
    assert!(out.contains("200 records sent"), "{out}");
    let out = kafka_cli::run(
        kafka_cli::CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            &addr,
            "--consumer.config",
            &alice,
            "--topic",
            "events",
            "--group",
            "readers",
            "--from-beginning",
            "--max-messages",
            "200",
            "--timeout-ms",
            "60000",
            "--consumer-property",
            "isolation.level=read_committed",
        ],
    )
    .expect("run console consumer")
    .ok("console consumer as alice in group readers")
    .expect("consume");
    assert_eq!(out.lines().filter(|l| l.len() == 50).count(), 200, "{out}");
    // The group's offsets were committed under alice's READ on the group.
    let rt2 = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt2.block_on(async {
        let mut a = login(&addr, ADMIN).await.expect("admin login");
        let r = a
            .send(&OffsetFetchRequest::default().with_group_id(GroupId(sb("readers"))).with_topics(None), 7)
            .await
            .expect("offset fetch");
        let committed: i64 =
            r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.committed_offset)).max().unwrap_or(-1);
        assert!(committed >= 200, "committed offset {committed}");
    });

    acls(&[
        "--remove",
        "--force",
        "--allow-principal",
        "User:alice",
        "--consumer",
        "--topic",
        "events",
        "--group",
        "readers",
    ]);
    let listed = acls(&["--list", "--topic", "events"]);
    assert!(!listed.contains("READ"), "{listed}");
    let out = kafka_cli::run_with_timeout(
        kafka_cli::CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            &addr,
            "--consumer.config",
            &alice,
            "--topic",
            "events",
            "--group",
            "readers",
            "--from-beginning",
            "--max-messages",
            "1",
            "--timeout-ms",
            "20000",
        ],
        Duration::from_secs(90),
    )
    .expect("run console consumer");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("Not authorized to access group") || text.contains("GroupAuthorizationException"), "{text}");
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    assert!(prometheus_value(&metrics, "skiff_authentications_total").unwrap_or(0.0) >= 1.0);
}

const CREATE: i8 = 5;
const DESCRIBE_CONFIGS: i8 = 10;

/// Smaller checks Kafka makes around the per-API operation:
/// * CreateTopics (v5+): a principal that may create a topic but not DESCRIBE_CONFIGS it gets the
///   topic created with `topic_config_error_code` TOPIC_AUTHORIZATION_FAILED and neither its
///   configs nor its partition count and replication factor (Kafka's
///   `ReplicationControlManager.createTopic`);
/// * ConsumerGroupHeartbeat: DESCRIBE on every subscribed topic name, else
///   TOPIC_AUTHORIZATION_FAILED for the whole heartbeat (`KafkaApis.handleConsumerGroupHeartbeat`);
/// * Fetch of only refused partitions is answered at once, not after `max_wait_ms`.
#[test]
fn create_topics_configs_heartbeat_subscriptions_and_refused_fetches() {
    let _slot = Slot::acquire();
    let broker = start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let addr = broker.listener("SASL_PLAINTEXT").to_string();
        let mut admin = login(&addr, ADMIN).await.expect("admin login");
        admin.create_topic_ok("secret", 1).await.expect("create");
        create_user(&mut admin, ALICE).await.expect("alice");
        create_acls(
            &mut admin,
            vec![
                acl(TOPIC, "made-", PREFIXED, "User:alice", CREATE, ALLOW),
                acl(TOPIC, "made-", PREFIXED, "User:alice", DESCRIBE, ALLOW),
                acl(TOPIC, "made-visible", LITERAL, "User:alice", DESCRIBE_CONFIGS, ALLOW),
                acl(GROUP, "cg-", PREFIXED, "User:alice", READ, ALLOW),
            ],
        )
        .await
        .expect("acls");
        let mut alice = login(&addr, ALICE).await.expect("alice login");

        let creatable = |name: &str| {
            create_topics_request::CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(3)
                .with_replication_factor(-1)
        };
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![creatable("made-hidden"), creatable("made-visible")]);
        let r = alice.send(&req, 7).await.expect("create topics");
        let by_name = |n: &str| r.topics.iter().find(|t| t.name.0.as_str() == n).expect("topic in the answer");
        let hidden = by_name("made-hidden");
        assert_eq!(
            (hidden.error_code, hidden.topic_config_error_code, hidden.num_partitions, hidden.replication_factor),
            (0, T29, -1, -1),
            "{hidden:?}"
        );
        assert!(hidden.configs.as_ref().is_none_or(|c| c.is_empty()), "{hidden:?}");
        assert!(!hidden.topic_id.is_nil(), "the topic was created");
        let visible = by_name("made-visible");
        assert_eq!((visible.error_code, visible.topic_config_error_code, visible.num_partitions), (0, 0, 3));
        assert!(visible.configs.as_ref().is_some_and(|c| !c.is_empty()), "{visible:?}");

        let heartbeat = |topics: &[&str]| {
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(sb("cg-1")))
                .with_member_id(sb("m-subscriber-1"))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(10_000)
                .with_subscribed_topic_names(Some(topics.iter().map(|t| topic_name(t)).collect()))
                .with_topic_partitions(Some(vec![]))
        };
        let r = alice.send(&heartbeat(&["made-visible", "secret"]), 1).await.expect("heartbeat");
        assert_eq!(r.error_code, T29, "one subscribed topic may not be described: {r:?}");
        let r = alice.send(&heartbeat(&["made-visible", "made-hidden"]), 1).await.expect("heartbeat");
        assert_eq!(r.error_code, 0, "every subscribed topic may be described: {r:?}");

        // Fetch of only a topic alice may not read: answered at once, also when the request
        // names topics to forget (a sessionless fetch ignores them; the partitions left to read
        // are none).
        for (v, forget) in [(4, false), (12, false), (12, true)] {
            let mut req =
                FetchRequest::default().with_max_wait_ms(10_000).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(
                    vec![fetch_request::FetchTopic::default().with_topic(topic_name("secret")).with_partitions(vec![
                        fetch_request::FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20),
                    ])],
                );
            if forget {
                req = req.with_forgotten_topics_data(vec![
                    fetch_request::ForgottenTopic::default()
                        .with_topic(topic_name("made-visible"))
                        .with_partitions(vec![0]),
                ]);
            }
            let started = std::time::Instant::now();
            let r = alice.send(&req, v).await.unwrap_or_else(|e| panic!("Fetch v{v}: {e:#}"));
            let took = started.elapsed();
            let got: Vec<i16> = r.responses.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
            assert_eq!(got, [T29], "Fetch v{v}: {r:?}");
            assert!(took < Duration::from_secs(3), "Fetch v{v} (forget {forget}) of refused partitions took {took:?}");
        }
    });
}

/// A KIP-848 regex subscription resolves only to topics the member's principal may DESCRIBE
/// (Kafka's `GroupMetadataManager.filterTopicDescribeAuthorizedTopics`): alice, with DESCRIBE
/// and READ on `rx-allowed*` only, subscribing to `rx-.*` is assigned rx-allowed-1 and never
/// rx-secret-1.
#[test]
fn regex_subscription_resolves_only_to_describable_topics() {
    let _slot = Slot::acquire();
    let broker = start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let addr = broker.listener("SASL_PLAINTEXT").to_string();
        let mut admin = login(&addr, ADMIN).await.expect("admin login");
        admin.create_topic_ok("rx-allowed-1", 2).await.expect("create");
        admin.create_topic_ok("rx-secret-1", 2).await.expect("create");
        create_user(&mut admin, ALICE).await.expect("alice");
        create_acls(
            &mut admin,
            vec![
                acl(TOPIC, "rx-allowed", PREFIXED, "User:alice", DESCRIBE, ALLOW),
                acl(TOPIC, "rx-allowed", PREFIXED, "User:alice", READ, ALLOW),
                acl(GROUP, "cg-rx", PREFIXED, "User:alice", READ, ALLOW),
            ],
        )
        .await
        .expect("acls");
        let md = admin.metadata(Some(&["rx-allowed-1", "rx-secret-1"])).await.expect("metadata");
        let id_of =
            |n: &str| md.topics.iter().find(|t| t.name.as_ref().is_some_and(|x| x.0.as_str() == n)).expect(n).topic_id;
        let (allowed, secret) = (id_of("rx-allowed-1"), id_of("rx-secret-1"));
        assert!(!allowed.is_nil() && !secret.is_nil(), "{md:?}");

        let mut alice = login(&addr, ALICE).await.expect("alice login");
        let join = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(sb("cg-rx-1")))
            .with_member_id(sb("m-regex-1"))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(10_000)
            .with_subscribed_topic_regex(Some(sb("rx-.*")))
            .with_topic_partitions(Some(vec![]));
        let r = alice.send(&join, 1).await.expect("heartbeat");
        assert_eq!(r.error_code, 0, "{r:?}");
        let assigned: Vec<(uuid::Uuid, Vec<i32>)> = r
            .assignment
            .iter()
            .flat_map(|a| a.topic_partitions.iter().map(|tp| (tp.topic_id, tp.partitions.clone())))
            .collect();
        assert!(!assigned.iter().any(|(t, _)| *t == secret), "a topic alice may not describe: {r:?}");
        assert_eq!(assigned, [(allowed, vec![0, 1])], "{r:?}");
    });
}
