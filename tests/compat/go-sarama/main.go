// Compatibility scenario for github.com/IBM/sarama; see tests/compat/README.md.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

const (
	clientName = "go-sarama"
	partitions = 3
	baseTS     = int64(1700000000000)
	watchdog   = 240 * time.Second
	stallLimit = 60 * time.Second
)

var sizes = []int{0, 1, 17, 100, 1000, 5000, 20000}

// The client's default codec first, then gzip, snappy, lz4, zstd.
var codecs = []struct {
	name  string
	codec sarama.CompressionCodec
}{
	{"none", sarama.CompressionNone},
	{"gzip", sarama.CompressionGZIP},
	{"snappy", sarama.CompressionSnappy},
	{"lz4", sarama.CompressionLZ4},
	{"zstd", sarama.CompressionZSTD},
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "compat %s FAILED: %s\n", clientName, fmt.Sprintf(format, args...))
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Printf("[%s] %s\n", clientName, fmt.Sprintf(format, args...))
}

func key(i int) []byte { return []byte("key-" + strconv.Itoa(i)) }

func value(i int) []byte {
	v := make([]byte, sizes[i%len(sizes)])
	for j := range v {
		v[j] = byte((i*31 + j) % 251)
	}
	return v
}

func timestamp(i int) int64 { return baseTS + int64(i) }

// count of records that land in partition p.
func partitionCount(n, p int) int64 {
	if n <= p {
		return 0
	}
	return int64((n - p + partitions - 1) / partitions)
}

// kafkaVersion is the protocol level sarama is told the broker speaks. sarama picks request
// versions from it (and then caps them at what ApiVersions advertises). V3_9_0_0 gives
// Produce v10, Fetch v12, ListOffsets v6, record batches with headers and zstd.
func kafkaVersion() sarama.KafkaVersion {
	if s := os.Getenv("SARAMA_KAFKA_VERSION"); s != "" {
		v, err := sarama.ParseKafkaVersion(s)
		if err != nil {
			fatalf("SARAMA_KAFKA_VERSION=%q: %v", s, err)
		}
		return v
	}
	return sarama.V3_9_0_0
}

func baseConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = "skiff-compat-go-sarama"
	cfg.Version = kafkaVersion()
	cfg.Net.DialTimeout = 10 * time.Second
	cfg.Net.Proxy.Enable = true // not a proxy: a plain dialer that records request versions
	cfg.Net.Proxy.Dialer = newTracingDialer()
	cfg.Net.ReadTimeout = 30 * time.Second
	cfg.Net.WriteTimeout = 30 * time.Second
	cfg.Metadata.Retry.Max = 10
	// sarama asks for broker-side auto-creation in Metadata requests by default; a missing
	// topic must fail the run instead of being created with the broker's default partitions.
	cfg.Metadata.AllowAutoTopicCreation = false
	cfg.Metadata.Retry.Backoff = 200 * time.Millisecond
	applySASL(cfg)
	return cfg
}

