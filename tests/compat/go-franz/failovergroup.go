// MODE=failover-group (tests/failover_groups.rs, tests/compat/README.md "Group failover
// scenario"): one franz-go group member of GROUP (default TOPIC-fg) at franz-go's default
// settings (cooperative-sticky, session 45 s, heartbeat 3 s, autocommit every 5 s, reset to
// the start), consuming TOPIC with PollFetches until stdin closes. Prints one
// `rec <partition> <offset> <consumed_us>` line per record and `event <us> <what>` for
// assignment changes and fetch errors; on close the client commits (autocommit) and leaves.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

var outMu sync.Mutex

func event(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf("event %d %s\n", time.Now().UnixMicro(), fmt.Sprintf(format, args...))
}

func runFailoverGroup() int {
	group := os.Getenv("GROUP")
	if group == "" {
		group = topic + "-fg"
	}
	cl := newClient(
		kgo.ClientID("skiff-compat-go-franz-failover-group"),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			event("assigned %v", a[topic])
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
			event("revoked %v", r[topic])
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) {
			event("lost %v", l[topic])
		}),
	)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	consumed := 0
	var line strings.Builder
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		at := time.Now().UnixMicro()
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				event("fetch error %s[%d]: %v", t, p, err)
			}
		})
		line.Reset()
		fetches.EachRecord(func(r *kgo.Record) {
			fmt.Fprintf(&line, "rec %d %d %d\n", r.Partition, r.Offset, at)
			consumed++
		})
		if line.Len() > 0 {
			outMu.Lock()
			fmt.Print(line.String())
			outMu.Unlock()
		}
	}
	// Close commits what was polled (autocommit's commit on leave) and leaves the group.
	cl.Close()
	return consumed
}
