package dev.skiff.compat;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;

/**
 * A Kafka Streams word count with a persistent (RocksDB) state store, run by tests/ecosystem.rs
 * (see tests/compat/README.md, "Kafka Streams"). It runs until it is signalled: SIGTERM closes
 * Streams cleanly (offsets committed, producer flushed); SIGKILL is the crash case.
 *
 * <p>Env: BOOTSTRAP, APP_ID, INPUT, OUTPUT, STATE_DIR, GUARANTEE (optional). Records of INPUT are keyed by word (the
 * producer puts every occurrence of a word in one partition), so {@code groupByKey().count()}
 * needs no repartition topic; the store's changelog {@code APP_ID-counts-changelog} is a
 * compacted topic Streams creates itself. Every update of a count goes to OUTPUT (word → count
 * as an 8-byte big-endian long; the record cache is off), so the latest value per key is the
 * count.
 *
 * <p>Stdout lines the test reads: {@code streams state RUNNING} on each state change,
 * {@code streams restored <topic>-<partition> <n>} for each restored changelog partition and
 * {@code streams closed} after a clean close.
 */
public final class StreamsWordCount {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, env("APP_ID"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, env("BOOTSTRAP"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, env("STATE_DIR"));
        // GUARANTEE: at_least_once (default, tests/ecosystem.rs) or exactly_once_v2
        // (tests/transactions_compat.rs: transactions, read_committed, counts exact after a crash).
        String guarantee = System.getenv().getOrDefault("GUARANTEE", StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        // Commit (and so flush changelog + output) often, and forward every update: the test
        // waits on the output topic and the SIGKILL case wants uncommitted work in flight.
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        // Tests restart the app at once: a short session lets a killed member's partitions go
        // to the new one quickly (the classic group protocol's rebalance after a crash).
        p.put(StreamsConfig.consumerPrefix("session.timeout.ms"), 6000);
        p.put(StreamsConfig.consumerPrefix("heartbeat.interval.ms"), 1000);

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(env("INPUT"), Consumed.with(Serdes.String(), Serdes.String()))
            .groupByKey()
            .count(Materialized.as("counts"))
            .toStream()
            .to(env("OUTPUT"), Produced.with(Serdes.String(), Serdes.Long()));

        KafkaStreams streams = new KafkaStreams(builder.build(), p);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.out.println("streams state " + now);
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
                System.out.println("streams restoring " + tp + " from " + start + " to " + end);
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long n) {}

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                System.out.println("streams restored " + tp + " " + total);
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.out.println("streams error " + e);
            e.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                .SHUTDOWN_CLIENT;
        });
        // SIGTERM: close cleanly (commit offsets, flush the changelog and output) before exiting.
        AtomicBoolean closing = new AtomicBoolean();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            closing.set(true);
            // Leave the group so the restarted app is assigned at once (Streams' default close
            // stays in the group until the session times out).
            boolean clean = streams.close(CloseOptions.groupMembershipOperation(
                CloseOptions.GroupMembershipOperation.LEAVE_GROUP).withTimeout(Duration.ofSeconds(30)));
            System.out.println(clean ? "streams closed" : "streams close timed out");
            System.out.flush();
        }, "streams-shutdown"));
        streams.start();
        stopped.await();
        if (closing.get()) {
            return; // the shutdown hook is closing Streams; the JVM exits when it is done
        }
        // Streams stopped on its own (an error): fail loudly.
        System.out.println("streams stopped on its own in state " + streams.state());
        System.exit(1);
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            throw new IllegalArgumentException("missing env " + name);
        }
        return v;
    }
}
