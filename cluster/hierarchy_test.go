package cluster_test

import (
	"fmt"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestHierarchyPagesAcrossProcesses: a /hierarchy walk begun on A goes on
// from its next_batch on B and then on C: every room once, none
// repeated, in the order one process gives; a token is refused to another
// user on any process.
func TestHierarchyPagesAcrossProcesses(t *testing.T) {
	hs := testserver.Cluster(t, 3, testserver.Options{})
	alice := hs[0].Register("alice")
	space := alice.CreateRoom(map[string]any{"preset": "public_chat", "creation_content": map[string]any{"type": "m.space"}})
	want := []string{space}
	for i := range 6 {
		room := alice.CreateRoom(map[string]any{"preset": "public_chat", "name": fmt.Sprintf("room %d", i)})
		alice.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(space)+"/state/m.space.child/"+url.PathEscape(room),
			map[string]any{"via": []string{"localhost"}, "order": fmt.Sprintf("%02d", i)}, nil)
		want = append(want, room)
	}
	type page struct {
		Rooms []struct {
			RoomID string `json:"room_id"`
		} `json:"rooms"`
		NextBatch string `json:"next_batch"`
	}
	path := "/_matrix/client/v1/rooms/" + url.PathEscape(space) + "/hierarchy?limit=3"
	var got []string
	from := ""
	var tokens []string
	for step := 0; ; step++ {
		q := path
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		var p page
		alice.On(hs[step%3]).MustDo("GET", q, nil, &p)
		for _, r := range p.Rooms {
			got = append(got, r.RoomID)
		}
		if p.NextBatch == "" {
			break
		}
		if step > 5 {
			t.Fatal("the walk does not end")
		}
		from = p.NextBatch
		tokens = append(tokens, from)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("walk across processes: %v, want %v", got, want)
	}
	bob := hs[1].Register("bob")
	for k := range hs {
		r := bob.On(hs[k]).Do("GET", path+"&from="+url.QueryEscape(tokens[0]), nil)
		if r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
			t.Errorf("alice's token used by bob on process %d: %d %s", k, r.Status, r.Body)
		}
	}
}
