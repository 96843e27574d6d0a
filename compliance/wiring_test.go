package compliance_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/testserver"
)

// With the archive on, new rooms cannot be encrypted unless the operator
// says otherwise (refuse_room_encryption defaults to on: encrypted rooms
// cannot be archived readably), and legal holds made and released through
// the admin API are archived as admin actions.
func TestComplianceDefaultsAndHoldRecords(t *testing.T) {
	encrypted := map[string]any{"initial_state": []any{map[string]any{"type": "m.room.encryption", "state_key": "",
		"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}
	srv := startArchiving(t, testserver.Options{})
	alice := srv.Register("alice")
	if r := alice.Do("POST", "/_matrix/client/v3/createRoom", encrypted); r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("encrypted room with compliance on: %d %s", r.Status, r.Body)
	}

	allowed := false
	open := startArchiving(t, testserver.Options{Configure: func(c *configs.Config) { c.RefuseRoomEncryption = &allowed }})
	if r := open.Register("bob").Do("POST", "/_matrix/client/v3/createRoom", encrypted); r.Status != http.StatusOK {
		t.Fatalf("encrypted room with refuse_room_encryption: false: %d %s", r.Status, r.Body)
	}

	admin := registerAdmin(t, srv, "auditor")
	var hold struct {
		ID int64 `json:"hold_id"`
	}
	r := admin.Do("POST", "/_persistentchat/admin/v1/holds", map[string]any{"user_id": alice.UserID, "reason": "case 42"})
	if r.Status != http.StatusOK {
		t.Fatalf("hold: %d %s", r.Status, r.Body)
	}
	if err := r.JSON(&hold); err != nil || hold.ID == 0 {
		t.Fatalf("hold answer %s: %v", r.Body, err)
	}
	if r := admin.Do("POST", "/_persistentchat/admin/v1/holds/"+strconv.FormatInt(hold.ID, 10)+"/release", map[string]any{}); r.Status != http.StatusOK {
		t.Fatalf("release: %d %s", r.Status, r.Body)
	}
	settle(t, srv)
	rs, _ := records(t, export(t, admin, "format=jsonl"))
	for _, action := range []string{`"action":"hold.create"`, `"action":"hold.release"`} {
		if !archivedIn(rs, compliance.KindAdminAction, action) {
			t.Errorf("no %s admin action archived", action)
		}
	}
	if !archivedIn(rs, compliance.KindAdminAction, `"reason":"case 42"`) {
		t.Error("the hold's reason is not archived")
	}
}

// archivedIn reports whether a record of kind holds every substr.
func archivedIn(rs []storage.ComplianceRecord, kind string, substr ...string) bool {
next:
	for _, r := range rs {
		if r.Kind != kind {
			continue
		}
		for _, s := range substr {
			if !strings.Contains(r.Payload, s) {
				continue next
			}
		}
		return true
	}
	return false
}
