// Compatibility scenario for github.com/twmb/franz-go (kgo + kadm); see tests/compat/README.md.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

const (
	clientName = "go-franz"
	partitions = 3
	baseTS     = int64(1700000000000)
	watchdog   = 240 * time.Second
	stallLimit = 60 * time.Second
)

var sizes = []int{0, 1, 17, 100, 1000, 5000, 20000}

// franz-go's default batch compression is [snappy, none]; the scenario's first block is
// uncompressed, so every block names its codec explicitly.
var codecs = []struct {
	name  string
	codec kgo.CompressionCodec
}{
	{"none", kgo.NoCompression()},
	{"gzip", kgo.GzipCompression()},
	{"snappy", kgo.SnappyCompression()},
	{"lz4", kgo.Lz4Compression()},
	{"zstd", kgo.ZstdCompression()},
}

var (
	bootstrap []string
	topic     string
	n         int
)

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

// partitionCount is the number of records that land in partition p.
func partitionCount(p int) int64 {
	if n <= p {
		return 0
	}
	return int64((n - p + partitions - 1) / partitions)
}

func newClient(extra ...kgo.Opt) *kgo.Client {
	opts := []kgo.Opt{
		kgo.SeedBrokers(bootstrap...),
		kgo.ClientID("skiff-compat-go-franz"),
		kgo.Dialer(dialTraced),
	}
	opts = append(opts, saslOpts()...)
	// Optional cap on the protocol versions franz-go may use (default: the highest versions
	// both franz-go and the broker's ApiVersions support), e.g. FRANZ_MAX_VERSION=3.9.
	if s := os.Getenv("FRANZ_MAX_VERSION"); s != "" {
		v := kversion.FromString(s)
		if v == nil {
			fatalf("FRANZ_MAX_VERSION=%q is not a Kafka version", s)
		}
		opts = append(opts, kgo.MaxVersions(v))
	}
	if os.Getenv("FRANZ_DEBUG") != "" {
		// Each line starts with the wall-clock time (µs), to line up with the brokers' unix_ms
		// log fields (tests/failover_clients.rs timelines).
		stamp := func() string { return fmt.Sprintf("%d ", time.Now().UnixMicro()) }
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelDebug, stamp)))
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		fatalf("new client: %v", err)
	}
	return cl
}

func main() {
	time.AfterFunc(watchdog, func() {
		fmt.Fprintf(os.Stderr, "compat %s FAILED: watchdog: run exceeded %s\n", clientName, watchdog)
		os.Exit(3)
	})

	topic = os.Getenv("TOPIC")
	mode := os.Getenv("MODE")
	if mode == "" {
		mode = "full"
	}
	n = 20000
	if s := os.Getenv("RECORDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			fatalf("RECORDS=%q is not a non-negative integer", s)
		}
		n = v
	}
	if os.Getenv("BOOTSTRAP") == "" || topic == "" {
		fatalf("BOOTSTRAP and TOPIC must be set")
	}
	bootstrap = strings.Split(os.Getenv("BOOTSTRAP"), ",")
	if mode == "failover" {
		// Runs until stdin closes (tests/failover_clients.rs); the watchdog still bounds it.
		handed := runFailover(context.Background())
		fmt.Printf("compat %s ok produced=%d verified=0\n", clientName, handed)
		return
	}
	if mode == "failover-group" {
		// Runs until stdin closes (tests/failover_groups.rs); the watchdog still bounds it.
		consumed := runFailoverGroup()
		fmt.Printf("compat %s ok produced=0 verified=%d\n", clientName, consumed)
		return
	}
	if mode != "full" && mode != "produce" && mode != "verify" && mode != "group" && mode != "resubscribe" && mode != "txn" && mode != "txn-rpw" {
		fatalf("MODE=%q: want full, produce, verify, group, resubscribe, txn or txn-rpw", mode)
	}
	logf("bootstrap=%s topic=%s mode=%s records=%d", os.Getenv("BOOTSTRAP"), topic, mode, n)

	ctx := context.Background()
	start := time.Now()
	if mode == "group" {
		consumed := runGroup(ctx)
		logf("group scenario: %.2fs", time.Since(start).Seconds())
		fmt.Printf("compat %s ok produced=%d verified=%d\n", clientName, n, consumed)
		return
	}
	if mode == "txn" || mode == "txn-rpw" {
		// RECORDS: transactions (txn) or input records (txn-rpw).
		var verified int
		if mode == "txn" {
			verified = runTxn(ctx)
		} else {
			verified = runTxnRPW(ctx)
		}
		logf("%s scenario: %.2fs", mode, time.Since(start).Seconds())
		fmt.Printf("compat %s ok produced=%d verified=%d\n", clientName, n, verified)
		return
	}
	if mode == "resubscribe" {
		consumed := runResubscribe(ctx)
		logf("resubscribe scenario: %.2fs", time.Since(start).Seconds())
		fmt.Printf("compat %s ok produced=%d verified=%d\n", clientName, 4*n, consumed)
		return
	}
	produced := 0
	if mode == "full" || mode == "produce" {
		t := time.Now()
		createTopic(ctx)
		logf("create topic: %.2fs", time.Since(t).Seconds())
		t = time.Now()
		produced = produce(ctx)
		logf("produce %d records: %.2fs", produced, time.Since(t).Seconds())
	}
	t := time.Now()
	verified := verify(ctx)
	logf("verify %d records: %.2fs", verified, time.Since(t).Seconds())
	t = time.Now()
	checkListOffsets(ctx)
	logf("list offsets: %.2fs", time.Since(t).Seconds())
	logf("total: %.2fs", time.Since(start).Seconds())
	logf("requests sent: %s", trace.summary())
	fmt.Printf("compat %s ok produced=%d verified=%d\n", clientName, produced, verified)
}

