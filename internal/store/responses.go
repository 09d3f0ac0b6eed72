package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cached HTTP responses (package httpcache) and their dependencies.
//
// A response depends on the rows (and lookup entries, and tables) its handler read.
// Each has a dependency key (keys.Key.Deps, keys.Space.TableDeps) holding an epoch: a
// token that every invalidation of the row deletes together with its value and fence
// (Invalidate, FlushTable), and that the next registration creates anew. A render
// registers each key before the read it guards (RegisterDeps), keeps the epochs it got,
// and the response is served only while every key still holds its epoch (CheckDeps).
//
// Why no response outlives a change of a row it read: call the registration R, the
// read D (after R), and the invalidation I of the row (after the change committed).
//  1. I before R: R creates or finds a later epoch, and D reads after I, so after the
//     commit (the cache holds no row older than I; fills are fenced).
//  2. I after R: I deletes the epoch R returned; the key never holds it again (epochs
//     are unique), so every CheckDeps after I fails, and the response is not served.
//
// A lost or expired dependency key only makes responses that read it render again.
//
// A response is stored as its dependencies, in a header of the store's own (see
// appendDeps), followed by the caller's payload, so that on one server a script reads
// it and checks its epochs in one round trip (getFreshScript); on a Cluster or Ring,
// whose dependency keys are on other nodes, the check is a second round trip.

// Dep is a response's dependency: a dependency key and the epoch it held.
type Dep struct {
	Key, Epoch string
}

