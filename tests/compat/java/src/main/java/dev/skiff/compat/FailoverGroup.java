package dev.skiff.compat;

import java.io.IOException;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * MODE=failover-group (tests/failover_groups.rs, tests/compat/README.md "Group failover
 * scenario"): one member of group GROUP (default TOPIC-fg) at kafka-clients' default settings
 * (classic protocol, auto commit every 5 s, session 45 s, heartbeat 3 s, range +
 * cooperative-sticky assignors) except {@code auto.offset.reset=earliest}, subscribed to TOPIC,
 * polling until its standard input closes, while the test kills brokers. Prints to stdout:
 * <pre>
 *   rec &lt;partition&gt; &lt;offset&gt; &lt;consumed_us&gt;     every record, wall clock µs when poll returned it
 *   event &lt;us&gt; &lt;what&gt;                        assignment changes
 * </pre>
 * then closes the consumer (which commits) and prints {@code compat java ok produced=0 verified=N}.
 */
final class FailoverGroup {
    private final String bootstrap;
    private final String topic;

    FailoverGroup(String bootstrap, String topic) {
        this.bootstrap = bootstrap;
        this.topic = topic;
    }

    static long nowMicros() {
        java.time.Instant t = java.time.Instant.now();
        return t.getEpochSecond() * 1_000_000L + t.getNano() / 1_000;
    }

    static void event(String what) {
        synchronized (System.out) {
            System.out.println("event " + nowMicros() + " " + what);
            System.out.flush();
        }
    }

    long run() {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, Compat.env("GROUP", topic + "-fg"));
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "compat-java-failover-group");
        // Everything the test produced is checked for, including what came before the join.
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
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
        long consumed = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(Security.apply(p))) {
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    event("revoked " + partitions);
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    event("assigned " + partitions);
                }

                @Override
                public void onPartitionsLost(Collection<TopicPartition> partitions) {
                    event("lost " + partitions);
                }
            });
            StringBuilder out = new StringBuilder();
            while (stdin.isAlive()) {
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(100));
                if (batch.isEmpty()) {
                    continue;
                }
                long at = nowMicros();
                out.setLength(0);
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    out.append("rec ").append(r.partition()).append(' ').append(r.offset()).append(' ').append(at)
                            .append('\n');
                    consumed++;
                }
                synchronized (System.out) {
                    System.out.print(out);
                    System.out.flush();
                }
            }
        }
        return consumed;
    }
}
