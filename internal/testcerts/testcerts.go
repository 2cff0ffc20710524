// Package testcerts makes the certificates of a TLS-secured etcd for tests:
// a certificate authority, a server certificate and a client certificate
// signed by it, and a stranger CA that signed nothing the server trusts.
//
// Everything is generated inside the test process (ECDSA P-256 keys,
// crypto/x509), so no key material lives in the repository and nothing
// expires between runs. The files are written to a directory, since etcd
// reads its certificates from files; clients get a *tls.Config instead.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ClientCommonName is the common name of the client certificate. An etcd
// that requires client certificates and has auth enabled takes the common
// name of a certificate as the user name of a request that carries no
// token, so it must not name a user by accident.
const ClientCommonName = "biregister-test-client"

// validity is how long the certificates are valid: far longer than any
// test, and short enough that a leaked key is worthless soon.
const validity = 24 * time.Hour

// Set is a CA, a server certificate for 127.0.0.1 and localhost, and a
// client certificate, all on disk, plus a stranger CA and a client
// certificate it signed, kept in memory only.
type Set struct {
	// Dir holds the files.
	Dir string
	// CAFile is the CA certificate (PEM), the server's trusted CA file.
	CAFile string
	// ServerCertFile and ServerKeyFile are the server's certificate and
	// key (PEM). The certificate is valid for 127.0.0.1, ::1 and
	// localhost, for server and client authentication, so a member can
	// also use it to talk to itself.
	ServerCertFile, ServerKeyFile string
	// ClientCertFile and ClientKeyFile are the client's certificate and
	// key (PEM), signed by the CA.
	ClientCertFile, ClientKeyFile string

	caPool          *x509.CertPool
	strangerPool    *x509.CertPool
	clientCert      tls.Certificate
	strangerCert    tls.Certificate
	serverCertChain tls.Certificate
}

// New generates a Set into a new directory under t.TempDir(). It fails the
// test on error.
func New(t testing.TB) *Set {
	t.Helper()
	s, err := Generate(t.TempDir())
	if err != nil {
		t.Fatalf("testcerts: %v", err)
	}
	return s
}

// Generate generates a Set and writes its files into dir, which must exist.
func Generate(dir string) (*Set, error) {
	ca, err := newCA("biregister test CA")
	if err != nil {
		return nil, err
	}
	stranger, err := newCA("biregister stranger CA")
	if err != nil {
		return nil, err
	}
	server, err := ca.issue(x509.Certificate{
		Subject:     pkix.Name{CommonName: "biregister-test-server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	clientTemplate := x509.Certificate{
		Subject:     pkix.Name{CommonName: ClientCommonName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	client, err := ca.issue(clientTemplate)
	if err != nil {
		return nil, err
	}
	strangerClient, err := stranger.issue(clientTemplate)
	if err != nil {
		return nil, err
	}

	s := &Set{
		Dir:            dir,
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
		caPool:         x509.NewCertPool(),
		strangerPool:   x509.NewCertPool(),
	}
	s.caPool.AddCert(ca.cert)
	s.strangerPool.AddCert(stranger.cert)
	serverKey, err := keyBlock(server.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return nil, err
	}
	clientKey, err := keyBlock(client.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return nil, err
	}
	files := []struct {
		path  string
		block *pem.Block
	}{
		{s.CAFile, certBlock(ca.cert.Raw)},
		{s.ServerCertFile, certBlock(server.Certificate[0])},
		{s.ServerKeyFile, serverKey},
		{s.ClientCertFile, certBlock(client.Certificate[0])},
		{s.ClientKeyFile, clientKey},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(f.block), 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	s.clientCert = client
	s.strangerCert = strangerClient
	s.serverCertChain = server
	return s, nil
}

// ClientOption selects what a client's TLS configuration presents and
// trusts.
type ClientOption int

const (
	// ClientCert makes the client present the client certificate.
	ClientCert ClientOption = iota + 1
	// StrangerCert makes the client present a certificate that the
	// stranger CA signed, which a server requiring client certificates
	// rejects.
	StrangerCert
	// WrongCA makes the client trust the stranger CA instead of the CA
	// that signed the server's certificate, so it rejects the server.
	WrongCA
)

// ClientTLS returns a new client TLS configuration: it trusts the CA and
// presents no certificate, unless opts say otherwise. The server name is
// left to the client, which takes the host of the endpoint.
func (s *Set) ClientTLS(opts ...ClientOption) *tls.Config {
	c := &tls.Config{RootCAs: s.caPool, MinVersion: tls.VersionTLS12}
	for _, o := range opts {
		switch o {
		case ClientCert:
			c.Certificates = []tls.Certificate{s.clientCert}
		case StrangerCert:
			c.Certificates = []tls.Certificate{s.strangerCert}
		case WrongCA:
			c.RootCAs = s.strangerPool
		default:
			panic(fmt.Sprintf("testcerts: unknown ClientOption %d", o))
		}
	}
	return c
}

// ServerTLS returns a server TLS configuration with the server certificate
// that, if clientAuth, requires a client certificate signed by the CA. It
// is for servers other than etcd, which reads the files.
func (s *Set) ServerTLS(clientAuth bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{s.serverCertChain}, MinVersion: tls.VersionTLS12}
	if clientAuth {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = s.caPool
	}
	return c
}

// authority is a self-signed CA that issues leaf certificates.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(name string) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour), // tolerate a clock a little behind
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	return &authority{cert: cert, key: key}, nil
}

// issue signs a leaf certificate for a new key, with the subject, names
// and extended key usages of template.
func (a *authority) issue(template x509.Certificate) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key of %s: %w", template.Subject.CommonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	template.SerialNumber = serial
	template.NotBefore = a.cert.NotBefore
	template.NotAfter = a.cert.NotAfter
	template.KeyUsage = x509.KeyUsageDigitalSignature
	template.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, &template, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate of %s: %w", template.Subject.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate of %s: %w", template.Subject.CommonName, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return serial, nil
}

func certBlock(der []byte) *pem.Block {
	return &pem.Block{Type: "CERTIFICATE", Bytes: der}
}

func keyBlock(key *ecdsa.PrivateKey) (*pem.Block, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}, nil
}
