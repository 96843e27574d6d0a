package api

import (
	"net/http"

	"github.com/persistentchat/homeserver/push"
)

// Reading push rules. Every client reads them at start-up (matrix-js-sdk
// will not finish its first sync without them); writing rules comes with
// notifications, so until then a user's rules are the server defaults.
func (s *Server) pushRuleRoutes() []route {
	return []route{
		{"GET", v3 + "/pushrules/", s.getPushRules, authRequired, rateNone},
		{"GET", v3 + "/pushrules/global/", s.getGlobalPushRules, authRequired, rateNone},
		{"GET", v3 + "/pushrules/global/{kind}/{ruleId}", s.getPushRule(""), authRequired, rateNone},
		{"GET", v3 + "/pushrules/global/{kind}/{ruleId}/enabled", s.getPushRule("enabled"), authRequired, rateNone},
		{"GET", v3 + "/pushrules/global/{kind}/{ruleId}/actions", s.getPushRule("actions"), authRequired, rateNone},
	}
}

func (s *Server) getPushRules(r *http.Request) (any, error) {
	return map[string]any{"global": push.Defaults(requester(r).UserID)}, nil
}

func (s *Server) getGlobalPushRules(r *http.Request) (any, error) {
	return push.Defaults(requester(r).UserID), nil
}

func (s *Server) getPushRule(part string) handlerFunc {
	return func(r *http.Request) (any, error) {
		rules := push.Defaults(requester(r).UserID)
		list, ok := rules.ByKind(pathParam(r, "kind"))
		if !ok {
			return nil, invalidParam("unknown push rule kind")
		}
		id := pathParam(r, "ruleId")
		for _, rule := range list {
			if rule.RuleID != id {
				continue
			}
			switch part {
			case "enabled":
				return map[string]bool{"enabled": rule.Enabled}, nil
			case "actions":
				return map[string]any{"actions": rule.Actions}, nil
			}
			return rule, nil
		}
		return nil, notFoundErr("the push rule was not found")
	}
}
