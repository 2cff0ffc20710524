package testcerts

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
)

// handshake connects a TLS client to a TLS server over loopback, has them
// exchange a byte each way, and returns the errors of both sides. The
// client verifies the server as serverName.
func handshake(t *testing.T, server, client *tls.Config, serverName string) (serverErr, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 1)
		if _, err = io.ReadFull(conn, buf); err == nil {
			_, err = conn.Write(buf)
		}
		done <- err
	}()
	client = client.Clone()
	client.ServerName = serverName
	conn, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		// With TLS 1.3 the server checks the client's certificate after
		// the client's handshake is done: a refusal arrives as an alert
		// on the first read.
		buf := []byte{1}
		if _, err = conn.Write(buf); err == nil {
			_, err = io.ReadFull(conn, buf)
		}
		conn.Close()
	}
	return <-done, err
}

func TestHandshakes(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	s := New(t)
	for _, tc := range []struct {
		name       string
		clientAuth bool
		opts       []ClientOption
		host       string
		ok         bool
	}{
		{"server TLS", false, nil, "127.0.0.1", true},
		{"localhost", false, nil, "localhost", true},
		{"IPv6 loopback", false, nil, "::1", true},
		{"another host", false, nil, "example.com", false},
		{"wrong CA", false, []ClientOption{WrongCA}, "127.0.0.1", false},
		{"mutual TLS", true, []ClientOption{ClientCert}, "127.0.0.1", true},
		{"mutual TLS without a certificate", true, nil, "127.0.0.1", false},
		{"mutual TLS with a stranger's certificate", true, []ClientOption{StrangerCert}, "127.0.0.1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverErr, clientErr := handshake(t, s.ServerTLS(tc.clientAuth), s.ClientTLS(tc.opts...), tc.host)
			if tc.ok && (serverErr != nil || clientErr != nil) {
				t.Fatalf("server: %v, client: %v", serverErr, clientErr)
			}
			if !tc.ok && clientErr == nil {
				t.Fatalf("the client succeeded (server: %v)", serverErr)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	s := New(t)
	for _, pair := range [][2]string{{s.ServerCertFile, s.ServerKeyFile}, {s.ClientCertFile, s.ClientKeyFile}} {
		if _, err := tls.LoadX509KeyPair(pair[0], pair[1]); err != nil {
			t.Errorf("%s: %v", pair[0], err)
		}
		info, err := os.Stat(pair[1])
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600", pair[1], perm)
		}
	}
	ca, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("%s holds no certificate", s.CAFile)
	}
	pair, err := tls.LoadX509KeyPair(s.ClientCertFile, s.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify against the CA file: %v", err)
	}
	if leaf.Subject.CommonName != ClientCommonName {
		t.Errorf("client common name %q, want %q", leaf.Subject.CommonName, ClientCommonName)
	}
}
