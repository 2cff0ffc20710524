package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
)

// TestRun plays the whole story; run itself fails if a step does not
// happen as told.
func TestRun(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, nil, &out); err != nil {
		t.Fatalf("run: %v; output:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "b became the leader") {
		t.Errorf("output does not tell that b became the leader:\n%s", out.String())
	}
}
