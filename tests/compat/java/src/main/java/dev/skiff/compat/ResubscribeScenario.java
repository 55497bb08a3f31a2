package dev.skiff.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * MODE=resubscribe (tests/compat/README.md, "Resubscribe scenario"): one classic group consumer
 * changes its subscription, sees a subscribed topic grow and sees one deleted and re-created;
 * each rebalance must finish within PHASE_LIMIT_MS (a coordinator that waits for the rebalance
 * timeout instead of the last rejoin takes minutes). ASSIGNOR picks
 * partition.assignment.strategy (a class name or a short name: range, cooperative-sticky).
 */
final class ResubscribeScenario {
    static final int PARTITIONS = 3;
    static final int GROWN = 6;
    static final long PHASE_LIMIT_MS = 10_000;
    static final long WAIT_MS = 30_000;

    final String bootstrap;
    final String a;
    final String b;
    final String group;
    final int records;
    final String assignor = Compat.env("ASSIGNOR", "");
    final Set<String> seen = ConcurrentHashMap.newKeySet();
    final Set<TopicPartition> assigned = ConcurrentHashMap.newKeySet();
    final AtomicReference<List<String>> subscription = new AtomicReference<>();
    final AtomicReference<Throwable> failure = new AtomicReference<>();
    volatile boolean stop;

    ResubscribeScenario(String bootstrap, String topic, int records) {
        this.bootstrap = bootstrap;
        this.a = topic + "-a";
        this.b = topic + "-b";
        this.group = topic + "-resub";
        this.records = records;
    }

    static void log(String msg) {
        Compat.log(msg);
    }

    /** The consumer thread: all KafkaConsumer calls happen here. */
    void consume() {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "compat-java-resubscribe");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // New partitions and deleted / re-created topics are noticed on a metadata refresh:
        // every second instead of the default 5 minutes.
        props.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, 1000);
        // A deleted topic must stay deleted until the scenario re-creates it (the Java
        // consumer's Metadata requests would auto-create it by default).
        props.put(ConsumerConfig.ALLOW_AUTO_CREATE_TOPICS_CONFIG, false);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        if (assignor.equals("range")) {
            props.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, "org.apache.kafka.clients.consumer.RangeAssignor");
        } else if (assignor.equals("cooperative-sticky")) {
            props.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                    "org.apache.kafka.clients.consumer.CooperativeStickyAssignor");
        } else if (!assignor.isEmpty()) {
            props.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor);
        }
        ConsumerRebalanceListener listener = new ConsumerRebalanceListener() {
            public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                assigned.removeAll(parts);
            }

            public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                assigned.addAll(parts);
            }

            public void onPartitionsLost(Collection<TopicPartition> parts) {
                assigned.removeAll(parts);
            }
        };
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            List<String> applied = null;
            while (!stop) {
                List<String> wanted = subscription.get();
                if (wanted != applied) {
                    consumer.subscribe(wanted, listener);
                    applied = wanted;
                }
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                    seen.add(new String(r.value(), StandardCharsets.UTF_8));
                }
            }
        } catch (Throwable t) {
            failure.compareAndSet(null, t);
        }
    }

    void await(String what, BooleanSupplier done) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(WAIT_MS);
        while (!done.getAsBoolean()) {
            if (failure.get() != null) {
                throw new IllegalStateException("consumer failed: " + failure.get(), failure.get());
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException(what + ": not done after " + WAIT_MS / 1000 + " s");
            }
            Thread.sleep(20);
        }
    }

    /** Produces RECORDS values `prefix-i` round-robin over `partitions` with a new producer (so
     * its first metadata already knows new partitions and topics). */
    Set<String> produce(String topic, String prefix, List<Integer> partitions) throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        Set<String> values = new HashSet<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < records; i++) {
                String v = prefix + "-" + i;
                values.add(v);
                int p = partitions.get(i % partitions.size());
                sent.add(producer.send(new ProducerRecord<>(topic, p, null, v.getBytes(StandardCharsets.UTF_8))));
            }
            for (Future<RecordMetadata> f : sent) {
                f.get(30, TimeUnit.SECONDS);
            }
        }
        return values;
    }

    long phase(String name, long start, Set<String> values) throws Exception {
        await(name + ": records", () -> seen.containsAll(values));
        long took = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        log(name + " took " + took + " ms");
        return took;
    }

    long run() throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        Map<String, Long> took = new LinkedHashMap<>();
        try (Admin admin = Admin.create(props)) {
            admin.createTopics(List.of(new NewTopic(a, PARTITIONS, (short) 1), new NewTopic(b, PARTITIONS, (short) 1)))
                    .all().get(30, TimeUnit.SECONDS);
            log("created " + a + " and " + b + " with " + PARTITIONS + " partitions; assignor "
                    + (assignor.isEmpty() ? "default" : assignor));
            long t = System.nanoTime();
            subscription.set(List.of(a));
            Thread consumer = new Thread(this::consume, "consumer");
            consumer.start();
            try {
                phase("first join", t, produce(a, "a", List.of(0, 1, 2)));

                // (a) The running consumer subscribes to one more topic: it rejoins on its own.
                t = System.nanoTime();
                subscription.set(List.of(a, b));
                took.put("subscription change", phase("subscription change", t, produce(b, "b", List.of(0, 1, 2))));

                // (b) The subscribed topic grows; the consumer notices on its metadata refresh.
                t = System.nanoTime();
                admin.createPartitions(Map.of(a, NewPartitions.increaseTo(GROWN))).all().get(30, TimeUnit.SECONDS);
                took.put("partition growth", phase("partition growth", t, produce(a, "p", List.of(3, 4, 5))));

                // (c) A subscribed topic is deleted (the consumer drops its partitions), then
                // created again (the consumer picks the new topic up).
                t = System.nanoTime();
                admin.deleteTopics(List.of(b)).all().get(30, TimeUnit.SECONDS);
                // Done once the consumer holds partitions again, none of the deleted topic.
                await("topic deletion", () -> !assigned.isEmpty() && assigned.stream().noneMatch(tp -> tp.topic().equals(b)));
                long deleted = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t);
                log("topic deletion took " + deleted + " ms");
                took.put("topic deletion", deleted);
                t = System.nanoTime();
                admin.createTopics(List.of(new NewTopic(b, PARTITIONS, (short) 1))).all().get(30, TimeUnit.SECONDS);
                took.put("topic re-creation", phase("topic re-creation", t, produce(b, "r", List.of(0, 1, 2))));
            } finally {
                stop = true;
                consumer.join(30_000);
            }
        }
        if (failure.get() != null) {
            throw new IllegalStateException("consumer failed: " + failure.get(), failure.get());
        }
        Map<String, Long> slow = new LinkedHashMap<>();
        took.forEach((k, v) -> {
            if (v > PHASE_LIMIT_MS) {
                slow.put(k, v);
            }
        });
        if (!slow.isEmpty()) {
            throw new IllegalStateException("rebalances slower than " + PHASE_LIMIT_MS + " ms: " + slow);
        }
        return seen.size();
    }
}
