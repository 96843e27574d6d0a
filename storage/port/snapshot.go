package port

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// snapshot copies the SQLite database at path, which a running server may
// be writing, to a new file beside it, with SQLite's online backup API in
// one step: the step holds a read transaction on the source for the time
// of the page copy, so the copy is one consistent state of the database
// (the last commit before the step began), and in WAL mode the server's
// writer is not blocked meanwhile.
//
// Why a copy rather than one read transaction over the live file for the
// whole port: the port also migrates the source to this build's schema,
// which must never happen under a running server of another build, and a
// read transaction held for minutes would stop the server's checkpoints and
// let its WAL grow for as long. The copy sits in the source's directory (the
// operator gave that file system room for the database; /tmp may be small
// or another file system), mode 0600 (it holds password and token hashes).
// remove deletes it and SQLite's files beside it.
func snapshot(ctx context.Context, path string) (copyPath string, remove func(), err error) {
	if _, err := os.Stat(path); err != nil {
		return "", nil, fmt.Errorf("the SQLite database: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".port-snapshot-*.db")
	if err != nil {
		return "", nil, fmt.Errorf("making the snapshot file: %w", err)
	}
	copyPath = f.Name()
	f.Close()
	remove = func() {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			os.Remove(copyPath + suffix)
		}
	}
	if err := backup(ctx, path, copyPath); err != nil {
		remove()
		return "", nil, fmt.Errorf("snapshot of %s: %w", path, err)
	}
	return copyPath, remove, nil
}

func backup(ctx context.Context, from, to string) error {
	// mode=ro: the port never writes to the source. busy_timeout: the
	// backup's read lock waits out a checkpoint or a recovery in progress.
	src, err := sql.Open("sqlite3", "file:"+from+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := sql.Open("sqlite3", "file:"+to)
	if err != nil {
		return err
	}
	defer dst.Close()
	sc, err := src.Conn(ctx)
	if err != nil {
		return err
	}
	defer sc.Close()
	dc, err := dst.Conn(ctx)
	if err != nil {
		return err
	}
	defer dc.Close()
	return dc.Raw(func(d any) error {
		return sc.Raw(func(s any) error {
			b, err := d.(*sqlite3.SQLiteConn).Backup("main", s.(*sqlite3.SQLiteConn), "main")
			if err != nil {
				return err
			}
			done, err := b.Step(-1) // every page, in one read transaction of the source
			if err == nil && !done {
				err = errors.New("backup stopped before the last page")
			}
			return errors.Join(err, b.Finish())
		})
	})
}
