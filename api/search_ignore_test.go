package api_test

import (
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestSearchIgnoredUsersAndBundles: /search leaves out the messages of
// users the searcher ignores, in results, count and context, but not
// their state events (spec: "Ignoring Users"); and its results and
// context events carry bundled aggregations, which leave ignored users
// out too, as /messages and /context do.
func TestSearchIgnoredUsersAndBundles(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, carol, map[string]any{"preset": "public_chat",
		"power_level_content_override": map[string]any{"users": map[string]any{carol.UserID: 100, bob.UserID: 50}}})
	joinRoom(t, alice, room)
	joinRoom(t, bob, room)
	setIgnored(t, alice, bob.UserID)

	root := sendText(t, carol, room, "kiwi root")
	bobMsg := sendText(t, bob, room, "kiwi from bob")
	carolReply := threadReply(t, carol, room, root, "reply from carol")
	bobReply := threadReply(t, bob, room, root, "reply from bob")
	orig := sendText(t, carol, room, "kiwi original")
	edit := editText(t, carol, room, orig, "kiwi changed")
	bobTopic := putState(t, bob, room, "m.room.topic", "", map[string]any{"topic": "kiwi topic"})
	names := map[string]string{root: "root", bobMsg: "bobMsg", carolReply: "carolReply", bobReply: "bobReply", orig: "orig", edit: "edit"}

	byID := func(r searchReply) map[string]clientEvent {
		out := map[string]clientEvent{}
		for _, res := range r.Results {
			out[res.Result.EventID] = res.Result
		}
		return out
	}
	recent := func(s string, kv ...any) map[string]any {
		return term(s, append([]any{"order_by", "recent", "filter", map[string]any{"rooms": []string{room}}}, kv...)...)
	}

	// alice ignores bob: his message is neither a result nor counted.
	// (Without keys the search would find his topic too: see below.)
	r := search(t, alice, recent("kiwi", "keys", []string{"content.body"}), "")
	if got, want := r.ids(), []string{edit, orig, root}; !slices.Equal(got, want) || r.Count != 3 {
		t.Errorf("alice's results %v (count %d), want %v (count 3)", r.ids(), r.Count, want)
	}
	// Results carry bundled aggregations: the thread summary without
	// bob's reply, the edit.
	res := byID(r)
	if got := bundleOf(t, res[root]).summary(names); got != "thread=carolReply/1/false" {
		t.Errorf("alice's bundle of the root: %s, want thread=carolReply/1/false", got)
	}
	if got := bundleOf(t, res[orig]).summary(names); got != "replace=edit" {
		t.Errorf("alice's bundle of the edited message: %s, want replace=edit", got)
	}

	// bob ignores nobody: he finds his own message, and his reply counts.
	r = search(t, bob, recent("kiwi", "keys", []string{"content.body"}), "")
	if got, want := r.ids(), []string{edit, orig, bobMsg, root}; !slices.Equal(got, want) || r.Count != 4 {
		t.Errorf("bob's results %v (count %d), want %v (count 4)", r.ids(), r.Count, want)
	}
	if got := bundleOf(t, byID(r)[root]).summary(names); got != "thread=bobReply/2/true" {
		t.Errorf("bob's bundle of the root: %s, want thread=bobReply/2/true", got)
	}

	// State events of ignored users are still found.
	r = search(t, alice, recent("kiwi"), "")
	if got, want := r.ids(), []string{bobTopic, edit, orig, root}; !slices.Equal(got, want) {
		t.Errorf("alice's search of every key %v, want bob's topic too: %v", got, want)
	}

	// Context leaves bob's messages out, and bundles its events too.
	r = search(t, alice, recent("kiwi root", "event_context", map[string]any{"before_limit": 0, "after_limit": 4}), "")
	if len(r.Results) != 1 || r.Results[0].Context == nil {
		t.Fatalf("context search: %+v", r.Results)
	}
	var after []string
	for _, ev := range r.Results[0].Context.EventsAfter {
		after = append(after, names[ev.EventID])
	}
	if want := []string{"carolReply", "orig"}; !slices.Equal(after, want) {
		t.Fatalf("events_after %v, want %v", after, want)
	}
	if got := bundleOf(t, r.Results[0].Context.EventsAfter[1]).summary(names); got != "replace=edit" {
		t.Errorf("bundle of the edited message in the context: %s, want replace=edit", got)
	}
}
