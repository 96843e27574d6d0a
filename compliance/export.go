package compliance

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Formats of export.
var Formats = []string{"jsonl", "csv", "eml", "xml"}

// ErrNotSealed says no checkpoint covers any record yet: an export holds
// only records a signed checkpoint seals, so that it can be checked.
var ErrNotSealed = errors.New("compliance: no checkpoint covers the archive yet")

// ErrFormat says the export format is not one of Formats.
var ErrFormat = errors.New("compliance: unknown export format")

// Query selects an export's records: Room when not empty, time in
// [From, To) when not zero, and, when Actor is not empty, that user's
// conversations: the user's own records of every kind, the membership
// events about the user (invites, kicks and bans by others too), and the
// events others sent in a room while the user was joined to it (what the
// user saw as it happened; history visibility may have shown the user
// more).
type Query struct {
	Actor, Room string
	From, To    time.Time
	Format      string
}

// Manifest ends every export. A recipient checks an export by
// recomputing each record's record_hash from its content, following the
// chain from FirstPrevHash through the links (every record's
// record_hash from the first exported to the checkpoint's), and checking
// that it ends in the checkpoint's head, whose signature the server's
// PublicKey verifies (VerifyExport does all this for jsonl).
type Manifest struct {
	Server        string          `json:"server"`
	KeyID         string          `json:"key_id"`
	PublicKey     string          `json:"public_key"` // unpadded base64
	Query         map[string]any  `json:"query"`
	Records       int64           `json:"records"`
	FirstSeq      int64           `json:"first_seq,omitempty"`
	LastSeq       int64           `json:"last_seq,omitempty"`
	FirstHash     string          `json:"first_hash,omitempty"`
	LastHash      string          `json:"last_hash,omitempty"`
	FirstPrevHash string          `json:"first_prev_hash,omitempty"`
	Checkpoint    json.RawMessage `json:"checkpoint,omitempty"`
}

// Exporter writes exports.
type Exporter struct {
	Store  Store
	Key    roomdag.SigningKey
	Server roomdag.ServerName
}

// Export writes the records q selects, then the chain links and the
// manifest, to w in q.Format. It reads the archive a page at a time, so
// memory stays constant whatever the number of records. It returns the
// manifest.
func (x *Exporter) Export(ctx context.Context, w io.Writer, q Query) (*Manifest, error) {
	cp, err := x.Store.ComplianceCheckpointCovering(ctx, 0, true)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotSealed
	}
	if err != nil {
		return nil, err
	}
	f := storage.ComplianceFilter{Room: q.Room, ToSeq: cp.Seq}
	if !q.From.IsZero() {
		f.FromTS = q.From.UnixMilli()
	}
	if !q.To.IsZero() {
		f.ToTS = q.To.UnixMilli()
	}
	scan := func(f storage.ComplianceFilter, fn func(storage.ComplianceRecord) error) error {
		return x.scan(ctx, f, q.Actor, fn)
	}
	var enc encoder
	bw := bufio.NewWriterSize(w, 64<<10)
	switch q.Format {
	case "jsonl", "":
		enc = &jsonlEncoder{w: bw}
	case "csv":
		enc = &csvEncoder{w: csv.NewWriter(bw)}
	case "eml":
		enc = &emlEncoder{w: bw, server: string(x.Server)}
	case "xml":
		enc = &xmlEncoder{w: bw}
	default:
		return nil, fmt.Errorf("%w %q (one of %s)", ErrFormat, q.Format, strings.Join(Formats, ", "))
	}
	m := &Manifest{Server: string(x.Server), KeyID: x.Key.KeyID,
		PublicKey: base64.RawStdEncoding.EncodeToString(x.Key.Public()),
		Query:     map[string]any{"user": q.Actor, "room": q.Room, "format": q.Format}}
	if !q.From.IsZero() {
		m.Query["from"] = q.From.UTC().Format(time.RFC3339Nano)
	}
	if !q.To.IsZero() {
		m.Query["to"] = q.To.UTC().Format(time.RFC3339Nano)
	}
	note := func(r storage.ComplianceRecord) {
		if m.Records == 0 {
			m.FirstSeq, m.FirstHash, m.FirstPrevHash = r.Seq, r.Hash, r.PrevHash
		}
		m.Records++
		m.LastSeq, m.LastHash = r.Seq, r.Hash
	}
	if err := enc.begin(); err != nil {
		return nil, err
	}
	if g, ok := enc.(grouping); ok {
		// By conversation: one pass per room.
		rooms, err := x.conversations(ctx, f, q.Actor)
		if err != nil {
			return nil, err
		}
		for _, c := range rooms {
			rf := f
			rf.Room = c.room
			if err := g.conversation(c.room, c.people); err != nil {
				return nil, err
			}
			if err := scan(rf, func(r storage.ComplianceRecord) error {
				if r.Room != c.room {
					return nil // the records of no room: a filter of "" is none
				}
				if m.Records == 0 || r.Seq < m.FirstSeq {
					// Conversations interleave: the first and last are
					// by sequence, not by order written.
					first := m.Records == 0
					m.FirstSeq, m.FirstHash, m.FirstPrevHash = r.Seq, r.Hash, r.PrevHash
					if first {
						m.LastSeq, m.LastHash = r.Seq, r.Hash
					}
				}
				if r.Seq > m.LastSeq {
					m.LastSeq, m.LastHash = r.Seq, r.Hash
				}
				m.Records++
				return enc.record(r)
			}); err != nil {
				return nil, err
			}
			if err := g.endConversation(); err != nil {
				return nil, err
			}
		}
	} else if err := scan(f, func(r storage.ComplianceRecord) error {
		note(r)
		return enc.record(r)
	}); err != nil {
		return nil, err
	}
	if m.Records > 0 {
		c, err := x.Store.ComplianceCheckpointCovering(ctx, m.LastSeq, false)
		if err != nil {
			return nil, err
		}
		m.Checkpoint = SignedCheckpoint(x.Server, *c)
		if err := enc.beginLinks(m.FirstPrevHash); err != nil {
			return nil, err
		}
		if err := x.Store.ScanCompliance(ctx, storage.ComplianceFilter{FromSeq: m.FirstSeq, ToSeq: c.Seq}, func(r storage.ComplianceRecord) error {
			return enc.link(r.Seq, r.RecordHash)
		}); err != nil {
			return nil, err
		}
	}
	if err := enc.end(m); err != nil {
		return nil, err
	}
	return m, bw.Flush()
}

