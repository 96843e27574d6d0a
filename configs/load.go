package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldError is one problem with one configuration key.
type FieldError struct {
	// Field is the dotted key path ("rate_limiting.message.per_second"),
	// with [i] for list items ("registration_tokens[0]"). It is empty for
	// a problem with the document as a whole.
	Field string
	// Line is the key's line in the file, or 0 when the key is not in the
	// file (the problem is with its default, or the config was not read
	// from a file).
	Line int
	Err  error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Error is every problem found in one configuration, each naming its
// field. Load and Validate return it; errors.As reaches each *FieldError.
type Error struct {
	// File is the configuration file, or "" when the Config was not read
	// from one.
	File     string
	Problems []*FieldError
}

// Error renders one problem per line, as "file:line: field: message" so
// that editors can jump to it.
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("configs: ")
		if e.File != "" {
			b.WriteString(e.File)
			if p.Line > 0 {
				fmt.Fprintf(&b, ":%d", p.Line)
			}
			b.WriteString(": ")
		} else if p.Line > 0 {
			fmt.Fprintf(&b, "line %d: ", p.Line)
		}
		if p.Field != "" {
			b.WriteString(p.Field + ": ")
		}
		b.WriteString(p.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// Load reads the configuration file at path: keys that are missing take
// their defaults, unknown keys and values of the wrong type are errors,
// relative paths are resolved against the file's directory, and the
// result is validated. Every problem found is reported at once, in an
// *Error naming each field and its line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	c, lines, problems, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("configs: %s: %w", path, err)
	}
	if len(problems) == 0 {
		c.resolvePaths(filepath.Dir(abs))
		problems = c.validate(lines)
	}
	if len(problems) > 0 {
		return nil, &Error{File: path, Problems: problems}
	}
	return &c, nil
}

// Validate checks the configuration as Load does, for a Config built or
// changed in code. It returns nil or an *Error.
func (c *Config) Validate() error {
	if problems := c.validate(nil); len(problems) > 0 {
		return &Error{Problems: problems}
	}
	return nil
}

// resolvePaths makes every relative path absolute against dir.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.DataDir)
	abs(&c.Database.Path)
	abs(&c.Database.Args.Database)
	abs(&c.SigningKeyFile)
	abs(&c.TLSCertificatePath)
	abs(&c.TLSPrivateKeyPath)
	for i := range c.AppServiceConfigFiles {
		abs(&c.AppServiceConfigFiles[i])
	}
}

// decode reads one YAML document over Default(). It walks the node tree
// against the struct itself, rather than leaving it to yaml.v3's strict
// mode, so that every problem names the dotted field it belongs to: yaml.v3
// reports type errors by line only. lines maps each field path present in
// data to its line. err is a YAML syntax error; problems are unknown keys,
// duplicate keys and values of the wrong type. A key whose value is empty
// (null) keeps its default.
func decode(data []byte) (c Config, lines map[string]int, problems []*FieldError, err error) {
	c = Default()
	d := &decoder{lines: map[string]int{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return c, d.lines, nil, nil // empty file: all defaults
	case err != nil:
		return c, nil, nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return c, nil, nil, err
		}
		return c, nil, nil, fmt.Errorf("line %d: a second YAML document; the configuration is one document", extra.Line)
	}
	if len(doc.Content) == 1 {
		d.value(doc.Content[0], reflect.ValueOf(&c).Elem(), "")
	}
	return c, d.lines, d.problems, nil
}

type decoder struct {
	lines    map[string]int
	problems []*FieldError
}

func (d *decoder) fail(n *yaml.Node, path string, format string, args ...any) {
	d.problems = append(d.problems, &FieldError{Field: path, Line: n.Line, Err: fmt.Errorf(format, args...)})
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// value decodes n into v, the field at path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	custom := reflect.PointerTo(v.Type()).Implements(unmarshalerType)
	switch {
	case v.Kind() == reflect.Struct && !custom:
		if n.Kind != yaml.MappingNode {
			what := "the configuration"
			if path != "" {
				what = "it"
			}
			d.fail(n, path, "%s must be a mapping of keys to values", what)
			return
		}
		fields := yamlFields(v.Type())
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			if first, dup := seen[k.Value]; dup {
				d.fail(k, p, "duplicate key (first at line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
			idx, ok := fields[k.Value]
			if !ok {
				d.fail(k, p, "unknown key")
				continue
			}
			d.lines[p] = k.Line
			d.value(val, v.Field(idx), p)
		}
	case v.Kind() == reflect.Slice && !custom:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			if item.Kind == yaml.ScalarNode && item.ShortTag() == "!!null" {
				d.fail(item, p, "empty list item")
				continue
			}
			d.value(item, s.Index(i), p)
		}
		v.Set(s)
	case !custom && isInt(v.Kind()) && n.ShortTag() != "!!int":
		// yaml.v3 would truncate 1.5 to 1 without a word.
		d.fail(n, path, "%q: must be a whole number", n.Value)
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(n, path, "%s", yamlMessage(err))
		}
	}
}

