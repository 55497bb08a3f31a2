package dev.skiff.compat;

import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * MODE=failover-consume (tests/cluster_groups.rs): one group member (group GROUP, default
 * TOPIC-failover; GROUP_PROTOCOL classic or consumer) consumes everything already in TOPIC, committing synchronously after every
 * poll, slowly enough (POLL_PAUSE_MS) that the test can kill the group's coordinator midway.
 * Prints to stdout:
 *   progress consumed=N                    (every 1,000 records)
 *   commit-stall start_ms=A end_ms=B       (a commitSync that took over 200 ms, wall clock)
 *   failover-consume ok consumed=N unique=U duplicates=D skipped=S
 * Exit 0 when every offset below the end offsets seen at start was consumed at least once.
 */
final class FailoverConsume {
    final String bootstrap;
    final String topic;
    final String group;
    final long pauseMs;

    FailoverConsume(String bootstrap, String topic) {
        this.bootstrap = bootstrap;
        this.topic = topic;
        this.group = Compat.env("GROUP", topic + "-failover");
        this.pauseMs = Long.parseLong(Compat.env("POLL_PAUSE_MS", "20"));
    }

    int run() {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "compat-java-failover");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 100);
        // classic (default) or consumer (KIP-848).
        props.put("group.protocol", Compat.env("GROUP_PROTOCOL", "classic"));
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo p : consumer.partitionsFor(topic, Duration.ofSeconds(30))) {
                tps.add(new TopicPartition(topic, p.partition()));
            }
            Map<TopicPartition, Long> ends = consumer.endOffsets(tps, Duration.ofSeconds(30));
            long total = ends.values().stream().mapToLong(Long::longValue).sum();
            Map<TopicPartition, BitSet> seen = new HashMap<>();
            for (TopicPartition tp : tps) {
                seen.put(tp, new BitSet());
            }
            consumer.subscribe(List.of(topic));
            long consumed = 0;
            long unique = 0;
            long duplicates = 0;
            long nextProgress = 1000;
            while (unique < total) {
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(200));
                if (batch.isEmpty()) {
                    continue;
                }
                Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                    BitSet bits = seen.get(tp);
                    consumed++;
                    if (r.offset() < ends.get(tp)) {
                        if (bits.get((int) r.offset())) {
                            duplicates++;
                        } else {
                            bits.set((int) r.offset());
                            unique++;
                        }
                    }
                    commit.put(tp, new OffsetAndMetadata(r.offset() + 1));
                }
                long start = System.currentTimeMillis();
                consumer.commitSync(commit, Duration.ofSeconds(60));
                long end = System.currentTimeMillis();
                if (end - start > 200) {
                    System.out.println("commit-stall start_ms=" + start + " end_ms=" + end);
                }
                if (consumed >= nextProgress) {
                    System.out.println("progress consumed=" + consumed);
                    nextProgress += 1000;
                }
                System.out.flush();
                if (pauseMs > 0) {
                    Thread.sleep(pauseMs);
                }
            }
            long skipped = 0;
            for (TopicPartition tp : tps) {
                skipped += ends.get(tp) - seen.get(tp).cardinality();
            }
            System.out.println("failover-consume ok consumed=" + consumed + " unique=" + unique + " duplicates="
                    + duplicates + " skipped=" + skipped);
            System.out.flush();
            return skipped == 0 ? 0 : 1;
        } catch (Exception e) {
            System.err.println("compat java: FAIL: failover-consume: " + e);
            return 1;
        }
    }
}
