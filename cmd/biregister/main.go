// Command biregister shows the members of a biregister group as they are in a
// running etcd cluster, follows their changes, and lists the groups under a
// root.
//
// Usage:
//
//	biregister members [flags] <prefix>
//	biregister watch   [flags] <prefix>
//	biregister groups  [flags] <root>
//
// members prints a line on the group — how many members, at which etcd
// revision, its leader, the leader's term (the create revision of its
// registration) and how many revisions ago it registered — then the members
// oldest first (registration order) in a table, the leader (the oldest)
// marked with "*", with each member's create revision and age in revisions
// (etcd keeps no time of day with a key), and exits. watch prints the same,
// then one line per change as it happens (time, op, name, value, revision),
// and a LEADER line after each change that gives the group another leader,
// until interrupted (SIGINT or SIGTERM). It prints the table again after a
// RESYNC that stands for changes it could not print, as they came faster
// than its output took them. Names and values that contain blanks, control
// characters or bytes that are not UTF-8 are printed Go-quoted, and
// messages escape them: no control sequence reaches the terminal.
//
// groups prints a line on the groups under root — how many, with how many
// members in all, at which etcd revision — then one row a group, in name
// order: its name, its size, its leader, the leader's term and how many
// revisions ago it registered, as members says them, and exits. A group is
// a prefix root + name + "/" whose members are the keys directly under it:
// under /services/, the key /services/api/node-1 is member node-1 of group
// api. Deeper keys (/services/api/sub/x, and the markers of graceful leaves
// under /services/api/.leaving/) are no members, a prefix with no member of
// its own is no group, and keys directly under the root (/services/x) are
// in no group. It reads the keys of the whole root at one revision, without
// their values, in pages of bounded size (biregister.ListGroups); the
// leader's value is one "biregister members" away.
//
// Flags (the same for every command, before or after the prefix or root):
//
//	-endpoints list      comma-separated etcd endpoints (required)
//	-timeout d           how long to wait for etcd (default 5s)
//	-cacert file         verify the server with these PEM CA certificates
//	-cert file           client certificate, for mutual TLS (needs -key)
//	-key file            client private key (needs -cert)
//	-insecure-skip-tls-verify
//	                     use TLS without verifying the server (testing only)
//	-user name[:password]
//	-password password   etcd authentication
//
// The flags mirror etcdctl's, and so do the environment variables they fall
// back to: ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY,
// ETCDCTL_INSECURE_SKIP_TLS_VERIFY, ETCDCTL_USER and ETCDCTL_PASSWORD. A shell
// set up for etcdctl therefore works as it is, and ETCDCTL_PASSWORD keeps the
// password out of the process list, where any -password flag shows. A flag
// that is given wins over its variable, and so for the user: the name is
// -user's, or else ETCDCTL_USER's; the password is the one the flags give
// (-password, or -user name:password), or else the one the variables give
// (ETCDCTL_PASSWORD, or ETCDCTL_USER=name:password when the name comes from
// there). Flags that give it twice are an error, and so are variables that
// give it twice when no flag does. A user needs a password: biregister does
// not ask for one, as etcdctl does, since it may run in a pipe.
//
// Any TLS flag turns TLS on for endpoints written as host:port or
// https://host:port; an https:// endpoint alone uses TLS with the system's
// CA certificates. The password is never printed.
//
// Examples:
//
//	biregister members -endpoints 127.0.0.1:2379 /services/api/
//	biregister groups -endpoints 127.0.0.1:2379 /services/
//	ETCDCTL_ENDPOINTS=https://etcd1:2379,https://etcd2:2379 \
//	  biregister watch -cacert ca.pem -cert me.pem -key me-key.pem /services/api
//
// Exit status: 0 on success (and when watch is interrupted), 1 when etcd
// cannot be reached or read within -timeout or a TLS file cannot be used, 2
// for a wrong command line.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/biregister/biregister"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const synopsis = `usage: biregister members [flags] <prefix>   print the members, leader marked *
       biregister watch   [flags] <prefix>   print them, then every change until ^C
       biregister groups  [flags] <root>     print the groups under root: sizes, leaders