func isInt(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// yamlFields maps a struct's YAML keys to field indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			m[name] = i
		}
	}
	return m
}

// yamlName returns the YAML key of a struct field, or "" if it has none.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if !f.IsExported() || name == "-" || name == "" {
		return ""
	}
	return name
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlMessage strips yaml.v3's "yaml: unmarshal errors: line N:" framing,
// since FieldError carries the line.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		if rest, ok := strings.CutPrefix(m, "line "); ok {
			if _, after, ok := strings.Cut(rest, ": "); ok {
				m = after
			}
		}
		msgs[i] = m
	}
	return strings.Join(msgs, "; ")
}

// validate returns every problem with c. lines, which may be nil, gives
// the line of each field present in the file.
func (c *Config) validate(lines map[string]int) []*FieldError {
	var problems []*FieldError
	bad := func(field, format string, args ...any) {
		problems = append(problems, &FieldError{Field: field, Line: lines[field], Err: fmt.Errorf(format, args...)})
	}

	if err := checkServerName(c.ServerName); err != nil {
		bad("server_name", "%q: %v", c.ServerName, err)
	}
	if c.PublicBaseURL != "" {
		if err := checkBaseURL(c.PublicBaseURL); err != nil {
			bad("public_baseurl", "%q: %v", c.PublicBaseURL, err)
		}
	}
	if err := checkListen(c.Listen); err != nil {
		bad("listen", "%q: %v", c.Listen, err)
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}

	switch c.EncryptionEnabledByDefaultForRoomType {
	case "all", "invite", "off":
	default:
		bad("encryption_enabled_by_default_for_room_type", "%q: must be all, invite or off", c.EncryptionEnabledByDefaultForRoomType)
	}

	c.validateDatabase(bad)
	c.validateFederationKeys(bad)
	c.validateFederation(bad)

	if c.RegistrationRequiresToken && !c.EnableRegistration {
		bad("registration_requires_token", "is true but enable_registration is false; set enable_registration: true, or remove registration_requires_token")
	}
	switch {
	case c.RegistrationRequiresToken && len(c.RegistrationTokens) == 0:
		bad("registration_tokens", "is empty but registration_requires_token is true, so nobody could register; add a token")
	case !c.RegistrationRequiresToken && len(c.RegistrationTokens) > 0:
		// Refused rather than ignored: an administrator who lists tokens
		// expects them to gate registration.
		bad("registration_tokens", "lists tokens but registration_requires_token is false, so they would not be asked for; set it to true, or remove the tokens")
	}
	seenTokens := map[string]int{}
	for i, t := range c.RegistrationTokens {
		field := fmt.Sprintf("registration_tokens[%d]", i)
		if err := checkRegistrationToken(t.Reveal()); err != nil {
			bad(field, "%v", err)
		} else if first, dup := seenTokens[t.Reveal()]; dup {
			bad(field, "repeats registration_tokens[%d]", first)
		} else {
			seenTokens[t.Reveal()] = i
		}
	}
	if c.Caches.Rooms < 1 {
		bad("caches.rooms", "is %d; must be at least 1", c.Caches.Rooms)
	}
	if c.BcryptRounds < 4 || c.BcryptRounds > 31 {
		bad("bcrypt_rounds", "is %d; must be from 4 to 31", c.BcryptRounds)
	}
	if n := c.PasswordConfig.Policy.MinimumLength; n < 0 || n > MaxPasswordLength {
		bad("password_config.policy.minimum_length", "is %d; must be from 0 to %d", n, MaxPasswordLength)
	}

	if err := checkRoomVersion(c.DefaultRoomVersion); err != nil {
		bad("default_room_version", "%q: %v", c.DefaultRoomVersion, err)
	}
	if c.BackchatDefault < 1 {
		bad("backchat_default", "is %d; must be at least 1", c.BackchatDefault)
	}
	if c.BackchatMax < 1 {
		bad("backchat_max", "is %d; must be at least 1", c.BackchatMax)
	}
	if c.BackchatDefault > c.BackchatMax && c.BackchatMax >= 1 {
		bad("backchat_default", "is %d; must not exceed backchat_max (%d)", c.BackchatDefault, c.BackchatMax)
	}

	if c.MaxRequestSize < 1 {
		bad("max_request_size", "is %d; must be at least 1 byte", c.MaxRequestSize)
	}
	if c.MaxUploadSize < 1 {
		bad("max_upload_size", "is %d; must be at least 1 byte", c.MaxUploadSize)
	}
	for _, list := range []struct {
		name   string
		ranges []string
	}{
		{"url_preview_ip_range_blacklist", c.URLPreviewIPRangeBlacklist},
		{"url_preview_ip_range_whitelist", c.URLPreviewIPRangeWhitelist},
		{"ip_range_blacklist", c.IPRangeBlacklist},
		{"ip_range_whitelist", c.IPRangeWhitelist},
	} {
		for i, r := range list.ranges {
			if _, err := parseIPRange(r); err != nil {
				bad(fmt.Sprintf("%s[%d]", list.name, i), "%q is not an IP range (CIDR such as 10.0.0.0/8) or address: %v", r, err)
			}
		}
	}
	if c.MaxSpiderSize < 1 {
		bad("max_spider_size", "is %d; must be at least 1 byte", c.MaxSpiderSize)
	}
	if len(c.ThumbnailSizes) == 0 {
		bad("thumbnail_sizes", "is empty; list at least one size")
	}
	seenSizes := map[ThumbnailSize]int{}
	for i, ts := range c.ThumbnailSizes {
		field := fmt.Sprintf("thumbnail_sizes[%d]", i)
		if ts.Width < 1 || ts.Height < 1 {
			bad(field, "is %dx%d; width and height must be at least 1", ts.Width, ts.Height)
		}
		if ts.Method != "crop" && ts.Method != "scale" {
			bad(field+".method", "%q: must be crop or scale", ts.Method)
		}
		if first, dup := seenSizes[ts]; dup {
			bad(field, "repeats thumbnail_sizes[%d]", first)
		} else {
			seenSizes[ts] = i
		}
	}
	if c.MaxThumbnailMemory < MiB {
		bad("max_thumbnail_memory", "is %d; must be at least 1M", c.MaxThumbnailMemory)
	}
	if c.RequestBodyTimeout <= 0 {
		bad("request_body_timeout", "is %v; must be greater than 0", c.RequestBodyTimeout.Std())
	}
	if c.MinUploadRate < 1 {
		bad("min_upload_rate", "is %d; must be at least 1 byte a second", c.MinUploadRate)
	}
	for _, rl := range []struct {
		name  string
		limit RateLimit
	}{
		{"rate_limiting.message", c.RateLimiting.Message},
		{"rate_limiting.login", c.RateLimiting.Login.Address()},
		{"rate_limiting.login.account", c.RateLimiting.Login.Account},
		{"rate_limiting.login.failed_attempts", c.RateLimiting.Login.FailedAttempts},
		{"rate_limiting.registration", c.RateLimiting.Registration},
	} {
		if ps := rl.limit.PerSecond; !(ps > 0) || math.IsInf(ps, 0) {
			bad(rl.name+".per_second", "is %v; must be a finite number greater than 0", ps)
		}
		if rl.limit.BurstCount < 1 {
			bad(rl.name+".burst_count", "is %d; must be at least 1", rl.limit.BurstCount)
		}
	}

	if c.RefreshableAccessTokenLifetime < 0 {
		bad("refreshable_access_token_lifetime", "is %v; must not be negative", c.RefreshableAccessTokenLifetime.Std())
	}

	problems = append(problems, c.Retention.validate(lines)...)
	if sn := c.ServerNotices; sn.Enabled() {
		if !validLocalpart(sn.SystemMXIDLocalpart) {
			bad("server_notices.system_mxid_localpart", "%q is not a user ID localpart (a-z, 0-9, . _ = - / +)", sn.SystemMXIDLocalpart)
		}
		for _, f := range []struct{ name, uri string }{
			{"server_notices.system_mxid_avatar_url", sn.SystemMXIDAvatarURL},
			{"server_notices.room_avatar_url", sn.RoomAvatarURL},
		} {
			if f.uri != "" && !strings.HasPrefix(f.uri, "mxc://") {
				bad(f.name, "%q is not an mxc:// URI", f.uri)
			}
		}
	}

	seenFiles := map[string]int{}
	for i, f := range c.AppServiceConfigFiles {
		field := fmt.Sprintf("app_service_config_files[%d]", i)
		if f == "" {
			bad(field, "must not be empty")
		} else if first, dup := seenFiles[f]; dup {
			bad(field, "repeats app_service_config_files[%d]", first)
		} else {
			seenFiles[f] = i
		}
	}

	if _, ok := parseLogLevel(c.LogLevel); !ok {
		bad("log_level", "%q: must be debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format", "%q: must be text or json", c.LogFormat)
	}
	if c.Metrics.Enabled {
		if err := checkListen(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%q: %v", c.Metrics.Listen, err)
		} else if sameListener(c.Metrics.Listen, c.Listen) {
			bad("metrics.listen", "%q is the client API's listener (listen); the metrics need one of their own", c.Metrics.Listen)
		}
	}
	return problems
}

