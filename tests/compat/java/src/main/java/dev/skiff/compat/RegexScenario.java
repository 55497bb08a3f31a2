package dev.skiff.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.admin.TopicListing;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.SubscriptionPattern;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * MODE=regex (tests/compat/README.md, "Regex scenario"): internal topics as the Java client sees
 * them. The Admin client lists {@code __consumer_offsets} only when asked for internal topics and
 * describes its 50 partitions; a group consumer subscribed to the pattern {@code __.*|TOPIC-.*}
 * consumes the two regular topics and is never assigned an internal partition. GROUP_PROTOCOL=classic
 * matches the pattern in the client (which drops internal topics, exclude.internal.topics=true);
 * GROUP_PROTOCOL=consumer sends it to the broker as a KIP-848 SubscriptionPattern.
 */
final class RegexScenario {
    static final String INTERNAL = "__consumer_offsets";
    static final int PARTITIONS = 2;
    static final long CONSUME_TIMEOUT_MS = 90_000;
    final String bootstrap;
    final String topic;
    final int records;
    final String protocol = Compat.env("GROUP_PROTOCOL", "classic");

    RegexScenario(String bootstrap, String topic, int records) {
        this.bootstrap = bootstrap;
        this.topic = topic;
        this.records = records;
    }

    static void log(String msg) {
        Compat.log(msg);
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException(what);
        }
    }

    List<String> topics() {
        return List.of(topic + "-a", topic + "-b");
    }

    /** Admin view of the internal topic; creates the two regular topics. */
    void admin() throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(props)) {
            Set<String> plain = admin.listTopics().names().get(30, TimeUnit.SECONDS);
            check(!plain.contains(INTERNAL), "listTopics() without listInternal shows " + INTERNAL + ": " + plain);
            Map<String, TopicListing> all =
                    admin.listTopics(new ListTopicsOptions().listInternal(true)).namesToListings().get(30, TimeUnit.SECONDS);
            TopicListing listing = all.get(INTERNAL);
            check(listing != null, "listTopics(listInternal) lacks " + INTERNAL + ": " + all.keySet());
            check(listing.isInternal(), INTERNAL + " listed as not internal");
            TopicDescription d = admin.describeTopics(List.of(INTERNAL)).allTopicNames().get(30, TimeUnit.SECONDS).get(INTERNAL);
            check(d.isInternal(), INTERNAL + " described as not internal");
            check(d.partitions().size() == 50, INTERNAL + " has " + d.partitions().size() + " partitions, want 50");
            for (TopicPartitionInfo p : d.partitions()) {
                check(p.leader() != null && !p.leader().isEmpty(), INTERNAL + "-" + p.partition() + " has no leader");
            }
            log("admin: " + INTERNAL + " listed only with listInternal, described with 50 partitions");
            List<NewTopic> create = topics().stream()
                    .map(t -> new NewTopic(t, PARTITIONS, (short) 1).configs(Map.of("retention.ms", "-1")))
                    .toList();
            admin.createTopics(create).all().get(30, TimeUnit.SECONDS);
        }
    }

    void produce() throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < records; i++) {
                String t = topics().get(i % 2);
                producer.send(new ProducerRecord<>(t, (i / 2) % PARTITIONS, null, Integer.toString(i).getBytes(StandardCharsets.UTF_8)));
            }
            producer.flush();
        }
    }

    /** Consumes every record with a pattern subscription; returns how many it read. */
    long consume() {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, topic + "-group");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        props.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, 1000);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        String regex = "__.*|" + Pattern.quote(topic) + "-.*";
        Set<TopicPartition> everAssigned = new TreeSet<>((x, y) -> x.toString().compareTo(y.toString()));
        Set<Integer> seen = new HashSet<>();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            ConsumerRebalanceListener listener = new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> parts) {}

                public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                    everAssigned.addAll(parts);
                }
            };
            if (protocol.equals("consumer")) {
                // KIP-848: the broker resolves the pattern (RE2J syntax, whole-name match).
                consumer.subscribe(new SubscriptionPattern("__.*|" + topic + "-.*"), listener);
            } else {
                consumer.subscribe(Pattern.compile(regex), listener);
            }
            long deadline = System.currentTimeMillis() + CONSUME_TIMEOUT_MS;
            while (seen.size() < records) {
                check(System.currentTimeMillis() < deadline,
                        "consumed " + seen.size() + " of " + records + " records within " + CONSUME_TIMEOUT_MS + " ms; assigned " + everAssigned);
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    check(!r.topic().startsWith("__"), "record from internal topic " + r.topic());
                    int i = Integer.parseInt(new String(r.value(), StandardCharsets.UTF_8));
                    check(r.topic().equals(topics().get(i % 2)), "record " + i + " read from " + r.topic());
                    check(seen.add(i), "record " + i + " read twice");
                }
            }
            Set<TopicPartition> want = new HashSet<>();
            for (String t : topics()) {
                for (int p = 0; p < PARTITIONS; p++) {
                    want.add(new TopicPartition(t, p));
                }
            }
            check(everAssigned.containsAll(want), "assignment " + everAssigned + " lacks some of " + want);
            for (TopicPartition tp : everAssigned) {
                check(!tp.topic().equals(INTERNAL), "internal partition assigned: " + tp);
            }
            check(consumer.subscription().equals(new HashSet<>(topics())) || protocol.equals("consumer"),
                    "subscription " + consumer.subscription());
            log("regex " + regex + " (" + protocol + "): assigned " + everAssigned + ", no internal partition");
        }
        return seen.size();
    }

    long run() throws Exception {
        admin();
        produce();
        return consume();
    }
}