func main() {
	time.AfterFunc(watchdog, func() {
		fmt.Fprintf(os.Stderr, "compat %s FAILED: watchdog: run exceeded %s\n", clientName, watchdog)
		os.Exit(3)
	})
	if os.Getenv("SARAMA_DEBUG") != "" {
		sarama.Logger = logger{}
	}

	bootstrap := os.Getenv("BOOTSTRAP")
	topic := os.Getenv("TOPIC")
	mode := os.Getenv("MODE")
	if mode == "" {
		mode = "full"
	}
	n := 20000
	if s := os.Getenv("RECORDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			fatalf("RECORDS=%q is not a non-negative integer", s)
		}
		n = v
	}
	if bootstrap == "" || topic == "" {
		fatalf("BOOTSTRAP and TOPIC must be set")
	}
	if mode == "failover" {
		// Runs until stdin closes (tests/failover_clients.rs); the watchdog still bounds it.
		handed := runFailover(strings.Split(bootstrap, ","), topic)
		fmt.Printf("compat %s ok produced=%d verified=0\n", clientName, handed)
		return
	}
	if mode == "failover-group" {
		// Runs until stdin closes (tests/failover_groups.rs); the watchdog still bounds it.
		consumed := runFailoverGroup(strings.Split(bootstrap, ","), topic)
		fmt.Printf("compat %s ok produced=0 verified=%d\n", clientName, consumed)
		return
	}
	if mode != "full" && mode != "produce" && mode != "verify" && mode != "group" && mode != "resubscribe" {
		fatalf("MODE=%q: want full, produce, verify, group or resubscribe", mode)
	}
	addrs := strings.Split(bootstrap, ",")
	logf("bootstrap=%s topic=%s mode=%s records=%d version=%s", bootstrap, topic, mode, n, kafkaVersion())

	start := time.Now()
	if mode == "group" {
		consumed := runGroup(addrs, topic, n)
		logf("group scenario: %.2fs", time.Since(start).Seconds())
		fmt.Printf("compat %s ok produced=%d verified=%d\n", clientName, n, consumed)
		return
	}
	if mode == "resubscribe" {
		consumed := runResubscribe(addrs, topic, n)
		logf("resubscribe scenario: %.2fs", time.Since(start).Seconds())
		fmt.Printf("compat %s ok produced=%d verified=%d\n", clientName, 4*n, consumed)
		return
	}
	produced := 0
	if mode == "full" || mode == "produce" {
		t := time.Now()
		createTopic(addrs, topic)
		logf("create topic: %.2fs", time.Since(t).Seconds())
		t = time.Now()
		produced = produce(addrs, topic, n)
		logf("produce %d records: %.2fs", produced, time.Since(t).Seconds())
	}
	t := time.Now()
	verified := verify(addrs, topic, n)
	logf("verify %d records: %.2fs", verified, time.Since(t).Seconds())
	t = time.Now()
	checkListOffsets(addrs, topic, n)
	logf("list offsets: %.2fs", time.Since(t).Seconds())
	logf("total: %.2fs", time.Since(start).Seconds())
	logf("requests sent: %s", trace.summary())
	if traceDebug {
		logf("bytes read: %d", bytesRead.Load())
	}
	fmt.Printf("compat %s ok produced=%d verified=%d\n", clientName, produced, verified)
}

type logger struct{}

func (logger) Print(v ...any)                 { fmt.Fprint(os.Stderr, v...) }
func (logger) Printf(format string, v ...any) { fmt.Fprintf(os.Stderr, format, v...) }
func (logger) Println(v ...any)               { fmt.Fprintln(os.Stderr, v...) }

func createTopic(addrs []string, topic string) {
	admin, err := sarama.NewClusterAdmin(addrs, baseConfig())
	if err != nil {
		fatalf("create topic %s: cluster admin: %v", topic, err)
	}
	defer admin.Close()
	// retention.ms=-1: the scenario's create times are in 2023, so a broker's default 7-day
	// time retention would delete the records as soon as its retention check runs.
	retention := "-1"
	err = admin.CreateTopic(topic, &sarama.TopicDetail{
		NumPartitions:     partitions,
		ReplicationFactor: 1,
		ConfigEntries:     map[string]*string{"retention.ms": &retention},
	}, false)
	if err != nil {
		fatalf("create topic %s (3 partitions, rf 1, retention.ms=-1): %v", topic, err)
	}
}

// waitForLeaders polls metadata until the topic has 3 partitions, each with a leader.
func waitForLeaders(client sarama.Client, topic string) {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		last = func() error {
			if err := client.RefreshMetadata(topic); err != nil {
				return err
			}
			ps, err := client.Partitions(topic)
			if err != nil {
				return err
			}
			if len(ps) != partitions {
				return fmt.Errorf("metadata lists %d partitions, want %d", len(ps), partitions)
			}
			for p := int32(0); p < partitions; p++ {
				if _, err := client.Leader(topic, p); err != nil {
					return fmt.Errorf("partition %d: leader: %w", p, err)
				}
			}
			return nil
		}()
		if last == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	fatalf("topic %s not ready after 30s: %v", topic, last)
}

func produce(addrs []string, topic string, n int) int {
	{
		cfg := baseConfig()
		client, err := sarama.NewClient(addrs, cfg)
		if err != nil {
			fatalf("produce: client: %v", err)
		}
		waitForLeaders(client, topic)
		client.Close()
	}
	produced := 0
	for b, c := range codecs {
		lo, hi := b*n/len(codecs), (b+1)*n/len(codecs)
		if lo == hi {
			continue
		}
		t := time.Now()
		produceBlock(addrs, topic, c.name, c.codec, lo, hi)
		produced += hi - lo
		logf("  block %-6s records [%d, %d): %.2fs", c.name, lo, hi, time.Since(t).Seconds())
	}
	return produced
}

