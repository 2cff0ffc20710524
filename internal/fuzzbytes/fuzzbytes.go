// Package fuzzbytes decodes a fuzz input, byte by byte, into the choices
// of a fuzz target: every input, even an empty one, decodes to something,
// so the fuzzer's mutations of one byte change one choice.
package fuzzbytes

// Reader hands out a fuzz input's bytes; once they run out it hands out
// zeros.
type Reader struct{ data []byte }

// New returns a Reader of data.
func New(data []byte) *Reader { return &Reader{data: data} }

// Empty reports whether the input is used up.
func (r *Reader) Empty() bool { return len(r.data) == 0 }

// Byte returns the next byte, or 0.
func (r *Reader) Byte() byte {
	if len(r.data) == 0 {
		return 0
	}
	b := r.data[0]
	r.data = r.data[1:]
	return b
}

// Intn returns a number in [0, n), 0 < n <= 256.
func (r *Reader) Intn(n int) int { return int(r.Byte()) % n }

// Bool returns a choice that is true about once in n.
func (r *Reader) Bool(n int) bool { return r.Intn(n) == 0 }

// String returns up to most of the next bytes, as many as the next byte
// says (fewer where the input ends), as they are: any bytes.
func (r *Reader) String(most int) string {
	n := min(r.Intn(most+1), len(r.data))
	s := string(r.data[:n])
	r.data = r.data[n:]
	return s
}

// Pick returns one of choices.
func Pick[T any](r *Reader, choices ...T) T { return choices[r.Intn(len(choices))] }
