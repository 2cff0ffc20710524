// Aligned columns: the layout of the command's tables, fast enough for a
// million rows.

package main

import (
	"bufio"
	"io"
	"strconv"
	"unicode/utf8"
)

// columnGap is the room between two columns.
const columnGap = 2

// alignedRunes is the widest field that widens its column: a longer one, a
// value of megabytes say, runs over into its own row's next columns rather
// than pad every row by as much.
const alignedRunes = 80

// columns writes rows in columns aligned as text/tabwriter aligns them, but
// for fields wider than alignedRunes, in a tenth of tabwriter's time: the
// caller finds each column's width in one pass (fit), and each row is built
// in one buffer, numbers and all, and written in one piece. Its user is one
// goroutine, which writes it all.
type columns struct {
	w     *bufio.Writer
	width []int  // of each column but the last, which is not padded
	line  []byte // the row being built
	field int    // how many fields line holds
}

// newColumns returns columns that write to out, as wide as the fields of
// header, which it does not write.
func newColumns(out io.Writer, header ...string) *columns {
	c := &columns{w: bufio.NewWriterSize(out, 64<<10), width: make([]int, len(header)-1)}
	for i := range c.width {
		c.width[i] = runes(header[i])
	}
	return c
}

// fit widens column i for s.
func (c *columns) fit(i int, s string) {
	if n := runes(s); n <= alignedRunes {
		c.width[i] = max(c.width[i], n)
	}
}

// fitNumber widens column i for n.
func (c *columns) fitNumber(i int, n int64) {
	var digits [20]byte
	c.width[i] = max(c.width[i], len(strconv.AppendInt(digits[:0], n, 10)))
}

// row writes a row of fields.
func (c *columns) row(fields ...string) {
	for _, f := range fields {
		c.text(f)
	}
	c.end()
}

// text adds s to the row.
func (c *columns) text(s string) {
	c.line = append(c.line, s...)
	c.pad(runes(s))
}

// number adds n to the row.
func (c *columns) number(n int64) {
	before := len(c.line)
	c.line = strconv.AppendInt(c.line, n, 10)
	c.pad(len(c.line) - before)
}

// pad pads the field just added, of written characters, to its column's
// width and the gap, unless it is the last.
func (c *columns) pad(written int) {
	if c.field < len(c.width) {
		for range max(c.width[c.field]-written, 0) + columnGap {
			c.line = append(c.line, ' ')
		}
	}
	c.field++
}

// end writes the row.
func (c *columns) end() {
	c.line = append(c.line, '\n')
	c.w.Write(c.line)
	c.line, c.field = c.line[:0], 0
}

// flush writes what the buffer holds.
func (c *columns) flush() { c.w.Flush() }

// runes returns how many characters s has, as text/tabwriter counts them.
func runes(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return i + utf8.RuneCountInString(s[i:])
		}
	}
	return len(s)
}
