package main

// MODE=txn and MODE=txn-rpw (tests/compat/README.md, "Transactions"), with franz-go's
// transactional client and its GroupTransactSession.
//
// txn: two transactional clients write RECORDS overlapping transactions of 6 records over 3
// partitions; every third is aborted after its records were written. A third client leaves a
// transaction open: ListOffsets read_committed (kadm.ListCommittedOffsets) must stop at its
// first record. A read_committed consumer must see exactly the committed records, each once,
// in offset order per partition; a read_uncommitted one the aborted records too.
//
// txn-rpw: RECORDS records in TOPIC-in; two GroupTransactSessions (group TOPIC-rpw) copy them
// to TOPIC-out, committing the consumed offsets in the same transaction; every fourth
// transaction is aborted (the session rewinds to the committed offsets). read_committed output:
// one copy per input, in input order; the group's offsets at the input's end.

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const perTxn = 6

type written struct {
	partition int32
	offset    int64
	key       string
	value     string
	committed bool
}

func createTopics(ctx context.Context, names ...string) {
	cl := newClient()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, partitions, 1, nil, names...)
	if err != nil {
		fatalf("create topics %v: %v", names, err)
	}
	for _, r := range resp {
		if r.Err != nil {
			fatalf("create topic %s: %v (%s)", r.Topic, r.Err, r.ErrMessage)
		}
	}
}

func txnClient(id string) *kgo.Client {
	return newClient(
		kgo.TransactionalID(id),
		kgo.TransactionTimeout(60*time.Second),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
}

func txnRecord(t, j int) *kgo.Record {
	return &kgo.Record{
		Partition: int32(j % partitions),
		Key:       []byte(fmt.Sprintf("t%d-%d", t, j)),
		Value:     []byte(fmt.Sprintf("txn %d record %d", t, j)),
	}
}

func produceAll(ctx context.Context, cl *kgo.Client, t int, from, to int) []*kgo.Record {
	var rs []*kgo.Record
	for j := from; j < to; j++ {
		rs = append(rs, txnRecord(t, j))
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		fatalf("transactional produce (txn %d): %v", t, err)
	}
	return rs
}

func runTxn(ctx context.Context) int {
	createTopics(ctx, topic)
	cls := []*kgo.Client{txnClient(topic + "-tx-0"), txnClient(topic + "-tx-1")}
	defer cls[0].Close()
	defer cls[1].Close()
	var all []written
	pending := make([][]*kgo.Record, 2)
	// Transactions t and t+1 overlap: t writes its first half, t+1 begins and writes its first
	// half, t writes its second half and ends.
	for t := 0; t <= n; t++ {
		if t < n {
			cl := cls[t%2]
			if err := cl.BeginTransaction(); err != nil {
				fatalf("begin txn %d: %v", t, err)
			}
			pending[t%2] = produceAll(ctx, cl, t, 0, perTxn/2)
		}
		if t > 0 {
			prev := t - 1
			cl := cls[prev%2]
			rs := append(pending[prev%2], produceAll(ctx, cl, prev, perTxn/2, perTxn)...)
			commit := prev%3 != 1
			for _, r := range rs {
				all = append(all, written{r.Partition, r.Offset, string(r.Key), string(r.Value), commit})
			}
			if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
				fatalf("end txn %d (commit=%v): %v", prev, commit, err)
			}
		}
	}
	committed := 0
	for _, w := range all {
		if w.committed {
			committed++
		}
	}
	logf("%d transactions: %d records committed, %d aborted", n, committed, len(all)-committed)

	// An open transaction bounds the LSO.
	open := txnClient(topic + "-tx-open")
	defer open.Close()
	if err := open.BeginTransaction(); err != nil {
		fatalf("begin open txn: %v", err)
	}
	var openRecs []written
	for _, r := range produceAll(ctx, open, n, 0, perTxn) {
		openRecs = append(openRecs, written{r.Partition, r.Offset, string(r.Key), string(r.Value), false})
	}
	checkLSO(ctx, openRecs)
	expectExactly("read_committed with a transaction open", readAll(ctx, topic, true, filter(all, true)), filter(all, true))
	if err := open.EndTransaction(ctx, kgo.TryAbort); err != nil {
		fatalf("abort open txn: %v", err)
	}
	all = append(all, openRecs...)
	expectExactly("read_committed", readAll(ctx, topic, true, filter(all, true)), filter(all, true))
	expectExactly("read_uncommitted", readAll(ctx, topic, false, all), all)
	logf("read_committed saw %d records; read_uncommitted %d", committed, len(all))
	return committed
}

