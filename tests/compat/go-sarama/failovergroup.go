// MODE=failover-group (tests/failover_groups.rs, tests/compat/README.md "Group failover
// scenario"): one sarama.ConsumerGroup member of GROUP (default TOPIC-fg) at sarama's default
// settings (range assignor, session 10 s, heartbeat 3 s, auto commit of marked offsets every
// 1 s) except the initial offset (oldest) and Return.Errors (errors printed as events), as
// sarama's examples/consumergroup consumes: MarkMessage per record. It consumes TOPIC until
// stdin closes and prints one `rec <partition> <offset> <consumed_us>` line per record and
// `event <us> <what>` for assignment changes and errors.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

var outMu sync.Mutex

func event(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf("event %d %s\n", time.Now().UnixMicro(), fmt.Sprintf(format, args...))
}

type failoverHandler struct {
	topic    string
	consumed *int
}

func (h failoverHandler) Setup(sess sarama.ConsumerGroupSession) error {
	event("assigned %v generation %d", sess.Claims()[h.topic], sess.GenerationID())
	return nil
}

func (h failoverHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	event("revoked %v", sess.Claims()[h.topic])
	return nil
}

func (h failoverHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			at := time.Now().UnixMicro()
			outMu.Lock()
			fmt.Printf("rec %d %d %d\n", msg.Partition, msg.Offset, at)
			*h.consumed++
			outMu.Unlock()
			sess.MarkMessage(msg, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}

func runFailoverGroup(addrs []string, topic string) int {
	group := os.Getenv("GROUP")
	if group == "" {
		group = topic + "-fg"
	}
	cfg := sarama.NewConfig()
	cfg.ClientID = "skiff-compat-go-sarama-failover-group"
	cfg.Version = kafkaVersion()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Return.Errors = true
	applySASL(cfg)
	cg, err := sarama.NewConsumerGroup(addrs, group, cfg)
	if err != nil {
		fatalf("failover-group: %v", err)
	}
	go func() {
		for err := range cg.Errors() {
			event("error %v", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	consumed := 0
	h := failoverHandler{topic: topic, consumed: &consumed}
	for ctx.Err() == nil {
		// Consume returns at every rebalance (and on errors); the member joins again.
		if err := cg.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
			event("consume %v", err)
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := cg.Close(); err != nil {
		fatalf("failover-group: close: %v", err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	return consumed
}
