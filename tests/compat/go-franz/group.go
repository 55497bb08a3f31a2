package main

// MODE=group (tests/compat/README.md, "Group scenario"): three group members (goroutines, one
// kgo.Client each) on a 12-partition topic consume RECORDS records exactly once in aggregate
// with synchronous commits, while a fourth member joins after the first third and the first
// member leaves after the second. franz-go's default balancer (cooperative-sticky) is used.

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

const groupPartitions = 12

type groupScenario struct {
	group      string
	mu         sync.Mutex
	seen       map[int]bool
	duplicates int
	failure    atomic.Value
}

type member struct {
	id       int
	stop     atomic.Bool
	done     chan struct{}
	mu       sync.Mutex
	assigned map[int32]bool
}

func (m *member) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.assigned)
}

func (s *groupScenario) record(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[i] {
		s.duplicates++
	} else {
		s.seen[i] = true
	}
}

func (s *groupScenario) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func (s *groupScenario) fail(err error) { s.failure.CompareAndSwap(nil, err) }

func (s *groupScenario) start(id int) *member {
	m := &member{id: id, done: make(chan struct{}), assigned: map[int32]bool{}}
	ctx := context.Background()
	var cl *kgo.Client
	cl = newClient(
		kgo.ClientID(fmt.Sprintf("compat-go-franz-member-%d", id)),
		kgo.ConsumerGroup(s.group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			m.mu.Lock()
			for _, p := range a[topic] {
				m.assigned[p] = true
			}
			m.mu.Unlock()
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, c *kgo.Client, r map[string][]int32) {
			// Everything processed is committed before the partitions move.
			if err := c.CommitUncommittedOffsets(ctx); err != nil {
				s.fail(fmt.Errorf("member %d: commit on revoke: %w", id, err))
			}
			m.mu.Lock()
			for _, p := range r[topic] {
				delete(m.assigned, p)
			}
			m.mu.Unlock()
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) {
			m.mu.Lock()
			for _, p := range l[topic] {
				delete(m.assigned, p)
			}
			m.mu.Unlock()
		}),
	)
	go func() {
		defer close(m.done)
		defer cl.Close()
		for !m.stop.Load() {
			pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			fetches := cl.PollRecords(pctx, 200)
			cancel()
			got := false
			fetches.EachError(func(t string, p int32, err error) {
				if err != context.DeadlineExceeded && err != context.Canceled {
					s.fail(fmt.Errorf("member %d: fetch %s[%d]: %w", id, t, p, err))
				}
			})
			fetches.EachRecord(func(r *kgo.Record) {
				i, err := strconv.Atoi(string(r.Value))
				if err != nil || int(r.Partition) != i%groupPartitions {
					s.fail(fmt.Errorf("member %d: bad record %q from partition %d", id, r.Value, r.Partition))
					return
				}
				s.record(i)
				got = true
			})
			if got {
				if err := cl.CommitUncommittedOffsets(ctx); err != nil {
					s.fail(fmt.Errorf("member %d: commit: %w", id, err))
				}
			}
			cl.AllowRebalance()
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			s.fail(fmt.Errorf("member %d: final commit: %w", id, err))
		}
	}()
	return m
}

func (s *groupScenario) wait(what string, timeout time.Duration, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if err, ok := s.failure.Load().(error); ok {
			fatalf("group: %v", err)
		}
		if time.Now().After(deadline) {
			fatalf("group: timed out waiting for %s (seen %d)", what, s.count())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func coversAll(ms []*member) bool {
	total := 0
	for _, m := range ms {
		c := m.count()
		if c == 0 {
			return false
		}
		total += c
	}
	return total == groupPartitions
}

func produceRange(ctx context.Context, cl *kgo.Client, lo, hi int) {
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := lo; i < hi; i++ {
		wg.Add(1)
		r := &kgo.Record{Topic: topic, Partition: int32(i % groupPartitions), Key: []byte("g-" + strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		fatalf("group: produce: %v", err)
	}
	logf("produced records %d..%d", lo, hi)
}

func runGroup(ctx context.Context) int {
	s := &groupScenario{group: topic + "-group", seen: map[int]bool{}}
	adminCl := newClient()
	defer adminCl.Close()
	adm := kadm.NewClient(adminCl)
	if _, err := adm.CreateTopic(ctx, groupPartitions, 1, nil, topic); err != nil {
		fatalf("group: create topic: %v", err)
	}
	logf("created topic %s with %d partitions", topic, groupPartitions)
	prod := newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequiredAcks(kgo.AllISRAcks()))
	defer prod.Close()
	third := n / 3
	t0 := time.Now()
	ms := []*member{s.start(0), s.start(1), s.start(2)}
	s.wait("3 members to share the partitions", 60*time.Second, func() bool { return coversAll(ms) })
	logf("3 members joined in %d ms", time.Since(t0).Milliseconds())
	produceRange(ctx, prod, 0, third)
	s.wait("first third", 60*time.Second, func() bool { return s.count() >= third })

	t1 := time.Now()
	ms = append(ms, s.start(3))
	produceRange(ctx, prod, third, 2*third)
	s.wait("4 members to share the partitions", 60*time.Second, func() bool { return coversAll(ms) })
	logf("rebalance 3->4 members took %d ms", time.Since(t1).Milliseconds())
	s.wait("second third", 60*time.Second, func() bool { return s.count() >= 2*third })

	first := ms[0]
	ms = ms[1:]
	t2 := time.Now()
	first.stop.Store(true)
	<-first.done
	produceRange(ctx, prod, 2*third, n)
	s.wait("3 members to share the partitions again", 60*time.Second, func() bool { return coversAll(ms) })
	logf("rebalance 4->3 members took %d ms", time.Since(t2).Milliseconds())
	s.wait("all records", 120*time.Second, func() bool { return s.count() >= n })
	time.Sleep(time.Second) // any duplicate would arrive now
	for _, m := range ms {
		m.stop.Store(true)
	}
	for _, m := range ms {
		<-m.done
	}
	if err, ok := s.failure.Load().(error); ok {
		fatalf("group: %v", err)
	}
	if s.duplicates != 0 || s.count() != n {
		fatalf("group: consumed %d distinct records with %d duplicates, want %d exactly once", s.count(), s.duplicates, n)
	}
	// Committed offsets (OffsetFetch) must be each partition's end.
	offsets, err := adm.FetchOffsets(ctx, s.group)
	if err != nil {
		fatalf("group: fetch offsets: %v", err)
	}
	total := int64(0)
	for p := 0; p < groupPartitions; p++ {
		o, ok := offsets.Lookup(topic, int32(p))
		want := int64(0)
		if n > p {
			want = int64((n - p + groupPartitions - 1) / groupPartitions)
		}
		if !ok || o.Err != nil || o.At != want {
			fatalf("group: partition %d committed %+v, want %d", p, o, want)
		}
		total += o.At
	}
	described, err := adm.DescribeGroups(ctx, s.group)
	if err != nil {
		fatalf("group: describe: %v", err)
	}
	logf("committed offsets cover %d records; group state %s", total, described[s.group].State)
	return s.count()
}
