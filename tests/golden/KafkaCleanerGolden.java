// Golden bytes of Apache Kafka's cleaner re-encoding (MemoryRecords.filterTo), checked by
// src/broker/records.rs (`rewrite_matches_kafkas_filter_to_byte_for_byte`). Regenerate with
//   java -cp "${SKIFF_CACHE:-$HOME/.cache/skiff}/kafka/4.4.0/libs/*" tests/golden/KafkaCleanerGolden.java
// and paste its output into that test.
import java.nio.ByteBuffer;
import java.util.Set;

import org.apache.kafka.common.compress.Compression;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.record.internal.MemoryRecords;
import org.apache.kafka.common.record.internal.MemoryRecordsBuilder;
import org.apache.kafka.common.record.internal.Record;
import org.apache.kafka.common.record.internal.RecordBatch;
import org.apache.kafka.common.utils.internals.BufferSupplier;

public class KafkaCleanerGolden {
    static String hex(ByteBuffer b) {
        StringBuilder s = new StringBuilder();
        ByteBuffer d = b.duplicate();
        while (d.hasRemaining()) s.append(String.format("%02x", d.get()));
        return s.toString();
    }

    /** baseOffset 40, producer 9 epoch 3, base sequence 100, leader epoch 7, four records. */
    static MemoryRecords input() {
        ByteBuffer buf = ByteBuffer.allocate(4096);
        MemoryRecordsBuilder b = MemoryRecords.builder(buf, RecordBatch.MAGIC_VALUE_V2, Compression.NONE,
                TimestampType.CREATE_TIME, 40L, RecordBatch.NO_TIMESTAMP, 9L, (short) 3, 100, false, 7);
        b.append(1000L, "a".getBytes(), "1".getBytes(),
                new Header[] {new RecordHeader("h", "x".getBytes()), new RecordHeader("h2", null)});
        b.append(990L, null, "2".getBytes(), new Header[0]);
        b.append(1010L, "b".getBytes(), null, new Header[0]);
        b.append(1005L, "".getBytes(), "".getBytes(), new Header[] {new RecordHeader("", new byte[0])});
        return b.build();
    }

    static ByteBuffer filter(MemoryRecords in, Set<Long> keep, boolean retainEmpty, long now, long retention) {
        MemoryRecords.FilterResult r = in.filterTo(new MemoryRecords.RecordFilter(now, retention) {
            @Override
            protected BatchRetentionResult checkBatchRetention(RecordBatch batch) {
                return new BatchRetentionResult(retainEmpty ? BatchRetention.RETAIN_EMPTY : BatchRetention.DELETE_EMPTY, false);
            }

            @Override
            protected boolean shouldRetainRecord(RecordBatch batch, Record record) {
                return keep.contains(record.offset());
            }
        }, ByteBuffer.allocate(4096), BufferSupplier.NO_CACHING, Integer.MAX_VALUE);
        ByteBuffer o = r.outputBuffer();
        o.flip();
        return o;
    }

    public static void main(String[] args) {
        MemoryRecords in = input();
        System.out.println("input " + hex(in.buffer()));
        // A kept tombstone: horizon = now + delete.retention.ms, timestamps rebased.
        System.out.println("horizon " + hex(filter(in, Set.of(41L, 42L, 43L), false, 4_000_000L, 1_000_000L)));
        // No tombstone kept, first record kept: same baseTimestamp, records copied.
        System.out.println("subset " + hex(filter(in, Set.of(40L, 41L, 43L), false, 4_000_000L, 1_000_000L)));
        // Nothing kept, the producer's last batch: writeEmptyHeader.
        System.out.println("empty " + hex(filter(in, Set.of(), true, 4_000_000L, 1_000_000L)));
    }
}
