package main

// MODE=resubscribe (tests/compat/README.md, "Resubscribe scenario"): one classic group consumer
// (sarama.ConsumerGroup, its default range strategy) changes its subscription, sees a
// subscribed topic grow and sees one deleted and re-created; each rebalance must finish within
// resubscribeLimit (a coordinator that waits for the rebalance timeout instead of the last
// rejoin takes minutes).
//
// sarama takes the topics per Consume call (one call per group session), so a subscription
// change ends the current session and calls Consume with the new topics; the member keeps its
// member id, so the coordinator sees a known member rejoin. Consume fails while a topic it is
// given does not exist (and sarama's leader-side partition check only ends the session), so
// right after deleting a topic the program subscribes to the remaining one, and after
// re-creating it subscribes to both again.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

const (
	resubscribePartitions = 3
	resubscribeGrown      = 6
	resubscribeLimit      = 10 * time.Second
	resubscribeWait       = 30 * time.Second
)

type resubscribe struct {
	a, b    string
	n       int // records per phase
	mu      sync.Mutex
	seen    map[string]bool
	claims  map[string][]int32
	topics  []string
	cancel  context.CancelFunc // ends the current session
	failure atomic.Value
}

func (s *resubscribe) fail(err error) { s.failure.CompareAndSwap(nil, err) }

type resubscribeHandler struct{ s *resubscribe }

func (h resubscribeHandler) Setup(sess sarama.ConsumerGroupSession) error {
	h.s.mu.Lock()
	h.s.claims = sess.Claims()
	h.s.mu.Unlock()
	return nil
}

func (h resubscribeHandler) Cleanup(sarama.ConsumerGroupSession) error {
	h.s.mu.Lock()
	h.s.claims = nil
	h.s.mu.Unlock()
	return nil
}

func (h resubscribeHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.s.mu.Lock()
			h.s.seen[string(msg.Value)] = true
			h.s.mu.Unlock()
		case <-sess.Context().Done():
			return nil
		}
	}
}

// subscribe replaces the topics and ends the current session, so the next Consume rejoins.
func (s *resubscribe) subscribe(topics ...string) {
	s.mu.Lock()
	s.topics = topics
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (s *resubscribe) wait(what string, cond func() bool) {
	deadline := time.Now().Add(resubscribeWait)
	for {
		s.mu.Lock()
		done := cond()
		s.mu.Unlock()
		if done {
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

// produce writes n values prefix-i round-robin over partitions with a new producer, so its
// first metadata already knows new partitions and topics.
func (s *resubscribe) produce(addrs []string, topic, prefix string, partitions []int32) map[string]bool {
	cfg := baseConfig()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer(addrs, cfg)
	if err != nil {
		fatalf("resubscribe: producer: %v", err)
	}
	defer p.Close()
	values := map[string]bool{}
	var msgs []*sarama.ProducerMessage
	for i := 0; i < s.n; i++ {
		v := prefix + "-" + strconv.Itoa(i)
		values[v] = true
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: partitions[i%len(partitions)], Value: sarama.StringEncoder(v)})
	}
	if err := p.SendMessages(msgs); err != nil {
		fatalf("resubscribe: produce to %s: %v", topic, err)
	}
	return values
}

func (s *resubscribe) phase(name string, start time.Time, values map[string]bool) time.Duration {
	s.wait(name+": records", func() bool {
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

func runResubscribe(addrs []string, topic string, n int) int {
	s := &resubscribe{a: topic + "-a", b: topic + "-b", n: n, seen: map[string]bool{}}
	admin, err := sarama.NewClusterAdmin(addrs, baseConfig())
	if err != nil {
		fatalf("resubscribe: admin: %v", err)
	}
	defer admin.Close()
	create := func(t string) {
		if err := admin.CreateTopic(t, &sarama.TopicDetail{NumPartitions: resubscribePartitions, ReplicationFactor: 1}, false); err != nil {
			fatalf("resubscribe: create topic %s: %v", t, err)
		}
	}
	create(s.a)
	create(s.b)
	logf("created %s and %s with %d partitions", s.a, s.b, resubscribePartitions)

	t := time.Now()
	cfg := baseConfig()
	cfg.ClientID = "compat-go-sarama-resubscribe"
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Return.Errors = true
	// The group leader checks the subscribed topics' partition counts on every metadata
	// refresh: every second instead of the default 10 minutes.
	cfg.Metadata.RefreshFrequency = time.Second
	cg, err := sarama.NewConsumerGroup(addrs, topic+"-resub", cfg)
	if err != nil {
		fatalf("resubscribe: consumer group: %v", err)
	}
	go func() {
		for err := range cg.Errors() {
			s.fail(err)
		}
	}()
	s.topics = []string{s.a}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			ctx, cancel := context.WithCancel(context.Background())
			s.mu.Lock()
			topics := s.topics
			s.cancel = cancel
			s.mu.Unlock()
			err := cg.Consume(ctx, topics, resubscribeHandler{s})
			cancel()
			if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
				// A topic of the subscription was just deleted; the main thread is about to
				// change the subscription.
				time.Sleep(100 * time.Millisecond)
			} else if err != nil && !stop.Load() {
				s.fail(fmt.Errorf("consume %v: %w", topics, err))
				return
			}
		}
	}()
	defer func() {
		stop.Store(true)
		s.subscribe()
		<-done
		if err := cg.Close(); err != nil {
			logf("closing the consumer group: %v", err)
		}
	}()

	s.phase("first join", t, s.produce(addrs, s.a, "a", []int32{0, 1, 2}))
	took := map[string]time.Duration{}

	// (a) The running consumer subscribes to one more topic.
	t = time.Now()
	s.subscribe(s.a, s.b)
	took["subscription change"] = s.phase("subscription change", t, s.produce(addrs, s.b, "b", []int32{0, 1, 2}))

	// (b) The subscribed topic grows; the leader notices on its metadata refresh.
	t = time.Now()
	if err := admin.CreatePartitions(s.a, resubscribeGrown, nil, false); err != nil {
		fatalf("resubscribe: create partitions: %v", err)
	}
	took["partition growth"] = s.phase("partition growth", t, s.produce(addrs, s.a, "p", []int32{3, 4, 5}))

	// (c) A subscribed topic is deleted (the subscription keeps the other one), then created
	// again (added back).
	t = time.Now()
	if err := admin.DeleteTopic(s.b); err != nil {
		fatalf("resubscribe: delete topic: %v", err)
	}
	s.subscribe(s.a)
	s.wait("topic deletion", func() bool { return s.claims != nil && len(s.claims[s.b]) == 0 })
	took["topic deletion"] = time.Since(t)
	logf("topic deletion took %d ms", took["topic deletion"].Milliseconds())
	t = time.Now()
	create(s.b)
	s.subscribe(s.a, s.b)
	took["topic re-creation"] = s.phase("topic re-creation", t, s.produce(addrs, s.b, "r", []int32{0, 1, 2}))

	for name, d := range took {
		if d > resubscribeLimit {
			fatalf("resubscribe: %s took %s, more than %s", name, d, resubscribeLimit)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}
