// tlsconns opens new TLS connections at a fixed rate while a producer keeps producing over an
// established SASL_SSL connection, and reports handshake failures and producer errors (issue
// #14's target: 1,000 new TLS connections per second accepted without failing established
// ones). Each new connection does a full TLS handshake (no session resumption), sends one
// ApiVersions v0 request and reads its answer, then closes. Used by bench/security.sh:
//
//	tlsconns -connect 127.0.0.1:9094 -ca ca.pem -rate 1000 -seconds 5 \
//	  -produce 127.0.0.1:9094 -user bench -password secret -topic conn-storm
//
// It exits non-zero when any connection or produce failed, or the opener fell behind its
// schedule by more than 10% (the client, not the broker, was then the limit).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

var (
	connect  = flag.String("connect", "", "TLS listener to open new connections to (host:port)")
	caFile   = flag.String("ca", "", "PEM CA file")
	rate     = flag.Int("rate", 1000, "new connections per second")
	seconds  = flag.Int("seconds", 5, "length of the storm")
	inflight = flag.Int("max-inflight", 4000, "connections in progress at most (bounds goroutines)")
	produce  = flag.String("produce", "", "SASL_SSL bootstrap of the producer (empty: no producer)")
	user     = flag.String("user", "", "SCRAM-SHA-512 user of the producer")
	password = flag.String("password", "", "its password")
	topic    = flag.String("topic", "conn-storm", "topic the producer writes (created with 3 partitions)")
)

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tlsconns: "+format+"\n", args...)
	os.Exit(2)
}

type result struct {
	handshake time.Duration
	err       error
	phase     string
}

// once opens one connection: TLS handshake, ApiVersions v0, answer, close.
func once(cfg *tls.Config) result {
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	raw, err := net.DialTimeout("tcp", *connect, 5*time.Second)
	if err != nil {
		return result{err: err, phase: "connect"}
	}
	defer raw.Close()
	_ = raw.SetDeadline(deadline)
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		return result{err: err, phase: "handshake"}
	}
	hs := time.Since(start)
	// size 10: api key 18 (ApiVersions), version 0, correlation id 1, null client id.
	if _, err := c.Write([]byte{0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff}); err != nil {
		return result{handshake: hs, err: err, phase: "request"}
	}
	var head [8]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return result{handshake: hs, err: err, phase: "response"}
	}
	if id := int32(binary.BigEndian.Uint32(head[4:])); id != 1 {
		return result{handshake: hs, err: fmt.Errorf("correlation id %d", id), phase: "response"}
	}
	return result{handshake: hs}
}

type producerStats struct {
	acked, failed, disconnects atomic.Int64
	firstErr                   atomic.Value
}

func (p *producerStats) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) { p.disconnects.Add(1) }