// scan calls fn with the records f selects, and with user not empty
// only those of the user's conversations (Query). The user's membership
// in each room is followed from the chain's start, whatever f's times,
// so the scan then reads every record up to f's end and filters the
// times itself; it keeps one flag per room.
func (x *Exporter) scan(ctx context.Context, f storage.ComplianceFilter, user string, fn func(storage.ComplianceRecord) error) error {
	if user == "" {
		return x.Store.ScanCompliance(ctx, f, fn)
	}
	all := f
	all.FromTS, all.ToTS, all.FromSeq = 0, 0, 0
	joined, err := x.joinedUnrecorded(ctx, all, user)
	if err != nil {
		return err
	}
	return x.Store.ScanCompliance(ctx, all, func(r storage.ComplianceRecord) error {
		see := r.Actor == user
		if membership, ok := membershipOf(r, user); ok {
			joined[r.Room] = membership == "join"
			see = true
		} else if !see {
			see = (r.Kind == KindEvent || r.Kind == KindReceived) && joined[r.Room]
		}
		if !see || r.Seq < f.FromSeq || f.FromTS != 0 && r.TS < f.FromTS || f.ToTS != 0 && r.TS >= f.ToTS {
			return nil
		}
		return fn(r)
	})
}

// joinedUnrecorded are the rooms (of those f selects) the server has
// user joined to although the archive holds no readable membership
// record of user's there: joined before archiving began, or the join's
// record purged by retention since. The server's membership is then all
// there is to go by, and the user counts as joined from the chain's
// start. One pass over f's records finds those with a record, when the
// user is joined anywhere.
func (x *Exporter) joinedUnrecorded(ctx context.Context, f storage.ComplianceFilter, user string) (map[string]bool, error) {
	rooms, err := x.Store.JoinedRooms(ctx, roomdag.UserID(user))
	if err != nil || len(rooms) == 0 {
		return map[string]bool{}, err
	}
	joined := make(map[string]bool, len(rooms))
	for _, r := range rooms {
		if f.Room == "" || f.Room == string(r) {
			joined[string(r)] = true
		}
	}
	if err := x.Store.ScanCompliance(ctx, f, func(r storage.ComplianceRecord) error {
		if _, ok := membershipOf(r, user); ok {
			delete(joined, r.Room)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return joined, nil
}

// membershipOf is the membership an event record sets for user, if it
// is an m.room.member event about user.
func membershipOf(r storage.ComplianceRecord, user string) (string, bool) {
	if r.Kind != KindEvent || r.Purged || !strings.Contains(r.Payload, `"m.room.member"`) {
		return "", false
	}
	var p struct {
		Type  string `json:"type"`
		Event struct {
			StateKey *string `json:"state_key"`
			Content  struct {
				Membership string `json:"membership"`
			} `json:"content"`
		} `json:"event"`
	}
	if json.Unmarshal([]byte(r.Payload), &p) != nil || p.Type != roomdag.TypeMember || p.Event.StateKey == nil || *p.Event.StateKey != user {
		return "", false
	}
	return p.Event.Content.Membership, true
}

// conversation is one room of a grouped export and the people in its
// records.
type conversation struct {
	room   string
	people []string
}

// conversations are the rooms of the records f (and user) select, in
// order, each with its people.
func (x *Exporter) conversations(ctx context.Context, f storage.ComplianceFilter, user string) ([]conversation, error) {
	var out []conversation
	if user == "" {
		rooms, err := x.Store.ComplianceDistinct(ctx, "room", f)
		if err != nil {
			return nil, err
		}
		for _, room := range rooms {
			rf := f
			rf.Room = room
			people, err := x.Store.ComplianceDistinct(ctx, "actor", rf)
			if err != nil {
				return nil, err
			}
			out = append(out, conversation{room, people})
		}
		return out, nil
	}
	// A user's view: one pass finds its rooms and people.
	people := map[string]map[string]bool{}
	if err := x.scan(ctx, f, user, func(r storage.ComplianceRecord) error {
		if people[r.Room] == nil {
			people[r.Room] = map[string]bool{}
		}
		people[r.Room][r.Actor] = true
		return nil
	}); err != nil {
		return nil, err
	}
	for room, ps := range people {
		c := conversation{room: room}
		for p := range ps {
			c.people = append(c.people, p)
		}
		slices.Sort(c.people)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b conversation) int { return strings.Compare(a.room, b.room) })
	return out, nil
}

// encoder writes one format.
type encoder interface {
	begin() error
	record(storage.ComplianceRecord) error
	beginLinks(prev string) error
	link(seq int64, recordHash string) error
	end(*Manifest) error
}

// grouping is an encoder that writes records by conversation (room).
type grouping interface {
	conversation(room string, participants []string) error
	endConversation() error
}

// exportRecord is a record as jsonl writes it.
type exportRecord struct {
	Seq        int64           `json:"seq"`
	TS         int64           `json:"ts"`
	Kind       string          `json:"kind"`
	Actor      string          `json:"actor"`
	Room       string          `json:"room"`
	Payload    json.RawMessage `json:"payload"`
	Purged     bool            `json:"purged,omitempty"`
	RecordHash string          `json:"record_hash"`
	PrevHash   string          `json:"prev_hash"`
	Hash       string          `json:"hash"`
}

func toExport(r storage.ComplianceRecord) exportRecord {
	p := json.RawMessage(r.Payload)
	if r.Purged {
		p = json.RawMessage("null")
	}
	return exportRecord{r.Seq, r.TS, r.Kind, r.Actor, r.Room, p, r.Purged, r.RecordHash, r.PrevHash, r.Hash}
}

type jsonlEncoder struct{ w *bufio.Writer }

func (e *jsonlEncoder) begin() error { return nil }
func (e *jsonlEncoder) line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	e.w.Write(b)
	return e.w.WriteByte('\n')
}
func (e *jsonlEncoder) record(r storage.ComplianceRecord) error {
	return e.line(map[string]exportRecord{"record": toExport(r)})
}
func (e *jsonlEncoder) beginLinks(prev string) error {
	return e.line(map[string]string{"chain_from": prev})
}
func (e *jsonlEncoder) link(seq int64, rh string) error {
	return e.line(map[string][]any{"link": {seq, rh}})
}
func (e *jsonlEncoder) end(m *Manifest) error { return e.line(map[string]*Manifest{"manifest": m}) }

type csvEncoder struct{ w *csv.Writer }

func (e *csvEncoder) begin() error {
	return e.w.Write([]string{"seq", "ts", "kind", "actor", "room", "payload", "record_hash", "prev_hash", "hash"})
}
func (e *csvEncoder) record(r storage.ComplianceRecord) error {
	return e.w.Write([]string{strconv.FormatInt(r.Seq, 10), time.UnixMilli(r.TS).UTC().Format(time.RFC3339Nano), r.Kind, r.Actor, r.Room,
		r.Payload, r.RecordHash, r.PrevHash, r.Hash})
}
func (e *csvEncoder) beginLinks(prev string) error {
	return e.w.Write([]string{"", "", "chain_from", "", "", "", "", "", prev})
}
func (e *csvEncoder) link(seq int64, rh string) error {
	return e.w.Write([]string{strconv.FormatInt(seq, 10), "", "link", "", "", "", rh, "", ""})
}
func (e *csvEncoder) end(m *Manifest) error {
	b, _ := json.Marshal(m)
	if err := e.w.Write([]string{"", "", "manifest", "", "", string(b), "", "", ""}); err != nil {
		return err
	}
	e.w.Flush()
	return e.w.Error()
}

// message is what the mail and XML forms show of an event record.
type message struct {
	EventID, Type, Body, URL string
	Redacted                 bool
}

func messageOf(r storage.ComplianceRecord) message {
	var p struct {
		EventID  string `json:"event_id"`
		Type     string `json:"type"`
		Redacted bool   `json:"redacted"`
		Event    struct {
			Content struct {
				Body string `json:"body"`
				URL  string `json:"url"`
			} `json:"content"`
		} `json:"event"`
		URI string `json:"uri"`
	}
	json.Unmarshal([]byte(r.Payload), &p)
	url := p.Event.Content.URL
	if url == "" {
		url = p.URI
	}
	return message{p.EventID, p.Type, p.Event.Content.Body, url, p.Redacted}
}

// emlEncoder writes an mbox of RFC 5322 messages, one per record, the
// links and manifest in a last message.
type emlEncoder struct {
	w      *bufio.Writer
	server string
}

func (e *emlEncoder) begin() error { return nil }
func (e *emlEncoder) mail(from string, ts int64, subject string, headers [][2]string, body string) error {
	t := time.UnixMilli(ts).UTC()
	fmt.Fprintf(e.w, "From %s %s\r\n", mailbox(from, e.server), t.Format(time.ANSIC))
	fmt.Fprintf(e.w, "From: %s\r\nDate: %s\r\nSubject: %s\r\n", mailbox(from, e.server), t.Format(time.RFC1123Z), oneLine(subject))
	for _, h := range headers {
		fmt.Fprintf(e.w, "%s: %s\r\n", h[0], oneLine(h[1]))
	}
	e.w.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "From ") {
			e.w.WriteByte('>') // mboxrd quoting
		}
		e.w.WriteString(strings.TrimRight(l, "\r") + "\r\n")
	}
	_, err := e.w.WriteString("\r\n")
	return err
}
func (e *emlEncoder) record(r storage.ComplianceRecord) error {
	m := messageOf(r)
	body := r.Payload
	if m.Body != "" {
		body = m.Body + "\n\n" + r.Payload
	}
	h := [][2]string{{"X-Compliance-Seq", strconv.FormatInt(r.Seq, 10)}, {"X-Compliance-Kind", r.Kind},
		{"X-Compliance-Room", r.Room}, {"X-Compliance-Record-Hash", r.RecordHash}, {"X-Compliance-Prev-Hash", r.PrevHash},
		{"X-Compliance-Hash", r.Hash}}
	if m.URL != "" {
		h = append(h, [2]string{"X-Compliance-Attachment", m.URL})
	}
	return e.mail(r.Actor, r.TS, "["+r.Kind+"] "+r.Room+" "+m.Type, h, body)
}
func (e *emlEncoder) beginLinks(prev string) error {
	fmt.Fprintf(e.w, "From %s %s\r\nSubject: compliance chain links\r\nContent-Type: application/jsonl\r\n\r\n", mailbox("", e.server), time.Unix(0, 0).UTC().Format(time.ANSIC))
	b, _ := json.Marshal(map[string]string{"chain_from": prev})
	e.w.Write(b)
	_, err := e.w.WriteString("\r\n")
	return err
}
func (e *emlEncoder) link(seq int64, rh string) error {
	b, _ := json.Marshal(map[string][]any{"link": {seq, rh}})
	e.w.Write(b)
	_, err := e.w.WriteString("\r\n")
	return err
}
func (e *emlEncoder) end(m *Manifest) error {
	b, _ := json.Marshal(m)
	return e.mail("", time.Now().UnixMilli(), "compliance export manifest", [][2]string{{"X-Compliance-Manifest", "1"}}, string(b))
}

