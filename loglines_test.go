package biregister_test

import (
	"context"
	"log/slog"
	"sync"
)

// logLines is a slog.Handler that hands every message to the test.
type logLines struct {
	mu   sync.Mutex
	msgs []string
	note chan struct{} // 1 slot: a message came
}

func newLogLines() *logLines { return &logLines{note: make(chan struct{}, 1)} }

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }

func (l *logLines) Handle(_ context.Context, rec slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, rec.Message)
	l.mu.Unlock()
	select {
	case l.note <- struct{}{}:
	default:
	}
	return nil
}

func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

// count returns how many messages equal msg so far.
func (l *logLines) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}
