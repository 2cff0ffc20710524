package etcdtest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/biregister/biregister/internal/testcerts"
)

// Options says how StartWith sets up a cluster. The zero value gives what
// Start(t, 1) gives: one member serving plain gRPC without authentication.
//
//	c := etcdtest.StartWith(t, etcdtest.Options{
//		TLS: etcdtest.MutualTLS,
//		Auth: &etcdtest.Auth{
//			RootPassword: "root-secret",
//			Users: []etcdtest.User{{Name: "svc", Password: "svc-secret", Prefix: "/svc/"}},
//		},
//	})
//	tlsConfig := c.Certs().ClientTLS(testcerts.ClientCert)
type Options struct {
	// Members is the size of the cluster; 0 means 1.
	Members int
	// TLS is how the members secure their client ports. Their peer ports
	// stay plain.
	TLS TLSMode
	// Auth, if not nil, enables etcd's authentication with these users.
	Auth *Auth
}

// TLSMode is how members secure their client ports.
type TLSMode int

const (
	// PlainText serves plain gRPC: http endpoints.
	PlainText TLSMode = iota
	// ServerTLS serves TLS with a certificate that Cluster.Certs signed:
	// https endpoints, and clients need the CA to trust the members.
	ServerTLS
	// MutualTLS is ServerTLS that also requires every client to present a
	// certificate signed by the same CA. With Auth, etcd then takes the
	// common name of a client's certificate (testcerts.ClientCommonName)
	// as the user of a request that carries no token.
	MutualTLS
)

// Auth is the authentication set-up of a cluster: a root user, and users
// whose roles may read and write one key prefix each. By default the
// members issue etcd's "simple" tokens, which live in a member's memory
// only: after a Restart, clients log in again when told their token is
// invalid. An etcd client given a user and a password, as Client's is,
// cannot against etcd 3.4: it sends its token with its login too, and 3.4
// refuses a login that carries a token it no longer takes (expired, or
// forgotten by a restart), so the client logs in again and again until the
// request's deadline. Against 3.4, take a new Client once a token may have
// expired.
type Auth struct {
	// RootPassword is the password of the user root, who may do anything.
	RootPassword string
	// Users are the other users.
	Users []User
	// JWT makes the members issue JWT tokens signed with a key the harness
	// generates (RS256), which stay valid across a restart.
	JWT bool
	// TokenTTL is how long a token stays valid: a simple token from its
	// last use, a JWT from its issue. It must be whole seconds. Zero keeps
	// etcd's default for simple tokens (5 minutes) and gives JWTs 10
	// minutes.
	TokenTTL time.Duration
}

// User is a user of a cluster with auth enabled. Its role, named after it,
// may read and write the keys under Prefix and nothing else; a user with no
// Prefix may read and write nothing. Any user may grant, renew and revoke
// leases, except that etcd refuses to revoke a lease that holds a key the
// user may not write.
type User struct {
	Name     string
	Password string
	Prefix   string
}

// RootUser is the name of etcd's super-user.
const RootUser = "root"

func (o Options) check() error {
	if o.Members < 0 {
		return fmt.Errorf("cluster size %d, need at least 1", o.Members)
	}
	if o.TLS < PlainText || o.TLS > MutualTLS {
		return fmt.Errorf("unknown TLSMode %d", o.TLS)
	}
	if o.Auth == nil {
		return nil
	}
	if o.Auth.RootPassword == "" {
		return errors.New("auth without a root password")
	}
	if ttl := o.Auth.TokenTTL; ttl < 0 || ttl%time.Second != 0 {
		return fmt.Errorf("token ttl %v, need whole seconds", ttl)
	}
	for _, u := range o.Auth.Users {
		if u.Name == "" || u.Name == RootUser || u.Password == "" {
			return fmt.Errorf("user %q: need a name other than root, and a password", u.Name)
		}
	}
	return nil
}

