package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// store keeps stream items in Redis:
//
//	<prefix>stream:<stream>:<group>  hash item id → JSON value
//	<prefix>streams:<stream>         set of the stream's groups with items
//	<prefix>streams                  set of streams with items
//
// Stream and group names are escaped ('%' → %25, ':' → %3A) inside keys so
// that ("a", "b:c") and ("a:b", "c") never share a hash.
type store struct {
	rdb    redis.UniversalClient
	prefix string // e.g. "iii:"
}

var keyEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

func (s *store) itemsKey(streamName, groupID string) string {
	return s.prefix + "stream:" + keyEscaper.Replace(streamName) + ":" + keyEscaper.Replace(groupID)
}

func (s *store) groupsKey(streamName string) string {
	return s.prefix + "streams:" + keyEscaper.Replace(streamName)
}

func (s *store) streamsKey() string { return s.prefix + "streams" }

// setScript stores ARGV[2] under item ARGV[1] and returns the old value (nil
// when there was none). KEYS: items hash, groups set, streams set.
// ARGV[3], ARGV[4]: group and stream names for the index sets.
var setScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
return old
`)

// deleteScript removes item ARGV[1] and returns its value (nil when there
// was none); an emptied group leaves the groups set, an emptied stream the
// streams set.
var deleteScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[3])
  if redis.call('SCARD', KEYS[2]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[4])
  end
end
return old
`)

// set stores value and returns the previous value (nil when none).
func (s *store) set(ctx context.Context, streamName, groupID, itemID string, value json.RawMessage) (json.RawMessage, error) {
	keys := []string{s.itemsKey(streamName, groupID), s.groupsKey(streamName), s.streamsKey()}
	old, err := setScript.Run(ctx, s.rdb, keys, itemID, string(value), groupID, streamName).Text()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(old), nil
}

// get returns the stored value, or nil when there is none.
func (s *store) get(ctx context.Context, streamName, groupID, itemID string) (json.RawMessage, error) {
	v, err := s.rdb.HGet(ctx, s.itemsKey(streamName, groupID), itemID).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(v), nil
}

// delete removes an item and returns its value, or nil when there was none.
func (s *store) delete(ctx context.Context, streamName, groupID, itemID string) (json.RawMessage, error) {
	keys := []string{s.itemsKey(streamName, groupID), s.groupsKey(streamName), s.streamsKey()}
	old, err := deleteScript.Run(ctx, s.rdb, keys, itemID, "", groupID, streamName).Text()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(old), nil
}

// list returns the group's values as a JSON array, ordered by item id.
func (s *store) list(ctx context.Context, streamName, groupID string) (json.RawMessage, error) {
	items, err := s.rdb.HGetAll(ctx, s.itemsKey(streamName, groupID)).Result()
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(items))
	for id := range items {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var b strings.Builder
	b.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(items[id])
	}
	b.WriteByte(']')
	return json.RawMessage(b.String()), nil
}

// listGroups returns the stream's groups, sorted.
func (s *store) listGroups(ctx context.Context, streamName string) ([]string, error) {
	groups, err := s.rdb.SMembers(ctx, s.groupsKey(streamName)).Result()
	if err != nil {
		return nil, err
	}
	slices.Sort(groups)
	return groups, nil
}

// streamInfo is one entry of stream::list_all.
type streamInfo struct {
	ID     string   `json:"id"`
	Groups []string `json:"groups"`
}

// listAll returns every stream with its groups, sorted by name.
func (s *store) listAll(ctx context.Context) ([]streamInfo, error) {
	names, err := s.rdb.SMembers(ctx, s.streamsKey()).Result()
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	out := make([]streamInfo, 0, len(names))
	for _, name := range names {
		groups, err := s.listGroups(ctx, name)
		if err != nil {
			return nil, err
		}
		if len(groups) == 0 {
			continue // emptied between the two reads
		}
		out = append(out, streamInfo{ID: name, Groups: groups})
	}
	return out, nil
}

// maxUpdateAttempts bounds the optimistic retries of update under contention.
const maxUpdateAttempts = 64

// errUpdateContention is returned when update lost every optimistic retry.
var errUpdateContention = errors.New("stream: item changed concurrently on every attempt")

// update reads an item, computes its new value with fn and writes it, all
// or nothing: a concurrent write to the group retries the whole step.
// It returns the old value (nil when there was none) and fn's new value.
func (s *store) update(ctx context.Context, streamName, groupID, itemID string,
	fn func(old json.RawMessage) (json.RawMessage, error)) (old, updated json.RawMessage, err error) {
	itemsKey, groupsKey, streamsKey := s.itemsKey(streamName, groupID), s.groupsKey(streamName), s.streamsKey()
	for range maxUpdateAttempts {
		err = s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			v, err := tx.HGet(ctx, itemsKey, itemID).Result()
			switch {
			case errors.Is(err, redis.Nil):
				old = nil
			case err != nil:
				return err
			default:
				old = json.RawMessage(v)
			}
			if updated, err = fn(old); err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, itemsKey, itemID, string(updated))
				p.SAdd(ctx, groupsKey, groupID)
				p.SAdd(ctx, streamsKey, streamName)
				return nil
			})
			return err
		}, itemsKey)
		if !errors.Is(err, redis.TxFailedErr) {
			return old, updated, err
		}
	}
	return nil, nil, fmt.Errorf("%w (%d attempts)", errUpdateContention, maxUpdateAttempts)
}
