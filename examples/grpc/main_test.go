package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
)

// TestRun plays the whole story; run itself fails if a step does not
// happen as told or a call fails.
func TestRun(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, nil, &out); err != nil {
		t.Fatalf("run: %v; output:\n%s", err, out.String())
	}
	for _, want := range []string{"s2 stops serving", "answered by s1=", "done: no call failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
