package grpcresolver

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

// Endpoint is what a server registers as its value so that clients can
// reach it: the address gRPC dials, and optional metadata for
// load-balancing decisions. Write it with String and read it with
// ParseEndpoint, so that registration and resolution always agree.
type Endpoint struct {
	// Addr is the host:port clients connect to, e.g. "10.0.0.1:8080" or
	// "[::1]:8080". The port is a number. ParseEndpoint returns it in its
	// normal form (see the package documentation).
	Addr string `json:"addr"`
	// Metadata is attached to the resolved endpoint; read it with Metadata.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// String returns the value to register: the plain address when there is no
// metadata, which any other reader of the group understands too, and the
// JSON form {"addr":…,"metadata":{…}} otherwise.
func (e Endpoint) String() string {
	if len(e.Metadata) == 0 {
		return e.Addr
	}
	// Marshalling a struct of strings cannot fail.
	b, _ := json.Marshal(e)
	return string(b)
}

// ParseEndpoint reads a member's value: a plain host:port, or a JSON object
// whose "addr" is one and whose optional "metadata" maps strings to
// strings. Surrounding white space is ignored, and so are unknown JSON
// fields, so that servers can add some before clients know them. The
// address comes back in its normal form (see the package documentation),
// so that two spellings of one server compare equal.
func ParseEndpoint(value string) (Endpoint, error) {
	v := strings.TrimSpace(value)
	var e Endpoint
	if strings.HasPrefix(v, "{") {
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			return Endpoint{}, fmt.Errorf("grpcresolver: invalid JSON endpoint: %w", err)
		}
	} else {
		e.Addr = v
	}
	addr, err := normalAddr(e.Addr)
	if err != nil {
		return Endpoint{}, err
	}
	e.Addr = addr
	return e, nil
}

// normalAddr returns addr in its normal form, or an error unless it is a
// host:port with a non-empty host and a numeric port: an empty host would
// make each client dial itself, and a value like "garbage" or "name:value"
// must not become a connection that never works. A host has no white space
// or control characters and does not start with '{': String writes such an
// address as it is, and ParseEndpoint would read it back trimmed, or as
// JSON.
//
// The normal form is what Go's dialer makes of the address: the port in
// decimal without leading zeros, an IP address as netip writes it (IPv6
// compressed and in lower case, an IPv4-mapped one as IPv4), and any other
// host, a DNS name, in lower case (ASCII only: DNS compares no other
// letters).
func normalAddr(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("grpcresolver: no address")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("grpcresolver: address %q is not host:port: %w", addr, err)
	}
	if host == "" || strings.HasPrefix(host, "{") || strings.ContainsFunc(host, func(r rune) bool {
		return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r)
	}) {
		return "", fmt.Errorf("grpcresolver: address %q has no valid host", addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", fmt.Errorf("grpcresolver: address %q has no valid port", addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	} else {
		host = lowerASCII(host)
	}
	return net.JoinHostPort(host, strconv.FormatUint(n, 10)), nil
}

// lowerASCII returns s with its ASCII letters in lower case, and s itself
// if it has none in upper case.
func lowerASCII(s string) string {
	if !strings.ContainsFunc(s, isUpperASCII) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if isUpperASCII(rune(c)) {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func isUpperASCII(r rune) bool { return 'A' <= r && r <= 'Z' }

// Metadata returns the metadata of an endpoint resolved by this package, or
// nil if it has none. The map is the caller's.
//
// The metadata lives in the endpoint's Attributes, which load-balancing
// policies read, and not in its address's, which identify the connection:
// a server that changes its metadata keeps its connections.
func Metadata(e resolver.Endpoint) map[string]string {
	m, _ := e.Attributes.Value(metadataKey{}).(metadata)
	return maps.Clone(m)
}

// metadataKey is the attributes key of an endpoint's metadata.
type metadataKey struct{}

// metadata is stored under metadataKey. gRPC compares attributes to tell
// whether an endpoint changed, and a map is not comparable with ==.
type metadata map[string]string

// Equal reports whether o is the same metadata.
func (m metadata) Equal(o any) bool {
	om, ok := o.(metadata)
	return ok && maps.Equal(m, om)
}

// resolverEndpoint returns e as gRPC's Endpoint.
func (e Endpoint) resolverEndpoint() resolver.Endpoint {
	re := resolver.Endpoint{Addresses: []resolver.Address{{Addr: e.Addr}}}
	if len(e.Metadata) > 0 {
		re.Attributes = attributes.New(metadataKey{}, metadata(maps.Clone(e.Metadata)))
	}
	return re
}
