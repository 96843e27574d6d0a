package push

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Limits on what a user may store, so that one user's rules stay small:
// Synapse has none, and the spec sets none. They are checked when a rule
// is written (PUT /pushrules answers 400 M_INVALID_PARAM or M_BAD_JSON);
// what they cannot bound, the time matching takes on a long event, is
// bounded by MaxEvalSteps. Together with MaxRules (all kinds, 500) and
// MaxRulesBytes they are listed in the README.
const (
	// MaxPatternBytes bounds a pattern (event_match, content rules).
	MaxPatternBytes = 1000
	// MaxConditions bounds the conditions of one rule.
	MaxConditions = 20
	// MaxActions bounds the actions of one rule.
	MaxActions         = 20
	maxConditionKeyLen = 1000
	// MaxRulesBytes bounds a user's stored rules as a whole, in bytes of
	// JSON: it is read into memory for every evaluation cache fill and
	// sent in every initial /sync (m.push_rules).
	MaxRulesBytes = 256 << 10
)

// CheckActions validates actions as Synapse does: the strings notify,
// dont_notify and coalesce (the last two are historical and ignored when
// evaluating, but accepted and stored), or an object naming a set_tweak.
func CheckActions(actions []any) error {
	if len(actions) > MaxActions {
		return fmt.Errorf("at most %d actions", MaxActions)
	}
	for _, a := range actions {
		switch a := a.(type) {
		case string:
			if a != "notify" && a != "dont_notify" && a != "coalesce" {
				return fmt.Errorf("unrecognised action %q", a)
			}
		case map[string]any:
			if t, ok := a["set_tweak"].(string); !ok || t == "" {
				return fmt.Errorf("an action object needs a set_tweak string")
			}
		default:
			return fmt.Errorf("an action is a string or an object")
		}
	}
	return nil
}

// CheckConditions validates the parameters of the conditions this server
// knows. Conditions of unknown kinds are accepted: they never match (spec:
// "Conditions").
func CheckConditions(conds []Condition) error {
	if len(conds) > MaxConditions {
		return fmt.Errorf("at most %d conditions", MaxConditions)
	}
	for i, c := range conds {
		if err := checkCondition(c); err != nil {
			return fmt.Errorf("condition %d (%s): %w", i, c.Kind, err)
		}
	}
	return nil
}

func checkCondition(c Condition) error {
	key := func() error {
		if len(c.Key) > maxConditionKeyLen {
			return fmt.Errorf("key is longer than %d bytes", maxConditionKeyLen)
		}
		if _, ok := CanonicalPath(c.Key); !ok {
			return fmt.Errorf("key must be a dot-separated property path")
		}
		return nil
	}
	switch c.Kind {
	case "":
		return fmt.Errorf("kind is required")
	case "event_match":
		if c.Pattern == nil {
			return fmt.Errorf("pattern is required")
		}
		if len(*c.Pattern) > MaxPatternBytes {
			return fmt.Errorf("pattern is longer than %d bytes", MaxPatternBytes)
		}
		return key()
	case "event_property_is", "event_property_contains":
		if err := key(); err != nil {
			return err
		}
		if !scalarJSON(c.Value) {
			return fmt.Errorf("value must be a string, an integer, a boolean or null")
		}
	case "room_member_count":
		if !ValidMemberCount(c.Is) {
			return fmt.Errorf("is must be an integer with an optional ==, <, >, <= or >= prefix")
		}
	case "sender_notification_permission":
		if c.Key == "" {
			return fmt.Errorf("key is required")
		}
	}
	return nil
}

// scalarJSON: a string, an integer in canonical JSON's range, a boolean or
// null.
func scalarJSON(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case '"':
		var s string
		return json.Unmarshal(raw, &s) == nil
	case 't', 'f', 'n':
		return string(raw) == "true" || string(raw) == "false" || string(raw) == "null"
	}
	var n int64
	return json.Unmarshal(raw, &n) == nil && n <= maxSafeInt && n >= -maxSafeInt
}