// mailbox maps a Matrix user ID to an address: @alice:example.org is
// alice@example.org; "" is the server's own.
func mailbox(user, server string) string {
	if user == "" {
		return "compliance@" + server
	}
	local, domain, ok := strings.Cut(strings.TrimPrefix(user, "@"), ":")
	if !ok {
		return user
	}
	return local + "@" + domain
}

func oneLine(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }

// xmlEncoder writes the e-discovery shape: an export of conversations,
// each with its participants and messages (attachments by content URI),
// then the chain links and the manifest.
type xmlEncoder struct {
	w *bufio.Writer
	x *xml.Encoder
}

func (e *xmlEncoder) begin() error {
	e.w.WriteString(xml.Header)
	e.x = xml.NewEncoder(e.w)
	return e.x.EncodeToken(xml.StartElement{Name: xml.Name{Local: "export"}})
}

type xmlParticipant struct {
	XMLName xml.Name `xml:"participant"`
	ID      string   `xml:"id,attr"`
}

func (e *xmlEncoder) conversation(room string, people []string) error {
	if err := e.x.EncodeToken(xml.StartElement{Name: xml.Name{Local: "conversation"}, Attr: []xml.Attr{{Name: xml.Name{Local: "id"}, Value: room}}}); err != nil {
		return err
	}
	ps := struct {
		XMLName xml.Name `xml:"participants"`
		P       []xmlParticipant
	}{}
	for _, p := range people {
		ps.P = append(ps.P, xmlParticipant{ID: p})
	}
	return e.x.Encode(ps)
}
func (e *xmlEncoder) endConversation() error {
	return e.x.EncodeToken(xml.EndElement{Name: xml.Name{Local: "conversation"}})
}

