// MODE=failover (tests/compat/README.md, "Failover scenario"): an async producer at sarama's
// default settings (plus acks=all, successes returned and the manual partitioner) hands one
// record every 1/RATE s to the client, round-robin over PARTITIONS partitions, and prints one
// line per acknowledgement with the wall-clock times (µs) the record was handed over and
// acknowledged, until stdin closes.
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
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

type handedAt struct {
	idx    int
	handed int64
}

func runFailover(addrs []string, topic string) int {
	parts := envInt("PARTITIONS", 3)
	rate := envInt("RATE", 500)
	cfg := sarama.NewConfig()
	cfg.ClientID = "skiff-compat-go-sarama-failover"
	cfg.Version = kafkaVersion()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	producer, err := sarama.NewAsyncProducer(addrs, cfg)
	if err != nil {
		fatalf("failover: producer: %v", err)
	}
	var mu sync.Mutex
	acked, failed := 0, 0
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for m := range producer.Successes() {
			at := time.Now().UnixMicro()
			h := m.Metadata.(handedAt)
			mu.Lock()
			acked++
			fmt.Printf("ack %d %d %d %d\n", m.Partition, h.idx, h.handed, at)
			mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for e := range producer.Errors() {
			h := e.Msg.Metadata.(handedAt)
			mu.Lock()
			failed++
			fmt.Printf("fail %d %d %v\n", e.Msg.Partition, h.idx, e.Err)
			mu.Unlock()
		}
	}()
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(closed)
	}()
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
		msg := &sarama.ProducerMessage{
			Topic:     topic,
			Partition: int32(i % parts),
			Value:     sarama.StringEncoder(strconv.Itoa(i)),
			Metadata:  handedAt{idx: i, handed: time.Now().UnixMicro()},
		}
		producer.Input() <- msg
		i++
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
	}
	// AsyncClose flushes what is buffered, then closes Successes and Errors.
	producer.AsyncClose()
	wg.Wait()
	if failed != 0 || acked != i {
		fatalf("failover: %d handed, %d acked, %d failed", i, acked, failed)
	}
	return i
}
