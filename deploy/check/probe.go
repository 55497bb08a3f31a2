package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// checkProbe runs the image's health probe script (the one HEALTHCHECK and the compose file
// use) against stub HTTP servers and, when the binary is at hand, a real `skiff dev`.
func checkProbe(ctx context.Context, r *report, script string, cli *skiffCLI) {
	name := func(s string) string { return "probe: " + s }
	if _, err := exec.LookPath("bash"); err != nil {
		r.skip(name("health probe"), "no bash here")
		return
	}
	if out, err := exec.CommandContext(ctx, "bash", "-n", script).CombinedOutput(); err != nil {
		r.fail(name(filepath.Base(script)+" is valid bash"), strings.TrimSpace(string(out)))
		return
	}

	var problems []string
	for _, tc := range []struct {
		status int
		want   bool
	}{{200, true}, {503, false}, {404, false}} {
		addr, stop := stubServer(tc.status)
		got, out := runProbe(ctx, script, addr, nil)
		stop()
		if got != tc.want {
			problems = append(problems, fmt.Sprintf("/health answering %d: probe says healthy=%v (%s)", tc.status, got, out))
		}
	}
	// Default address from SKIFF_HTTP_LISTEN, with the wildcard host probed on loopback.
	addr, stop := stubServer(200)
	_, port, _ := net.SplitHostPort(addr)
	if got, out := runProbe(ctx, script, "", []string{"SKIFF_HTTP_LISTEN=0.0.0.0:" + port}); !got {
		problems = append(problems, "SKIFF_HTTP_LISTEN=0.0.0.0:PORT without an argument: "+out)
	}
	stop()
	if got, _ := runProbe(ctx, script, closedPort(), nil); got {
		problems = append(problems, "a closed port counts as healthy")
	}
	// A server that accepts and never answers: the probe must give up by itself.
	hang, stopHang := silentServer()
	start := time.Now()
	if got, _ := runProbe(ctx, script, hang, nil); got {
		problems = append(problems, "a server that never answers counts as healthy")
	}
	if d := time.Since(start); d > 8*time.Second {
		problems = append(problems, fmt.Sprintf("a silent server held the probe %v", d.Round(time.Second)))
	}
	stopHang()
	r.check(name("healthy only on 200 (stub servers: 200, 503, 404, closed, silent, SKIFF_HTTP_LISTEN)"), problems)

	if cli == nil {
		r.skip(name("against a real `skiff dev`"), "no skiff binary")
		return
	}
	if err := probeRealSkiff(ctx, cli.bin, script); err != nil {
		r.fail(name("against a real `skiff dev`"), err.Error())
	} else {
		r.ok(name("against a real `skiff dev` (/health answers 200)"))
	}
}

// runProbe runs the script with addr as its argument (none when empty).
func runProbe(ctx context.Context, script, addr string, env []string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	args := []string{script}
	if addr != "" {
		args = append(args, addr)
	}
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return err == nil, strings.TrimSpace(string(out))
}

func stubServer(status int) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/health" {
			http.NotFound(w, req)
			return
		}
		w.WriteHeader(status)
		fmt.Fprintln(w, http.StatusText(status))
	})}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }
}

// silentServer accepts connections and never writes.
func silentServer() (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		for _, c := range conns {
			c.Close()
		}
	}
}

func closedPort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// probeRealSkiff starts `skiff dev` on free ports with in-memory storage, waits for its
// "HTTP: http://ADDR/metrics" line, and probes ADDR. The process is stopped with SIGTERM.
func probeRealSkiff(ctx context.Context, bin, script string) error {
	dir, err := os.MkdirTemp("", "skiff-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "dev", "--data-dir", dir, "--kafka-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0", "--storage", "memory://")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(os.Environ(), "SKIFF_LOG=warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "HTTP: http://"); ok {
				addrCh <- strings.TrimSuffix(rest, "/metrics")
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case addr := <-addrCh:
		// /health may lag the listener a little; give it a few tries like Docker would.
		var out string
		for i := 0; i < 20; i++ {
			var ok bool
			if ok, out = runProbe(ctx, script, addr, nil); ok {
				return nil
			}
			time.Sleep(250 * time.Millisecond)
		}
		return fmt.Errorf("`skiff dev` HTTP on %s: probe failed: %s", addr, out)
	case <-ctx.Done():
		return fmt.Errorf("`skiff dev` printed no HTTP address within 60 s")
	}
}