// runProducer produces 1 KiB records (acks=all) until ctx ends, up to 64 in flight.
func runProducer(ctx context.Context, cfg *tls.Config, stats *producerStats, ready chan<- struct{}) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(*produce),
		kgo.DialTLSConfig(cfg),
		kgo.SASL(scram.Auth{User: *user, Pass: *password}.AsSha512Mechanism()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.RecordRetries(0), // an error is counted, not retried away
		kgo.WithHooks(stats),
	)
	if err != nil {
		fatalf("producer: %v", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic, t.NumPartitions, t.ReplicationFactor = *topic, 3, 1
	req.Topics = append(req.Topics, t)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if _, err := req.RequestWith(cctx, cl); err != nil {
		fatalf("create topic: %v", err)
	}
	cancel()
	value := make([]byte, 1024)
	sem := make(chan struct{}, 64)
	first := true
	for ctx.Err() == nil {
		sem <- struct{}{}
		cl.Produce(ctx, &kgo.Record{Topic: *topic, Value: value}, func(_ *kgo.Record, err error) {
			<-sem
			switch {
			case err == nil:
				stats.acked.Add(1)
			case errors.Is(err, context.Canceled):
			default:
				stats.failed.Add(1)
				stats.firstErr.CompareAndSwap(nil, err.Error())
			}
		})
		if first {
			first = false
			if err := cl.Flush(ctx); err != nil {
				fatalf("first produce: %v", err)
			}
			close(ready)
		}
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	_ = cl.Flush(fctx)
}

func main() {
	flag.Parse()
	if *connect == "" || *caFile == "" {
		fatalf("-connect and -ca are required")
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fatalf("%v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fatalf("%s: no certificate", *caFile)
	}
	host, _, _ := net.SplitHostPort(*connect)
	// No session cache: every connection is a full handshake, the broker's worst case.
	cfg := &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12, ClientSessionCache: nil}

	var stats producerStats
	ctx, stop := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	var ackedBefore, ackedAt time.Time
	var ackedBase int64
	if *produce != "" {
		ready := make(chan struct{})
		pwg.Add(1)
		go func() { defer pwg.Done(); runProducer(ctx, cfg.Clone(), &stats, ready) }()
		select {
		case <-ready:
		case <-time.After(60 * time.Second):
			fatalf("producer not ready after 60 s")
		}
		// One second of production without the storm, as the baseline rate.
		ackedBefore = time.Now()
		a0 := stats.acked.Load()
		time.Sleep(time.Second)
		ackedBase = stats.acked.Load() - a0
		ackedAt = time.Now()
	}
	baseline := float64(ackedBase) / max(ackedAt.Sub(ackedBefore).Seconds(), 1e-9)

	total := *rate * *seconds
	results := make([]result, total)
	sem := make(chan struct{}, *inflight)
	var wg sync.WaitGroup
	var lateMax time.Duration
	a1, d1, f1 := stats.acked.Load(), stats.disconnects.Load(), stats.failed.Load()
	start := time.Now()
	for i := range total {
		due := start.Add(time.Duration(i) * time.Second / time.Duration(*rate))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		} else {
			lateMax = max(lateMax, -d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = once(cfg)
			<-sem
		}()
	}
	opened := time.Since(start)
	wg.Wait()
	elapsed := time.Since(start)
	during := float64(stats.acked.Load()-a1) / elapsed.Seconds()
	// Disconnects and failures while the storm ran (closing the client disconnects too).
	disconnects, prodFailed := stats.disconnects.Load()-d1, stats.failed.Load()-f1
	stop()
	pwg.Wait()

	var failed int
	phases := map[string]int{}
	var firstErr error
	hs := make([]time.Duration, 0, total)
	for _, r := range results {
		if r.err != nil {
			failed++
			phases[r.phase]++
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		}
		hs = append(hs, r.handshake)
	}
	slices.Sort(hs)
	q := func(f float64) time.Duration {
		if len(hs) == 0 {
			return 0
		}
		return hs[min(len(hs)-1, int(f*float64(len(hs))))]
	}
	achieved := float64(total) / opened.Seconds()
	fmt.Printf("tls connections: %d opened in %.2f s (%.0f/s, target %d/s, opener at most %v late), %d failed %v, handshake p50 %v p99 %v max %v\n",
		total, opened.Seconds(), achieved, *rate, lateMax.Round(time.Millisecond), failed, phases,
		q(0.5).Round(100*time.Microsecond), q(0.99).Round(100*time.Microsecond), q(1).Round(time.Millisecond))
	if firstErr != nil {
		fmt.Printf("first connection error: %v\n", firstErr)
	}
	if *produce != "" {
		fmt.Printf("producer: %.0f records/s before, %.0f records/s during the storm; %d failed, %d disconnects",
			baseline, during, prodFailed, disconnects)
		if e := stats.firstErr.Load(); e != nil {
			fmt.Printf(" (first: %v)", e)
		}
		fmt.Println()
	}
	if failed > 0 || prodFailed > 0 || disconnects > 0 || achieved < 0.9*float64(*rate) {
		fmt.Println("tlsconns: FAILED")
		os.Exit(1)
	}
	fmt.Println("tlsconns: ok")
}
