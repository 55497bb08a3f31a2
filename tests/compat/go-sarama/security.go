package main

// Client security from the COMPAT_* environment variables (tests/compat/README.md).
//
// TLS is done by the tracing dialer (apitrace.go), not by sarama's Net.TLS, so the request
// trace still reads plaintext Kafka frames: the dialer completes the handshake and wraps the
// TLS connection. SCRAM uses github.com/xdg-go/scram, as sarama's own examples do.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"
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

// applySASL sets sarama's SASL settings for SASL_PLAINTEXT / SASL_SSL.
func applySASL(cfg *sarama.Config) {
	p := securityProtocol()
	if p != "SASL_PLAINTEXT" && p != "SASL_SSL" {
		return
	}
	mech := os.Getenv("COMPAT_SASL_MECHANISM")
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Handshake = true
	cfg.Net.SASL.User = os.Getenv("COMPAT_SASL_USERNAME")
	cfg.Net.SASL.Password = os.Getenv("COMPAT_SASL_PASSWORD")
	switch mech {
	case "", "PLAIN":
		cfg.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case "SCRAM-SHA-256":
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA256} }
	case "SCRAM-SHA-512":
		cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA512} }
	default:
		fatalf("COMPAT_SASL_MECHANISM=%q is not supported by this program", mech)
	}
}

// scramClient is sarama's SCRAMClient over xdg-go/scram.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	cl, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	c.conv = cl.NewConversation()
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) { return c.conv.Step(challenge) }

func (c *scramClient) Done() bool { return c.conv.Done() }
