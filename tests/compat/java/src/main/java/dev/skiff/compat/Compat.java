package dev.skiff.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Skiff client-compatibility scenario for the Apache Kafka Java client (see tests/compat/README.md).
 * Env: BOOTSTRAP, TOPIC, MODE=full|produce|verify|group|regex, RECORDS (default 20000).
 * Last line on success: "compat java ok produced=N verified=N".
 */
public final class Compat {
    static final String CLIENT = "java";
    static final int PARTITIONS = 3;
    static final long BASE_TS = 1_700_000_000_000L;
    static final int[] SIZES = {0, 1, 17, 100, 1000, 5000, 20000};
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
    static final long WATCHDOG_MS = 240_000;
    static final int MAX_REPORTED_ERRORS = 20;

    final String bootstrap;
    final String topic;
    final int records;
    final List<String> errors = new ArrayList<>();

    Compat(String bootstrap, String topic, int records) {
        this.bootstrap = bootstrap;
        this.topic = topic;
        this.records = records;
    }

    // ---- scenario data -------------------------------------------------------------------------

    static byte[] key(int i) {
        return ("key-" + i).getBytes(StandardCharsets.UTF_8);
    }

    static byte[] value(int i) {
        byte[] v = new byte[SIZES[i % SIZES.length]];
        for (int j = 0; j < v.length; j++) {
            v[j] = (byte) (((long) i * 31 + j) % 251);
        }
        return v;
    }

    static long timestamp(int i) {
        return BASE_TS + i;
    }

    /** Number of records in partition p. */
    long expectedCount(int p) {
        return records > p ? (records - p + PARTITIONS - 1) / PARTITIONS : 0;
    }

    /** Codec index of record i: RECORDS split into consecutive, (near-)equal blocks, one per codec. */
    int codecOf(int i) {
        return (int) ((long) i * CODECS.length / records);
    }

    // ---- helpers -------------------------------------------------------------------------------

    static void log(String msg) {
        System.out.println("compat " + CLIENT + ": " + msg);
        System.out.flush();
    }

    void error(String msg) {
        if (errors.size() < MAX_REPORTED_ERRORS) {
            System.err.println("compat " + CLIENT + ": MISMATCH: " + msg);
        } else if (errors.size() == MAX_REPORTED_ERRORS) {
            System.err.println("compat " + CLIENT + ": (further mismatches not printed)");
        }
        errors.add(msg);
    }

    static RuntimeException fatal(String msg, Throwable cause) {
        return new IllegalStateException(msg + (cause == null ? "" : ": " + cause), cause);
    }