// Certs returns the certificates of a cluster that serves TLS, or nil for
// one that does not. Clients get their TLS configuration from its
// ClientTLS method.
func (c *Cluster) Certs() *testcerts.Set {
	return c.certs
}

// clientConfig returns the configuration of a client of the harness for
// eps: it connects with TLS and presents the client certificate if the
// members serve TLS, authenticates as root if the cluster has auth, and
// logs nothing.
func (c *Cluster) clientConfig(eps []string) clientv3.Config {
	cfg := clientv3.Config{Endpoints: eps, Logger: zap.NewNop()}
	if c.certs != nil {
		cfg.TLS = c.certs.ClientTLS(testcerts.ClientCert)
	}
	if c.opts.Auth != nil {
		// Before auth is enabled, etcd answers the authentication with
		// ErrAuthNotEnabled, on which the client goes on without a token.
		cfg.Username = RootUser
		cfg.Password = c.opts.Auth.RootPassword
	}
	return cfg
}

// setUpAuth creates the users and roles of c.opts.Auth and enables auth,
// on a new cluster whose members all serve. Without Auth it does nothing.
// It talks to the members directly, not through their fronts, which Wipe
// keeps closed until auth is on.
func (c *Cluster) setUpAuth(ctx context.Context) error {
	a := c.opts.Auth
	if a == nil {
		return nil
	}
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.ClientURL.String()
	}
	cfg := c.clientConfig(eps)
	cfg.DialTimeout = dialTimeout
	cfg.Context = ctx
	cli, err := clientv3.New(cfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	// etcd enables auth only once root exists and holds the root role,
	// which needs no creating.
	if _, err := cli.UserAdd(ctx, RootUser, a.RootPassword); err != nil {
		return fmt.Errorf("add user %s: %w", RootUser, err)
	}
	if _, err := cli.UserGrantRole(ctx, RootUser, "root"); err != nil {
		return fmt.Errorf("grant role root to %s: %w", RootUser, err)
	}
	for _, u := range a.Users {
		role := u.Name
		if _, err := cli.RoleAdd(ctx, role); err != nil {
			return fmt.Errorf("add role %s: %w", role, err)
		}
		if u.Prefix != "" {
			end := clientv3.GetPrefixRangeEnd(u.Prefix)
			if _, err := cli.RoleGrantPermission(ctx, role, u.Prefix, end, clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
				return fmt.Errorf("grant %s read-write on %q: %w", role, u.Prefix, err)
			}
		}
		if _, err := cli.UserAdd(ctx, u.Name, u.Password); err != nil {
			return fmt.Errorf("add user %s: %w", u.Name, err)
		}
		if _, err := cli.UserGrantRole(ctx, u.Name, role); err != nil {
			return fmt.Errorf("grant role %s to %s: %w", role, u.Name, err)
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enable auth: %w", err)
	}
	return nil
}

// jwtAuthToken writes a new RSA key pair to dir and returns the --auth-token
// value that makes a member sign its tokens with it, valid for ttl (10
// minutes if 0).
func jwtAuthToken(dir string, ttl time.Duration) (string, error) {
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	public, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", err
	}
	privateFile, publicFile := filepath.Join(dir, "jwt.key"), filepath.Join(dir, "jwt.pub")
	for file, block := range map[string]*pem.Block{
		privateFile: {Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)},
		publicFile:  {Type: "PUBLIC KEY", Bytes: public},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("jwt,pub-key=%s,priv-key=%s,sign-method=RS256,ttl=%v", publicFile, privateFile, ttl), nil
}

// frontEndpoint returns the endpoint of a member's front proxy with the
// scheme the members serve.
func (c *Cluster) frontEndpoint(ep string) string {
	if c.certs != nil {
		// The proxy forwards bytes, so TLS passes through it end to end.
		return "https://" + strings.TrimPrefix(ep, "http://")
	}
	return ep
}