func createTopic(ctx context.Context) {
	cl := newClient()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	// retention.ms=-1: the scenario's create times are in 2023, so a broker's default 7-day
	// time retention would delete the records as soon as its retention check runs.
	retention := "-1"
	resp, err := adm.CreateTopics(ctx, partitions, 1, map[string]*string{"retention.ms": &retention}, topic)
	if err != nil {
		fatalf("create topic %s: %v", topic, err)
	}
	r, ok := resp[topic]
	if !ok {
		fatalf("create topic %s: no result for the topic in the response", topic)
	}
	if r.Err != nil {
		fatalf("create topic %s (3 partitions, rf 1, retention.ms=-1): %v (%s)", topic, r.Err, r.ErrMessage)
	}
	waitForLeaders(ctx, adm)
}

// waitForLeaders polls metadata until the topic has 3 partitions, each with a leader.
func waitForLeaders(ctx context.Context, adm *kadm.Client) {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		last = func() error {
			tds, err := adm.ListTopics(ctx, topic)
			if err != nil {
				return err
			}
			td, ok := tds[topic]
			if !ok {
				return errors.New("topic missing from metadata")
			}
			if td.Err != nil {
				return td.Err
			}
			if len(td.Partitions) != partitions {
				return fmt.Errorf("metadata lists %d partitions, want %d", len(td.Partitions), partitions)
			}
			for p, pd := range td.Partitions {
				if pd.Err != nil || pd.Leader < 0 {
					return fmt.Errorf("partition %d: leader %d, err %v", p, pd.Leader, pd.Err)
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

func produce(ctx context.Context) int {
	produced := 0
	for b, c := range codecs {
		lo, hi := b*n/len(codecs), (b+1)*n/len(codecs)
		if lo == hi {
			continue
		}
		t := time.Now()
		produceBlock(ctx, c.name, c.codec, lo, hi)
		produced += hi - lo
		logf("  block %-6s records [%d, %d): %.2fs", c.name, lo, hi, time.Since(t).Seconds())
	}
	return produced
}

func produceBlock(ctx context.Context, codecName string, codec kgo.CompressionCodec, lo, hi int) {
	// Defaults kept: idempotent producer, acks=all.
	cl := newClient(
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(codec),
	)
	defer cl.Close()

	var mu sync.Mutex
	var firstErr error
	acked := 0
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	for i := lo; i < hi; i++ {
		rec := &kgo.Record{
			Topic:     topic,
			Partition: int32(i % partitions),
			Key:       key(i),
			Value:     value(i),
			Headers: []kgo.RecordHeader{
				{Key: "idx", Value: []byte(strconv.Itoa(i))},
				{Key: "kind", Value: []byte("compat")},
			},
			Timestamp: time.UnixMilli(timestamp(i)),
		}
		cl.Produce(ctx, rec, func(r *kgo.Record, err error) {
			if err != nil {
				fail(fmt.Errorf("delivery of record %d (partition %d) failed: %w", i, i%partitions, err))
				return
			}
			if r.Partition != int32(i%partitions) || r.Offset != int64(i/partitions) {
				fail(fmt.Errorf("record %d acked at partition %d offset %d, want partition %d offset %d",
					i, r.Partition, r.Offset, i%partitions, i/partitions))
				return
			}
			mu.Lock()
			acked++
			mu.Unlock()
		})
	}
	if err := cl.Flush(ctx); err != nil {
		fatalf("produce %s: flush: %v", codecName, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		fatalf("produce %s: %v", codecName, firstErr)
	}
	if acked != hi-lo {
		fatalf("produce %s: %d of %d records acknowledged", codecName, acked, hi-lo)
	}
}

func verify(ctx context.Context) int {
	want := map[int32]int64{}
	{
		cl := newClient()
		adm := kadm.NewClient(cl)
		waitForLeaders(ctx, adm)
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			fatalf("verify: end offsets: %v", err)
		}
		for p := int32(0); p < partitions; p++ {
			o, ok := ends.Lookup(topic, p)
			if !ok || o.Err != nil {
				fatalf("verify: partition %d: end offset: missing=%v err=%v", p, !ok, o.Err)
			}
			if w := partitionCount(int(p)); o.Offset != w {
				fatalf("verify: partition %d: end offset %d, want %d", p, o.Offset, w)
			}
			want[p] = o.Offset
		}
		cl.Close()
	}

	assign := map[int32]kgo.Offset{}
	for p := int32(0); p < partitions; p++ {
		assign[p] = kgo.NewOffset().At(0)
	}
	cl := newClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign}),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	defer cl.Close()

	next := map[int32]int64{}
	total := 0
	done := func() bool {
		for p := int32(0); p < partitions; p++ {
			if next[p] < want[p] {
				return false
			}
		}
		return true
	}
	for !done() {
		pollCtx, cancel := context.WithTimeout(ctx, stallLimit)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if pollCtx.Err() != nil && fetches.NumRecords() == 0 {
			fatalf("verify: no records for %s; next offsets %v, want end offsets %v", stallLimit, next, want)
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) {
				continue
			}
			fatalf("verify: partition %d: fetch at offset %d: %v", fe.Partition, next[fe.Partition], fe.Err)
		}
		var bad error
		fetches.EachRecord(func(r *kgo.Record) {
			if bad != nil {
				return
			}
			p := r.Partition
			if p < 0 || p >= partitions || r.Topic != topic {
				bad = fmt.Errorf("record from unexpected topic/partition %s/%d", r.Topic, p)
				return
			}
			if r.Offset != next[p] {
				bad = fmt.Errorf("partition %d: got offset %d, want %d (offsets must be gapless from 0)", p, r.Offset, next[p])
				return
			}
			if r.Offset >= want[p] {
				bad = fmt.Errorf("partition %d: record at offset %d is at or past the end offset %d", p, r.Offset, want[p])
				return
			}
			if err := checkRecord(r); err != nil {
				bad = fmt.Errorf("partition %d: %w", p, err)
				return
			}
			next[p]++
			total++
		})
		if bad != nil {
			fatalf("verify: %v", bad)
		}
	}
	if total != n {
		fatalf("verify: read %d records, want %d", total, n)
	}
	return total
}

func checkRecord(r *kgo.Record) error {
	i := int(3*r.Offset) + int(r.Partition)
	where := fmt.Sprintf("offset %d (record %d)", r.Offset, i)
	if want := key(i); !bytes.Equal(r.Key, want) {
		return fmt.Errorf("%s: key %q, want %q", where, r.Key, want)
	}
	if r.Value == nil {
		return fmt.Errorf("%s: value is null, want %d bytes", where, sizes[i%len(sizes)])
	}
	if want := value(i); !bytes.Equal(r.Value, want) {
		return fmt.Errorf("%s: value mismatch: %d bytes, want %d bytes%s", where, len(r.Value), len(want), firstDiff(r.Value, want))
	}
	wantH := [][2]string{{"idx", strconv.Itoa(i)}, {"kind", "compat"}}
	if len(r.Headers) != len(wantH) {
		return fmt.Errorf("%s: %d headers %s, want %d %v", where, len(r.Headers), fmtHeaders(r.Headers), len(wantH), wantH)
	}
	for h, w := range wantH {
		if r.Headers[h].Key != w[0] || string(r.Headers[h].Value) != w[1] {
			return fmt.Errorf("%s: header %d is %q=%q, want %q=%q (headers %s)", where, h, r.Headers[h].Key, r.Headers[h].Value, w[0], w[1], fmtHeaders(r.Headers))
		}
	}
	if got, want := r.Timestamp.UnixMilli(), timestamp(i); got != want {
		return fmt.Errorf("%s: timestamp %d, want %d", where, got, want)
	}
	if r.Attrs.TimestampType() != 0 {
		return fmt.Errorf("%s: timestamp type %d, want 0 (create time)", where, r.Attrs.TimestampType())
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

func fmtHeaders(hdrs []kgo.RecordHeader) string {
	parts := make([]string, len(hdrs))
	for j, h := range hdrs {
		parts[j] = fmt.Sprintf("%q=%q", h.Key, h.Value)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func checkListOffsets(ctx context.Context) {
	cl := newClient()
	defer cl.Close()
	adm := kadm.NewClient(cl)

	lookup := func(what string, lo kadm.ListedOffsets, err error, p int) kadm.ListedOffset {
		if err != nil {
			fatalf("list offsets: %s: %v", what, err)
		}
		o, ok := lo.Lookup(topic, int32(p))
		if !ok {
			fatalf("list offsets: partition %d: %s: partition missing from the answer", p, what)
		}
		if o.Err != nil {
			fatalf("list offsets: partition %d: %s: %v", p, what, o.Err)
		}
		return o
	}
	starts, errS := adm.ListStartOffsets(ctx, topic)
	ends, errE := adm.ListEndOffsets(ctx, topic)
	for p := 0; p < partitions; p++ {
		if o := lookup("earliest", starts, errS, p); o.Offset != 0 {
			fatalf("list offsets: partition %d: earliest offset %d, want 0", p, o.Offset)
		}
		if o := lookup("latest", ends, errE, p); o.Offset != partitionCount(p) {
			fatalf("list offsets: partition %d: latest offset %d, want %d", p, o.Offset, partitionCount(p))
		}
	}
	if n == 0 {
		return
	}
	byTime := func(p int, ts int64) kadm.ListedOffset {
		lo, err := adm.ListOffsetsAfterMilli(ctx, ts, topic)
		return lookup(fmt.Sprintf("timestamp %d", ts), lo, err, p)
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
		o := byTime(p, timestamp(i))
		if o.Offset != int64(i/partitions) || o.Timestamp != timestamp(i) {
			fatalf("list offsets: partition %d: timestamp %d (record %d): offset %d timestamp %d, want offset %d timestamp %d",
				p, timestamp(i), i, o.Offset, o.Timestamp, i/partitions, timestamp(i))
		}
		// Between record i and the partition's next record (i+3): the next offset. When i is
		// the partition's last record the broker answers -1, which kadm replaces with the end
		// offset, i.e. also i/3+1.
		o = byTime(p, timestamp(i)+1)
		if want := int64(i/partitions + 1); o.Offset != want {
			fatalf("list offsets: partition %d: timestamp %d (between record %d and %d): offset %d, want %d",
				p, timestamp(i)+1, i, i+partitions, o.Offset, want)
		}
	}
	// After the last record: kadm's "none" answer is the end offset ...
	after := timestamp(n) + 1000
	for p := 0; p < partitions; p++ {
		if o := byTime(p, after); o.Offset != partitionCount(p) {
			fatalf("list offsets: partition %d: timestamp %d (after last record): kadm offset %d, want end offset %d", p, after, o.Offset, partitionCount(p))
		}
	}
	// ... so also check the broker's own answer, -1, with a raw ListOffsets request.
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for p := int32(0); p < partitions; p++ {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = after
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		fatalf("list offsets: raw ListOffsets for timestamp %d: %v", after, err)
	}
	got := map[int32]bool{}
	for _, t := range resp.Topics {
		for _, rp := range t.Partitions {
			if t.Topic != topic {
				continue
			}
			got[rp.Partition] = true
			if rp.ErrorCode != 0 {
				fatalf("list offsets: partition %d: raw ListOffsets timestamp %d: error code %d", rp.Partition, after, rp.ErrorCode)
			}
			if rp.Offset != -1 {
				fatalf("list offsets: partition %d: raw ListOffsets timestamp %d (after last record): offset %d, want -1", rp.Partition, after, rp.Offset)
			}
		}
	}
	if len(got) != partitions {
		fatalf("list offsets: raw ListOffsets timestamp %d: answered %d partitions, want %d", after, len(got), partitions)
	}
}
