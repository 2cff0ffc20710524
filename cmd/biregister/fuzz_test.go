// Fuzzing the command line: any arguments, never a panic or a hang, a
// usage error exits 2, the password is never printed, and nothing printed
// is a control sequence for a terminal.

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// fuzzGroup is what the fuzzed commands find under /svc/: members with odd
// names and values, one printable name that prints as it is, and keys that
// are not members; and, to groups, groups of odd names and one of a
// printable name, under /svc/ and beside it.
var fuzzGroup = map[string]string{
	"/svc/a":                            "10.0.0.1:80",
	"/svc/\xff\xfe":                     "non-UTF-8 \xff",
	"/svc/blank":                        "with blank",
	"/svc/\x1b[31mx":                    "\x1b[0m escape",
	"/svc/c1-\x9b31m":                   "\x9d0;8-bit OSC\x9c",
	"/svc/c1-\u009b31m":                 "\u009d0;C1 as UTF-8\u009c",
	"/svc/del\x7f":                      "bell\a",
	"/svc/" + fineName:                  "fine",
	"/svc/empty":                        "",
	"/svc/":                             "the prefix key",
	"/svc/sub/x":                        "a deeper key",
	"/svc/sub/\x9b2J":                   "a deeper key",
	"/svc/" + fineName + "/" + fineName: "a group of a printable name",
	"/svc\x9b/not-in-it":                "beside the group",
}

// fineName is a name that prints as it is.
const fineName = "fine-ü-名字"

// fineRow matches a row of the members table that holds fineName.
var fineRow = regexp.MustCompile(`(?m)^\*?\s+` + fineName + `\s+fine\s`)

// fineGroupRow matches a row of the groups table that holds the group
// fineName, led by fineName.
var fineGroupRow = regexp.MustCompile(`(?m)^` + fineName + `\s+1\s+` + fineName + `\s+\d+\s+\d+$`)

// fuzzArgsBound bounds one run of the command: the timeout a run may be
// given (see safeArgs) and then some.
const fuzzArgsBound = 15 * time.Second

