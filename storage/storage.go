// Package storage holds what every storage engine shares: the sentinel
// errors that callers test with errors.Is. Engines live in sub-packages
// (sqlite/); each consuming package declares the interface it needs.
package storage

import "errors"

var (
	// ErrNotFound: the row asked for does not exist.
	ErrNotFound = errors.New("storage: not found")
	// ErrConflict: a unique key (user ID, alias, transaction ID) is taken.
	ErrConflict = errors.New("storage: conflict")
)