// registerScript returns the epoch of KEYS[1], creating it as ARGV[1] if there is
// none, and makes it live at least ARGV[2] ms.
var registerScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
`)

// RegisterDeps returns the epochs of the dependency keys names, creating those that
// have none, each to live at least ttl, in one round trip. Call it before reading
// what the keys guard.
func (s *Store) RegisterDeps(ctx context.Context, names []string, ttl time.Duration) ([]Dep, error) {
	if len(names) == 0 {
		return nil, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	ms := max(ttl, time.Second).Milliseconds()
	cmds := make([]*redis.Cmd, len(names))
	err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for i, n := range names {
			cmds[i] = registerScript.EvalSha(ctx, p, []string{n}, s.token(), ms)
		}
	}, registerScript)
	if err != nil {
		return nil, fmt.Errorf("store: register %d dependencies: %w", len(names), err)
	}
	deps := make([]Dep, len(names))
	for i, c := range cmds {
		e, err := c.Text()
		if err != nil {
			return nil, fmt.Errorf("store: register %s: %w", names[i], err)
		}
		deps[i] = Dep{Key: names[i], Epoch: e}
	}
	return deps, nil
}

// checkDeps reports whether every dependency key still holds its epoch, in one round
// trip.
func (s *Store) checkDeps(ctx context.Context, deps []Dep) (bool, error) {
	if len(deps) == 0 {
		return true, nil
	}
	names := make([]string, len(deps))
	for i, d := range deps {
		names[i] = d.Key
	}
	vals, err := s.getStrings(ctx, names)
	if err != nil {
		return false, fmt.Errorf("store: check %d dependencies: %w", len(deps), err)
	}
	for i, d := range deps {
		if vals[i] == nil || *vals[i] != d.Epoch {
			return false, nil
		}
	}
	return true, nil
}

// getStrings reads names in one round trip: MGET on one server, a pipeline of GETs on a
// Cluster or Ring client. A nil element is a missing key.
func (s *Store) getStrings(ctx context.Context, names []string) ([]*string, error) {
	out := make([]*string, len(names))
	if !s.Sharded() {
		vals, err := s.rdb.MGet(ctx, names...).Result()
		if err != nil {
			return nil, err
		}
		for i, v := range vals {
			if str, ok := v.(string); ok {
				out[i] = &str
			}
		}
		return out, nil
	}
	cmds := make([]*redis.StringCmd, len(names))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range names {
			cmds[i] = p.Get(ctx, n)
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, err
	}
	for i, c := range cmds {
		if v, err := c.Result(); err == nil {
			out[i] = &v
		}
	}
	return out, nil
}

// ResponseState says what GetResponse found.
type ResponseState uint8

const (
	ResponseMissing ResponseState = iota // no entry, or one of another format
	ResponseStale                        // an entry a dependency of which changed: deleted
	ResponseFresh                        // an entry whose dependencies all hold their epochs
)

// depsMark begins every stored response (see appendDeps).
const depsMark = 'D'

// appendDeps appends the dependency header of a stored response to b: "D", the
// number of dependencies in decimal and a newline, then each key and epoch as their
// length in decimal, a colon and their bytes. getFreshScript reads it.
func appendDeps(b []byte, deps []Dep) []byte {
	b = append(b, depsMark)
	b = strconv.AppendInt(b, int64(len(deps)), 10)
	b = append(b, '\n')
	for _, d := range deps {
		for _, f := range [2]string{d.Key, d.Epoch} {
			b = strconv.AppendInt(b, int64(len(f)), 10)
			b = append(b, ':')
			b = append(b, f...)
		}
	}
	return b
}

var errDepsHeader = errors.New("store: stored response without a valid dependency header")

// splitDeps returns the dependencies of a stored response and its payload.
func splitDeps(b []byte) ([]Dep, []byte, error) {
	if len(b) == 0 || b[0] != depsMark {
		return nil, nil, errDepsHeader
	}
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return nil, nil, errDepsHeader
	}
	n, err := strconv.Atoi(string(b[1:nl]))
	if err != nil || n < 0 || n > len(b) {
		return nil, nil, errDepsHeader
	}
	b = b[nl+1:]
	field := func() (string, bool) {
		c := bytes.IndexByte(b, ':')
		if c < 0 {
			return "", false
		}
		l, err := strconv.Atoi(string(b[:c]))
		if err != nil || l < 0 || l > len(b)-c-1 {
			return "", false
		}
		f := string(b[c+1 : c+1+l])
		b = b[c+1+l:]
		return f, true
	}
	deps := make([]Dep, n)
	for i := range deps {
		var ok1, ok2 bool
		deps[i].Key, ok1 = field()
		deps[i].Epoch, ok2 = field()
		if !ok1 || !ok2 {
			return nil, nil, errDepsHeader
		}
	}
	return deps, b, nil
}

// getFreshScript returns the response at KEYS[1] when each dependency its header
// (appendDeps) names still holds its epoch; otherwise it deletes it and returns 0.
// It reads keys it is not given, so it runs on one server only, never on a Cluster.
var getFreshScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
if string.sub(v, 1, 1) ~= 'D' then return v end
local nl = string.find(v, '\n', 2, true)
if not nl then return v end
local pos = nl + 1
local function field()
  local c = string.find(v, ':', pos, true)
  if not c then return nil end
  local l = tonumber(string.sub(v, pos, c - 1))
  if not l then return nil end
  pos = c + 1 + l
  return string.sub(v, c + 1, c + l)
end
for _ = 1, tonumber(string.sub(v, 2, nl - 1)) or 0 do
  local k, e = field(), field()
  if not k or not e then return v end
  if redis.call('GET', k) ~= e then
    redis.call('DEL', KEYS[1])
    return 0
  end
end
return v
`)

