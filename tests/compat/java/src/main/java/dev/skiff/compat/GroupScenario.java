package dev.skiff.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * MODE=group (tests/compat/README.md, "Group scenario"): three group members on a 12-partition
 * topic consume RECORDS records exactly once in aggregate with synchronous commits, while a
 * fourth member joins after the first third and the first member leaves after the second.
 * GROUP_PROTOCOL=consumer runs the members with the KIP-848 protocol (server-side assignment;
 * GROUP_REMOTE_ASSIGNOR picks the assignor), otherwise the classic one.
 */
final class GroupScenario {
    static final int PARTITIONS = 12;
    final String bootstrap;
    final String topic;
    final String group;
    final int records;
    final String protocol = Compat.env("GROUP_PROTOCOL", "classic");
    final String remoteAssignor = Compat.env("GROUP_REMOTE_ASSIGNOR", "");
    final Map<Integer, Integer> seen = new ConcurrentHashMap<>();
    final AtomicLong duplicates = new AtomicLong();
    final AtomicReference<Throwable> failure = new AtomicReference<>();

    GroupScenario(String bootstrap, String topic, int records) {
        this.bootstrap = bootstrap;
        this.topic = topic;
        this.group = topic + "-group";
        this.records = records;
    }

    static void log(String msg) {
        Compat.log(msg);
    }

    final class Member implements Runnable {
        final int id;
        final Thread thread;
        volatile boolean stop;
        volatile Set<TopicPartition> assigned = Set.of();
        volatile long firstAssignedAt;

        Member(int id) {
            this.id = id;
            this.thread = new Thread(this, "member-" + id);
        }

        public void run() {
            Properties props = new Properties();
            props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            props.put(ConsumerConfig.CLIENT_ID_CONFIG, "compat-java-member-" + id);
            props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
            props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 200);
            props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
            if (!remoteAssignor.isEmpty()) {
                props.put(ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, remoteAssignor);
            }
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
                consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                    // Eager (classic default) assignors revoke everything and then assign the
                    // whole new set; the consumer protocol revokes and adds only what changes.
                    public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                        // Everything processed is committed before the partitions move.
                        consumer.commitSync();
                        Set<TopicPartition> left = new HashSet<>(assigned);
                        left.removeAll(parts);
                        assigned = Set.copyOf(left);
                    }

                    public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                        Set<TopicPartition> now = new HashSet<>(assigned);
                        now.addAll(parts);
                        assigned = Set.copyOf(now);
                        if (firstAssignedAt == 0 && !parts.isEmpty()) {
                            firstAssignedAt = System.nanoTime();
                        }
                    }
                });
                while (!stop) {
                    ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(100));
                    for (ConsumerRecord<byte[], byte[]> r : batch) {
                        int idx = Integer.parseInt(new String(r.value(), StandardCharsets.UTF_8));
                        if (r.partition() != idx % PARTITIONS) {
                            throw new IllegalStateException("record " + idx + " read from partition " + r.partition());
                        }
                        if (seen.putIfAbsent(idx, id) != null) {
                            duplicates.incrementAndGet();
                        }
                    }
                    if (!batch.isEmpty()) {
                        consumer.commitSync();
                    }
                }
                consumer.commitSync();
            } catch (Throwable t) {
                failure.compareAndSet(null, t);
            }
        }
    }

    void createTopic() throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(props)) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(60, TimeUnit.SECONDS);
        }
        log("created topic " + topic + " with " + PARTITIONS + " partitions");
    }

    void produce(KafkaProducer<byte[], byte[]> producer, int from, int to) throws Exception {
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        for (int i = from; i < to; i++) {
            byte[] v = Integer.toString(i).getBytes(StandardCharsets.UTF_8);
            futures.add(producer.send(new ProducerRecord<>(topic, i % PARTITIONS, ("g-" + i).getBytes(StandardCharsets.UTF_8), v)));
        }
        producer.flush();
        for (Future<RecordMetadata> f : futures) {
            f.get(60, TimeUnit.SECONDS);
        }
        log("produced records " + from + ".." + to);
    }

    void waitFor(String what, long timeoutMs, java.util.function.BooleanSupplier cond) throws Exception {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (!cond.getAsBoolean()) {
            if (failure.get() != null) {
                throw new IllegalStateException("a member failed", failure.get());
            }
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("timed out waiting for " + what + " (seen " + seen.size() + ")");
            }
            Thread.sleep(20);
        }
    }

    boolean coversAll(List<Member> members) {
        int n = 0;
        for (Member m : members) {
            if (m.assigned.isEmpty()) {
                return false;
            }
            n += m.assigned.size();
        }
        return n == PARTITIONS;
    }

    long run() throws Exception {
        log("group protocol " + protocol + (remoteAssignor.isEmpty() ? "" : ", remote assignor " + remoteAssignor));
        createTopic();
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        int third = records / 3;
        List<Member> members = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            long t0 = System.nanoTime();
            for (int i = 0; i < 3; i++) {
                Member m = new Member(i);
                members.add(m);
                m.thread.start();
            }
            waitFor("3 members to share the partitions", 60_000, () -> coversAll(members));
            log(String.format("3 members joined in %d ms", (System.nanoTime() - t0) / 1_000_000));
            produce(producer, 0, third);
            waitFor("first third", 60_000, () -> seen.size() >= third);

            // A fourth member joins while the second third is produced and consumed.
            Member fourth = new Member(3);
            members.add(fourth);
            long t1 = System.nanoTime();
            fourth.thread.start();
            produce(producer, third, 2 * third);
            waitFor("4 members to share the partitions", 60_000, () -> coversAll(members));
            log(String.format("rebalance 3->4 members took %d ms", (System.nanoTime() - t1) / 1_000_000));
            waitFor("second third", 60_000, () -> seen.size() >= 2 * third);

            // The first member leaves while the rest is produced and consumed.
            Member first = members.remove(0);
            long t2 = System.nanoTime();
            first.stop = true;
            first.thread.join(60_000);
            produce(producer, 2 * third, records);
            waitFor("3 members to share the partitions again", 60_000, () -> coversAll(members));
            log(String.format("rebalance 4->3 members took %d ms", (System.nanoTime() - t2) / 1_000_000));
            waitFor("all records", 120_000, () -> seen.size() >= records);
            Thread.sleep(1_000); // any duplicate would arrive now
        } finally {
            for (Member m : members) {
                m.stop = true;
            }
            for (Member m : members) {
                m.thread.join(60_000);
            }
        }
        if (failure.get() != null) {
            throw new IllegalStateException("a member failed", failure.get());
        }
        if (duplicates.get() != 0 || seen.size() != records) {
            throw new IllegalStateException("consumed " + seen.size() + " distinct records with " + duplicates.get()
                    + " duplicates, want " + records + " exactly once");
        }
        // Committed offsets (OffsetFetch) must be each partition's end.
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(60, TimeUnit.SECONDS);
            long total = 0;
            for (int p = 0; p < PARTITIONS; p++) {
                OffsetAndMetadata o = committed.get(new TopicPartition(topic, p));
                long want = records > p ? (records - p + PARTITIONS - 1) / PARTITIONS : 0;
                if (o == null || o.offset() != want) {
                    throw new IllegalStateException("partition " + p + " committed " + o + ", want " + want);
                }
                total += o.offset();
            }
            log("committed offsets cover " + total + " records; group " + group + " described as "
                    + admin.describeConsumerGroups(List.of(group)).all().get(60, TimeUnit.SECONDS).get(group).groupState());
        } catch (ExecutionException e) {
            throw new IllegalStateException("admin failed", e.getCause());
        }
        return seen.size();
    }
}