    static Throwable unwrap(Throwable t) {
        while (t instanceof ExecutionException && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    static String str(byte[] b) {
        if (b == null) {
            return "null";
        }
        if (b.length > 32) {
            return "<" + b.length + " bytes>";
        }
        return "'" + new String(b, StandardCharsets.UTF_8) + "'";
    }

    List<TopicPartition> partitions() {
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            tps.add(new TopicPartition(topic, p));
        }
        return tps;
    }

    // ---- 1. create topic -----------------------------------------------------------------------

    void createTopic() throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 60_000);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 30_000);
        try (Admin admin = Admin.create(Security.apply(props))) {
            try {
                // retention.ms=-1: the scenario's create times are in 2023, so the broker's default
                // 7-day time retention would delete the records at its first retention check.
                NewTopic t = new NewTopic(topic, PARTITIONS, (short) 1).configs(java.util.Map.of("retention.ms", "-1"));
                admin.createTopics(List.of(t)).all().get(60, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                throw fatal("create topic '" + topic + "' failed", unwrap(e));
            }
            // Wait until the topic is visible with all partitions led.
            long deadline = System.currentTimeMillis() + 30_000;
            while (true) {
                try {
                    TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
                    if (d != null && d.partitions().size() == PARTITIONS
                            && d.partitions().stream().allMatch(pi -> pi.leader() != null && !pi.leader().isEmpty())) {
                        break;
                    }
                    if (d != null && d.partitions().size() != PARTITIONS) {
                        throw fatal("topic '" + topic + "' has " + d.partitions().size() + " partitions, want " + PARTITIONS, null);
                    }
                } catch (ExecutionException e) {
                    if (System.currentTimeMillis() > deadline) {
                        throw fatal("describe topic '" + topic + "' failed", unwrap(e));
                    }
                }
                if (System.currentTimeMillis() > deadline) {
                    throw fatal("topic '" + topic + "' not ready (partitions without leader) after 30s", null);
                }
                Thread.sleep(100);
            }
        }
        log("created topic " + topic + " with " + PARTITIONS + " partitions");
    }

    // ---- 2. produce ----------------------------------------------------------------------------

    KafkaProducer<byte[], byte[]> producer(String codec) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        props.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        props.put(ProducerConfig.CLIENT_ID_CONFIG, "compat-java-" + codec);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return new KafkaProducer<>(Security.apply(props));
    }

    long produce() throws Exception {
        long produced = 0;
        int i = 0;
        for (int c = 0; c < CODECS.length; c++) {
            String codec = CODECS[c];
            int start = i;
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            AtomicReference<Exception> firstError = new AtomicReference<>();
            try (KafkaProducer<byte[], byte[]> producer = producer(codec)) {
                for (; i < records && codecOf(i) == c; i++) {
                    List<Header> headers = List.of(
                            new RecordHeader("idx", Integer.toString(i).getBytes(StandardCharsets.UTF_8)),
                            new RecordHeader("kind", "compat".getBytes(StandardCharsets.UTF_8)));
                    ProducerRecord<byte[], byte[]> rec =
                            new ProducerRecord<>(topic, i % PARTITIONS, timestamp(i), key(i), value(i), headers);
                    futures.add(producer.send(rec, (md, ex) -> {
                        if (ex != null) {
                            firstError.compareAndSet(null, ex);
                        }
                    }));
                    if (firstError.get() != null) {
                        break;
                    }
                }
                producer.flush();
            }
            if (firstError.get() != null) {
                throw fatal("produce (" + codec + ") failed", firstError.get());
            }
            for (int k = 0; k < futures.size(); k++) {
                int idx = start + k;
                RecordMetadata md;
                try {
                    md = futures.get(k).get(60, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    throw fatal("produce (" + codec + ") record " + idx + " failed", unwrap(e));
                }
                if (md.partition() != idx % PARTITIONS) {
                    error("record " + idx + " acked on partition " + md.partition() + ", want " + (idx % PARTITIONS));
                }
                // The topic is freshly created, so partition p's k-th record lands at offset k.
                if (md.offset() != idx / PARTITIONS) {
                    error("record " + idx + " acked at offset " + md.offset() + ", want " + (idx / PARTITIONS));
                }
                if (md.hasTimestamp() && md.timestamp() != timestamp(idx)) {
                    error("record " + idx + " acked with timestamp " + md.timestamp() + ", want " + timestamp(idx));
                }
            }
            produced += futures.size();
            log("produced " + futures.size() + " records with compression=" + codec);
        }
        if (produced != records) {
            throw fatal("produced " + produced + " records, want " + records, null);
        }
        return produced;
    }

    // ---- 3./4. verify --------------------------------------------------------------------------

    KafkaConsumer<byte[], byte[]> consumer() {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "compat-java-verify");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        // Explicit seeks only: any offset reset is an error, not a silent "earliest".
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        props.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 60_000);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return new KafkaConsumer<>(Security.apply(props));
    }

    long verify() {
        List<TopicPartition> tps = partitions();
        long verified = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = consumer()) {
            // Earliest / latest offsets.
            Map<TopicPartition, Long> begin = consumer.beginningOffsets(tps, Duration.ofSeconds(60));
            Map<TopicPartition, Long> end = consumer.endOffsets(tps, Duration.ofSeconds(60));
            for (TopicPartition tp : tps) {
                long want = expectedCount(tp.partition());
                if (!Long.valueOf(0).equals(begin.get(tp))) {
                    error("earliest offset of " + tp + " = " + begin.get(tp) + ", want 0");
                }
                if (!Long.valueOf(want).equals(end.get(tp))) {
                    error("latest offset of " + tp + " = " + end.get(tp) + ", want " + want);
                }
            }

            // Read everything from offset 0.
            consumer.assign(tps);
            for (TopicPartition tp : tps) {
                consumer.seek(tp, 0L);
            }
            long[] next = new long[PARTITIONS];
            long deadline = System.currentTimeMillis() + 180_000;
            while (true) {
                boolean done = true;
                for (int p = 0; p < PARTITIONS; p++) {
                    if (next[p] < expectedCount(p)) {
                        done = false;
                    }
                }
                if (done || errors.size() > MAX_REPORTED_ERRORS) {
                    break;
                }
                if (System.currentTimeMillis() > deadline) {
                    error("timed out reading: next offsets " + Arrays.toString(next) + ", want "
                            + expectedCount(0) + "/" + expectedCount(1) + "/" + expectedCount(2));
                    break;
                }
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    int p = r.partition();
                    if (p < 0 || p >= PARTITIONS) {
                        error("record from unexpected partition " + p);
                        continue;
                    }
                    if (r.offset() != next[p]) {
                        error("partition " + p + ": got offset " + r.offset() + ", want " + next[p] + " (gap or duplicate)");
                        next[p] = r.offset();
                    }
                    long k = r.offset();
                    next[p] = k + 1;
                    if (k >= expectedCount(p)) {
                        error("partition " + p + ": unexpected extra record at offset " + k);
                        continue;
                    }
                    checkRecord(r, (int) (PARTITIONS * k + p));
                    verified++;
                }
            }
            if (errors.isEmpty()) {
                // Nothing beyond the expected end.
                ConsumerRecords<byte[], byte[]> extra = consumer.poll(Duration.ofMillis(200));
                if (!extra.isEmpty()) {
                    error(extra.count() + " unexpected extra records after the expected end");
                }
            }
            log("read " + verified + " records, positions " + Arrays.toString(next));

            checkOffsetsForTimes(consumer);
        }
        return verified;
    }

    void checkRecord(ConsumerRecord<byte[], byte[]> r, int i) {
        String where = "partition " + r.partition() + " offset " + r.offset() + " (record " + i + ")";
        if (!Arrays.equals(r.key(), key(i))) {
            error(where + ": key " + str(r.key()) + ", want " + str(key(i)));
        }
        byte[] want = value(i);
        if (r.value() == null) {
            error(where + ": null value, want " + want.length + " bytes");
        } else if (!Arrays.equals(r.value(), want)) {
            error(where + ": value mismatch (" + r.value().length + " bytes, want " + want.length + ")");
        }
        if (r.timestamp() != timestamp(i)) {
            error(where + ": timestamp " + r.timestamp() + ", want " + timestamp(i));
        }
        if (r.timestampType() != TimestampType.CREATE_TIME) {
            error(where + ": timestamp type " + r.timestampType() + ", want CreateTime");
        }
        Iterator<Header> it = r.headers().iterator();
        String[][] wantHeaders = {{"idx", Integer.toString(i)}, {"kind", "compat"}};
        int n = 0;
        while (it.hasNext()) {
            Header h = it.next();
            if (n < wantHeaders.length) {
                if (!wantHeaders[n][0].equals(h.key())
                        || !Arrays.equals(h.value(), wantHeaders[n][1].getBytes(StandardCharsets.UTF_8))) {
                    error(where + ": header " + n + " = " + h.key() + ":" + str(h.value())
                            + ", want " + wantHeaders[n][0] + ":'" + wantHeaders[n][1] + "'");
                }
            }
            n++;
        }
        if (n != wantHeaders.length) {
            error(where + ": " + n + " headers, want " + wantHeaders.length);
        }
    }

    void checkOffsetsForTimes(KafkaConsumer<byte[], byte[]> consumer) {
        if (records == 0) {
            return;
        }
        // Exact timestamps: first, last, middle and a few more.
        TreeSet<Integer> exact = new TreeSet<>(List.of(0, records - 1, records / 2, records / 3, Math.min(records - 1, 1),
                Math.min(records - 1, 2), (int) ((long) records * 7 / 10)));
        int checks = 0;
        for (int i : exact) {
            checkTime(consumer, i % PARTITIONS, timestamp(i), (long) (i / PARTITIONS), "record " + i + " exact");
            checks++;
        }
        // Between two records of the same partition (record i and i+3): expect the later one.
        for (int i : new int[] {0, records / 2, records - 4}) {
            if (i >= 0 && i + PARTITIONS < records) {
                checkTime(consumer, i % PARTITIONS, timestamp(i) + 1, (long) (i / PARTITIONS + 1), "between record " + i + " and " + (i + 3));
                checks++;
            }
        }
        // Before the first record: offset 0 of each non-empty partition.
        for (int p = 0; p < PARTITIONS; p++) {
            if (expectedCount(p) > 0) {
                checkTime(consumer, p, BASE_TS - 1000, 0L, "before first record");
                checks++;
            }
        }
        // After the last record: no offset.
        for (int p = 0; p < PARTITIONS; p++) {
            checkTime(consumer, p, timestamp(records) + 1000, null, "after last record");
            checks++;
        }
        log("offsetsForTimes: " + checks + " lookups checked");
    }

    void checkTime(KafkaConsumer<byte[], byte[]> consumer, int p, long ts, Long wantOffset, String what) {
        TopicPartition tp = new TopicPartition(topic, p);
        Map<TopicPartition, Long> query = new HashMap<>();
        query.put(tp, ts);
        Map<TopicPartition, OffsetAndTimestamp> res = consumer.offsetsForTimes(query, Duration.ofSeconds(60));
        OffsetAndTimestamp got = res.get(tp);
        String where = "offsetsForTimes(" + tp + ", " + ts + ") [" + what + "]";
        if (wantOffset == null) {
            if (got != null) {
                error(where + " = offset " + got.offset() + ", want none");
            }
            return;
        }
        if (got == null) {
            error(where + " = none, want offset " + wantOffset);
            return;
        }
        if (got.offset() != wantOffset) {
            error(where + " = offset " + got.offset() + ", want " + wantOffset);
        }
        long wantTs = timestamp((int) (PARTITIONS * wantOffset + p));
        if (got.timestamp() != wantTs) {
            error(where + " = timestamp " + got.timestamp() + ", want " + wantTs);
        }
    }

    // ---- main ----------------------------------------------------------------------------------

    static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    public static void main(String[] args) {
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(WATCHDOG_MS);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("compat " + CLIENT + ": FAIL: watchdog: run exceeded " + WATCHDOG_MS / 1000 + " s");
            System.err.flush();
            Runtime.getRuntime().halt(3);
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        String bootstrap = env("BOOTSTRAP", null);
        String topic = env("TOPIC", null);
        String mode = env("MODE", "full");
        int records;
        try {
            records = Integer.parseInt(env("RECORDS", "20000"));
        } catch (NumberFormatException e) {
            System.err.println("compat " + CLIENT + ": FAIL: RECORDS must be an integer");
            System.exit(2);
            return;
        }
        if (bootstrap == null || topic == null || records < 0
                || !(mode.equals("full") || mode.equals("produce") || mode.equals("verify") || mode.equals("group")
                        || mode.equals("regex") || mode.equals("failover-consume") || mode.equals("failover") || mode.equals("failover-group") || mode.equals("resubscribe")
                        || mode.equals("txn") || mode.equals("txn-rpw"))) {
            System.err.println("compat " + CLIENT + ": FAIL: need BOOTSTRAP, TOPIC, MODE=full|produce|verify|group|regex|resubscribe|txn|txn-rpw, RECORDS>=0");
            System.exit(2);
            return;
        }
        long t0 = System.nanoTime();
        Compat c = new Compat(bootstrap, topic, records);
        long produced = 0;
        long verified;
        try {
            log("bootstrap=" + bootstrap + " topic=" + topic + " mode=" + mode + " records=" + records);
            if (mode.equals("failover-consume")) {
                System.exit(new FailoverConsume(bootstrap, topic).run());
                return;
            }
            if (mode.equals("failover-group")) {
                // Runs until stdin closes (tests/failover_groups.rs); the watchdog still bounds it.
                long consumed = new FailoverGroup(bootstrap, topic).run();
                System.out.println("compat " + CLIENT + " ok produced=0 verified=" + consumed);
                System.out.flush();
                System.exit(0);
                return;
            }
            if (mode.equals("failover")) {
                // Runs until stdin closes (tests/failover_clients.rs); the watchdog still bounds it.
                long handed = new FailoverProduce(bootstrap, topic).run();
                System.out.println("compat " + CLIENT + " ok produced=" + handed + " verified=0");
                System.out.flush();
                System.exit(0);
                return;
            }
            if (mode.equals("regex")) {
                long consumed = new RegexScenario(bootstrap, topic, records).run();
                log(String.format("regex scenario done in %.1f s", (System.nanoTime() - t0) / 1e9));
                System.out.println("compat " + CLIENT + " ok produced=" + records + " verified=" + consumed);
                System.out.flush();
                System.exit(0);
                return;
            }
            if (mode.equals("group")) {
                long consumed = new GroupScenario(bootstrap, topic, records).run();
                log(String.format("group scenario done in %.1f s", (System.nanoTime() - t0) / 1e9));
                System.out.println("compat " + CLIENT + " ok produced=" + records + " verified=" + consumed);
                System.out.flush();
                System.exit(0);
                return;
            }
            if (mode.equals("txn") || mode.equals("txn-rpw")) {
                // RECORDS: transactions (txn) or input records (txn-rpw).
                TxnScenario t = new TxnScenario(bootstrap, topic, records);
                long n = mode.equals("txn") ? t.runTxn() : t.runReadProcessWrite(records);
                log(String.format("%s scenario done in %.1f s", mode, (System.nanoTime() - t0) / 1e9));
                System.out.println("compat " + CLIENT + " ok produced=" + records + " verified=" + n);
                System.out.flush();
                System.exit(0);
                return;
            }
            if (mode.equals("resubscribe")) {
                long consumed = new ResubscribeScenario(bootstrap, topic, records).run();
                log(String.format("resubscribe scenario done in %.1f s", (System.nanoTime() - t0) / 1e9));
                System.out.println("compat " + CLIENT + " ok produced=" + 4L * records + " verified=" + consumed);
                System.out.flush();
                System.exit(0);
                return;
            }
            if (!mode.equals("verify")) {
                c.createTopic();
                produced = c.produce();
                log(String.format("produce done in %.1f s", (System.nanoTime() - t0) / 1e9));
            }
            long t1 = System.nanoTime();
            verified = c.verify();
            log(String.format("verify done in %.1f s", (System.nanoTime() - t1) / 1e9));
        } catch (Exception e) {
            System.err.println("compat " + CLIENT + ": FAIL: " + e);
            Throwable cause = e.getCause();
            if (cause != null && cause != e) {
                System.err.println("  cause: " + cause);
            }
            System.exit(1);
            return;
        }
        if (!c.errors.isEmpty()) {
            System.err.println("compat " + CLIENT + ": FAIL: " + c.errors.size() + " mismatches; first: " + c.errors.get(0));
            System.exit(1);
            return;
        }
        if (verified != records) {
            System.err.println("compat " + CLIENT + ": FAIL: verified " + verified + " records, want " + records);
            System.exit(1);
            return;
        }
        System.out.println("compat " + CLIENT + " ok produced=" + produced + " verified=" + verified);
        System.out.flush();
        System.exit(0);
    }
}
