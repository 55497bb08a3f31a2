package dev.skiff.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.config.TopicConfig;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * A schema registry's storage as Confluent Schema Registry's {@code KafkaStore} keeps it in its
 * {@code _schemas} topic, run by tests/schemas_topic.rs (see tests/compat/README.md, "A schema
 * registry's _schemas topic"). Confluent Schema Registry and Karapace cannot be installed here
 * and Apicurio refuses compacted topics, so this program does what their store does, against the
 * real log cleaner.
 *
 * <p>Every run is one registry start: create or verify the topic, rebuild the in-memory store by
 * reading the topic from the beginning (a background reader thread with {@code assign()}, as
 * {@code KafkaStoreReaderThread}) up to the offset of a NOOP record it writes first, then do one
 * command, each write followed by a wait until the reader has applied it (as
 * {@code KafkaStore.put}).
 *
 * <p>Topic: created with 1 partition and {@code cleanup.policy=compact}; an existing one (found by
 * ListTopics, or TOPIC_ALREADY_EXISTS from CreateTopics, which {@code CREATE_FIRST=1} goes to at
 * once, as when two registries start together) must have 1 partition and DescribeConfigs must
 * say {@code cleanup.policy=compact}, else the program refuses with KafkaStore's message and
 * exits 3.
 *
 * <p>Records (keys and values JSON as Confluent's serializer writes them): SCHEMA
 * {@code {"keytype":"SCHEMA","subject":s,"version":v,"magic":1}} → {@code {"subject","version",
 * "id","schema","deleted"}}; CONFIG {@code {"keytype":"CONFIG","subject":s,"magic":0}} (no
 * subject: global) → {@code {"compatibilityLevel":L}}; DELETE_SUBJECT → {@code {"subject",
 * "version"}} (soft delete: marks versions up to it deleted in the store); NOOP
 * {@code {"keytype":"NOOP","magic":0}} → null (ignored by the reader). Hard deletes write
 * tombstones (null values) for the keys.
 *
 * <p>Commands (args): {@code register SUBJECTS VERSIONS SEED} (subjects {@code subject-<i>},
 * versions 1..VERSIONS, Avro schemas derived from SEED; an already registered schema is not
 * written again, new ones get the next global id), {@code config LEVEL [SUBJECT...]},
 * {@code delete [--permanent] SUBJECT[:VERSION]...} (permanent needs a soft delete first),
 * {@code dump} (prints {@code store <key> <value>} lines, sorted). Every run ends with
 * {@code schemas ok <command> read=<records> tombstones=<n> wrote=<records>} on stdout. Env:
 * BOOTSTRAP, TOPIC (default {@code _schemas}), CREATE_FIRST. A watchdog fails a run after 120 s.
 */
public final class SchemaStore {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int TIMEOUT_MS = 30_000;
    private static final long WATCHDOG_MS = 120_000;

    private final String topic;
    private final TopicPartition tp;
    private final KafkaProducer<byte[], byte[]> producer;
    private final Reader reader;
    private long wrote;

    /** Thrown where KafkaStore throws StoreInitializationException. */
    static final class Refused extends Exception {
        Refused(String message) {
            super(message);
        }
    }

    public static void main(String[] args) throws Exception {
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(WATCHDOG_MS);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("schemas: FAIL: watchdog: run exceeded " + WATCHDOG_MS / 1000 + " s");
            Runtime.getRuntime().halt(1);
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        if (args.length == 0) {
            System.err.println("usage: SchemaStore register|config|delete|dump ...");
            System.exit(2);
        }
        String bootstrap = env("BOOTSTRAP", null);
        String topic = env("TOPIC", "_schemas");
        try {
            createOrVerifyTopic(bootstrap, topic, "1".equals(env("CREATE_FIRST", "")));
        } catch (Refused e) {
            System.out.println("schemas refused: " + e.getMessage());
            System.exit(3);
        }
        SchemaStore store = new SchemaStore(bootstrap, topic);
        try {
            store.run(args);
        } catch (Exception e) {
            System.err.println("schemas: FAIL: " + e);
            e.printStackTrace();
            System.exit(1);
        }
        store.close();
        System.exit(0);
    }

    static String env(String name, String fallback) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            if (fallback == null) {
                throw new IllegalArgumentException(name + " is not set");
            }
            return fallback;
        }
        return v;
    }

    // ---- topic: KafkaStore.createOrVerifySchemaTopic ----------------------------------------

    static void createOrVerifyTopic(String bootstrap, String topic, boolean createFirst) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            Set<String> topics = admin.listTopics().names().get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            if (topics.contains(topic) && !createFirst) {
                verifyTopic(admin, topic);
                return;
            }
            NewTopic request = new NewTopic(topic, 1, (short) 1)
                .configs(Map.of(TopicConfig.CLEANUP_POLICY_CONFIG, TopicConfig.CLEANUP_POLICY_COMPACT));
            try {
                admin.createTopics(List.of(request)).all().get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
                System.out.println("schemas created " + topic);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) {
                    throw e;
                }
                // "If topic already exists, ensure that it is configured correctly."
                System.out.println("schemas topic exists: " + e.getCause().getMessage());
                verifyTopic(admin, topic);
            }
        }
    }

    static void verifyTopic(Admin admin, String topic) throws Exception {
        TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(TIMEOUT_MS, TimeUnit.MILLISECONDS)
            .get(topic);
        int partitions = d.partitions().size();
        if (partitions != 1) {
            throw new Refused("The schema topic " + topic + " should have only 1 partition but has " + partitions);
        }
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config config = admin.describeConfigs(List.of(resource)).all().get(TIMEOUT_MS, TimeUnit.MILLISECONDS)
            .get(resource);
        ConfigEntry policy = config.get(TopicConfig.CLEANUP_POLICY_CONFIG);
        String value = policy == null ? null : policy.value();
        if (!TopicConfig.CLEANUP_POLICY_COMPACT.equals(value)) {
            throw new Refused("The retention policy of the schema topic " + topic
                + " is incorrect. Expected cleanup.policy to be 'compact' but it is " + value);
        }
        System.out.println("schemas verified " + topic + " cleanup.policy=" + value);
    }

    // ---- the store ---------------------------------------------------------------------------

    SchemaStore(String bootstrap, String topic) throws Exception {
        this.topic = topic;
        this.tp = new TopicPartition(topic, 0);
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        // KafkaStore's producer: acks=all, no retries, no idempotence.
        p.put(ProducerConfig.ACKS_CONFIG, "-1");
        p.put(ProducerConfig.RETRIES_CONFIG, 0);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, false);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        producer = new KafkaProducer<>(p);
        reader = new Reader(bootstrap, tp);
        reader.start();
        // KafkaStore.init: write a NOOP to learn the end offset, wait until the reader applied it.
        long noop = send(noopKey(), null);
        reader.waitUntilOffset(noop);
    }

    void close() throws InterruptedException {
        reader.shutdown();
        producer.close(Duration.ofSeconds(10));
    }

    /** KafkaStore.put: write, then wait until the reader thread has applied the record. */
    long put(ObjectNode key, ObjectNode value) throws Exception {
        long offset = send(key, value);
        reader.waitUntilOffset(offset);
        return offset;
    }

    long send(ObjectNode key, ObjectNode value) throws Exception {
        byte[] k = JSON.writeValueAsBytes(key);
        byte[] v = value == null ? null : JSON.writeValueAsBytes(value);
        RecordMetadata m = producer.send(new ProducerRecord<>(topic, 0, k, v)).get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
        wrote++;
        return m.offset();
    }

    void run(String[] args) throws Exception {
        switch (args[0]) {
            case "register" -> register(Integer.parseInt(args[1]), Integer.parseInt(args[2]), Long.parseLong(args[3]));
            case "config" -> {
                List<String> subjects = List.of(args).subList(2, args.length);
                if (subjects.isEmpty()) {
                    put(configKey(null), level(args[1]));
                }
                for (String s : subjects) {
                    put(configKey(s), level(args[1]));
                }
            }
            case "delete" -> {
                boolean permanent = args.length > 1 && args[1].equals("--permanent");
                for (String target : List.of(args).subList(permanent ? 2 : 1, args.length)) {
                    delete(target, permanent);
                }
            }
            case "dump" -> {
                for (Map.Entry<String, String> e : reader.snapshot().entrySet()) {
                    System.out.println("store " + e.getKey() + " " + e.getValue());
                }
            }
            default -> throw new IllegalArgumentException("unknown command " + args[0]);
        }
        System.out.println("schemas ok " + args[0] + " read=" + reader.records() + " tombstones=" + reader.tombstones()
            + " wrote=" + wrote);
    }

    /** Deterministic Avro record schemas: version v of a subject adds field f<v> to v-1's. */
    void register(int subjects, int versions, long seed) throws Exception {
        for (int s = 0; s < subjects; s++) {
            String subject = "subject-" + s;
            Random rnd = new Random(seed * 1_000_003L + s);
            String[] types = {"string", "int", "long", "double", "boolean", "bytes"};
            StringBuilder fields = new StringBuilder();
            for (int v = 1; v <= versions; v++) {
                if (v > 1) {
                    fields.append(',');
                }
                String type = types[rnd.nextInt(types.length)];
                fields.append("{\"name\":\"f").append(v).append("\",\"type\":[\"null\",\"").append(type)
                    .append("\"],\"default\":null}");
                String schema = "{\"type\":\"record\",\"name\":\"R" + s + "\",\"namespace\":\"skiff.s" + (seed & 0xffff)
                    + "\",\"fields\":[" + fields + "]}";
                registerOne(subject, schema);
            }
        }
    }

    /** As the registry: the same schema in the subject (not deleted) is not written again; a
     *  new one gets the next version of the subject and the next global id (or the id the same
     *  schema has under another subject). */
    void registerOne(String subject, String schema) throws Exception {
        Map<String, ObjectNode> store = reader.values();
        int latest = 0;
        int maxId = 0;
        Integer sameId = null;
        for (Map.Entry<String, ObjectNode> e : store.entrySet()) {
            JsonNode key = JSON.readTree(e.getKey());
            if (!"SCHEMA".equals(key.path("keytype").asText())) {
                continue;
            }
            ObjectNode value = e.getValue();
            maxId = Math.max(maxId, value.path("id").asInt());
            if (value.path("schema").asText().equals(schema)) {
                if (subject.equals(value.path("subject").asText()) && !value.path("deleted").asBoolean()) {
                    System.out.println("exists " + JSON.writeValueAsString(value));
                    return;
                }
                sameId = value.path("id").asInt();
            }
            if (subject.equals(key.path("subject").asText())) {
                latest = Math.max(latest, key.path("version").asInt());
            }
        }
        int version = latest + 1;
        ObjectNode value = JSON.createObjectNode().put("subject", subject).put("version", version)
            .put("id", sameId != null ? sameId : maxId + 1).put("schema", schema).put("deleted", false);
        put(schemaKey(subject, version), value);
        System.out.println("registered " + JSON.writeValueAsString(value));
    }

    /** KafkaSchemaRegistry.deleteSubject / deleteSchemaVersion. */
    void delete(String target, boolean permanent) throws Exception {
        String subject = target;
        Integer only = null;
        int colon = target.lastIndexOf(':');
        if (colon > 0) {
            subject = target.substring(0, colon);
            only = Integer.parseInt(target.substring(colon + 1));
        }
        Map<String, ObjectNode> store = reader.values();
        List<Integer> versions = new ArrayList<>();
        for (Map.Entry<String, ObjectNode> e : store.entrySet()) {
            JsonNode key = JSON.readTree(e.getKey());
            if ("SCHEMA".equals(key.path("keytype").asText()) && subject.equals(key.path("subject").asText())) {
                int v = key.path("version").asInt();
                boolean deleted = e.getValue().path("deleted").asBoolean();
                if ((only == null || only == v) && (permanent || !deleted)) {
                    if (permanent && !deleted) {
                        throw new IllegalStateException(subject + " version " + v + " was not soft-deleted first");
                    }
                    versions.add(v);
                }
            }
        }
        if (versions.isEmpty()) {
            throw new IllegalStateException("nothing to delete for " + target);
        }
        Collections.sort(versions);
        if (only != null) {
            if (permanent) {
                put(schemaKey(subject, only), null);
            } else {
                ObjectNode v = store.get(key(schemaKey(subject, only))).deepCopy();
                put(schemaKey(subject, only), v.put("deleted", true));
            }
        } else if (!permanent) {
            int watermark = versions.get(versions.size() - 1);
            put(deleteSubjectKey(subject), JSON.createObjectNode().put("subject", subject).put("version", watermark));
        } else {
            for (int v : versions) {
                put(schemaKey(subject, v), null);
            }
            if (store.containsKey(key(configKey(subject)))) {
                put(configKey(subject), null);
            }
        }
        System.out.println((permanent ? "hard-deleted " : "soft-deleted ") + target + " versions " + versions);
    }

    static String key(ObjectNode key) throws Exception {
        return JSON.writeValueAsString(key);
    }

    static ObjectNode schemaKey(String subject, int version) {
        return JSON.createObjectNode().put("keytype", "SCHEMA").put("subject", subject).put("version", version)
            .put("magic", 1);
    }

    static ObjectNode configKey(String subject) {
        ObjectNode k = JSON.createObjectNode().put("keytype", "CONFIG");
        if (subject != null) {
            k.put("subject", subject);
        }
        return k.put("magic", 0);
    }

    static ObjectNode deleteSubjectKey(String subject) {
        return JSON.createObjectNode().put("keytype", "DELETE_SUBJECT").put("subject", subject).put("magic", 0);
    }

    static ObjectNode noopKey() {
        return JSON.createObjectNode().put("keytype", "NOOP").put("magic", 0);
    }

    static ObjectNode level(String level) {
        return JSON.createObjectNode().put("compatibilityLevel", level);
    }

    // ---- KafkaStoreReaderThread --------------------------------------------------------------

    /** Reads the topic from the beginning with assign() and applies every record to the store. */
    static final class Reader extends Thread {
        private final KafkaConsumer<byte[], byte[]> consumer;
        private final TopicPartition tp;
        /** Key JSON → value; guarded by this. */
        private final TreeMap<String, ObjectNode> store = new TreeMap<>();
        private long position = 0;
        private long records = 0;
        private long tombstones = 0;
        private volatile boolean running = true;
        private volatile Exception failure;

        Reader(String bootstrap, TopicPartition tp) {
            super("schemas-reader");
            this.tp = tp;
            Properties p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ConsumerConfig.GROUP_ID_CONFIG, "schema-registry-127.0.0.1-" + ProcessHandle.current().pid());
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
            consumer = new KafkaConsumer<>(p);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
        }

        @Override
        public void run() {
            try {
                while (running) {
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                        apply(r);
                    }
                    // The position moves past offsets the cleaner removed (a batch keeps its
                    // last offset), so it, not the last record's offset, says how far we read.
                    long at = consumer.position(tp);
                    synchronized (this) {
                        position = at;
                        notifyAll();
                    }
                }
            } catch (Exception e) {
                failure = e;
                synchronized (this) {
                    notifyAll();
                }
            } finally {
                consumer.close(Duration.ofSeconds(5));
            }
        }

        private void apply(ConsumerRecord<byte[], byte[]> r) throws Exception {
            JsonNode key = JSON.readTree(r.key());
            String keyType = key.path("keytype").asText();
            synchronized (this) {
                records++;
                if (r.value() == null) {
                    tombstones++;
                }
                if ("NOOP".equals(keyType)) {
                    return; // "reader thread ignores messages with this key"
                }
                String k = JSON.writeValueAsString(key);
                if (r.value() == null) {
                    store.remove(k);
                    return;
                }
                ObjectNode value = (ObjectNode) JSON.readTree(new String(r.value(), StandardCharsets.UTF_8));
                store.put(k, value);
                if ("DELETE_SUBJECT".equals(keyType)) {
                    // The registry's update handler: every version up to the watermark is deleted.
                    String subject = value.path("subject").asText();
                    int watermark = value.path("version").asInt();
                    for (Map.Entry<String, ObjectNode> e : store.entrySet()) {
                        JsonNode sk = JSON.readTree(e.getKey());
                        if ("SCHEMA".equals(sk.path("keytype").asText()) && subject.equals(sk.path("subject").asText())
                            && sk.path("version").asInt() <= watermark) {
                            e.getValue().put("deleted", true);
                        }
                    }
                }
            }
        }

        synchronized void waitUntilOffset(long offset) throws Exception {
            long deadline = System.currentTimeMillis() + TIMEOUT_MS;
            while (position <= offset) {
                if (failure != null) {
                    throw new IllegalStateException("reader failed", failure);
                }
                long left = deadline - System.currentTimeMillis();
                if (left <= 0) {
                    throw new IllegalStateException("reader did not reach offset " + offset + " within " + TIMEOUT_MS
                        + " ms (at " + position + ")");
                }
                wait(left);
            }
        }

        synchronized Map<String, ObjectNode> values() {
            TreeMap<String, ObjectNode> copy = new TreeMap<>();
            store.forEach((k, v) -> copy.put(k, v.deepCopy()));
            return copy;
        }

        synchronized TreeMap<String, String> snapshot() throws Exception {
            TreeMap<String, String> out = new TreeMap<>();
            for (Map.Entry<String, ObjectNode> e : store.entrySet()) {
                out.put(e.getKey(), JSON.writeValueAsString(e.getValue()));
            }
            return out;
        }

        synchronized long records() {
            return records;
        }

        synchronized long tombstones() {
            return tombstones;
        }

        void shutdown() throws InterruptedException {
            running = false;
            consumer.wakeup();
            join(10_000);
        }
    }
}
