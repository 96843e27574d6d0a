package sqlite

import (
	"context"
	"testing"
)

func TestPingAndStats(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping on an open database: %v", err)
	}
	stats := db.Stats()
	byName := map[string]int{}
	for _, s := range stats {
		byName[s.Name] = s.MaxOpen
	}
	if byName["read"] != 8 || byName["write"] != 1 {
		t.Errorf("Stats() = %+v; want a read pool of 8 and a write pool of 1", stats)
	}
	for _, s := range stats {
		if s.Open != s.InUse+s.Idle {
			t.Errorf("%s pool: open %d != in use %d + idle %d", s.Name, s.Open, s.InUse, s.Idle)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err == nil {
		t.Fatal("Ping on a closed database succeeded")
	}
}
