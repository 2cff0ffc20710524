// The sentinel errors, matched with errors.Is.

package biregister

import "errors"

var (
	// ErrInvalidArgument is returned for an argument the library cannot use:
	// no endpoints, an empty prefix or name, a name with '/', ttl < 1, …
	ErrInvalidArgument = errors.New("biregister: invalid argument")
	// ErrNameTaken is returned when a live member already holds the name.
	ErrNameTaken = errors.New("biregister: name taken by a live member")
	// ErrClosed is returned by an operation on a closed Watcher or Register.
	ErrClosed = errors.New("biregister: closed")
)
