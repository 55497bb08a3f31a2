package dev.skiff.compat;

import java.io.IOException;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * MODE=failover (tests/failover_clients.rs, tests/compat/README.md "Failover scenario"): a
 * producer at kafka-clients' default settings (idempotent, acks=all) hands one record every
 * 1/RATE s to the client, round-robin over PARTITIONS partitions, and prints one line per
 * acknowledgement, {@code ack <partition> <index> <handed_us> <acked_us>} (wall clock, µs), or
 * {@code fail <partition> <index> <error>}, until its standard input closes. Then it flushes and
 * exits 0 only if every record handed over was acknowledged.
 */
final class FailoverProduce {
    private final String bootstrap;
    private final String topic;

    FailoverProduce(String bootstrap, String topic) {
        this.bootstrap = bootstrap;
        this.topic = topic;
    }

    private static long nowMicros() {
        java.time.Instant t = java.time.Instant.now();
        return t.getEpochSecond() * 1_000_000L + t.getNano() / 1_000;
    }

    long run() throws InterruptedException {
        int partitions = Integer.parseInt(System.getenv().getOrDefault("PARTITIONS", "3"));
        int rate = Integer.parseInt(System.getenv().getOrDefault("RATE", "500"));
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "compat-java-failover");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        Thread stdin = new Thread(() -> {
            try {
                while (System.in.read() >= 0) {
                    // Only the end of input matters.
                }
            } catch (IOException e) {
                // Treated as closed.
            }
        }, "stdin");
        stdin.setDaemon(true);
        stdin.start();
        AtomicLong acked = new AtomicLong();
        AtomicLong failed = new AtomicLong();
        long intervalNanos = 1_000_000_000L / rate;
        long handedCount = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            long next = System.nanoTime();
            while (stdin.isAlive()) {
                final int partition = (int) (handedCount % partitions);
                final long idx = handedCount;
                final long handed = nowMicros();
                producer.send(new ProducerRecord<>(topic, partition, null, Long.toString(idx).getBytes()), (md, e) -> {
                    long at = nowMicros();
                    synchronized (System.out) {
                        if (e != null) {
                            failed.incrementAndGet();
                            System.out.println("fail " + partition + " " + idx + " " + e);
                        } else {
                            acked.incrementAndGet();
                            System.out.println("ack " + partition + " " + idx + " " + handed + " " + at);
                        }
                        System.out.flush();
                    }
                });
                handedCount++;
                next += intervalNanos;
                long sleep = next - System.nanoTime();
                if (sleep > 0) {
                    Thread.sleep(sleep / 1_000_000L, (int) (sleep % 1_000_000L));
                }
            }
            producer.flush();
        }
        if (failed.get() != 0 || acked.get() != handedCount) {
            throw new IllegalStateException(
                    handedCount + " handed, " + acked.get() + " acked, " + failed.get() + " failed");
        }
        return handedCount;
    }
}