func filter(ws []written, committed bool) []written {
	var out []written
	for _, w := range ws {
		if w.committed == committed {
			out = append(out, w)
		}
	}
	return out
}

func checkLSO(ctx context.Context, open []written) {
	cl := newClient()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	lso, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		fatalf("ListOffsets read_committed: %v", err)
	}
	hw, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		fatalf("ListOffsets read_uncommitted: %v", err)
	}
	for p := int32(0); p < partitions; p++ {
		first := int64(-1)
		for _, w := range open {
			if w.partition == p && (first < 0 || w.offset < first) {
				first = w.offset
			}
		}
		l, _ := lso.Lookup(topic, p)
		h, _ := hw.Lookup(topic, p)
		if l.Err != nil || h.Err != nil {
			fatalf("ListOffsets %s/%d: %v / %v", topic, p, l.Err, h.Err)
		}
		if l.Offset != first {
			fatalf("read_committed end offset of %s/%d is %d with a transaction open from %d (want exactly %d)", topic, p, l.Offset, first, first)
		}
		if h.Offset <= first {
			fatalf("read_uncommitted end offset of %s/%d is %d, want > %d", topic, p, h.Offset, first)
		}
	}
	logf("LSO stops at the open transaction on every partition")
}

// readAll reads t from offset 0 with the isolation level until each partition has as many
// records as `want` holds for it, then polls 1 s more so that any extra record shows.
func readAll(ctx context.Context, t string, committed bool, want []written) map[int32][]*kgo.Record {
	need := map[int32]int{}
	for _, w := range want {
		need[w.partition]++
	}
	offsets := map[int32]kgo.Offset{}
	for p := int32(0); p < partitions; p++ {
		offsets[p] = kgo.NewOffset().At(0)
	}
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	cl := newClient(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{t: offsets}), kgo.FetchIsolationLevel(iso))
	defer cl.Close()
	got := map[int32][]*kgo.Record{}
	done := func() bool {
		for p := int32(0); p < partitions; p++ {
			if len(got[p]) < need[p] {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	var grace time.Time
	for {
		if done() && grace.IsZero() {
			grace = time.Now().Add(time.Second)
		}
		if !grace.IsZero() && time.Now().After(grace) {
			return got
		}
		if time.Now().After(deadline) {
			fatalf("read of %s (committed=%v) incomplete after 60 s: %v of %v", t, committed, counts(got), need)
		}
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		fs.EachError(func(_ string, p int32, err error) {
			if err != context.DeadlineExceeded {
				fatalf("fetch %s/%d: %v", t, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], r) })
	}
}

func counts(m map[int32][]*kgo.Record) map[int32]int {
	out := map[int32]int{}
	for p, rs := range m {
		out[p] = len(rs)
	}
	return out
}

func expectExactly(what string, got map[int32][]*kgo.Record, want []written) {
	for p := int32(0); p < partitions; p++ {
		var ws []written
		for _, w := range want {
			if w.partition == p {
				ws = append(ws, w)
			}
		}
		sort.Slice(ws, func(i, j int) bool { return ws[i].offset < ws[j].offset })
		gs := got[p]
		for i := 0; i < len(ws) && i < len(gs); i++ {
			if gs[i].Offset != ws[i].offset || string(gs[i].Key) != ws[i].key || string(gs[i].Value) != ws[i].value {
				fatalf("%s: partition %d record #%d is offset %d key %s, want offset %d key %s (committed=%v)",
					what, p, i, gs[i].Offset, gs[i].Key, ws[i].offset, ws[i].key, ws[i].committed)
			}
		}
		if len(gs) != len(ws) {
			fatalf("%s: partition %d has %d records, want %d", what, p, len(gs), len(ws))
		}
	}
}

func runTxnRPW(ctx context.Context) int {
	in, out, group := topic+"-in", topic+"-out", topic+"-rpw"
	createTopics(ctx, in, out)
	var input []written
	{
		cl := newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
		var rs []*kgo.Record
		for i := 0; i < n; i++ {
			rs = append(rs, &kgo.Record{Topic: in, Partition: int32(i % partitions), Key: []byte(fmt.Sprintf("in-%d", i)), Value: []byte(fmt.Sprintf("value-%d", i))})
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			fatalf("produce input: %v", err)
		}
		for _, r := range rs {
			input = append(input, written{r.Partition, r.Offset, string(r.Key), string(r.Value), true})
		}
		cl.Close()
	}
	end := map[int32]int64{}
	for _, w := range input {
		if w.offset+1 > end[w.partition] {
			end[w.partition] = w.offset + 1
		}
	}
	logf("produced %d input records; end offsets %v", n, end)

	var stop atomic.Bool
	var aborted atomic.Int64
	var wg sync.WaitGroup
	var failure atomic.Value
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			sess, err := kgo.NewGroupTransactSession(
				kgo.SeedBrokers(bootstrap...),
				kgo.ClientID(fmt.Sprintf("skiff-compat-go-franz-rpw-%d", w)),
				kgo.TransactionalID(fmt.Sprintf("%s-rpw-%d", topic, w)),
				kgo.TransactionTimeout(60*time.Second),
				kgo.ConsumerGroup(group),
				kgo.ConsumeTopics(in),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()),
				kgo.RequireStableFetchOffsets(),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.RecordPartitioner(kgo.ManualPartitioner()),
				kgo.Dialer(dialTraced),
			)
			if err != nil {
				failure.CompareAndSwap(nil, err)
				return
			}
			defer sess.Close()
			txn := 0
			for !stop.Load() {
				pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				fs := sess.PollRecords(pctx, 7)
				cancel()
				var recs []*kgo.Record
				fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
				if len(recs) == 0 {
					continue
				}
				if err := sess.Begin(); err != nil {
					failure.CompareAndSwap(nil, fmt.Errorf("begin: %w", err))
					return
				}
				var outs []*kgo.Record
				for _, r := range recs {
					outs = append(outs, &kgo.Record{Topic: out, Partition: r.Partition, Key: r.Key,
						Value: []byte(fmt.Sprintf("%d:%d:%s", r.Partition, r.Offset, r.Value))})
				}
				if err := sess.ProduceSync(ctx, outs...).FirstErr(); err != nil {
					failure.CompareAndSwap(nil, fmt.Errorf("produce: %w", err))
					return
				}
				abort := txn%4 == 3
				txn++
				committed, err := sess.End(ctx, kgo.TransactionEndTry(!abort))
				if err != nil {
					failure.CompareAndSwap(nil, fmt.Errorf("end: %w", err))
					return
				}
				if abort || !committed {
					aborted.Add(1)
				}
			}
		}(w)
	}
	cl := newClient()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(150 * time.Second)
	for {
		if f := failure.Load(); f != nil {
			fatalf("worker: %v", f)
		}
		offs, err := adm.FetchOffsets(ctx, group)
		done := err == nil
		for p, e := range end {
			o, ok := offs.Lookup(in, p)
			if !ok || o.Err != nil || o.At != e {
				done = false
			}
		}
		if done {
			logf("group offsets committed up to the input's end")
			break
		}
		if time.Now().After(deadline) {
			fatalf("group %s offsets %v (err %v), want %v within 150 s", group, offs, err, end)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cl.Close()
	stop.Store(true)
	wg.Wait()
	if f := failure.Load(); f != nil {
		fatalf("worker: %v", f)
	}
	var want []written
	for _, w := range input {
		want = append(want, written{w.partition, -1, w.key, fmt.Sprintf("%d:%d:%s", w.partition, w.offset, w.value), true})
	}
	got := readAll(ctx, out, true, want)
	total := 0
	for p := int32(0); p < partitions; p++ {
		var ws []written
		for _, w := range want {
			if w.partition == p {
				ws = append(ws, w)
			}
		}
		gs := got[p]
		if len(gs) != len(ws) {
			fatalf("read_committed %s/%d has %d records for %d inputs", out, p, len(gs), len(ws))
		}
		for i := range ws {
			if string(gs[i].Value) != ws[i].value || string(gs[i].Key) != ws[i].key {
				fatalf("%s/%d output #%d is %s, want %s", out, p, i, gs[i].Value, ws[i].value)
			}
		}
		total += len(gs)
	}
	// read_uncommitted: the aborted copies are there too (the check above could fail).
	extra := 0
	if aborted.Load() > 0 {
		all := readAll(ctx, out, false, want)
		for _, rs := range all {
			extra += len(rs)
		}
		extra -= total
		if extra <= 0 {
			fatalf("read_uncommitted shows no aborted copies although %d transactions aborted", aborted.Load())
		}
	}
	logf("read_committed output: %d records, one per input; read_uncommitted: %d more (%d aborted transactions)", total, extra, aborted.Load())
	return total
}
