package main

// apitrace wraps broker connections and records the (api key, version) of every request the
// client writes, so a run can report exactly which protocol versions the client sent.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

type apiTrace struct {
	mu   sync.Mutex
	seen map[[2]int16]int
}

var traceDebug = os.Getenv("APITRACE_DEBUG") != ""

var trace = &apiTrace{seen: map[[2]int16]int{}}

func (t *apiTrace) record(key, version int16) {
	t.mu.Lock()
	t.seen[[2]int16{key, version}]++
	t.mu.Unlock()
}

// summary lists "Name vN xCount" sorted by api key then version.
func (t *apiTrace) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([][2]int16, 0, len(t.seen))
	for k := range t.seen {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool {
		if keys[a][0] != keys[b][0] {
			return keys[a][0] < keys[b][0]
		}
		return keys[a][1] < keys[b][1]
	})
	parts := make([]string, len(keys))
	for j, k := range keys {
		name := kmsg.NameForKey(k[0])
		parts[j] = fmt.Sprintf("%s v%d x%d", name, k[1], t.seen[k])
	}
	return strings.Join(parts, ", ")
}

// tracedConn parses the outgoing byte stream as Kafka request frames
// (int32 size, int16 api key, int16 api version, ...).
type tracedConn struct {
	net.Conn
	hdr  []byte // partial frame header being collected
	skip int    // bytes of the current frame body still to skip
}

func (c *tracedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	p := b[:n]
	for len(p) > 0 {
		if c.skip > 0 {
			k := min(c.skip, len(p))
			c.skip -= k
			p = p[k:]
			continue
		}
		k := min(8-len(c.hdr), len(p))
		c.hdr = append(c.hdr, p[:k]...)
		p = p[k:]
		if len(c.hdr) == 8 {
			size := int(int32(binary.BigEndian.Uint32(c.hdr[0:4])))
			trace.record(int16(binary.BigEndian.Uint16(c.hdr[4:6])), int16(binary.BigEndian.Uint16(c.hdr[6:8])))
			if traceDebug {
				fmt.Fprintf(os.Stderr, "apitrace: %s key %d v%d size %d\n", c.RemoteAddr(), int16(binary.BigEndian.Uint16(c.hdr[4:6])), int16(binary.BigEndian.Uint16(c.hdr[6:8])), size)
			}
			c.skip = size - 4
			c.hdr = c.hdr[:0]
		}
	}
	return n, err
}

// dialTraced is a kgo.Dialer that wraps every broker connection.
func dialTraced(ctx context.Context, network, host string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	// TLS (security.go) under the trace, so the trace reads plaintext frames.
	if c, err = secure(c, host); err != nil {
		return nil, err
	}
	return &tracedConn{Conn: c}, nil
}

func (c *tracedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if traceDebug {
		bytesRead.Add(int64(n))
	}
	return n, err
}

var bytesRead atomic.Int64
