package compliance

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Report is what Verify found.
type Report struct {
	// Records and Checkpoints are how many were checked.
	Records, Checkpoints int64
	// Head is the last record's sequence number checked.
	Head int64
	// BadSeq is the first record (or checkpoint's record) found wrong,
	// 0 when all is well; Problem says what is wrong with it.
	BadSeq  int64
	Problem string
}

// OK says nothing was found wrong.
func (r Report) OK() bool { return r.BadSeq == 0 }

// errStop ends a scan at the first problem.
var errStop = errors.New("stop")

// Verify walks the chain from record from (1 when 0), checking that the
// sequence numbers run on without a gap, that each record's record_hash
// is its content's (a purged record's is taken as given), that each
// prev_hash is the previous record's hash (from's own is taken as
// given), that each hash is the link of the two, and that every
// checkpoint from there on names the hash of its record and carries the
// signature of server's key pub. It stops at the first problem.
func Verify(ctx context.Context, store Store, server roomdag.ServerName, pub ed25519.PublicKey, from int64) (Report, error) {
	from = max(from, 1)
	var rep Report
	bad := func(seq int64, format string, args ...any) error {
		rep.BadSeq, rep.Problem = seq, fmt.Sprintf(format, args...)
		return errStop
	}
	cps := []storage.ComplianceCheckpoint{}
	if err := store.ComplianceCheckpoints(ctx, from, func(c storage.ComplianceCheckpoint) error {
		cps = append(cps, c) // checkpoints are few: one per CheckpointRecords
		return nil
	}); err != nil {
		return rep, err
	}
	var prev string
	expect := from
	err := store.ScanCompliance(ctx, storage.ComplianceFilter{FromSeq: from}, func(r storage.ComplianceRecord) error {
		if r.Seq != expect {
			return bad(expect, "record %d is missing (next is %d)", expect, r.Seq)
		}
		expect++
		if !r.Purged {
			rh, err := RecordHash(r)
			if err != nil {
				return bad(r.Seq, "record %d: %v", r.Seq, err)
			}
			if rh != r.RecordHash {
				return bad(r.Seq, "record %d: content does not match its record_hash", r.Seq)
			}
		}
		if r.Seq == 1 && r.PrevHash != zeroHash {
			return bad(r.Seq, "record 1: prev_hash is not zero")
		}
		if prev != "" && r.PrevHash != prev {
			return bad(r.Seq, "record %d: prev_hash is not record %d's hash (reordered or replaced)", r.Seq, r.Seq-1)
		}
		h, err := Link(r.PrevHash, r.RecordHash)
		if err != nil || h != r.Hash {
			return bad(r.Seq, "record %d: hash is not the link of prev_hash and record_hash", r.Seq)
		}
		prev = r.Hash
		rep.Records++
		rep.Head = r.Seq
		for len(cps) > 0 && cps[0].Seq == r.Seq {
			c := cps[0]
			cps = cps[1:]
			if c.Head != r.Hash {
				return bad(r.Seq, "checkpoint at %d: head is not record %d's hash", c.Seq, r.Seq)
			}
			if err := VerifyCheckpoint(server, pub, c); err != nil {
				return bad(r.Seq, "checkpoint at %d: %v", c.Seq, err)
			}
			rep.Checkpoints++
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return rep, nil
	}
	if err != nil {
		return rep, err
	}
	if len(cps) > 0 {
		rep.BadSeq, rep.Problem = expect, fmt.Sprintf("record %d is missing: checkpoint %d covers it", expect, cps[0].Seq)
	}
	return rep, nil
}
