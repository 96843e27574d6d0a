package postgres

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkJSONText compares reading one field of 1000 stored events
// through json (what JSONText does) and through jsonb.
func BenchmarkJSONText(b *testing.B) {
	db, err := openTestPools(Options{DSN: testDSN(b), MinConns: 1, MaxConns: 2}, discard())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	pad := strings.Repeat("x", 300) // about a membership event's signatures and hashes
	if _, err := db.w.Exec(`INSERT INTO events (stream_pos, event_id, room_nid, type, state_key, sender, depth, origin_ts, json, state_before, state_after)
		SELECT g, '$' || g, 1, 'm.room.member', '@u' || g || ':x', '@u:x', g, 0,
			convert_to('{"content":{"membership":"join","displayname":"User ' || g || '"},"sigs":"` + pad + `","type":"m.room.member"}', 'UTF8'), 0, 0
		FROM generate_series(1, 1000) g`); err != nil {
		b.Fatal(err)
	}
	for name, expr := range map[string]string{
		"json":                   Dialect{}.JSONText("json", "content", "membership"),
		"jsonb":                  `(convert_from(json, 'UTF8')::jsonb #>> '{content,membership}')`,
		"json-without-nul-guard": `(convert_from(json, 'UTF8')::json #>> '{content,membership}')`,
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				var n int
				if err := db.r.QueryRow(fmt.Sprintf(`SELECT count(*) FROM events WHERE %s = 'join'`, expr)).Scan(&n); err != nil || n != 1000 {
					b.Fatal(n, err)
				}
			}
		})
	}
}
