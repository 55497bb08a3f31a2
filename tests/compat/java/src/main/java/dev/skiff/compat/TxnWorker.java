package dev.skiff.compat;

import java.io.FileOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

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
 * The transactional read-process-write worker of the transaction checker (tests/txn_checker.rs,
 * tests/compat/README.md "Transaction checker"). WORKERS threads, each a read_committed group
 * consumer of INPUT (group GROUP) and a transactional producer (TXN_PREFIX-w), copy every input
 * record to OUTPUT (same partition) in a transaction that also commits the consumed offsets
 * (sendOffsetsToTransaction). Transaction n of a worker is aborted when (n * 7 + w) % ABORT_EVERY
 * == 0. It runs for DURATION_MS, then finishes its transaction and closes cleanly.
 *
 * <p>Output record: key = input key, value {@code in:<partition>:<offset>|w<w>|t<n>}. One JSON
 * line per transaction to LOG (append): {@code {"w":0,"txn":5,"outcome":"committed","inputs":
 * [[p,first,last],...],"records":12,"error":null}} with outcome committed (commitTransaction
 * returned), aborted (abortTransaction returned) or unknown (an error on the way: the outcome is
 * whatever the broker decided; the producer and consumer are replaced, and the new producer's
 * initTransactions ends the old transaction). Faults make clients fail in every way, so any
 * exception is logged and the worker goes on; only the checker judges.
 */
public final class TxnWorker {
    final String bootstrap = env("BOOTSTRAP");
    final String input = env("INPUT");
    final String output = env("OUTPUT");
    final String group = env("GROUP");
    final String prefix = env("TXN_PREFIX");
    final int abortEvery = Integer.parseInt(env("ABORT_EVERY"));
    final long deadline;
    final PrintStream log;

    TxnWorker() throws Exception {
        deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(Long.parseLong(env("DURATION_MS")));
        log = new PrintStream(new FileOutputStream(env("LOG"), true), true, StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        TxnWorker tw = new TxnWorker();
        int workers = Integer.parseInt(env("WORKERS"));
        List<Thread> threads = new ArrayList<>();
        for (int w = 0; w < workers; w++) {
            final int id = w;
            Thread t = new Thread(() -> tw.run(id), "worker-" + w);
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) {
            t.join();
        }
        System.out.println("txn worker done");
        System.out.flush();
        System.exit(0);
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            throw new IllegalArgumentException("missing env " + name);
        }
        return v;
    }

    synchronized void line(String json) {
        log.println(json);
        log.flush();
    }

    KafkaConsumer<byte[], byte[]> consumer(int w) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, prefix + "-consumer-" + w);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 20);
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10_000);
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1_000);
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20_000);
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        return new KafkaConsumer<>(p);
    }

    KafkaProducer<byte[], byte[]> producer(int w) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, prefix + "-producer-" + w);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, prefix + "-" + w);
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 20_000);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 20_000);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 30_000);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p);
        prod.initTransactions();
        return prod;
    }

    static String quote(Object o) {
        if (o == null) {
            return "null";
        }
        String s = o.toString().replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", " ");
        return "\"" + (s.length() > 300 ? s.substring(0, 300) : s) + "\"";
    }

    void run(int w) {
        long txn = 0;
        KafkaConsumer<byte[], byte[]> c = null;
        KafkaProducer<byte[], byte[]> prod = null;
        while (System.nanoTime() < deadline) {
            try {
                if (prod == null) {
                    prod = producer(w);
                }
                if (c == null) {
                    c = consumer(w);
                    c.subscribe(List.of(input));
                }
            } catch (Exception e) {
                line("{\"w\":" + w + ",\"event\":\"setup failed\",\"error\":" + quote(e) + "}");
                close(c, prod);
                c = null;
                prod = null;
                sleep(500);
                continue;
            }
            ConsumerRecords<byte[], byte[]> rs;
            try {
                rs = c.poll(Duration.ofMillis(200));
            } catch (Exception e) {
                line("{\"w\":" + w + ",\"event\":\"poll failed\",\"error\":" + quote(e) + "}");
                close(c, null);
                c = null;
                continue;
            }
            if (rs.isEmpty()) {
                continue;
            }
            long n = txn++;
            boolean abort = (n * 7 + w) % abortEvery == 0;
            // Input ranges: partition -> [first, last] (one batch per partition, in order).
            Map<Integer, long[]> ranges = new TreeMap<>();
            Map<TopicPartition, OffsetAndMetadata> offsets = new TreeMap<>((a, b) -> Integer.compare(a.partition(), b.partition()));
            for (ConsumerRecord<byte[], byte[]> r : rs) {
                ranges.computeIfAbsent(r.partition(), p -> new long[] {r.offset(), r.offset()})[1] = r.offset();
                offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
            }
            StringBuilder in = new StringBuilder("[");
            for (Map.Entry<Integer, long[]> e : ranges.entrySet()) {
                in.append(in.length() > 1 ? "," : "").append("[").append(e.getKey()).append(",").append(e.getValue()[0])
                        .append(",").append(e.getValue()[1]).append("]");
            }
            in.append("]");
            String outcome;
            Exception error = null;
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            try {
                prod.beginTransaction();
                for (ConsumerRecord<byte[], byte[]> r : rs) {
                    String v = "in:" + r.partition() + ":" + r.offset() + "|w" + w + "|t" + n;
                    sent.add(prod.send(new ProducerRecord<>(output, r.partition(), r.key(), v.getBytes(StandardCharsets.UTF_8))));
                }
                prod.sendOffsetsToTransaction(offsets, c.groupMetadata());
                if (abort) {
                    prod.flush();
                    prod.abortTransaction();
                    outcome = "aborted";
                } else {
                    prod.commitTransaction();
                    outcome = "committed";
                }
            } catch (Exception e) {
                error = e;
                outcome = "unknown";
            }
            StringBuilder outs = new StringBuilder("[");
            for (Future<RecordMetadata> f : sent) {
                if (f.isDone()) {
                    try {
                        RecordMetadata md = f.get();
                        outs.append(outs.length() > 1 ? "," : "").append("[").append(md.partition()).append(",")
                                .append(md.offset()).append("]");
                    } catch (Exception ignored) {
                        // not written (or not known to be)
                    }
                }
            }
            outs.append("]");
            line("{\"w\":" + w + ",\"txn\":" + n + ",\"outcome\":\"" + outcome + "\",\"inputs\":" + in + ",\"outputs\":" + outs
                    + ",\"error\":" + quote(error) + "}");
            if (outcome.equals("aborted")) {
                // Process the same records again: back to the batch's first offsets.
                try {
                    for (Map.Entry<Integer, long[]> e : ranges.entrySet()) {
                        c.seek(new TopicPartition(input, e.getKey()), e.getValue()[0]);
                    }
                } catch (Exception e) {
                    close(c, null);
                    c = null;
                }
            } else if (outcome.equals("unknown")) {
                // Replace both: the new producer's initTransactions completes or aborts the old
                // transaction (fencing it), and the new consumer starts at the committed offsets.
                close(c, prod);
                c = null;
                prod = null;
            }
        }
        close(c, prod);
        line("{\"w\":" + w + ",\"event\":\"closed\"}");
    }

    static void close(KafkaConsumer<byte[], byte[]> c, KafkaProducer<byte[], byte[]> prod) {
        if (prod != null) {
            try {
                prod.close(Duration.ofSeconds(5));
            } catch (Exception ignored) {
                // closing after a failure
            }
        }
        if (c != null) {
            try {
                c.close(Duration.ofSeconds(5));
            } catch (Exception ignored) {
                // closing after a failure
            }
        }
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