// FuzzArgs runs the command with any arguments, "\x00" between them. So
// that no input reaches beyond this machine's test etcd, reads a file
// other than the test's own, or waits long, arguments that would (an
// endpoint other than "@etcd", TLS, a file other than "@garbage",
// "@empty", "@missing", a timeout beyond 5 s or below 100 ms) are run as
// the same command against the test etcd instead (see safeArgs). The
// context is already cancelled: watch prints the group and returns.
func FuzzArgs(f *testing.F) {
	for _, v := range []string{"ENDPOINTS", "CACERT", "CERT", "KEY", "INSECURE_SKIP_TLS_VERIFY", "USER", "PASSWORD"} {
		f.Setenv("ETCDCTL_"+v, "")
	}
	cluster := etcdtest.Start(f, 1)
	client := cluster.Client(f)
	for k, v := range fuzzGroup {
		if _, err := client.Put(context.Background(), k, v); err != nil {
			f.Fatal(err)
		}
	}
	dir := f.TempDir()
	files := map[string]string{
		"@garbage": filepath.Join(dir, "garbage.pem"),
		"@empty":   filepath.Join(dir, "empty.pem"),
		"@missing": filepath.Join(dir, "missing.pem"),
	}
	if err := os.WriteFile(files["@garbage"], []byte("not a certificate"), 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(files["@empty"], nil, 0o600); err != nil {
		f.Fatal(err)
	}
	tokens := map[string]string{"@etcd": cluster.Endpoints()[0]}
	for k, v := range files {
		tokens[k] = v
	}
	// Seeds: testdata/fuzz/FuzzArgs.
	f.Fuzz(func(t *testing.T, joined string) {
		leakcheck.VerifyNoLeaks(t)
		var args []string
		if joined != "" {
			args = strings.Split(joined, "\x00")
		}
		for i := range args {
			for token, v := range tokens {
				args[i] = strings.ReplaceAll(args[i], token, v)
			}
		}
		args, password, printable := safeArgs(args, tokens)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var stdout, stderr bytes.Buffer
		done := make(chan int, 1)
		go func() { done <- run(ctx, args, &stdout, &stderr) }()
		var code int
		select {
		case code = <-done:
		case <-time.After(fuzzArgsBound):
			t.Fatalf("biregister %q still runs after %v", args, fuzzArgsBound)
		}
		t.Logf("biregister %q -> %d\nstdout:\n%sstderr:\n%s", args, code, stdout.String(), stderr.String())
		usageError := wantsUsageError(args)
		switch {
		case usageError && code != 2:
			t.Fatalf("biregister %q: a usage error exits %d, want 2\nstderr: %s", args, code, stderr.String())
		case !usageError && code == 2:
			t.Fatalf("biregister %q exits 2, but its arguments are right; stderr: %s", args, stderr.String())
		case code == 2 && stdout.Len() > 0:
			t.Fatalf("biregister %q exits 2, and prints to stdout: %s", args, stdout.String())
		case code != 0 && !strings.Contains(stderr.String(), "biregister") && !strings.Contains(stderr.String(), "usage:"):
			t.Fatalf("biregister %q exits %d without saying why: %q", args, code, stderr.String())
		case code < 0 || code > 2:
			t.Fatalf("biregister %q exits %d", args, code)
		}
		// Whatever the group and the arguments hold, what reaches a terminal
		// is text, and a printable name prints as it is.
		for name, out := range map[string]string{"stdout": stdout.String(), "stderr": stderr.String()} {
			if bad := unsafeText(out); bad != "" {
				t.Fatalf("biregister %q prints on %s a %s:\n%q", args, name, bad, out)
			}
		}
		if code == 0 && listsGroup(args) {
			fine := fineRow
			if args[0] == "groups" {
				fine = fineGroupRow
			}
			if !fine.MatchString(stdout.String()) {
				t.Fatalf("biregister %q does not print %s as it is:\n%s", args, fineName, stdout.String())
			}
		}
		// The password shows nowhere, unless something that is printed
		// holds it too.
		if len(password) >= 8 && !strings.Contains(printable, password) &&
			(strings.Contains(stdout.String(), password) || strings.Contains(stderr.String(), password)) {
			t.Fatalf("biregister %q prints the password %q:\nstdout: %s\nstderr: %s", args, password, stdout.String(), stderr.String())
		}
	})
}

// safeArgs returns args if running them stays on this machine's test etcd
// and files and ends quickly, or else the same command and prefix with the
// same flags, where the endpoints become the test etcd's, TLS goes, files
// become one of the test's, and the timeout is brought within 100 ms to
// 5 s. It also returns the password the arguments give, and what else
// of theirs the command may print, with the group's keys and values.
func safeArgs(args []string, tokens map[string]string) (safeArgs []string, password, printable string) {
	if len(args) == 0 || (args[0] != "members" && args[0] != "watch" && args[0] != "groups") {
		return args, "", ""
	}
	fs, o := newFlagSet()
	prefix, err := parseArgs(fs, args[1:])
	user := o.user
	password = o.password
	if name, pw, ok := strings.Cut(o.user, ":"); ok {
		user, password = name, pw
	}
	if err != nil {
		return args, "", ""
	}
	printable = strings.Join([]string{synopsis, args[0], prefix, o.endpoints, user, o.cacert, o.cert, o.key,
		tokens["@etcd"], strings.Join(slices.Collect(maps.Keys(fuzzGroup)), "\n"),
		strings.Join(slices.Collect(maps.Values(fuzzGroup)), "\n")}, "\n")
	safe := o.timeout <= 0 || (o.timeout >= 100*time.Millisecond && o.timeout <= 5*time.Second)
	o.timeout = min(max(o.timeout, 100*time.Millisecond), 5*time.Second)
	if o.insecureSkipVerify {
		safe, o.insecureSkipVerify = false, false
	}
	var endpoints []string
	for _, ep := range strings.Split(o.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep == "" {
			continue
		}
		if ep != tokens["@etcd"] {
			safe, ep = false, tokens["@etcd"]
		}
		endpoints = append(endpoints, ep)
	}
	o.endpoints = strings.Join(endpoints, ",")
	for _, file := range []*string{&o.cacert, &o.cert, &o.key} {
		if *file != "" && *file != tokens["@garbage"] && *file != tokens["@empty"] && *file != tokens["@missing"] {
			safe, *file = false, tokens["@missing"]
		}
	}
	if safe {
		return args, password, printable
	}
	same := []string{args[0], "-endpoints", o.endpoints, "-timeout", o.timeout.String(),
		"-user", o.user, "-password", o.password}
	for name, file := range map[string]string{"-cacert": o.cacert, "-cert": o.cert, "-key": o.key} {
		if file != "" {
			same = append(same, name, file)
		}
	}
	return append(same, "--", prefix), password, printable
}

// wantsUsageError reports whether args are wrong as a command line, by
// rules of its own: no command, an unknown one, flags the flag package
// refuses, not one prefix, no endpoints, a timeout that is not positive,
// a user and password that do not make a pair, a certificate without its
// key.
func wantsUsageError(args []string) bool {
	if len(args) == 0 {
		return true
	}
	switch args[0] {
	case "members", "watch", "groups":
	case "-h", "-help", "--help", "help":
		return false
	default:
		return true
	}
	fs, o := newFlagSet()
	var positional []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			return !errors.Is(err, flag.ErrHelp)
		}
		if fs.NArg() == 0 {
			break
		}
		positional, rest = append(positional, fs.Arg(0)), fs.Args()[1:]
	}
	// An empty prefix is the library's to refuse, after the TLS files
	// were read (exit 1 if they cannot be used).
	if len(positional) != 1 || (positional[0] == "" && o.cacert == "" && o.cert == "") {
		return true
	}
	if strings.TrimSpace(strings.ReplaceAll(o.endpoints, ",", "")) == "" || o.timeout <= 0 {
		return true
	}
	// Without etcdctl's variables: no name before a colon, a password in
	// both flags, a password without a user or a user without one.
	name, inUser, colon := strings.Cut(o.user, ":")
	if (colon && name == "") || (inUser != "" && o.password != "") {
		return true
	}
	return (inUser+o.password == "") != (name == "") || (o.cert == "") != (o.key == "")
}

// listsGroup reports whether args, run successfully, print the group
// under /svc/, as the first table, or the groups under /svc/.
func listsGroup(args []string) bool {
	fs, _ := newFlagSet()
	prefix, err := parseArgs(fs, args[1:])
	return err == nil && strings.TrimSuffix(prefix, "/") == "/svc"
}