func produceBlock(addrs []string, topic, codecName string, codec sarama.CompressionCodec, lo, hi int) {
	cfg := baseConfig()
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Compression = codec
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.Retry.Max = 5
	cfg.Producer.Flush.Bytes = 512 * 1024
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond
	// Non-idempotent producer (sarama's default): a single in-flight request per broker keeps
	// records in order even across retries, so offsets map to i deterministically.
	cfg.Net.MaxOpenRequests = 1
	if err := cfg.Validate(); err != nil {
		fatalf("produce %s: config: %v", codecName, err)
	}
	producer, err := sarama.NewAsyncProducer(addrs, cfg)
	if err != nil {
		fatalf("produce %s: producer: %v", codecName, err)
	}

	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	acked := 0
	wg.Add(2)
	go func() {
		defer wg.Done()
		for m := range producer.Successes() {
			i := m.Metadata.(int)
			if m.Partition != int32(i%partitions) || m.Offset != int64(i/partitions) {
				errMu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("record %d acked at partition %d offset %d, want partition %d offset %d",
						i, m.Partition, m.Offset, i%partitions, i/partitions)
				}
				errMu.Unlock()
			}
			acked++
		}
	}()
	go func() {
		defer wg.Done()
		for e := range producer.Errors() {
			errMu.Lock()
			if firstErr == nil {
				i := -1
				if e.Msg != nil {
					i, _ = e.Msg.Metadata.(int)
				}
				firstErr = fmt.Errorf("delivery of record %d (partition %d) failed: %v", i, i%partitions, e.Err)
			}
			errMu.Unlock()
		}
	}()
	for i := lo; i < hi; i++ {
		producer.Input() <- &sarama.ProducerMessage{
			Topic:     topic,
			Partition: int32(i % partitions),
			Key:       sarama.ByteEncoder(key(i)),
			Value:     sarama.ByteEncoder(value(i)),
			Headers: []sarama.RecordHeader{
				{Key: []byte("idx"), Value: []byte(strconv.Itoa(i))},
				{Key: []byte("kind"), Value: []byte("compat")},
			},
			Timestamp: time.UnixMilli(timestamp(i)),
			Metadata:  i,
		}
	}
	producer.AsyncClose() // flushes, then closes Successes() and Errors()
	wg.Wait()
	if firstErr != nil {
		fatalf("produce %s: %v", codecName, firstErr)
	}
	if acked != hi-lo {
		fatalf("produce %s: %d of %d records acknowledged", codecName, acked, hi-lo)
	}
}

func verify(addrs []string, topic string, n int) int {
	cfg := baseConfig()
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.Fetch.Default = 4 * 1024 * 1024
	client, err := sarama.NewClient(addrs, cfg)
	if err != nil {
		fatalf("verify: client: %v", err)
	}
	defer client.Close()
	waitForLeaders(client, topic)
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		fatalf("verify: consumer: %v", err)
	}
	defer consumer.Close()

	var wg sync.WaitGroup
	errs := make([]error, partitions)
	counts := make([]int, partitions)
	for p := 0; p < partitions; p++ {
		want := partitionCount(n, p)
		end, err := client.GetOffset(topic, int32(p), sarama.OffsetNewest)
		if err != nil {
			fatalf("verify: partition %d: end offset: %v", p, err)
		}
		if end != want {
			fatalf("verify: partition %d: end offset %d, want %d", p, end, want)
		}
		if want == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, int32(p), 0)
		if err != nil {
			fatalf("verify: partition %d: consume from offset 0: %v", p, err)
		}
		wg.Add(1)
		go func(p int, pc sarama.PartitionConsumer) {
			defer wg.Done()
			defer pc.AsyncClose()
			counts[p], errs[p] = verifyPartition(pc, n, p, want)
		}(p, pc)
	}
	wg.Wait()
	total := 0
	for p := 0; p < partitions; p++ {
		if errs[p] != nil {
			fatalf("verify: partition %d: %v", p, errs[p])
		}
		total += counts[p]
	}
	if total != n {
		fatalf("verify: read %d records, want %d", total, n)
	}
	return total
}

func verifyPartition(pc sarama.PartitionConsumer, n, p int, want int64) (int, error) {
	next := int64(0)
	timer := time.NewTimer(stallLimit)
	defer timer.Stop()
	for next < want {
		select {
		case m := <-pc.Messages():
			if m.Offset != next {
				return int(next), fmt.Errorf("got offset %d, want %d (offsets must be gapless from 0)", m.Offset, next)
			}
			if err := checkRecord(p, m.Offset, m.Key, m.Value, m.Headers, m.Timestamp.UnixMilli()); err != nil {
				return int(next), err
			}
			next++
			timer.Reset(stallLimit) // go >= 1.23 timers: Reset drops any stale expiry
		case e := <-pc.Errors():
			return int(next), fmt.Errorf("consumer error at offset %d: %v", next, e.Err)
		case <-timer.C:
			return int(next), fmt.Errorf("no record for %s at offset %d (want %d records)", stallLimit, next, want)
		}
	}
	return int(next), nil
}

