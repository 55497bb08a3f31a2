// MODE=failover (tests/compat/README.md, "Failover scenario"): a producer at franz-go's
// default settings (idempotent, acks=all) hands one record every 1/RATE s to the client,
// round-robin over PARTITIONS partitions, and prints one line per acknowledgement with the
// wall-clock times (µs) the record was handed over and acknowledged, until stdin closes.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func envInt(name string, def int) int {
	if s := os.Getenv(name); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			fatalf("%s=%q is not a positive integer", name, s)
		}
		return v
	}
	return def
}

func runFailover(ctx context.Context) int {
	parts := envInt("PARTITIONS", 3)
	rate := envInt("RATE", 500)
	cl := newClient(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(closed)
	}()
	var mu sync.Mutex
	acked, failed := 0, 0
	interval := time.Second / time.Duration(rate)
	next := time.Now()
	i := 0
loop:
	for {
		select {
		case <-closed:
			break loop
		default:
		}
		p := i % parts
		idx := i
		handed := time.Now().UnixMicro()
		r := &kgo.Record{Partition: int32(p), Value: []byte(strconv.Itoa(idx))}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			at := time.Now().UnixMicro()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				fmt.Printf("fail %d %d %v\n", p, idx, err)
				return
			}
			acked++
			fmt.Printf("ack %d %d %d %d\n", p, idx, handed, at)
		})
		i++
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := cl.Flush(fctx); err != nil {
		fatalf("failover: flush: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if failed != 0 || acked != i {
		fatalf("failover: %d handed, %d acked, %d failed", i, acked, failed)
	}
	return i
}
