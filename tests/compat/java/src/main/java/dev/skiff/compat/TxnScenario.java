package dev.skiff.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsSpec;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
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
 * Transactions with the Java client (tests/compat/README.md, "Transactions").
 *
 * <p>MODE=txn: two transactional producers write RECORDS overlapping transactions (6 records
 * each, over 3 partitions); every third transaction is aborted after its records were written.
 * A third producer then leaves a transaction open: the read_committed end offset (the LSO) must
 * stop at its first record on each partition and a read_committed consumer must not see it.
 * Then a read_committed consumer must read exactly the committed records, each once, in offset
 * order per partition; a read_uncommitted consumer must read the aborted ones too.
 *
 * <p>MODE=txn-rpw: read-process-write. RECORDS records in TOPIC-in (3 partitions); two workers
 * in group TOPIC-rpw (read_committed consumer + transactional producer each) copy every input
 * record to TOPIC-out (same partition) and commit their input offsets with
 * sendOffsetsToTransaction in the same transaction; every fourth transaction is aborted and
 * its input re-processed. TOPIC-out read with read_committed must hold exactly one copy of
 * every input record, in input order per partition; the group's committed offsets must be the
 * input's end offsets; read_uncommitted must show the aborted copies.
 */
final class TxnScenario {
    static final int PARTITIONS = 3;
    static final int PER_TXN = 6;
    static final Duration WAIT = Duration.ofSeconds(60);

    final String bootstrap;
    final String topic;
    final int txns;

    TxnScenario(String bootstrap, String topic, int txns) {
        this.bootstrap = bootstrap;
        this.topic = topic;
        this.txns = txns;
    }

    static void log(String msg) {
        Compat.log(msg);
    }