func checkRecord(p int, off int64, k, v []byte, hdrs []*sarama.RecordHeader, ts int64) error {
	i := int(3*off) + p
	where := fmt.Sprintf("offset %d (record %d)", off, i)
	if want := key(i); !bytes.Equal(k, want) {
		return fmt.Errorf("%s: key %q, want %q", where, k, want)
	}
	if v == nil {
		return fmt.Errorf("%s: value is null, want %d bytes", where, sizes[i%len(sizes)])
	}
	if want := value(i); !bytes.Equal(v, want) {
		return fmt.Errorf("%s: value mismatch: %d bytes, want %d bytes%s", where, len(v), len(want), firstDiff(v, want))
	}
	wantH := [][2]string{{"idx", strconv.Itoa(i)}, {"kind", "compat"}}
	if len(hdrs) != len(wantH) {
		return fmt.Errorf("%s: %d headers %s, want %d %v", where, len(hdrs), fmtHeaders(hdrs), len(wantH), wantH)
	}
	for h, w := range wantH {
		if string(hdrs[h].Key) != w[0] || string(hdrs[h].Value) != w[1] {
			return fmt.Errorf("%s: header %d is %q=%q, want %q=%q (headers %s)", where, h, hdrs[h].Key, hdrs[h].Value, w[0], w[1], fmtHeaders(hdrs))
		}
	}
	if want := timestamp(i); ts != want {
		return fmt.Errorf("%s: timestamp %d, want %d", where, ts, want)
	}
	return nil
}

func firstDiff(a, b []byte) string {
	for j := 0; j < len(a) && j < len(b); j++ {
		if a[j] != b[j] {
			return fmt.Sprintf(" (first difference at byte %d: %d, want %d)", j, a[j], b[j])
		}
	}
	return ""
}

func fmtHeaders(hdrs []*sarama.RecordHeader) string {
	parts := make([]string, len(hdrs))
	for j, h := range hdrs {
		parts[j] = fmt.Sprintf("%q=%q", h.Key, h.Value)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func checkListOffsets(addrs []string, topic string, n int) {
	client, err := sarama.NewClient(addrs, baseConfig())
	if err != nil {
		fatalf("list offsets: client: %v", err)
	}
	defer client.Close()

	get := func(what string, p int, ts int64) int64 {
		off, err := client.GetOffset(topic, int32(p), ts)
		if err != nil {
			fatalf("list offsets: partition %d: %s (timestamp %d): %v", p, what, ts, err)
		}
		return off
	}
	for p := 0; p < partitions; p++ {
		if got, want := get("latest", p, sarama.OffsetNewest), partitionCount(n, p); got != want {
			fatalf("list offsets: partition %d: latest offset %d, want %d", p, got, want)
		}
		if got := get("earliest", p, sarama.OffsetOldest); got != 0 {
			fatalf("list offsets: partition %d: earliest offset %d, want 0", p, got)
		}
	}
	if n == 0 {
		return
	}
	// Exact timestamps: first, middle and last records (and their neighbours, so every
	// partition is asked).
	seen := map[int]bool{}
	for _, i := range []int{0, 1, 2, n / 2, n/2 + 1, n/2 + 2, n - 3, n - 2, n - 1} {
		if i < 0 || i >= n || seen[i] {
			continue
		}
		seen[i] = true
		p := i % partitions
		if got, want := get("by timestamp", p, timestamp(i)), int64(i/partitions); got != want {
			fatalf("list offsets: partition %d: timestamp %d (record %d): offset %d, want %d", p, timestamp(i), i, got, want)
		}
		// Between record i and the partition's next record (i+3): expect the next offset,
		// or -1 when i is the partition's last record.
		want := int64(i/partitions + 1)
		if i+partitions >= n {
			want = -1
		}
		if got := get("between records", p, timestamp(i)+1); got != want {
			fatalf("list offsets: partition %d: timestamp %d (between record %d and %d): offset %d, want %d", p, timestamp(i)+1, i, i+partitions, got, want)
		}
	}
	// After the last record: no offset (-1).
	for p := 0; p < partitions; p++ {
		ts := timestamp(n) + 1000
		if got := get("after last record", p, ts); got != -1 {
			fatalf("list offsets: partition %d: timestamp %d (after last record): offset %d, want -1", p, ts, got)
		}
	}
}
