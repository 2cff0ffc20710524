// What the command prints of what others wrote: names, values, prefixes and
// error messages reach a terminal as text, never as control sequences, and
// a message stays a line, however big what it quotes.

package main

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// quote returns s as is when it reads unambiguously as one field of a line,
// and Go-quoted otherwise: empty, with blanks or characters that do not
// print, or not UTF-8. strconv.Quote writes the bytes that are not UTF-8 and
// the control characters, C1 among them, as escapes.
func quote(s string) string {
	if s == "" || s[0] == '"' || !plain(s) {
		return strconv.Quote(s)
	}
	return s
}

// plain reports whether s is UTF-8 with no blank and no character that does
// not print. Printable ASCII, what names and addresses are made of, is
// checked byte by byte: a million-member table quotes two million fields.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return utf8.ValidString(s[i:]) &&
				strings.IndexFunc(s[i:], func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) < 0
		}
	}
	return true
}

// messageRunes is about the most characters a message prints of the text
// it is made of: enough for an endpoint list and an error, not for a huge
// key.
const messageRunes = 480

// message returns s fit for one line of a terminal: each byte that is not
// UTF-8 and each control character written as a Go escape (\x9b, \u009b,
// \n), and the middle of a long s left out, so that a message that quotes
// a huge argument keeps its start and its cause, at the end.
func message(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	s = b.String()
	if utf8.RuneCountInString(s) <= messageRunes {
		return s
	}
	runes := []rune(s)
	return string(runes[:messageRunes/2]) + "…" + string(runes[len(runes)-messageRunes/2:])
}

// complain writes a message, formatted as fmt.Sprintf does, as one line.
func complain(w io.Writer, format string, a ...any) {
	fmt.Fprintln(w, message(fmt.Sprintf(format, a...)))
}

// shortAttr cuts the strings and errors the library logs with its warnings
// short as message does; the handler quotes what does not print.
func shortAttr(_ []string, a slog.Attr) slog.Attr {
	switch v := a.Value.Any().(type) {
	case string:
		a.Value = slog.StringValue(message(v))
	case error:
		a.Value = slog.StringValue(message(v.Error()))
	}
	return a
}
