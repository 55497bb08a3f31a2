// Small Kafka-client helpers for bench/run.sh, for what Kafka's own tools cannot do against Skiff.
// Compiled once by bench/run.sh against the kafka-clients jar of bench/kafka/setup.sh.
//
//   create-topics BOOTSTRAP PARTITIONS NAME...
//       Admin.createTopics (replication factor 1); existing topics are fine.
//   consume BOOTSTRAP TOPIC RECORDS TIMEOUT_MS
//       Catch-up read with assign() + seekToBeginning over every partition (Skiff serves no
//       consumer groups yet, so ConsumerPerformance's subscribe() cannot run against it). Consumer
//       settings are ConsumerPerformance's defaults (fetch 1 MiB per partition, 2 MiB receive buffer).
//       Prints one JSON line: records, bytes, seconds, mb_per_s (MiB/s of key+value, like ConsumerPerformance).
//   multi-produce BOOTSTRAP TOPIC CONNECTIONS PARTITIONS RECORDS SIZE RATE
//       CONNECTIONS independent KafkaProducers (one TCP connection each, acks=all, client defaults
//       otherwise) in one JVM, records sent round-robin over producers and partitions, RATE records/s in
//       total (-1 = unthrottled). Latency = send() to ack, like ProducerPerformance. Prints one JSON line.
//   keyed-produce BOOTSTRAP TOPIC KEYS RECORDS SIZE RATE SEED
//       One KafkaProducer (acks=all, client defaults otherwise) sending RECORDS records of SIZE value bytes
//       to partition 0 at RATE records/s, each keyed "key-<n>" with n uniform in [0, KEYS) from SEED:
//       the overwrite workload of a compacted topic (bench/compaction.sh). Prints one JSON line with
//       latency percentiles, as multi-produce.
//   txn-e2e BOOTSTRAP TOPIC RATE SECONDS TXN_MS SIZE
//       End-to-end latency of committed data (issue #13): one transactional KafkaProducer sends SIZE-byte
//       records to partition 0 at RATE records/s and commits every TXN_MS; a read_committed consumer
//       (assign + seekToEnd before the first send) receives them. Latency = send() of a record to its
//       poll() by the consumer (so it includes the wait for its transaction's commit, as any
//       read_committed reader sees). Prints one JSON line: records, transactions, p50/p99/p999/max ms.
//   txn-loop BOOTSTRAP TOPIC TXN_ID SECONDS
//       Back-to-back transactions of one record each (begin, send, commit) for SECONDS, recovering from
//       errors as an application would (retry commit after a timeout; abort after an abortable error;
//       a new producer after a fatal one). Prints a JSON line per completed commit:
//       {"t_ms": wall-clock ms when commitTransaction returned}, and one per error {"error": class}:
//       bench/transactions.sh turns the gap around a coordinator kill into the failover time.
//   txn-coordinator BOOTSTRAP TXN_ID
//       Prints the broker id coordinating TXN_ID (Admin.describeTransactions).
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.Random;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicLong;

