package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// registration is what the bridge needs of its registration file.
type registration struct {
	ID              string `yaml:"id"`
	URL             string `yaml:"url"`
	ASToken         string `yaml:"as_token"`
	HSToken         string `yaml:"hs_token"`
	SenderLocalpart string `yaml:"sender_localpart"`
	Namespaces      struct {
		Users []struct {
			Regex     string `yaml:"regex"`
			Exclusive bool   `yaml:"exclusive"`
		} `yaml:"users"`
	} `yaml:"namespaces"`
	// Prefix is the localpart prefix of the virtual users, read back
	// from the users namespace "@<prefix>.*".
	Prefix string `yaml:"-"`
}

// localpartRE is what the bridge accepts for the bot and the prefix: a
// subset of the user ID grammar without regular expression syntax, so
// the namespace needs no escaping.
var localpartRE = regexp.MustCompile(`^[a-z0-9_=-]{1,64}$`)

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// generateRegistration writes a registration with fresh random tokens:
// the bot is the sender, and the virtual users' namespace is exclusive.
func generateRegistration(id, u, bot, prefix string) ([]byte, error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return nil, fmt.Errorf("-url %q must be an http(s) URL", u)
	}
	if id == "" {
		return nil, errors.New("-id must not be empty")
	}
	if !localpartRE.MatchString(bot) || !localpartRE.MatchString(prefix) {
		return nil, errors.New("-bot and -prefix may contain only a-z 0-9 _ = -")
	}
	if strings.HasPrefix(bot, prefix) {
		return nil, errors.New("the bot's localpart must not start with the virtual users' prefix")
	}
	as, err := randomToken()
	if err != nil {
		return nil, err
	}
	hs, err := randomToken()
	if err != nil {
		return nil, err
	}
	doc := map[string]any{
		"id": id, "url": u, "as_token": as, "hs_token": hs, "sender_localpart": bot,
		"namespaces": map[string]any{
			"users":   []map[string]any{{"exclusive": true, "regex": "@" + prefix + ".*"}},
			"aliases": []any{}, "rooms": []any{},
		},
		"rate_limited": false, "receive_ephemeral": false,
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	header := "# Registration of the webhook bridge, written by `webhook-bridge generate-registration`.\n" +
		"# List it under app_service_config_files in homeserver.yaml. Keep the tokens secret.\n"
	return append([]byte(header), b...), nil
}

// readRegistration reads the bridge's registration and checks what it
// relies on.
func readRegistration(path string) (*registration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r registration
	if err := yaml.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case r.ID == "" || r.ASToken == "" || r.HSToken == "" || r.URL == "":
		return nil, fmt.Errorf("%s: id, url, as_token and hs_token are required", path)
	case !localpartRE.MatchString(r.SenderLocalpart):
		return nil, fmt.Errorf("%s: sender_localpart %q: the bridge needs a-z 0-9 _ = - only", path, r.SenderLocalpart)
	case len(r.Namespaces.Users) != 1 || !r.Namespaces.Users[0].Exclusive:
		return nil, fmt.Errorf("%s: the bridge needs exactly one exclusive users namespace (generate-registration writes it)", path)
	}
	re := r.Namespaces.Users[0].Regex
	prefix, ok := strings.CutSuffix(strings.TrimPrefix(re, "@"), ".*")
	if !strings.HasPrefix(re, "@") || !ok || !localpartRE.MatchString(prefix) {
		return nil, fmt.Errorf("%s: users namespace %q must be @<prefix>.*", path, re)
	}
	r.Prefix = prefix
	return &r, nil
}