// checkServerName checks the grammar of spec appendix "Server Name":
// a DNS name (1 to 255 of [A-Za-z0-9.-]), an IPv4 literal or a bracketed
// IPv6 literal, optionally followed by ":" and a port. It is slightly
// stricter than the grammar, as befits the server's own name: the IPv6
// literal must parse and the port must be from 1 to 65535.
func checkServerName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return errors.New("unclosed [ in IPv6 literal")
		}
		if a, err := netip.ParseAddr(s[1:end]); err != nil || !a.Is6() || a.Zone() != "" {
			return errors.New("not an IPv6 address between [ ]")
		}
		switch rest := s[end+1:]; {
		case rest == "":
			return nil
		case rest[0] != ':':
			return errors.New("unexpected text after ]")
		default:
			return checkPort(rest[1:], 1)
		}
	}
	host := s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host = s[:i]
		if strings.Contains(host, ":") {
			return errors.New("an IPv6 address must be written between [ ]")
		}
		if err := checkPort(s[i+1:], 1); err != nil {
			return err
		}
	}
	return checkHostName(host)
}

// checkHostName checks the dns-name of the server name grammar, which
// also covers IPv4 literals: 1 to 255 of [A-Za-z0-9.-].
func checkHostName(h string) error {
	if h == "" || len(h) > 255 {
		return errors.New("the host name must be 1 to 255 characters")
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("the host name may contain only letters, digits, '-' and '.', not %q", r)
		}
	}
	return nil
}