    static RuntimeException fail(String msg) {
        return new IllegalStateException(msg);
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] b) {
        return b == null ? "null" : new String(b, StandardCharsets.UTF_8);
    }

    Properties common() {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "skiff-compat-java-txn");
        return p;
    }

    KafkaProducer<byte[], byte[]> transactional(String id) {
        Properties p = common();
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, id);
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 60_000);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 0);
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p);
        producer.initTransactions();
        return producer;
    }

    KafkaConsumer<byte[], byte[]> consumer(String isolation, String group) {
        Properties p = common();
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 7);
        }
        return new KafkaConsumer<>(p);
    }

    void createTopics(String... names) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            List<NewTopic> topics = new ArrayList<>();
            for (String n : names) {
                topics.add(new NewTopic(n, PARTITIONS, (short) 1));
            }
            admin.createTopics(topics).all().get(60, TimeUnit.SECONDS);
        }
    }

    List<TopicPartition> partitions(String t) {
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            tps.add(new TopicPartition(t, p));
        }
        return tps;
    }

    /** One record as written: where it landed and whether its transaction committed. */
    record Written(int partition, long offset, String key, String value, boolean committed) {}

    /**
     * Reads `t` from offset 0 to the consumer's end offsets (the LSO for read_committed, the
     * high watermark for read_uncommitted) with assign(): records per partition, in order.
     */
    Map<Integer, List<ConsumerRecord<byte[], byte[]>>> readAll(String t, String isolation) {
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> out = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> c = consumer(isolation, null)) {
            List<TopicPartition> tps = partitions(t);
            c.assign(tps);
            for (TopicPartition tp : tps) {
                c.seek(tp, 0);
                out.put(tp.partition(), new ArrayList<>());
            }
            Map<TopicPartition, Long> end = c.endOffsets(tps, WAIT);
            long deadline = System.nanoTime() + WAIT.toNanos();
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) {
                    if (c.position(tp, WAIT) < end.get(tp)) {
                        done = false;
                    }
                }
                if (done) {
                    break;
                }
                if (System.nanoTime() > deadline) {
                    throw fail(isolation + " read of " + t + " did not reach " + end + " within " + WAIT);
                }
                ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : rs) {
                    out.get(r.partition()).add(r);
                }
            }
            log(isolation + " read of " + t + " up to " + end);
        }
        return out;
    }

    /** Checks a read against the expected records (offset order per partition). */
    static void expectExactly(String what, Map<Integer, List<ConsumerRecord<byte[], byte[]>>> got, List<Written> want) {
        for (int p = 0; p < PARTITIONS; p++) {
            final int part = p;
            List<Written> w = want.stream().filter(x -> x.partition == part).sorted(Comparator.comparingLong(Written::offset)).toList();
            List<ConsumerRecord<byte[], byte[]>> g = got.get(p);
            int n = Math.min(w.size(), g.size());
            for (int i = 0; i < n; i++) {
                ConsumerRecord<byte[], byte[]> r = g.get(i);
                Written x = w.get(i);
                if (r.offset() != x.offset || !str(r.key()).equals(x.key) || !str(r.value()).equals(x.value)) {
                    throw fail(what + ": partition " + p + " record #" + i + " is offset " + r.offset() + " key "
                            + str(r.key()) + ", want offset " + x.offset + " key " + x.key + " ("
                            + (x.committed ? "committed" : "aborted") + ")");
                }
            }
            if (g.size() != w.size()) {
                String extra = g.size() > w.size() ? " first extra: offset " + g.get(n).offset() + " key " + str(g.get(n).key()) : "";
                throw fail(what + ": partition " + p + " has " + g.size() + " records, want " + w.size() + extra);
            }
        }
    }

    // ---- MODE=txn ------------------------------------------------------------------------------

    long runTxn() throws Exception {
        createTopics(topic);
        List<Written> written = new ArrayList<>();
        KafkaProducer<byte[], byte[]>[] producers = newProducerPair();
        try {
            // Transactions t and t+1 overlap: t writes its first half, t+1 begins and writes its
            // first half, t writes its second half and ends, then t+1 continues with t+2.
            List<Future<RecordMetadata>>[] pending = newPending();
            for (int t = 0; t <= txns; t++) {
                if (t < txns) {
                    KafkaProducer<byte[], byte[]> prod = producers[t % 2];
                    prod.beginTransaction();
                    pending[t % 2] = new ArrayList<>();
                    for (int j = 0; j < PER_TXN / 2; j++) {
                        pending[t % 2].add(send(prod, t, j));
                    }
                    prod.flush();
                }
                if (t > 0) {
                    int prev = t - 1;
                    KafkaProducer<byte[], byte[]> prod = producers[prev % 2];
                    for (int j = PER_TXN / 2; j < PER_TXN; j++) {
                        pending[prev % 2].add(send(prod, prev, j));
                    }
                    prod.flush();
                    boolean commit = prev % 3 != 1;
                    for (int j = 0; j < PER_TXN; j++) {
                        RecordMetadata md = pending[prev % 2].get(j).get();
                        written.add(new Written(md.partition(), md.offset(), key(prev, j), value(prev, j), commit));
                    }
                    if (commit) {
                        prod.commitTransaction();
                    } else {
                        prod.abortTransaction();
                    }
                }
            }
        } finally {
            producers[0].close(Duration.ofSeconds(10));
            producers[1].close(Duration.ofSeconds(10));
        }
        long committed = written.stream().filter(Written::committed).count();
        log(txns + " transactions: " + committed + " records committed, " + (written.size() - committed) + " aborted");

        // An open transaction: its first offset on each partition bounds the LSO.
        List<Written> open = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> prod = transactional(topic + "-tx-open")) {
            prod.beginTransaction();
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int j = 0; j < PER_TXN; j++) {
                fs.add(send(prod, txns, j));
            }
            prod.flush();
            for (int j = 0; j < PER_TXN; j++) {
                RecordMetadata md = fs.get(j).get();
                open.add(new Written(md.partition(), md.offset(), key(txns, j), value(txns, j), false));
            }
            checkLsoBelowOpen(open);
            List<Written> visible = new ArrayList<>(written.stream().filter(Written::committed).toList());
            expectExactly("read_committed with a transaction open", readAll(topic, "read_committed"), visible);
            prod.abortTransaction();
            log("open transaction aborted");
        }
        written.addAll(open);

        expectExactly("read_committed", readAll(topic, "read_committed"), written.stream().filter(Written::committed).toList());
        // read_uncommitted sees the aborted records too (the check above could fail).
        expectExactly("read_uncommitted", readAll(topic, "read_uncommitted"), written);
        log("read_committed saw " + committed + " records; read_uncommitted " + written.size());
        return committed;
    }

    @SuppressWarnings("unchecked")
    KafkaProducer<byte[], byte[]>[] newProducerPair() {
        return new KafkaProducer[] {transactional(topic + "-tx-0"), transactional(topic + "-tx-1")};
    }

    @SuppressWarnings("unchecked")
    static List<Future<RecordMetadata>>[] newPending() {
        return new List[2];
    }

    static String key(int t, int j) {
        return "t" + t + "-" + j;
    }

    static String value(int t, int j) {
        return "txn " + t + " record " + j;
    }

    Future<RecordMetadata> send(KafkaProducer<byte[], byte[]> prod, int t, int j) {
        return prod.send(new ProducerRecord<>(topic, j % PARTITIONS, utf8(key(t, j)), utf8(value(t, j))));
    }

    /** ListOffsets read_committed (the consumer's endOffsets) must stop at the open transaction. */
    void checkLsoBelowOpen(List<Written> open) {
        try (KafkaConsumer<byte[], byte[]> rc = consumer("read_committed", null);
                KafkaConsumer<byte[], byte[]> ru = consumer("read_uncommitted", null)) {
            List<TopicPartition> tps = partitions(topic);
            Map<TopicPartition, Long> lso = rc.endOffsets(tps, WAIT);
            Map<TopicPartition, Long> hw = ru.endOffsets(tps, WAIT);
            for (TopicPartition tp : tps) {
                long first = open.stream().filter(w -> w.partition == tp.partition()).mapToLong(Written::offset).min()
                        .orElseThrow();
                if (lso.get(tp) != first) {
                    throw fail("read_committed end offset of " + tp + " is " + lso.get(tp)
                            + " with a transaction open from offset " + first + " (want exactly " + first + ")");
                }
                if (hw.get(tp) <= first) {
                    throw fail("read_uncommitted end offset of " + tp + " is " + hw.get(tp) + ", want > " + first);
                }
            }
            log("LSO " + lso + " stops at the open transaction; high watermarks " + hw);
        }
    }

    // ---- MODE=txn-rpw --------------------------------------------------------------------------

    long runReadProcessWrite(int records) throws Exception {
        String in = topic + "-in";
        String out = topic + "-out";
        String group = topic + "-rpw";
        createTopics(in, out);
        Properties pp = common();
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        List<Written> input = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(pp)) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < records; i++) {
                fs.add(prod.send(new ProducerRecord<>(in, i % PARTITIONS, utf8("in-" + i), utf8("value-" + i))));
            }
            for (int i = 0; i < records; i++) {
                RecordMetadata md = fs.get(i).get();
                input.add(new Written(md.partition(), md.offset(), "in-" + i, "value-" + i, true));
            }
        }
        Map<TopicPartition, Long> inEnd = new HashMap<>();
        for (Written w : input) {
            inEnd.merge(new TopicPartition(in, w.partition), w.offset + 1, Math::max);
        }
        log("produced " + records + " input records; end offsets " + inEnd);

        AtomicReference<Throwable> failure = new AtomicReference<>();
        Map<String, Integer> aborted = new ConcurrentHashMap<>();
        List<Thread> workers = new ArrayList<>();
        java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
        for (int w = 0; w < 2; w++) {
            final int id = w;
            Thread th = new Thread(() -> {
                try {
                    aborted.put("w" + id, rpwWorker(id, in, out, group, stop));
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                }
            }, "rpw-" + w);
            th.start();
            workers.add(th);
        }
        // Done when the group's committed offsets (require_stable) reach the input's end.
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            long deadline = System.nanoTime() + Duration.ofSeconds(150).toNanos();
            while (true) {
                if (failure.get() != null) {
                    break;
                }
                Map<TopicPartition, OffsetAndMetadata> committed = admin
                        .listConsumerGroupOffsets(Map.of(group, new ListConsumerGroupOffsetsSpec()),
                                new ListConsumerGroupOffsetsOptions().requireStable(true))
                        .partitionsToOffsetAndMetadata(group).get(30, TimeUnit.SECONDS);
                boolean done = inEnd.entrySet().stream().allMatch(e -> committed.get(e.getKey()) != null
                        && committed.get(e.getKey()).offset() == e.getValue());
                if (done) {
                    log("group offsets committed up to the input's end: " + committed);
                    break;
                }
                if (System.nanoTime() > deadline) {
                    throw fail("group " + group + " committed " + committed + ", want " + inEnd + " within 150 s");
                }
                Thread.sleep(200);
            }
        }
        stop.set(true);
        for (Thread th : workers) {
            th.join(60_000);
        }
        if (failure.get() != null) {
            throw fail("worker failed: " + failure.get());
        }
        // Exactly one copy of every input record, in input order per partition.
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> got = readAll(out, "read_committed");
        int total = 0;
        for (int p = 0; p < PARTITIONS; p++) {
            final int part = p;
            List<Written> ws = input.stream().filter(x -> x.partition == part).sorted(Comparator.comparingLong(Written::offset)).toList();
            List<ConsumerRecord<byte[], byte[]>> gs = got.get(p);
            if (gs.size() != ws.size()) {
                throw fail("read_committed " + out + "/" + p + " has " + gs.size() + " records for " + ws.size() + " inputs");
            }
            for (int i = 0; i < ws.size(); i++) {
                String wantValue = ws.get(i).partition + ":" + ws.get(i).offset + ":" + ws.get(i).value;
                if (!str(gs.get(i).value()).equals(wantValue) || !str(gs.get(i).key()).equals(ws.get(i).key)) {
                    throw fail(out + "/" + p + " output #" + i + " is " + str(gs.get(i).value()) + ", want " + wantValue);
                }
            }
            total += gs.size();
        }
        int abortedTxns = aborted.values().stream().mapToInt(Integer::intValue).sum();
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> all = readAll(out, "read_uncommitted");
        int uncommitted = all.values().stream().mapToInt(List::size).sum();
        if (abortedTxns > 0 && uncommitted <= total) {
            throw fail("read_uncommitted shows " + uncommitted + " records, no more than read_committed's " + total
                    + " although " + abortedTxns + " transactions with records were aborted");
        }
        log("read_committed output: " + total + " records, one per input; read_uncommitted: " + uncommitted
                + " (" + abortedTxns + " aborted transactions)");
        return total;
    }

    /**
     * One worker: poll, copy the batch in one transaction with the consumed offsets, commit (or
     * abort every fourth transaction and seek back so the batch is processed again). Returns the
     * number of aborted transactions that held records.
     */
    int rpwWorker(int id, String in, String out, String group, java.util.concurrent.atomic.AtomicBoolean stop) {
        int abortedTxns = 0;
        long txn = 0;
        try (KafkaConsumer<byte[], byte[]> c = consumer("read_committed", group);
                KafkaProducer<byte[], byte[]> prod = transactional(topic + "-rpw-" + id)) {
            c.subscribe(List.of(in));
            while (!stop.get()) {
                ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(200));
                if (rs.isEmpty()) {
                    continue;
                }
                prod.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                Map<TopicPartition, Long> first = new HashMap<>();
                for (ConsumerRecord<byte[], byte[]> r : rs) {
                    TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                    first.putIfAbsent(tp, r.offset());
                    offsets.put(tp, new OffsetAndMetadata(r.offset() + 1));
                    String v = r.partition() + ":" + r.offset() + ":" + str(r.value());
                    prod.send(new ProducerRecord<>(out, r.partition(), r.key(), utf8(v)));
                }
                prod.sendOffsetsToTransaction(offsets, c.groupMetadata());
                if (txn++ % 4 == 3) {
                    prod.flush();
                    prod.abortTransaction();
                    abortedTxns++;
                    // Process the batch again: back to its first offset on each partition.
                    for (Map.Entry<TopicPartition, Long> e : first.entrySet()) {
                        c.seek(e.getKey(), e.getValue());
                    }
                } else {
                    prod.commitTransaction();
                }
            }
        }
        return abortedTxns;
    }
}
