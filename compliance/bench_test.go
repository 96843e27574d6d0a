package compliance_test

import (
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// BenchmarkSend is send throughput at 8 concurrent senders, each in a
// room of its own, with the archive off and on (the archiver keeps up
// inside the timing: the benchmark ends once it has archived every
// event).
func BenchmarkSend(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprint("archive=", on), func(b *testing.B) {
			opts := testserver.Options{}
			if on {
				opts.Configure = archiving
			}
			srv := testserver.Start(b, opts)
			const senders = 8
			cs := make([]*testserver.Client, senders)
			rooms := make([]string, senders)
			for i := range cs {
				cs[i] = srv.Register("sender")
				rooms[i] = cs[i].CreateRoom(map[string]any{"preset": "public_chat"})
			}
			b.ResetTimer()
			var wg sync.WaitGroup
			for i := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := i; j < b.N; j += senders {
						cs[i].SendText(rooms[i], fmt.Sprint("message ", j))
					}
				}()
			}
			wg.Wait()
			if on {
				pos, _ := srv.HS.DB().EventPos(b.Context())
				if err := srv.HS.Compliance.Wait(b.Context(), pos); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkArchiveCost is the archive's cost in send throughput, made
// robust to a shared machine's noise: two servers, one archiving, take
// turns in blocks of messages (8 concurrent senders each), so that both
// see the same load. An archiving block ends only once its archiver has
// archived every event of the block. b.N messages go to each server.
func BenchmarkArchiveCost(b *testing.B) {
	const senders, blocks = 8, 6
	type side struct {
		srv   *testserver.Server
		cs    []*testserver.Client
		rooms []string
		took  time.Duration
		cpu   time.Duration
	}
	mk := func(on bool) *side {
		opts := testserver.Options{}
		if on {
			// The defaults: a checkpoint per 1000 records or minute.
			opts.Configure = func(c *configs.Config) { c.Compliance.Enabled = true }
		}
		s := &side{srv: testserver.Start(b, opts)}
		for range senders {
			c := s.srv.Register("sender")
			s.cs = append(s.cs, c)
			s.rooms = append(s.rooms, c.CreateRoom(map[string]any{"preset": "public_chat"}))
		}
		return s
	}
	off, on := mk(false), mk(true)
	block := func(s *side, n int, archive bool) {
		start, cpu := time.Now(), processCPU()
		var wg sync.WaitGroup
		for i := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := i; j < n; j += senders {
					s.cs[i].SendText(s.rooms[i], fmt.Sprint("message ", j))
				}
			}()
		}
		wg.Wait()
		if archive {
			pos, _ := s.srv.HS.DB().EventPos(b.Context())
			if err := s.srv.HS.Compliance.Wait(b.Context(), pos); err != nil {
				b.Fatal(err)
			}
		}
		s.took += time.Since(start)
		s.cpu += processCPU() - cpu
	}
	b.ResetTimer()
	for k := range blocks {
		n := b.N / blocks
		if k < b.N%blocks {
			n++
		}
		// Alternate which goes first, so neither always follows the
		// other's background work.
		if k%2 == 0 {
			block(off, n, false)
			block(on, n, true)
		} else {
			block(on, n, true)
			block(off, n, false)
		}
	}
	offRate, onRate := float64(b.N)/off.took.Seconds(), float64(b.N)/on.took.Seconds()
	b.ReportMetric(offRate, "off_msgs/s")
	b.ReportMetric(onRate, "on_msgs/s")
	b.ReportMetric(100*(1-onRate/offRate), "cost_%")
	// CPU time per message (server and clients, all in this process)
	// depends little on what else the machine runs.
	offCPU, onCPU := float64(off.cpu.Microseconds())/float64(b.N), float64(on.cpu.Microseconds())/float64(b.N)
	b.ReportMetric(offCPU, "off_cpu_µs/msg")
	b.ReportMetric(onCPU, "on_cpu_µs/msg")
	b.ReportMetric(100*(onCPU/offCPU-1), "cpu_cost_%")
}

// archived is a server with n messages of one user's archived and
// sealed, and the user.
func archived(b *testing.B, n int) (*testserver.Server, string) {
	srv := testserver.Start(b, testserver.Options{Configure: archiving})
	c := srv.Register("alice")
	room := c.CreateRoom(map[string]any{"preset": "public_chat"})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; j < n; j += 8 {
				c.SendText(room, fmt.Sprint("message ", j))
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := srv.HS.ComplianceService().Status(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if st.Lag == 0 && st.Queued == 0 && st.SealedSeq == st.HeadSeq {
			return srv, c.UserID
		}
		if time.Now().After(deadline) {
			b.Fatalf("not settled: %+v", st)
		}
		pos, _ := srv.HS.DB().EventPos(b.Context())
		srv.HS.Compliance.Wait(b.Context(), pos)
	}
}

// BenchmarkExport is export speed in records per second (jsonl, every
// record, with its links and manifest), of the whole archive and of one
// user's conversations (which follows the user's memberships through
// the whole chain).
func BenchmarkExport(b *testing.B) {
	srv, alice := archived(b, 2000)
	x := srv.HS.ComplianceExporter()
	for _, q := range []compliance.Query{{Format: "jsonl"}, {Format: "jsonl", Actor: alice}} {
		b.Run("user="+q.Actor, func(b *testing.B) {
			var recs int64
			for range b.N {
				m, err := x.Export(b.Context(), io.Discard, q)
				if err != nil {
					b.Fatal(err)
				}
				recs += m.Records
			}
			b.ReportMetric(float64(recs)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkVerify is verify speed in records per second.
func BenchmarkVerify(b *testing.B) {
	srv, _ := archived(b, 2000)
	pub := srv.HS.ComplianceService().Public
	b.ResetTimer()
	var recs int64
	for range b.N {
		rep, err := compliance.Verify(b.Context(), srv.HS.DB(), roomdag.ServerName(srv.Config.ServerName), pub, 0)
		if err != nil || !rep.OK() {
			b.Fatal(rep, err)
		}
		recs += rep.Records
	}
	b.ReportMetric(float64(recs)/b.Elapsed().Seconds(), "records/s")
}
