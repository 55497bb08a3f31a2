package main

// MODE=resubscribe (tests/compat/README.md, "Resubscribe scenario"): one classic group consumer
// (franz-go's default balancer, cooperative-sticky) changes its subscription (AddConsumeTopics),
// sees a subscribed topic grow and sees one deleted and re-created; each rebalance must finish
// within resubscribeLimit (a coordinator that waits for the rebalance timeout instead of the
// last rejoin takes minutes). franz-go never drops a deleted topic from an explicit
// subscription by itself (it keeps the partitions "for safety" until the user purges them), so
// the deletion phase purges the topic (PurgeTopicsFromConsuming) as franz-go documents, and the
// re-creation phase adds it back (AddConsumeTopics).

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	resubscribePartitions = 3
	resubscribeGrown      = 6
	resubscribeLimit      = 10 * time.Second
	resubscribeWait       = 30 * time.Second
)

type resubscribe struct {
	a, b     string
	mu       sync.Mutex
	seen     map[string]bool
	assigned map[string]map[int32]bool
	failure  atomic.Value
}

func (s *resubscribe) fail(err error) { s.failure.CompareAndSwap(nil, err) }

func (s *resubscribe) track(m map[string][]int32, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, ps := range m {
		if s.assigned[t] == nil {
			s.assigned[t] = map[int32]bool{}
		}
		for _, p := range ps {
			if add {
				s.assigned[t][p] = true
			} else {
				delete(s.assigned[t], p)
			}
		}
	}
}

// wait polls cond (which takes s.mu itself if it needs it: client calls must not run under it).
func (s *resubscribe) wait(what string, cond func() bool) {
	deadline := time.Now().Add(resubscribeWait)
	for {
		if cond() {
			return
		}
		if err, ok := s.failure.Load().(error); ok {
			fatalf("resubscribe: consumer failed: %v", err)
		}
		if time.Now().After(deadline) {
			fatalf("resubscribe: %s: not done after %s", what, resubscribeWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// produce writes n values prefix-i round-robin over partitions with a new client, so its first
// metadata already knows new partitions and topics.
func (s *resubscribe) produce(ctx context.Context, topic, prefix string, partitions []int32) map[string]bool {
	cl := newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequiredAcks(kgo.AllISRAcks()))
	defer cl.Close()
	values := map[string]bool{}
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		v := prefix + "-" + strconv.Itoa(i)
		values[v] = true
		recs = append(recs, &kgo.Record{Topic: topic, Partition: partitions[i%len(partitions)], Value: []byte(v)})
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		fatalf("resubscribe: produce to %s: %v", topic, err)
	}
	return values
}

func (s *resubscribe) phase(name string, start time.Time, values map[string]bool) time.Duration {
	s.wait(name+": records", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for v := range values {
			if !s.seen[v] {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	logf("%s took %d ms", name, took.Milliseconds())
	return took
}

func runResubscribe(ctx context.Context) int {
	s := &resubscribe{a: topic + "-a", b: topic + "-b", seen: map[string]bool{}, assigned: map[string]map[int32]bool{}}
	adminCl := newClient()
	defer adminCl.Close()
	adm := kadm.NewClient(adminCl)
	create := func(t string) {
		if _, err := adm.CreateTopic(ctx, resubscribePartitions, 1, nil, t); err != nil {
			fatalf("resubscribe: create topic %s: %v", t, err)
		}
	}
	create(s.a)
	create(s.b)
	logf("created %s and %s with %d partitions", s.a, s.b, resubscribePartitions)

	t := time.Now()
	cl := newClient(
		kgo.ClientID("compat-go-franz-resubscribe"),
		kgo.ConsumerGroup(topic+"-resub"),
		kgo.ConsumeTopics(s.a),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// New partitions are noticed on a metadata refresh: every second instead of the
		// default 5 minutes (and at most every 250 ms instead of 5 s).
		kgo.MetadataMaxAge(time.Second),
		kgo.MetadataMinAge(250*time.Millisecond),
		// Newly assigned partitions join the fetch after the one in flight returns: wait at
		// most 500 ms (as librdkafka and Java do) instead of franz-go's 5 s, so the phases
		// time the rebalance rather than an idle fetch.
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.track(m, true) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.track(m, false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.track(m, false) }),
	)
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			fetches := cl.PollFetches(pctx)
			cancel()
			fetches.EachError(func(t string, p int32, err error) {
				// A deleted topic's partitions report errors until it is purged.
				if err != context.DeadlineExceeded && err != context.Canceled && t != s.b {
					s.fail(fmt.Errorf("fetch %s[%d]: %w", t, p, err))
				}
			})
			s.mu.Lock()
			fetches.EachRecord(func(r *kgo.Record) { s.seen[string(r.Value)] = true })
			s.mu.Unlock()
		}
	}()
	defer func() {
		stop.Store(true)
		<-done
		cl.Close()
	}()

	s.phase("first join", t, s.produce(ctx, s.a, "a", []int32{0, 1, 2}))
	took := map[string]time.Duration{}

	// (a) The running consumer subscribes to one more topic: it rejoins on its own.
	t = time.Now()
	cl.AddConsumeTopics(s.b)
	took["subscription change"] = s.phase("subscription change", t, s.produce(ctx, s.b, "b", []int32{0, 1, 2}))

	// (b) The subscribed topic grows; the consumer notices on its metadata refresh.
	t = time.Now()
	if rs, err := adm.UpdatePartitions(ctx, resubscribeGrown, s.a); err != nil || rs.Error() != nil {
		fatalf("resubscribe: create partitions: %v %v", err, rs.Error())
	}
	took["partition growth"] = s.phase("partition growth", t, s.produce(ctx, s.a, "p", []int32{3, 4, 5}))

	// (c) A subscribed topic is deleted (purged from the subscription), then created again
	// (added back).
	t = time.Now()
	if r, err := adm.DeleteTopic(ctx, s.b); err != nil || r.Err != nil {
		fatalf("resubscribe: delete topic: %v %v", err, r.Err)
	}
	// The purge drops the topic's partitions inside the client (no revoke callback promised);
	// the group has caught up once the member's generation moved on.
	_, before := cl.GroupMetadata()
	cl.PurgeTopicsFromConsuming(s.b)
	s.mu.Lock()
	delete(s.assigned, s.b)
	s.mu.Unlock()
	s.wait("topic deletion", func() bool { _, g := cl.GroupMetadata(); return g > before })
	took["topic deletion"] = time.Since(t)
	logf("topic deletion took %d ms", took["topic deletion"].Milliseconds())
	t = time.Now()
	create(s.b)
	cl.AddConsumeTopics(s.b)
	took["topic re-creation"] = s.phase("topic re-creation", t, s.produce(ctx, s.b, "r", []int32{0, 1, 2}))

	for name, d := range took {
		if d > resubscribeLimit {
			fatalf("resubscribe: %s took %s, more than %s", name, d, resubscribeLimit)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}