// checkPort checks a decimal port number of at most 5 digits, from min to
// 65535.
func checkPort(p string, min int) error {
	n, err := strconv.Atoi(p)
	if err != nil || len(p) > 5 || p[0] == '+' || p[0] == '-' || n < min || n > 65535 {
		return fmt.Errorf("port %q must be a number from %d to 65535", p, min)
	}
	return nil
}

// checkListen checks a host:port listen address. The host may be empty
// (all interfaces), an IP address or a host name; port 0 asks the kernel
// for a free port.
func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New(`must be host:port, such as "127.0.0.1:8008" or "[::]:8008"`)
	}
	if port == "" {
		return errors.New("the port is missing")
	}
	if err := checkPort(port, 0); err != nil {
		return err
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && checkHostName(host) != nil {
			return fmt.Errorf("host %q is neither an IP address nor a host name", host)
		}
	}
	return nil
}

// sameListener reports whether two valid listen addresses would bind the
// same port: the same port other than 0, on the same host or with either
// on every interface.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wildcard := func(h string) bool {
		ip, err := netip.ParseAddr(h)
		return h == "" || err == nil && ip.IsUnspecified()
	}
	return ha == hb || wildcard(ha) || wildcard(hb)
}

// checkBaseURL checks an absolute http(s) URL with a host and without
// query, fragment or user information.
func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must start with http:// or https://")
	case u.Host == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not contain user information")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return errors.New("must not have a query or fragment")
	}
	return nil
}

// checkRegistrationToken checks the grammar of spec section
// "Token-authenticated registration": at most 64 characters from the
// unreserved set [A-Za-z0-9._~-]. Empty tokens are refused too.
func checkRegistrationToken(t string) error {
	if t == "" || len(t) > 64 {
		return errors.New("must be 1 to 64 characters")
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._~-", r)) {
			return errors.New("may contain only A-Z a-z 0-9 . _ ~ -")
		}
	}
	return nil
}

// checkRoomVersion checks the room version identifier grammar (spec,
// "Room Versions"): 1 to 32 characters from [a-z0-9.-].
// validLocalpart is the grammar of new user IDs' localparts (spec:
// appendices, "User Identifiers").
func validLocalpart(l string) bool {
	if l == "" || len(l) > 255 {
		return false
	}
	for i := 0; i < len(l); i++ {
		if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
			return false
		}
	}
	return true
}

func checkRoomVersion(v string) error {
	if v == "" || len(v) > 32 {
		return errors.New("must be 1 to 32 characters")
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return errors.New("may contain only a-z 0-9 . -")
		}
	}
	return nil
}