type xmlMessage struct {
	XMLName    xml.Name `xml:"message"`
	Seq        int64    `xml:"seq,attr"`
	Time       string   `xml:"time,attr"`
	Kind       string   `xml:"kind,attr"`
	From       string   `xml:"from,attr"`
	EventID    string   `xml:"event_id,attr,omitempty"`
	Type       string   `xml:"type,attr,omitempty"`
	Redacted   bool     `xml:"redacted,attr,omitempty"`
	Body       string   `xml:"body,omitempty"`
	Attachment *struct {
		URI string `xml:"uri,attr"`
	} `xml:"attachment,omitempty"`
	Payload    string `xml:"payload"`
	RecordHash string `xml:"record_hash,attr"`
	PrevHash   string `xml:"prev_hash,attr"`
	Hash       string `xml:"hash,attr"`
}

func (e *xmlEncoder) record(r storage.ComplianceRecord) error {
	m := messageOf(r)
	x := xmlMessage{Seq: r.Seq, Time: time.UnixMilli(r.TS).UTC().Format(time.RFC3339Nano), Kind: r.Kind, From: r.Actor,
		EventID: m.EventID, Type: m.Type, Redacted: m.Redacted, Body: m.Body, Payload: r.Payload,
		RecordHash: r.RecordHash, PrevHash: r.PrevHash, Hash: r.Hash}
	if m.URL != "" {
		x.Attachment = &struct {
			URI string `xml:"uri,attr"`
		}{m.URL}
	}
	return e.x.Encode(x)
}
func (e *xmlEncoder) beginLinks(prev string) error {
	return e.x.EncodeToken(xml.StartElement{Name: xml.Name{Local: "chain"}, Attr: []xml.Attr{{Name: xml.Name{Local: "from"}, Value: prev}}})
}
func (e *xmlEncoder) link(seq int64, rh string) error {
	return e.x.Encode(struct {
		XMLName    xml.Name `xml:"link"`
		Seq        int64    `xml:"seq,attr"`
		RecordHash string   `xml:"record_hash,attr"`
	}{Seq: seq, RecordHash: rh})
}
func (e *xmlEncoder) end(m *Manifest) error {
	if m.Records > 0 {
		if err := e.x.EncodeToken(xml.EndElement{Name: xml.Name{Local: "chain"}}); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(m)
	if err := e.x.Encode(struct {
		XMLName xml.Name `xml:"manifest"`
		JSON    string   `xml:",chardata"`
	}{JSON: string(b)}); err != nil {
		return err
	}
	if err := e.x.EncodeToken(xml.EndElement{Name: xml.Name{Local: "export"}}); err != nil {
		return err
	}
	return e.x.Flush()
}

// VerifyExport checks a jsonl export without the server: every record's
// record_hash against its content and its hash against its link, the
// chain from the first record through the links to the checkpoint's
// head, and the checkpoint's signature by the manifest's key, which the
// recipient should compare with the server's published key (pub, when
// not nil, is used instead of the manifest's). It returns the manifest
// and the records checked.
func VerifyExport(r io.Reader, pub ed25519.PublicKey) (*Manifest, int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	exported := map[int64]string{} // seq → record_hash of the exported records
	var m *Manifest
	var head string
	var next int64
	var n int64
	for sc.Scan() {
		var line struct {
			Record    *exportRecord     `json:"record"`
			ChainFrom *string           `json:"chain_from"`
			Link      []json.RawMessage `json:"link"`
			Manifest  *Manifest         `json:"manifest"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, n, fmt.Errorf("compliance: export line: %w", err)
		}
		switch {
		case line.Record != nil:
			x := line.Record
			rec := storage.ComplianceRecord{Seq: x.Seq, TS: x.TS, Kind: x.Kind, Actor: x.Actor, Room: x.Room, Payload: string(x.Payload)}
			if !x.Purged {
				rh, err := RecordHash(rec)
				if err != nil || rh != x.RecordHash {
					return nil, n, fmt.Errorf("compliance: record %d: content does not match its record_hash", x.Seq)
				}
			}
			if h, err := Link(x.PrevHash, x.RecordHash); err != nil || h != x.Hash {
				return nil, n, fmt.Errorf("compliance: record %d: hash is not its link", x.Seq)
			}
			exported[x.Seq] = x.RecordHash
			n++
		case line.ChainFrom != nil:
			head = *line.ChainFrom
		case line.Link != nil:
			var seq int64
			var rh string
			if len(line.Link) != 2 || json.Unmarshal(line.Link[0], &seq) != nil || json.Unmarshal(line.Link[1], &rh) != nil {
				return nil, n, errors.New("compliance: bad link line")
			}
			if next != 0 && seq != next {
				return nil, n, fmt.Errorf("compliance: link %d missing", next)
			}
			next = seq + 1
			if want, ok := exported[seq]; ok {
				if want != rh {
					return nil, n, fmt.Errorf("compliance: record %d is not the one the chain holds", seq)
				}
				delete(exported, seq)
			}
			h, err := Link(head, rh)
			if err != nil {
				return nil, n, err
			}
			head = h
		case line.Manifest != nil:
			m = line.Manifest
		}
	}
	if err := sc.Err(); err != nil {
		return nil, n, err
	}
	if m == nil {
		return nil, n, errors.New("compliance: the export has no manifest")
	}
	if m.Records != n {
		return m, n, fmt.Errorf("compliance: the manifest counts %d records, the export holds %d", m.Records, n)
	}
	if n == 0 {
		return m, 0, nil
	}
	if len(exported) > 0 {
		return m, n, errors.New("compliance: exported records outside the chain's links")
	}
	var cp struct {
		Seq    int64                        `json:"seq"`
		Head   string                       `json:"head"`
		TS     int64                        `json:"ts"`
		Server string                       `json:"server"`
		Sigs   map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(m.Checkpoint, &cp); err != nil {
		return m, n, fmt.Errorf("compliance: manifest checkpoint: %w", err)
	}
	if cp.Seq != next-1 || cp.Head != head {
		return m, n, errors.New("compliance: the chain does not end in the checkpoint's head")
	}
	if pub == nil {
		b, err := base64.RawStdEncoding.DecodeString(m.PublicKey)
		if err != nil {
			return m, n, err
		}
		pub = b
	}
	c := storage.ComplianceCheckpoint{Seq: cp.Seq, Head: cp.Head, TS: cp.TS, KeyID: m.KeyID, Signature: cp.Sigs[cp.Server][m.KeyID]}
	if err := VerifyCheckpoint(roomdag.ServerName(cp.Server), pub, c); err != nil {
		return m, n, err
	}
	return m, n, nil
}