// GetResponse returns the payload of the response stored at key and what it found:
// ResponseFresh when every dependency of the response still holds its epoch (checked
// in the same round trip on one server, in a second one on a Cluster or Ring),
// ResponseStale when one does not (the entry is then deleted, unless a newer one
// replaced it meanwhile). With unchecked, the dependencies are not checked (the race
// tests' control).
func (s *Store) GetResponse(ctx context.Context, key string, unchecked bool) ([]byte, ResponseState, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var (
		b   []byte
		err error
	)
	if s.Sharded() || unchecked {
		b, err = s.rdb.Get(ctx, key).Bytes()
	} else {
		var v any
		v, err = getFreshScript.Run(ctx, s.rdb, []string{key}).Result()
		if n, ok := v.(int64); ok && n == 0 {
			return nil, ResponseStale, nil
		}
		str, _ := v.(string)
		b = []byte(str)
	}
	if err == redis.Nil {
		return nil, ResponseMissing, nil
	}
	if err != nil {
		return nil, ResponseMissing, fmt.Errorf("store: get response %s: %w", key, err)
	}
	deps, payload, err := splitDeps(b)
	if err != nil {
		return nil, ResponseMissing, nil // another format (an older version's): a miss
	}
	if !s.Sharded() || unchecked {
		return payload, ResponseFresh, nil // checked by the script
	}
	fresh, err := s.checkDeps(ctx, deps)
	if err != nil {
		return nil, ResponseMissing, fmt.Errorf("store: get response %s: %w", key, err)
	}
	if !fresh {
		if err := deleteIfScript.Run(ctx, s.rdb, []string{key}, b).Err(); err != nil {
			return nil, ResponseStale, fmt.Errorf("store: delete stale response %s: %w", key, err)
		}
		return nil, ResponseStale, nil
	}
	return payload, ResponseFresh, nil
}

// putFreshScript stores ARGV[1] at KEYS[1] for ARGV[2] ms when each dependency key
// ARGV[3], ARGV[5], ... still holds the epoch after it, and returns 1; else 0. Like
// getFreshScript it runs on one server only.
var putFreshScript = redis.NewScript(`
for i = 3, #ARGV, 2 do
  if redis.call('GET', ARGV[i]) ~= ARGV[i + 1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// PutResponse stores payload at key for ttl with its dependencies, unless one of them
// no longer holds its epoch (a row the response shows changed while it was rendered);
// it reports whether it stored. On one server the check and the store are one script;
// on a Cluster or Ring the check is a round trip before the store. With unchecked (a
// response that depends on nothing, or the race tests' control), nothing is checked.
func (s *Store) PutResponse(ctx context.Context, key string, deps []Dep, payload []byte, ttl time.Duration, unchecked bool) (bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	b := append(appendDeps(make([]byte, 0, 64+len(payload)), deps), payload...)
	if !s.Sharded() && !unchecked && len(deps) > 0 {
		args := make([]any, 0, 2+2*len(deps))
		args = append(args, b, max(ttl, time.Millisecond).Milliseconds())
		for _, d := range deps {
			args = append(args, d.Key, d.Epoch)
		}
		n, err := putFreshScript.Run(ctx, s.rdb, []string{key}, args...).Int()
		if err != nil {
			return false, fmt.Errorf("store: put response %s: %w", key, err)
		}
		return n == 1, nil
	}
	if !unchecked {
		fresh, err := s.checkDeps(ctx, deps)
		if err != nil || !fresh {
			return false, err
		}
	}
	if err := s.rdb.Set(ctx, key, b, ttl).Err(); err != nil {
		return false, fmt.Errorf("store: put response %s: %w", key, err)
	}
	return true, nil
}

// TakeResponseLease takes the lease of rendering a response for d, unless another
// renderer holds it; it returns the lease's token, or "" when it is held.
func (s *Store) TakeResponseLease(ctx context.Context, lease string, d time.Duration) (string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	tok := s.token()
	ok, err := s.rdb.SetNX(ctx, lease, tok, d).Result()
	if err != nil {
		return "", fmt.Errorf("store: lease %s: %w", lease, err)
	}
	if !ok {
		return "", nil
	}
	return tok, nil
}

// ReleaseResponseLease gives the lease back if it still holds token.
func (s *Store) ReleaseResponseLease(ctx context.Context, lease, token string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := releaseScript.Run(ctx, s.rdb, []string{lease}, token).Err(); err != nil {
		return fmt.Errorf("store: release %s: %w", lease, err)
	}
	return nil
}
