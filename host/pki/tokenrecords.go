package pki

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Why a recorded join token or a node was refused, beyond the JWT checks of VerifyJWT.
var (
	ErrTokenUnknown      = errors.New("join token is not known to this cloudcore")
	ErrTokenRevoked      = errors.New("join token has been revoked")
	ErrTokenUsedUp       = errors.New("join token has no uses left")
	ErrTokenNodeMismatch = errors.New("join token is for another node")
	ErrNodeExists        = errors.New("node already holds a valid certificate")
	ErrCertRevoked       = errors.New("certificate was replaced by a new join of its node")
	ErrCertUnknown       = errors.New("certificate is not one the node holds")
)

// TokenOptions says what a new join token allows.
type TokenOptions struct {
	TTL  time.Duration // how long it is valid; default DefaultTokenTTL
	Uses int           // how many joins it allows; default 1
	// Node binds the token to one node name; empty: any name not held by a node yet.
	Node string
	// Replace lets the token take over Node even when that node holds a valid certificate (a
	// re-installed node): its certificates are then revoked for renewal. Needs Node.
	Replace bool
}

// TokenRecord is what the cloud remembers of a join token: the JWT carries only its ID (jti).
type TokenRecord struct {
	ID        string     `json:"id"`
	Node      string     `json:"node,omitempty"`
	Replace   bool       `json:"replace,omitempty"`
	Uses      int        `json:"uses"`
	Used      int        `json:"used"`
	Created   time.Time  `json:"created"`
	Expires   time.Time  `json:"expires"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
	// Joined lists the nodes that joined with the token, oldest first.
	Joined []string `json:"joined,omitempty"`
}

// UsesLeft is how many more joins the token allows.
func (r TokenRecord) UsesLeft() int { return max(r.Uses-r.Used, 0) }

// State is "valid", "revoked", "expired" or "used up" as of now.
func (r TokenRecord) State(now time.Time) string {
	switch {
	case r.RevokedAt != nil:
		return "revoked"
	case !now.Before(r.Expires.Add(tokenLeeway)):
		return "expired"
	case r.UsesLeft() == 0:
		return "used up"
	}
	return "valid"
}

// check says why the token cannot join node now, wrapping one of the ErrToken* values; nil: it can.
func (r TokenRecord) check(node string, now time.Time) error {
	switch r.State(now) {
	case "revoked":
		return fmt.Errorf("%w (token %s, at %s)", ErrTokenRevoked, r.ID, r.RevokedAt.UTC().Format(time.RFC3339))
	case "expired":
		return fmt.Errorf("%w (token %s, at %s); create a new one with 'cloudcore token create'", ErrTokenExpired, r.ID, r.Expires.UTC().Format(time.RFC3339))
	case "used up":
		return fmt.Errorf("%w (token %s allowed %d join(s), by %v); create a new one with 'cloudcore token create'", ErrTokenUsedUp, r.ID, r.Uses, r.Joined)
	}
	if r.Node != "" && r.Node != node {
		return fmt.Errorf("%w: token %s is bound to node %q, not %q", ErrTokenNodeMismatch, r.ID, r.Node, node)
	}
	return nil
}

// tokenRecordsToKeep is how long an expired, used-up or revoked token's record is kept (for
// 'cloudcore token ls') before CreateToken deletes it.
const tokenRecordsToKeep = 7 * 24 * time.Hour

// CreateToken makes a join token, records it in recs and returns it with its record. The JWT
// (HS256 with the CA's token secret) carries the record's ID as jti, its expiry as exp.
func CreateToken(ctx context.Context, ca *CA, recs Records, opts TokenOptions) (Token, TokenRecord, error) {
	if opts.TTL == 0 {
		opts.TTL = DefaultTokenTTL
	}
	if opts.Uses == 0 {
		opts.Uses = 1
	}
	switch {
	case opts.TTL < 0:
		return Token{}, TokenRecord{}, fmt.Errorf("token TTL %s must be positive", opts.TTL)
	case opts.Uses < 0:
		return Token{}, TokenRecord{}, fmt.Errorf("token uses %d must be positive", opts.Uses)
	case opts.Replace && opts.Node == "":
		return Token{}, TokenRecord{}, errors.New("a token that replaces a node must name it (--node)")
	}
	if opts.Node != "" {
		if err := CheckNodeName(opts.Node); err != nil {
			return Token{}, TokenRecord{}, err
		}
	}
	now := ca.clock.Now().UTC().Truncate(time.Second)
	pruneTokens(ctx, recs, now)
	for range 8 {
		id, err := newTokenID()
		if err != nil {
			return Token{}, TokenRecord{}, err
		}
		rec := TokenRecord{ID: id, Node: opts.Node, Replace: opts.Replace, Uses: opts.Uses, Created: now, Expires: now.Add(opts.TTL)}
		data, err := json.Marshal(rec)
		if err != nil {
			return Token{}, TokenRecord{}, err
		}
		err = recs.Update(ctx, KindToken, id, func(old []byte) ([]byte, error) {
			if old != nil {
				return nil, fs.ErrExist
			}
			return data, nil
		})
		if errors.Is(err, fs.ErrExist) {
			continue // an ID taken already: draw another
		}
		if err != nil {
			return Token{}, TokenRecord{}, fmt.Errorf("record the join token in %s: %w", recs, err)
		}
		claims := jwt.RegisteredClaims{
			ID:        id,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(rec.Expires),
		}
		signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(ca.secret)
		if err != nil {
			return Token{}, TokenRecord{}, fmt.Errorf("sign join token: %w", err)
		}
		return Token{CAHash: ca.Hash(), JWT: signed}, rec, nil
	}
	return Token{}, TokenRecord{}, errors.New("could not draw an unused token ID")
}

func newTokenID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("draw token ID: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// pruneTokens deletes records of tokens that stopped being usable more than tokenRecordsToKeep ago.
// Best effort: a failure leaves them for the next time.
func pruneTokens(ctx context.Context, recs Records, now time.Time) {
	all, err := ListTokens(ctx, recs)
	if err != nil {
		return
	}
	for _, r := range all {
		if now.Sub(r.Expires) > tokenRecordsToKeep {
			_ = recs.Update(ctx, KindToken, r.ID, func(old []byte) ([]byte, error) { return nil, nil })
		}
	}
}

// ListTokens returns the recorded join tokens, newest first. A damaged record is an error naming it.
func ListTokens(ctx context.Context, recs Records) ([]TokenRecord, error) {
	all, err := recs.List(ctx, KindToken)
	if err != nil {
		return nil, err
	}
	out := make([]TokenRecord, 0, len(all))
	for _, id := range sortedKeys(all) {
		var r TokenRecord
		if err := json.Unmarshal(all[id], &r); err != nil {
			return nil, fmt.Errorf("token %s in %s: %w: %v", id, recs, errRecordDamaged, err)
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// RevokeToken marks the token revoked as of now: joins with it are refused from then on. An
// unknown ID is an error matching ErrTokenUnknown; revoking twice keeps the first time.
func RevokeToken(ctx context.Context, recs Records, id string, now time.Time) (TokenRecord, error) {
	var rec TokenRecord
	err := recs.Update(ctx, KindToken, id, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, fmt.Errorf("%w: no token with ID %q in %s ('cloudcore token ls' lists them)", ErrTokenUnknown, id, recs)
		}
		rec = TokenRecord{}
		if err := json.Unmarshal(old, &rec); err != nil {
			return nil, fmt.Errorf("token %s in %s: %w: %v", id, recs, errRecordDamaged, err)
		}
		if rec.RevokedAt == nil {
			at := now.UTC().Truncate(time.Second)
			rec.RevokedAt = &at
		}
		return json.Marshal(rec)
	})
	if err != nil && CheckRecordName(id) != nil {
		return rec, fmt.Errorf("%w: %q is not a token ID ('cloudcore token ls' lists them)", ErrTokenUnknown, id)
	}
	return rec, err
}

// IssuedCert is a node certificate the cloud issued.
type IssuedCert struct {
	Serial   string    `json:"serial"` // hex
	NotAfter time.Time `json:"notAfter"`
	Issued   time.Time `json:"issued"`
	How      string    `json:"how"`             // "join", "renewal", "replace", "adopted" (renewed before it was recorded)
	Token    string    `json:"token,omitempty"` // ID of the join token, for joins
}

// NodeRecord is what the cloud remembers of the certificates it issued to one node.
type NodeRecord struct {
	Node string `json:"node"`
	// Certs are the node's certificates that have not expired: the newest and, after a renewal,
	// the one it renewed with (in case the answer was lost).
	Certs []IssuedCert `json:"certs"`
	// Revoked are certificates taken over by a replacing join; they cannot renew.
	Revoked []IssuedCert `json:"revoked,omitempty"`
}

func (n *NodeRecord) prune(now time.Time) {
	keep := func(cs []IssuedCert) []IssuedCert {
		out := cs[:0]
		for _, c := range cs {
			if now.Before(c.NotAfter) {
				out = append(out, c)
			}
		}
		return out
	}
	n.Certs, n.Revoked = keep(n.Certs), keep(n.Revoked)
}

// IsRevoked says whether the certificate with this serial (hex) was revoked by a replacing join.
func (n *NodeRecord) IsRevoked(serial string) bool { return n.find(n.Revoked, serial) }

func (n *NodeRecord) find(list []IssuedCert, serial string) bool {
	for _, c := range list {
		if c.Serial == serial {
			return true
		}
	}
	return false
}

// GetNodeRecord returns what recs holds on node; ok is false when it holds nothing.
func GetNodeRecord(ctx context.Context, recs Records, node string) (rec NodeRecord, ok bool, err error) {
	data, err := recs.Get(ctx, KindNode, node)
	if isNotExist(err) {
		return NodeRecord{Node: node}, false, nil
	}
	if err != nil {
		return rec, false, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, false, fmt.Errorf("node %s in %s: %w: %v", node, recs, errRecordDamaged, err)
	}
	return rec, true, nil
}

func decodeNode(node string, recs Records, data []byte) (NodeRecord, error) {
	rec := NodeRecord{Node: node}
	if data == nil {
		return rec, nil
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("node %s in %s: %w: %v (remove it to let the node join again)", node, recs, errRecordDamaged, err)
	}
	return rec, nil
}

func decodeToken(id string, recs Records, data []byte) (TokenRecord, error) {
	var rec TokenRecord
	if data == nil {
		return rec, fmt.Errorf("%w: no record of token %s (revoked and deleted, or created by another cluster's cloudcore); create one with 'cloudcore token create'", ErrTokenUnknown, id)
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("token %s in %s: %w: %v", id, recs, errRecordDamaged, err)
	}
	return rec, nil
}
