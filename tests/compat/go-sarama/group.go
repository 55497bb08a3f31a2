package main

// MODE=group (tests/compat/README.md, "Group scenario"): three group members (goroutines, one
// sarama.ConsumerGroup each) on a 12-partition topic consume RECORDS records exactly once in
// aggregate with synchronous commits, while a fourth member joins after the first third and the
// first member leaves after the second.

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

const groupPartitions = 12

type groupScenario struct {
	addrs      []string
	topic      string
	group      string
	mu         sync.Mutex
	seen       map[int]bool
	duplicates int
	failure    atomic.Value
}

type member struct {
	id       int
	cancel   context.CancelFunc
	done     chan struct{}
	assigned atomic.Int32
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

// handler is one member's sarama.ConsumerGroupHandler.
type handler struct {
	s *groupScenario
	m *member
}

func (h handler) Setup(sess sarama.ConsumerGroupSession) error {
	h.m.assigned.Store(int32(len(sess.Claims()[h.s.topic])))
	return nil
}

func (h handler) Cleanup(sess sarama.ConsumerGroupSession) error {
	// Everything processed is committed before the partitions move.
	sess.Commit()
	h.m.assigned.Store(0)
	return nil
}

func (h handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			i, err := strconv.Atoi(string(msg.Value))
			if err != nil || int(msg.Partition) != i%groupPartitions {
				h.s.fail(fmt.Errorf("member %d: bad record %q from partition %d", h.m.id, msg.Value, msg.Partition))
				return nil
			}
			h.s.record(i)
			sess.MarkMessage(msg, "")
			if len(claim.Messages()) == 0 {
				sess.Commit()
			}
		case <-sess.Context().Done():
			return nil
		}
	}
}

func (s *groupScenario) start(id int) *member {
	cfg := baseConfig()
	cfg.ClientID = fmt.Sprintf("compat-go-sarama-member-%d", id)
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Return.Errors = true
	cg, err := sarama.NewConsumerGroup(s.addrs, s.group, cfg)
	if err != nil {
		fatalf("group: member %d: %v", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{id: id, cancel: cancel, done: make(chan struct{})}
	go func() {
		for err := range cg.Errors() {
			s.fail(fmt.Errorf("member %d: %w", id, err))
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{s.topic}, handler{s, m}); err != nil && ctx.Err() == nil {
				s.fail(fmt.Errorf("member %d: consume: %w", id, err))
				return
			}
		}
		if err := cg.Close(); err != nil {
			s.fail(fmt.Errorf("member %d: close: %w", id, err))
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
	total := int32(0)
	for _, m := range ms {
		c := m.assigned.Load()
		if c == 0 {
			return false
		}
		total += c
	}
	return total == groupPartitions
}

func (s *groupScenario) produce(p sarama.SyncProducer, lo, hi int) {
	msgs := make([]*sarama.ProducerMessage, 0, hi-lo)
	for i := lo; i < hi; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: s.topic, Partition: int32(i % groupPartitions),
			Key: sarama.StringEncoder("g-" + strconv.Itoa(i)), Value: sarama.StringEncoder(strconv.Itoa(i))})
	}
	if err := p.SendMessages(msgs); err != nil {
		fatalf("group: produce: %v", err)
	}
	logf("produced records %d..%d", lo, hi)
}

func runGroup(addrs []string, topic string, n int) int {
	s := &groupScenario{addrs: addrs, topic: topic, group: topic + "-group", seen: map[int]bool{}}
	admin, err := sarama.NewClusterAdmin(addrs, baseConfig())
	if err != nil {
		fatalf("group: admin: %v", err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: groupPartitions, ReplicationFactor: 1}, false); err != nil {
		fatalf("group: create topic: %v", err)
	}
	logf("created topic %s with %d partitions", topic, groupPartitions)
	pcfg := baseConfig()
	pcfg.Producer.RequiredAcks = sarama.WaitForAll
	pcfg.Producer.Return.Successes = true
	pcfg.Producer.Partitioner = sarama.NewManualPartitioner
	prod, err := sarama.NewSyncProducer(addrs, pcfg)
	if err != nil {
		fatalf("group: producer: %v", err)
	}
	defer prod.Close()
	third := n / 3
	t0 := time.Now()
	ms := []*member{s.start(0), s.start(1), s.start(2)}
	s.wait("3 members to share the partitions", 60*time.Second, func() bool { return coversAll(ms) })
	logf("3 members joined in %d ms", time.Since(t0).Milliseconds())
	s.produce(prod, 0, third)
	s.wait("first third", 60*time.Second, func() bool { return s.count() >= third })

	t1 := time.Now()
	ms = append(ms, s.start(3))
	s.produce(prod, third, 2*third)
	s.wait("4 members to share the partitions", 60*time.Second, func() bool { return coversAll(ms) })
	logf("rebalance 3->4 members took %d ms", time.Since(t1).Milliseconds())
	s.wait("second third", 60*time.Second, func() bool { return s.count() >= 2*third })

	first := ms[0]
	ms = ms[1:]
	t2 := time.Now()
	first.cancel()
	<-first.done
	s.produce(prod, 2*third, n)
	s.wait("3 members to share the partitions again", 60*time.Second, func() bool { return coversAll(ms) })
	logf("rebalance 4->3 members took %d ms", time.Since(t2).Milliseconds())
	s.wait("all records", 120*time.Second, func() bool { return s.count() >= n })
	time.Sleep(time.Second) // any duplicate would arrive now
	for _, m := range ms {
		m.cancel()
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
	parts := make([]int32, groupPartitions)
	for p := range parts {
		parts[p] = int32(p)
	}
	resp, err := admin.ListConsumerGroupOffsets(s.group, map[string][]int32{topic: parts})
	if err != nil {
		fatalf("group: list offsets: %v", err)
	}
	total := int64(0)
	for p := 0; p < groupPartitions; p++ {
		b := resp.GetBlock(topic, int32(p))
		want := int64(0)
		if n > p {
			want = int64((n - p + groupPartitions - 1) / groupPartitions)
		}
		if b == nil || b.Err != sarama.ErrNoError || b.Offset != want {
			fatalf("group: partition %d committed %+v, want %d", p, b, want)
		}
		total += b.Offset
	}
	groups, err := admin.DescribeConsumerGroups([]string{s.group})
	if err != nil || len(groups) != 1 {
		fatalf("group: describe: %v", err)
	}
	logf("committed offsets cover %d records; group state %s", total, groups[0].State)
	return s.count()
}
