package main

// Client security from the COMPAT_* environment variables (tests/compat/README.md).
//
// TLS is done by the tracing dialer (apitrace.go; kgo.DialTLSConfig cannot be combined with
// kgo.Dialer), so the request trace still reads plaintext Kafka frames: the dialer completes
// the handshake and wraps the TLS connection. SASL is franz-go's own pkg/sasl.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// securityProtocol is COMPAT_SECURITY_PROTOCOL, PLAINTEXT when unset.
func securityProtocol() string {
	if p := os.Getenv("COMPAT_SECURITY_PROTOCOL"); p != "" {
		return strings.ToUpper(p)
	}
	return "PLAINTEXT"
}

// tlsConfig is nil unless the protocol is SSL or SASL_SSL: the CA file (COMPAT_SSL_CA_LOCATION,
// else the system roots) and, for mutual TLS, the client certificate and key (PEM).
var tlsConfig = func() *tls.Config {
	p := securityProtocol()
	if p != "SSL" && p != "SASL_SSL" {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca := os.Getenv("COMPAT_SSL_CA_LOCATION"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			fatalf("COMPAT_SSL_CA_LOCATION: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fatalf("COMPAT_SSL_CA_LOCATION %s: no PEM certificate", ca)
		}
		cfg.RootCAs = pool
	}
	cert, key := os.Getenv("COMPAT_SSL_CERT_LOCATION"), os.Getenv("COMPAT_SSL_KEY_LOCATION")
	if cert != "" || key != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			fatalf("COMPAT_SSL_CERT_LOCATION / COMPAT_SSL_KEY_LOCATION: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}()

// secure completes a TLS handshake over c when TLS is configured (server name: addr's host, so
// an IP address is checked against the certificate's IP SANs).
func secure(c net.Conn, addr string) (net.Conn, error) {
	if tlsConfig == nil {
		return c, nil
	}
	cfg := tlsConfig.Clone()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	cfg.ServerName = host
	tc := tls.Client(c, cfg)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// saslOpts is franz-go's SASL option for SASL_PLAINTEXT / SASL_SSL, none otherwise.
func saslOpts() []kgo.Opt {
	p := securityProtocol()
	if p != "SASL_PLAINTEXT" && p != "SASL_SSL" {
		return nil
	}
	user, pass := os.Getenv("COMPAT_SASL_USERNAME"), os.Getenv("COMPAT_SASL_PASSWORD")
	switch mech := os.Getenv("COMPAT_SASL_MECHANISM"); mech {
	case "", "PLAIN":
		return []kgo.Opt{kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism())}
	case "SCRAM-SHA-256":
		return []kgo.Opt{kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism())}
	case "SCRAM-SHA-512":
		return []kgo.Opt{kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism())}
	default:
		fatalf("COMPAT_SASL_MECHANISM=%q is not supported by this program", mech)
		return nil
	}
}
