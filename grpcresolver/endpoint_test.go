package grpcresolver

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/resolver"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  Endpoint
	}{
		{"10.0.0.1:8080", Endpoint{Addr: "10.0.0.1:8080"}},
		{" 10.0.0.1:8080\n", Endpoint{Addr: "10.0.0.1:8080"}},
		{"[::1]:8080", Endpoint{Addr: "[::1]:8080"}},
		{"api.example.com:443", Endpoint{Addr: "api.example.com:443"}},
		{`{"addr":"10.0.0.1:8080"}`, Endpoint{Addr: "10.0.0.1:8080"}},
		{`{"addr":"10.0.0.1:8080","metadata":{"zone":"a","weight":"3"}}`,
			Endpoint{Addr: "10.0.0.1:8080", Metadata: map[string]string{"zone": "a", "weight": "3"}}},
		// Fields a newer server adds do not hide it from older clients.
		{`{"addr":"10.0.0.1:8080","version":2}`, Endpoint{Addr: "10.0.0.1:8080"}},
		// The normal form: one spelling for each address.
		{"10.0.0.1:08080", Endpoint{Addr: "10.0.0.1:8080"}},
		{`{"addr":"10.0.0.1:0080"}`, Endpoint{Addr: "10.0.0.1:80"}},
		{"[0:0::1]:80", Endpoint{Addr: "[::1]:80"}},
		{"[2001:DB8::0:1]:80", Endpoint{Addr: "[2001:db8::1]:80"}},
		{"[::ffff:10.0.0.1]:80", Endpoint{Addr: "10.0.0.1:80"}},
		{"[FE80::1%Eth0]:80", Endpoint{Addr: "[fe80::1%Eth0]:80"}},
		{"API.Example.COM:443", Endpoint{Addr: "api.example.com:443"}},
		{"[api.example.com]:443", Endpoint{Addr: "api.example.com:443"}},
		{"Bücher.example:443", Endpoint{Addr: "bücher.example:443"}},
	} {
		got, err := ParseEndpoint(tc.value)
		if assert.NoError(t, err, tc.value) {
			assert.Equal(t, tc.want, got, tc.value)
		}
	}
}

func TestParseEndpointRejects(t *testing.T) {
	for _, value := range []string{
		"",
		"garbage",
		"10.0.0.1",
		":8080",
		"10.0.0.1:",
		"10.0.0.1:http",
		"10.0.0.1:70000",
		"10.0.0.1:65536",
		"10.0.0.1:+80",
		"10.0.0.1:0x50",
		"10.0.0.1:-1",
		"gar bage:80",
		"http://10.0.0.1:8080",
		`{"addr":""}`,
		`{"metadata":{"zone":"a"}}`,
		`{"addr":"garbage"}`,
		`{"addr":"10.0.0.1:8080","metadata":{"weight":3}}`,
		`{"addr":"10.0.0.1:8080"`,
		`{}`,
	} {
		_, err := ParseEndpoint(value)
		assert.Error(t, err, "%q", value)
	}
}

// TestEndpointString checks that what String writes, ParseEndpoint reads.
func TestEndpointString(t *testing.T) {
	plain := Endpoint{Addr: "10.0.0.1:8080"}
	assert.Equal(t, "10.0.0.1:8080", plain.String())
	withMeta := Endpoint{Addr: "10.0.0.1:8080", Metadata: map[string]string{"zone": "a", "quote": `"{}`}}
	assert.JSONEq(t, `{"addr":"10.0.0.1:8080","metadata":{"zone":"a","quote":"\"{}"}}`, withMeta.String())
	for _, e := range []Endpoint{plain, withMeta} {
		got, err := ParseEndpoint(e.String())
		require.NoError(t, err)
		assert.Equal(t, e, got)
	}
}

func TestMetadata(t *testing.T) {
	e := Endpoint{Addr: "10.0.0.1:8080", Metadata: map[string]string{"zone": "a"}}.resolverEndpoint()
	require.Len(t, e.Addresses, 1)
	assert.Equal(t, "10.0.0.1:8080", e.Addresses[0].Addr)
	// The address carries nothing that would make gRPC reconnect when only
	// the metadata changes.
	assert.Nil(t, e.Addresses[0].Attributes)
	md := Metadata(e)
	assert.Equal(t, map[string]string{"zone": "a"}, md)
	md["zone"] = "changed"
	assert.Equal(t, map[string]string{"zone": "a"}, Metadata(e), "Metadata must return a copy")

	// gRPC compares attributes to tell whether an endpoint changed.
	same := Endpoint{Addr: "10.0.0.1:8080", Metadata: map[string]string{"zone": "a"}}.resolverEndpoint()
	other := Endpoint{Addr: "10.0.0.1:8080", Metadata: map[string]string{"zone": "b"}}.resolverEndpoint()
	assert.True(t, e.Attributes.Equal(same.Attributes))
	assert.False(t, e.Attributes.Equal(other.Attributes))

	assert.Nil(t, Metadata(Endpoint{Addr: "10.0.0.1:8080"}.resolverEndpoint()))
	assert.Nil(t, Metadata(resolver.Endpoint{}))
}

func ExampleEndpoint_String() {
	fmt.Println(Endpoint{Addr: "10.0.0.1:8080"})
	fmt.Println(Endpoint{Addr: "10.0.0.1:8080", Metadata: map[string]string{"zone": "a"}})
	// Output:
	// 10.0.0.1:8080
	// {"addr":"10.0.0.1:8080","metadata":{"zone":"a"}}
}
