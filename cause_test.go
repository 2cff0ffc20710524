package biregister

import "testing"

// Every cause has a name of its own, which logs and metrics say: a cause
// added without one would record with an empty attribute.
func TestCauseNames(t *testing.T) {
	seen := map[string]cause{}
	for c := range numCauses {
		name := c.String()
		if name == "" {
			t.Fatalf("cause %d has no name", c)
		}
		if other, ok := seen[name]; ok {
			t.Fatalf("causes %d and %d are both named %q", other, c, name)
		}
		seen[name] = c
	}
}