Each flag falls back to etcdctl's environment variable (ETCDCTL_ENDPOINTS,
ETCDCTL_CACERT, ..., ETCDCTL_PASSWORD). Flags:
`

const endpointsHint = "give the etcd endpoints with -endpoints, e.g. -endpoints 127.0.0.1:2379 " +
	"(comma-separated for several), or in ETCDCTL_ENDPOINTS"

// options are the command's flags. The flag set writes them all, and
// parseArgs the variables of those left unset, but user and password, which
// credentials reads beside the variables.
type options struct {
	endpoints          string
	timeout            time.Duration
	cacert, cert, key  string
	insecureSkipVerify bool
	user, password     string
}

func newFlagSet() (*flag.FlagSet, *options) {
	o := &options{}
	fs := flag.NewFlagSet("biregister", flag.ContinueOnError)
	// run reports errors itself, once, without the flag package's copy.
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.endpoints, "endpoints", "", "comma-separated etcd `endpoints`, e.g. 127.0.0.1:2379 or https://etcd1:2379 (required)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait for etcd")
	fs.StringVar(&o.cacert, "cacert", "", "verify the server with the CA certificates in this PEM `file`")
	fs.StringVar(&o.cert, "cert", "", "client certificate PEM `file`, for mutual TLS (needs -key)")
	fs.StringVar(&o.key, "key", "", "client private key PEM `file` (needs -cert)")
	fs.BoolVar(&o.insecureSkipVerify, "insecure-skip-tls-verify", false, "use TLS without verifying the server's certificate (testing only)")
	fs.StringVar(&o.user, "user", "", "etcd user as `name` or name:password")
	fs.StringVar(&o.password, "password", "", "etcd `password` of -user; ETCDCTL_PASSWORD keeps it out of ps")
	return fs, o
}

func usage(out io.Writer) {
	fs, _ := newFlagSet()
	fs.SetOutput(out)
	fmt.Fprint(out, synopsis)
	fs.PrintDefaults()
}

// run is the whole command, apart from the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	cmd := args[0]
	switch cmd {
	case "members", "watch", "groups":
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	default:
		complain(stderr, "biregister: unknown command %q", cmd)
		usage(stderr)
		return 2
	}
	fs, o := newFlagSet()
	prefix, err := parseArgs(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return 0
	}
	if err != nil {
		complain(stderr, "biregister %s: %v", cmd, err)
		fmt.Fprintln(stderr, "(biregister -h for help)")
		return 2
	}
	endpoints, ttl, opts, code := settings(o, stderr)
	if endpoints == nil {
		return code
	}
	switch cmd {
	case "members":
		members, revision, err := biregister.List(endpoints, prefix, ttl, opts...)
		if err != nil {
			return explain(stderr, err, endpoints, o.timeout)
		}
		printGroup(stdout, members, revision)
		return 0
	case "groups":
		groups, revision, err := biregister.ListGroups(endpoints, prefix, ttl, opts...)
		if err != nil {
			return explain(stderr, err, endpoints, o.timeout)
		}
		printGroups(stdout, groups, revision)
		return 0
	}
	w, err := biregister.NewWatcher(endpoints, prefix, ttl, opts...)
	if err != nil {
		return explain(stderr, err, endpoints, o.timeout)
	}
	defer w.Close()
	return watch(ctx, w, stdout)
}

// parseArgs parses the flags, which may come before and after the one
// argument, the prefix, and fills unset flags from the environment.
func parseArgs(fs *flag.FlagSet, args []string) (string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		return "", fmt.Errorf("want one prefix argument, got %d", len(positional))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// The user and password come from both, by rules of their own (see
	// credentials).
	for _, name := range []string{"endpoints", "cacert", "cert", "key", "insecure-skip-tls-verify"} {
		env := "ETCDCTL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if v := os.Getenv(env); v != "" && !set[name] {
			if err := fs.Set(name, v); err != nil {
				return "", fmt.Errorf("%s: %v", env, err)
			}
		}
	}
	return positional[0], nil
}

// settings turns the options into the library's arguments, or reports why
// it cannot and returns nil endpoints and the exit code.
func settings(o *options, stderr io.Writer) ([]string, int64, []biregister.Option, int) {
	fail := func(code int, format string, a ...any) ([]string, int64, []biregister.Option, int) {
		complain(stderr, "biregister: "+format, a...)
		return nil, 0, nil, code
	}
	var endpoints []string
	for _, ep := range strings.Split(o.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			endpoints = append(endpoints, ep)
		}
	}
	if len(endpoints) == 0 {
		return fail(2, "no etcd endpoints: %s", endpointsHint)
	}
	if o.timeout <= 0 {
		return fail(2, "-timeout must be positive, not %v", o.timeout)
	}
	user, password, err := credentials(o)
	if err != nil {
		return fail(2, "%v", err)
	}
	if (o.cert == "") != (o.key == "") {
		return fail(2, "-cert and -key go together: a client certificate needs its key")
	}
	tlsConfig, err := newTLSConfig(o)
	if err != nil {
		return fail(1, "%v", err)
	}
	// The library's dial and read bounds are the one -timeout, in the whole
	// seconds that its ttl argument counts.
	ttl := int64((o.timeout + time.Second - 1) / time.Second)
	return endpoints, ttl, []biregister.Option{
		biregister.WithDialTimeout(o.timeout),
		biregister.WithTLS(tlsConfig),
		biregister.WithAuth(user, password),
		// The library recovers from etcd outages by itself; its warnings are
		// what tells an operator why a watch went quiet.
		biregister.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn, ReplaceAttr: shortAttr}))),
	}, 0
}

// explain reports why the library could not reach or read etcd, and
// returns the exit code.
func explain(stderr io.Writer, err error, endpoints []string, timeout time.Duration) int {
	// The library's errors say "biregister: " already; once is enough.
	reason := strings.TrimPrefix(err.Error(), "biregister: ")
	switch {
	case errors.Is(err, biregister.ErrInvalidArgument):
		complain(stderr, "biregister: %s", reason)
		return 2
	case errors.Is(err, context.DeadlineExceeded):
		complain(stderr, "biregister: no answer from etcd at %s within %v (is it up? are -endpoints and the TLS flags right?): %s",
			strings.Join(endpoints, ","), timeout, reason)
	default:
		complain(stderr, "biregister: etcd at %s: %s", strings.Join(endpoints, ","), reason)
	}
	return 1
}

// newTLSConfig returns the TLS configuration the flags ask for, or nil for
// none. The minimum version is left to crypto/tls, whose default moves with
// the state of the art.
func newTLSConfig(o *options) (*tls.Config, error) {
	if o.cacert == "" && o.cert == "" && !o.insecureSkipVerify {
		return nil, nil
	}
	cfg := &tls.Config{InsecureSkipVerify: o.insecureSkipVerify}
	if o.cacert != "" {
		pem, err := os.ReadFile(o.cacert)
		if err != nil {
			return nil, fmt.Errorf("-cacert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-cacert: no PEM certificate in %s", o.cacert)
		}
	}
	if o.cert != "" {
		pair, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return nil, fmt.Errorf("-cert/-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
