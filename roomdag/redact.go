package roomdag

// Redact applies the redaction algorithm of room version v and returns the
// redacted event as canonical JSON, without "unsigned". It is used both to
// redact events and to compute reference hashes and signatures, so it must
// match other servers byte for byte.
//
// Spec: rooms/v1 "Redactions" (v1-v5, which keep m.room.aliases' aliases),
// rooms/v6 (aliases no longer kept), rooms/v8 (join_rules keep allow),
// rooms/v9 (members keep join_authorised_via_users_server), and, when
// v.UpdatedRedaction, rooms/v11 (MSC2176, MSC3821, MSC3989), which v12
// keeps.
//
// A missing content becomes {}; content that is not an object is an error,
// as it is for NewEventFromJSON. A type that is not a string keeps no
// content.
func Redact(v *RoomVersion, eventJSON []byte) ([]byte, error) {
	c, err := canonicalEvent(v, eventJSON)
	if err != nil {
		return nil, err
	}
	return redactCanonical(v, c)
}

// redactCanonical is Redact for a canonical object.
func redactCanonical(v *RoomVersion, c []byte) ([]byte, error) {
	var typ string
	if t, ok := cjGet(c, "type"); ok {
		typ, _ = cjString(t)
	}
	content, hasContent := cjGet(c, "content")
	if hasContent && !cjIsObject(content) {
		return nil, formatErr("content is not an object")
	}
	if !hasContent {
		content = []byte("{}")
	}
	content = redactContent(v, typ, content)

	out := make([]byte, 1, len(c))
	out[0] = '{'
	it := newCJIter(c)
	for k, val, ok := it.next(); ok; k, val, ok = it.next() {
		if !redactKeepsTop(v, k) {
			continue
		}
		if string(k) == "content" {
			val = content
		}
		out = cjAppendMember(out, k, val)
	}
	out = append(out, '}')
	if !hasContent {
		out = cjWith(out, "content", content)
	}
	return out, nil
}

// redactKeepsTop reports whether a top-level key survives redaction. Keys are
// as written in canonical JSON; the names below need no escaping, so a plain
// comparison is exact.
func redactKeepsTop(v *RoomVersion, key []byte) bool {
	switch string(key) {
	case "event_id", "type", "room_id", "sender", "state_key", "content",
		"hashes", "signatures", "depth", "prev_events", "auth_events",
		"origin_server_ts":
		return true
	case "origin", "membership", "prev_state":
		// No longer protected from v11 (MSC2176, MSC3989).
		return !v.UpdatedRedaction
	}
	return false
}

// redactContent keeps the content keys the algorithm allows for typ.
// content is a canonical object; so is the result.
func redactContent(v *RoomVersion, typ string, content []byte) []byte {
	if typ == TypeCreate && v.UpdatedRedaction {
		return content // v11: the whole create content is kept (MSC2176).
	}
	out := make([]byte, 1, 64)
	out[0] = '{'
	it := newCJIter(content)
	for k, val, ok := it.next(); ok; k, val, ok = it.next() {
		if typ == TypeMember && v.UpdatedRedaction && string(k) == "third_party_invite" {
			// v11 keeps third_party_invite.signed (MSC3821). Like Synapse, an
			// object without "signed" becomes {} and a non-object is dropped.
			if !cjIsObject(val) {
				continue
			}
			if signed, ok := cjGet(val, "signed"); ok {
				val = cjAppendMember([]byte{'{'}, []byte("signed"), signed)
				val = append(val, '}')
			} else {
				val = []byte("{}")
			}
			out = cjAppendMember(out, k, val)
			continue
		}
		if redactKeepsContent(v, typ, k) {
			out = cjAppendMember(out, k, val)
		}
	}
	return append(out, '}')
}

func redactKeepsContent(v *RoomVersion, typ string, key []byte) bool {
	k := string(key)
	switch typ {
	case TypeMember:
		return k == "membership" || k == "join_authorised_via_users_server" && v.RedactAuthorisedVia
	case TypeCreate:
		return k == "creator" // before v11 only
	case TypeJoinRules:
		return k == "join_rule" || k == "allow" && v.RedactJoinRulesAllow
	case TypePowerLevels:
		switch k {
		case "ban", "events", "events_default", "kick", "redact",
			"state_default", "users", "users_default":
			return true
		case "invite":
			return v.UpdatedRedaction // v11 (MSC2176)
		}
	case TypeHistoryVisibility:
		return k == "history_visibility"
	case TypeRedaction:
		return k == "redacts" && v.UpdatedRedaction // v11 (MSC2174, MSC2176)
	case TypeAliases:
		return k == "aliases" && v.RedactAliases
	}
	return false
}