public class BenchTool {
    public static void main(String[] args) throws Exception {
        switch (args.length > 0 ? args[0] : "") {
            case "create-topics" -> createTopics(args[1], Integer.parseInt(args[2]), Arrays.asList(args).subList(3, args.length));
            case "consume" -> consume(args[1], args[2], Long.parseLong(args[3]), Long.parseLong(args[4]));
            case "multi-produce" -> multiProduce(args[1], args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]),
                    Long.parseLong(args[5]), Integer.parseInt(args[6]), Long.parseLong(args[7]));
            case "keyed-produce" -> keyedProduce(args[1], args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]),
                    Integer.parseInt(args[5]), Long.parseLong(args[6]), Long.parseLong(args[7]));
            case "txn-e2e" -> txnE2e(args[1], args[2], Long.parseLong(args[3]), Long.parseLong(args[4]),
                    Long.parseLong(args[5]), Integer.parseInt(args[6]));
            case "txn-loop" -> txnLoop(args[1], args[2], args[3], Long.parseLong(args[4]));
            case "txn-coordinator" -> txnCoordinator(args[1], args[2]);
            default -> {
                System.err.println("usage: BenchTool create-topics|consume|multi-produce|keyed-produce|txn-e2e|txn-loop|txn-coordinator ...");
                System.exit(2);
            }
        }
        System.exit(0);
    }

    static void createTopics(String bootstrap, int partitions, List<String> names) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            List<NewTopic> topics = new ArrayList<>();
            for (String n : names) topics.add(new NewTopic(n, partitions, (short) 1));
            var result = admin.createTopics(topics);
            for (var e : result.values().entrySet()) {
                try {
                    e.getValue().get();
                } catch (ExecutionException ex) {
                    if (!(ex.getCause() instanceof TopicExistsException)) throw ex;
                }
            }
        }
        System.out.printf("{\"created\": %d, \"partitions\": %d}%n", names.size(), partitions);
    }

    static void consume(String bootstrap, String topic, long records, long timeoutMs) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, String.valueOf(1024 * 1024));
        p.put(ConsumerConfig.RECEIVE_BUFFER_CONFIG, String.valueOf(2 * 1024 * 1024));
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "bench-catchup");
        long read = 0, bytes = 0;
        long start = System.currentTimeMillis();
        long lastData = start, end;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : c.partitionsFor(topic)) tps.add(new TopicPartition(topic, pi.partition()));
            c.assign(tps);
            c.seekToBeginning(tps);
            start = System.currentTimeMillis();
            lastData = start;
            while (read < records && System.currentTimeMillis() - lastData < timeoutMs) {
                ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(100));
                if (!rs.isEmpty()) lastData = System.currentTimeMillis();
                for (ConsumerRecord<byte[], byte[]> r : rs) {
                    read++;
                    if (r.key() != null) bytes += r.key().length;
                    if (r.value() != null) bytes += r.value().length;
                }
            }
            end = System.currentTimeMillis();
        }
        double secs = Math.max(1, end - start) / 1000.0;
        System.out.printf("{\"records\": %d, \"bytes\": %d, \"seconds\": %.3f, \"mb_per_s\": %.3f, \"records_per_s\": %.1f, \"complete\": %b}%n",
                read, bytes, secs, bytes / 1048576.0 / secs, read / secs, read >= records);
    }

    static void multiProduce(String bootstrap, String topic, int connections, int partitions, long records, int size, long rate)
            throws Exception {
        List<KafkaProducer<byte[], byte[]>> producers = new ArrayList<>();
        for (int i = 0; i < connections; i++) {
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.ACKS_CONFIG, "all");
            p.put(ProducerConfig.CLIENT_ID_CONFIG, "bench-mp-" + i);
            // Each producer keeps its own buffer; bound it so 256 of them fit in the tool's heap.
            p.put(ProducerConfig.BUFFER_MEMORY_CONFIG, String.valueOf(Math.max(1 << 20, (256 << 20) / connections)));
            producers.add(new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer()));
        }
        for (var pr : producers) pr.partitionsFor(topic); // connect + metadata before the clock starts
        byte[] payload = new byte[size];
        Random rnd = new Random(0);
        for (int i = 0; i < size; i++) payload[i] = (byte) (65 + rnd.nextInt(26));
        int[] latUs = new int[(int) records];
        AtomicLong acked = new AtomicLong(), errors = new AtomicLong();
        long start = System.nanoTime();
        for (long i = 0; i < records; i++) {
            if (rate > 0) {
                long due = start + (long) (i * 1e9 / rate);
                long now;
                while ((now = System.nanoTime()) < due) {
                    long d = due - now;
                    if (d > 200_000) Thread.sleep(d / 1_000_000, (int) (d % 1_000_000));
                }
            }
            final int idx = (int) i;
            final long sent = System.nanoTime();
            producers.get((int) (i % connections)).send(
                    new ProducerRecord<>(topic, (int) (i % partitions), null, payload), (md, ex) -> {
                        latUs[idx] = (int) Math.min(Integer.MAX_VALUE, (System.nanoTime() - sent) / 1000);
                        if (ex != null) errors.incrementAndGet();
                        acked.incrementAndGet();
                    });
        }
        for (var pr : producers) pr.flush();
        double secs = (System.nanoTime() - start) / 1e9;
        for (var pr : producers) pr.close(Duration.ofSeconds(5));
        int[] sorted = latUs.clone();
        Arrays.sort(sorted);
        System.out.printf("{\"connections\": %d, \"records\": %d, \"errors\": %d, \"seconds\": %.3f, \"records_per_s\": %.1f, "
                        + "\"mb_per_s\": %.3f, \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"p999_ms\": %.2f}%n",
                connections, records, errors.get(), secs, records / secs, records * (double) size / 1048576.0 / secs,
                pct(sorted, 0.5), pct(sorted, 0.99), pct(sorted, 0.999));
    }

    static void keyedProduce(String bootstrap, String topic, int keys, long records, int size, long rate, long seed)
            throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "bench-keyed");
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
        producer.partitionsFor(topic); // connect + metadata before the clock starts
        Random rnd = new Random(seed);
        byte[] payload = new byte[size];
        for (int i = 0; i < size; i++) payload[i] = (byte) (65 + rnd.nextInt(26));
        int[] latUs = new int[(int) records];
        AtomicLong errors = new AtomicLong();
        long start = System.nanoTime();
        for (long i = 0; i < records; i++) {
            if (rate > 0) {
                long due = start + (long) (i * 1e9 / rate);
                long now;
                while ((now = System.nanoTime()) < due) {
                    long d = due - now;
                    if (d > 200_000) Thread.sleep(d / 1_000_000, (int) (d % 1_000_000));
                }
            }
            final int idx = (int) i;
            final long sent = System.nanoTime();
            byte[] key = ("key-" + rnd.nextInt(keys)).getBytes();
            producer.send(new ProducerRecord<>(topic, 0, key, payload), (md, ex) -> {
                latUs[idx] = (int) Math.min(Integer.MAX_VALUE, (System.nanoTime() - sent) / 1000);
                if (ex != null) errors.incrementAndGet();
            });
        }
        producer.flush();
        double secs = (System.nanoTime() - start) / 1e9;
        producer.close(Duration.ofSeconds(5));
        int[] sorted = latUs.clone();
        Arrays.sort(sorted);
        System.out.printf("{\"records\": %d, \"errors\": %d, \"seconds\": %.3f, \"records_per_s\": %.1f, "
                        + "\"mb_per_s\": %.3f, \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"p999_ms\": %.2f}%n",
                records, errors.get(), secs, records / secs, records * (double) size / 1048576.0 / secs,
                pct(sorted, 0.5), pct(sorted, 0.99), pct(sorted, 0.999));
    }

    static void txnCoordinator(String bootstrap, String txnId) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            System.out.println(admin.describeTransactions(List.of(txnId)).description(txnId).get().coordinatorId());
        }
    }

    static KafkaProducer<byte[], byte[]> txnProducer(String bootstrap, String txnId) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "bench-" + txnId);
        p.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
        producer.initTransactions();
        return producer;
    }

    static void txnE2e(String bootstrap, String topic, long rate, long seconds, long txnMs, int size) throws Exception {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "100");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c, new ByteArrayDeserializer(), new ByteArrayDeserializer());
        TopicPartition tp = new TopicPartition(topic, 0);
        consumer.assign(List.of(tp));
        consumer.seekToEnd(List.of(tp));
        consumer.position(tp);
        KafkaProducer<byte[], byte[]> producer = txnProducer(bootstrap, "bench-e2e-" + System.nanoTime());
        long records = rate * seconds;
        ConcurrentLinkedQueue<Long> latUs = new ConcurrentLinkedQueue<>();
        AtomicBoolean done = new AtomicBoolean();
        AtomicLong received = new AtomicLong();
        Thread reader = new Thread(() -> {
            long deadline = Long.MAX_VALUE;
            while (received.get() < records && System.nanoTime() < deadline) {
                if (done.get() && deadline == Long.MAX_VALUE) deadline = System.nanoTime() + 30_000_000_000L;
                ConsumerRecords<byte[], byte[]> rs = consumer.poll(Duration.ofMillis(50));
                long now = System.nanoTime();
                for (ConsumerRecord<byte[], byte[]> r : rs) {
                    long sent = java.nio.ByteBuffer.wrap(r.value()).getLong();
                    latUs.add((now - sent) / 1000);
                    received.incrementAndGet();
                }
            }
        });
        reader.start();
        byte[] pad = new byte[Math.max(0, size - 8)];
        long start = System.nanoTime();
        long txns = 0;
        producer.beginTransaction();
        long txnStart = System.nanoTime();
        for (long i = 0; i < records; i++) {
            long due = start + (long) (i * 1e9 / rate);
            long now;
            while ((now = System.nanoTime()) < due) {
                long d = due - now;
                if (d > 200_000) Thread.sleep(d / 1_000_000, (int) (d % 1_000_000));
            }
            if (now - txnStart >= txnMs * 1_000_000L) {
                producer.commitTransaction();
                txns++;
                producer.beginTransaction();
                txnStart = System.nanoTime();
            }
            java.nio.ByteBuffer v = java.nio.ByteBuffer.allocate(8 + pad.length);
            v.putLong(System.nanoTime()).put(pad);
            producer.send(new ProducerRecord<>(topic, 0, null, v.array()));
        }
        producer.commitTransaction();
        txns++;
        done.set(true);
        reader.join();
        producer.close(Duration.ofSeconds(5));
        long[] sorted = latUs.stream().mapToLong(Long::longValue).sorted().toArray();
        int[] ints = Arrays.stream(sorted).mapToInt(x -> (int) Math.min(Integer.MAX_VALUE, x)).toArray();
        System.out.printf("{\"records\": %d, \"received\": %d, \"transactions\": %d, \"p50_ms\": %.2f, \"p99_ms\": %.2f, "
                        + "\"p999_ms\": %.2f, \"max_ms\": %.2f}%n",
                records, received.get(), txns, pct(ints, 0.5), pct(ints, 0.99), pct(ints, 0.999),
                ints.length == 0 ? 0 : ints[ints.length - 1] / 1000.0);
    }

    static void txnLoop(String bootstrap, String topic, String txnId, long seconds) throws Exception {
        long end = System.currentTimeMillis() + seconds * 1000;
        KafkaProducer<byte[], byte[]> producer = null;
        long n = 0;
        while (System.currentTimeMillis() < end) {
            try {
                if (producer == null) producer = txnProducer(bootstrap, txnId);
                producer.beginTransaction();
                producer.send(new ProducerRecord<>(topic, null, ("r" + n++).getBytes()));
                commitRetrying(producer, end);
                System.out.printf("{\"t_ms\": %d}%n", System.currentTimeMillis());
                System.out.flush();
            } catch (ProducerFencedException | OutOfOrderSequenceException | AuthorizationException e) {
                System.out.printf("{\"error\": \"%s\", \"fatal\": true}%n", e.getClass().getSimpleName());
                if (producer != null) producer.close(Duration.ZERO);
                producer = null;
            } catch (KafkaException e) {
                System.out.printf("{\"error\": \"%s\"}%n", e.getClass().getSimpleName());
                try {
                    if (producer != null) producer.abortTransaction();
                } catch (KafkaException again) {
                    producer.close(Duration.ZERO);
                    producer = null;
                }
            }
        }
        if (producer != null) producer.close(Duration.ofSeconds(5));
    }

    // A commit that timed out may be retried (KafkaProducer keeps the pending EndTxn).
    static void commitRetrying(KafkaProducer<byte[], byte[]> producer, long endMs) {
        while (true) {
            try {
                producer.commitTransaction();
                return;
            } catch (TimeoutException e) {
                if (System.currentTimeMillis() > endMs) throw e;
            }
        }
    }

    static double pct(int[] sorted, double q) {
        if (sorted.length == 0) return 0;
        return sorted[Math.min(sorted.length - 1, (int) (sorted.length * q))] / 1000.0;
    }
}
