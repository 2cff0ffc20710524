// Fuzzing the listing's page boundaries against a real etcd: groups whose
// keys share prefixes, sit right at a page's edge or differ by a "\x00",
// listed in tiny pages, with and without a stale cache to plan the ranges.

package biregister

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/fuzzbytes"
	"github.com/biregister/biregister/internal/leakcheck"
)

// listingNames are names that share prefixes and sort next to each other:
// a "\x00" suffix is the very next key, a "\xff" one far behind. "" is the
// prefix key itself, and those with '/' are deeper keys.
var listingNames = []string{"a", "a\x00", "a\x00\x00", "a\x01", "ab", "a/", "a/b", "", "\xff", "\xff\xff", "b", "b\x00"}

// FuzzListingPages writes a small group, with keys around it that are not
// in it, to a real etcd, lists it in pages of a few bytes, planned from no
// cache and from a stale one, and checks that each listing holds exactly
// the members one unpaginated Get returns at the listing's revision.
func FuzzListingPages(f *testing.F) {
	client := etcdtest.Start(f, 1).Client(f)
	kv := &rangeLog{KV: client.KV}
	client.KV = kv
	var inputs atomic.Int64
	// The client connects at its first request: before the leak checks.
	if _, err := client.Get(context.Background(), "/l/"); err != nil {
		f.Fatal(err)
	}
	// Seeds: testdata/fuzz/FuzzListingPages, and random groups (every byte
	// decodes to a choice).
	rng := rand.New(rand.NewPCG(3, 4))
	for range 6 {
		seed := make([]byte, 400)
		for i := range seed {
			seed[i] = byte(rng.Uint32())
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		leakcheck.VerifyNoLeaks(t)
		in := fuzzbytes.New(data)
		ctx := context.Background()
		// A group of its own for every input, an odd segment in its prefix;
		// the keys around it are not in it.
		prefix := fmt.Sprintf("/l/%06d/%s/", inputs.Add(1), in.String(3))
		group := strings.TrimSuffix(prefix, "/")
		defer func() {
			if _, err := client.Delete(ctx, group, clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
		}()
		ops := []clientv3.Op{clientv3.OpPut(group, "not in it"), clientv3.OpPut(group+"0", "nor this"), clientv3.OpPut(group+".", "nor this")}
		pageBytes := 1 + int(in.Byte())*3
		// Keys: awkward names, names built on earlier ones, any bytes.
		var names []string
		for range in.Intn(48) {
			var name string
			switch k := in.Intn(4); {
			case k == 0 && len(names) > 0:
				name = names[in.Intn(len(names))] + fuzzbytes.Pick(in, "\x00", "\xff", "0", "/x", "\x00\x00")
			case k == 1:
				name = in.String(6)
			default:
				name = fuzzbytes.Pick(in, listingNames...)
			}
			names = append(names, name)
			ops = append(ops, clientv3.OpPut(prefix+name, strings.Repeat("v", in.Intn(150))))
			// Some transactions of several keys, some of one: create
			// revisions shared and not.
			if in.Bool(3) {
				if err := put(ctx, client, ops); err != nil {
					t.Fatal(err)
				}
				ops = nil
			}
		}
		if err := put(ctx, client, ops); err != nil {
			t.Fatal(err)
		}
		// A stale cache: some of the names, some names etcd lacks, sizes
		// that mislead the plan.
		var cached []Member
		seen := map[string]bool{}
		for range in.Intn(40) {
			name := fuzzbytes.Pick(in, listingNames...)
			if len(names) > 0 && in.Bool(2) {
				name = names[in.Intn(len(names))]
			}
			if !seen[name] && name != "" && !strings.Contains(name, "/") {
				seen[name] = true
				cached = append(cached, Member{Name: name, Value: strings.Repeat("c", in.Intn(200)), CreateRevision: int64(len(cached) + 1)})
			}
		}
		stale, _, _ := emptySnapshot(0).replace(cached, nil, 1, 0)
		for _, s := range []*snapshot{emptySnapshot(0), stale} {
			kv.take() // the writes' reads
			l, err := listGroup(ctx, lister{client: client, prefix: prefix, pageBytes: pageBytes}, s, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			listed, header := l.members, l.header
			pages := kv.take()
			requireListedAsEtcd(t, client, prefix, listed, header.Revision)
			t.Logf("%d names, cache of %d, pages of %d bytes: %d members in %d requests",
				len(names), s.names.size, pageBytes, len(listed), len(pages))
		}
	})
}

func put(ctx context.Context, client *clientv3.Client, ops []clientv3.Op) error {
	// etcd refuses a key twice in one transaction: the last put wins.
	var last []clientv3.Op
	seen := map[string]bool{}
	for _, op := range slices.Backward(ops) {
		if !seen[string(op.KeyBytes())] {
			seen[string(op.KeyBytes())] = true
			last = append(last, op)
		}
	}
	if len(last) == 0 {
		return nil
	}
	_, err := client.Txn(ctx).Then(last...).Commit()
	return err
}
